//! Tiny random-weight BERT model folders for tests (feature `test-model`).
//!
//! The folder has the same files as a sentence-transformers export —
//! `config.json`, `model.safetensors` (with the `bert.` prefix, as many
//! checkpoints have), a WordPiece `tokenizer.json` whose vocabulary is built
//! from the given texts, `modules.json` and `1_Pooling/config.json` — so every
//! code path that reads a real model reads this one too, in milliseconds.

use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;

/// Shape of the tiny model.
pub const HIDDEN: usize = 32;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const INTERMEDIATE: usize = 64;
pub const MAX_POSITIONS: usize = 512;

const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Writes a tiny BERT to `dir` whose vocabulary covers the words and
/// characters of `texts`; `seed` fixes the weights.
pub fn write_tiny_model(dir: &Path, texts: &[&str], seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir.join("1_Pooling")).map_err(Error::io("create", dir))?;
    let vocab = build_vocab(texts);
    write(dir, "config.json", &config(vocab.len()))?;
    write(dir, "tokenizer.json", &tokenizer(&vocab))?;
    write(
        dir,
        "modules.json",
        &json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    )?;
    write(
        dir,
        "1_Pooling/config.json",
        &json!({"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}),
    )?;
    write(
        dir,
        "sentence_bert_config.json",
        &json!({"max_seq_length": 128, "do_lower_case": false}),
    )?;
    write_weights(&dir.join("model.safetensors"), vocab.len(), seed)
}

fn write(dir: &Path, name: &str, value: &serde_json::Value) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).expect("plain JSON"))
        .map_err(Error::io("write", &path))
}

/// Special tokens, then every lower-cased word and character (plus `##` forms) of the texts.
fn build_vocab(texts: &[&str]) -> Vec<String> {
    let mut pieces = BTreeSet::new();
    for text in texts {
        for word in text
            .to_lowercase()
            .split(|c: char| c.is_whitespace() || c.is_ascii_punctuation())
        {
            if word.chars().count() > 1 && word.is_ascii() {
                pieces.insert(word.to_string());
            }
        }
        for c in text.to_lowercase().chars().filter(|c| !c.is_whitespace()) {
            pieces.insert(c.to_string());
            pieces.insert(format!("##{c}"));
        }
    }
    SPECIALS
        .iter()
        .map(|s| s.to_string())
        .chain(pieces)
        .collect()
}

fn config(vocab_size: usize) -> serde_json::Value {
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1
    })
}

fn tokenizer(vocab: &[String]) -> serde_json::Value {
    let ids: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": ids}
    })
}

/// SplitMix64: deterministic weights without a random-number dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn write_weights(path: &Path, vocab_size: usize, seed: u64) -> Result<()> {
    let mut rng = SplitMix(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, fill: Option<f32>| {
        let n = shape.iter().product();
        let data = match fill {
            Some(v) => vec![v; n],
            None => (0..n).map(|_| rng.next_f32() * 0.1).collect(),
        };
        tensors.push((format!("bert.{name}"), shape, data));
    };
    let h = HIDDEN;
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![vocab_size, h],
        None,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![MAX_POSITIONS, h],
        None,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, h],
        None,
    );
    add("embeddings.LayerNorm.weight".into(), vec![h], Some(1.0));
    add("embeddings.LayerNorm.bias".into(), vec![h], Some(0.0));
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", INTERMEDIATE, h),
            ("output.dense", h, INTERMEDIATE),
        ] {
            add(format!("{p}.{name}.weight"), vec![out, inp], None);
            add(format!("{p}.{name}.bias"), vec![out], None);
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}.{norm}.weight"), vec![h], Some(1.0));
            add(format!("{p}.{norm}.bias"), vec![h], Some(0.0));
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).expect("consistent shape"),
            )
        })
        .collect();
    let metadata = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        problem: format!("cannot write test weights: {e}"),
    })
}
