//! How much memory a training step needs, estimated from its shapes before
//! it runs, so a recipe that cannot fit is refused with a way out
//! (`--mini-batch`) instead of being killed by the kernel half-way.
//!
//! The model of the step: the weights with their gradients and AdamW's two
//! moments (four copies), plus what the graph keeps for the backward per
//! token and layer — the QKV projection, the attention context, each
//! sublayer's output, its dropout, residual sum and layer norm, and the
//! feed-forward's inner activation before and after GELU: about
//! `11·hidden + 2·intermediate` floats (attention keeps no probabilities;
//! its backward recomputes them). With gradient caching only one
//! mini-batch's graph is alive at a time.

use cpack_model::BertConfig;

/// The largest batch a step can see: every text at its maximum length.
#[derive(Debug, Clone, Copy)]
pub struct StepShape {
    pub queries: usize,
    pub query_len: usize,
    pub passages: usize,
    pub passage_len: usize,
}

/// Everything besides the model that a training process holds (tokenizer,
/// the corpus and queries, allocator slack).
const PROCESS_BYTES: u64 = 512 << 20;

fn parameters(cfg: &BertConfig) -> u64 {
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let embeddings =
        (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) as u64 * h;
    let layer = 4 * h * h + 2 * h * i + 9 * h + i;
    embeddings + cfg.num_hidden_layers as u64 * layer
}

/// Bytes the graph of `sequences` texts of `len` tokens keeps for the backward.
fn activation_bytes(cfg: &BertConfig, sequences: usize, len: usize) -> u64 {
    let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let tokens = (sequences * len) as u64;
    let per_token = cfg.num_hidden_layers as u64 * (11 * h + 2 * i) + 4 * h;
    tokens * per_token * 4
}

/// Estimated peak bytes of one step of `shape`; `mini_batch` 0 = no gradient caching.
pub fn step_bytes(cfg: &BertConfig, shape: StepShape, mini_batch: usize) -> u64 {
    let weights = parameters(cfg) * 4 * 4;
    let graphs =
        if mini_batch == 0 {
            activation_bytes(cfg, shape.queries, shape.query_len)
                + activation_bytes(cfg, shape.passages, shape.passage_len)
        } else {
            activation_bytes(cfg, mini_batch.min(shape.queries), shape.query_len).max(
                activation_bytes(cfg, mini_batch.min(shape.passages), shape.passage_len),
            )
        };
    PROCESS_BYTES + weights + graphs
}

/// The largest mini-batch whose step fits in `budget` bytes, if any does.
pub fn mini_batch_within(cfg: &BertConfig, shape: StepShape, budget: u64) -> Option<usize> {
    let widest = shape.queries.max(shape.passages);
    (1..=widest)
        .rev()
        .find(|&n| step_bytes(cfg, shape, n) <= budget)
}

/// `MemAvailable` from /proc/meminfo, in bytes (None where there is none).
pub fn available_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

/// `bytes` as GB with one decimal.
pub fn gigabytes(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> BertConfig {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536,
            "max_position_embeddings": 512
        }))
        .unwrap()
    }

    const PAPER: StepShape = StepShape {
        queries: 32,
        query_len: 64,
        passages: 256,
        passage_len: 256,
    };

    #[test]
    fn minilm_has_its_parameter_count_and_caching_bounds_the_step() {
        let cfg = minilm();
        let p = parameters(&cfg);
        assert!((22_000_000..23_000_000).contains(&p), "{p}");
        let whole = step_bytes(&cfg, PAPER, 0);
        let cached = step_bytes(&cfg, PAPER, 32);
        assert!(cached < whole / 5, "{cached} vs {whole}");
        // Doubling the batch doubles the graph; with caching the step stays put.
        let doubled = StepShape {
            queries: 64,
            passages: 512,
            ..PAPER
        };
        assert!(step_bytes(&cfg, doubled, 0) > whole + whole / 2);
        assert_eq!(step_bytes(&cfg, doubled, 32), cached);
    }

    #[test]
    fn the_suggested_mini_batch_fits_and_the_next_one_does_not() {
        let cfg = minilm();
        let budget = step_bytes(&cfg, PAPER, 40);
        let n = mini_batch_within(&cfg, PAPER, budget).unwrap();
        assert!(step_bytes(&cfg, PAPER, n) <= budget);
        assert!(step_bytes(&cfg, PAPER, n + 1) > budget);
        assert_eq!(mini_batch_within(&cfg, PAPER, 1), None);
    }
}
