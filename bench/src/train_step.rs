//! `train-step`: one training step (forward + backward + AdamW) at a fixed
//! shape — `queries × query_len` and `passages × passage_len` real tokens,
//! every text long enough to fill its length — timed over repetitions, with
//! the process's peak resident memory. `--mini-batch N` runs the step with
//! gradient caching; `--precision bf16` with bf16 products.

use anyhow::{bail, Context, Result};
use cpack_data::dataset::TextTable;
use cpack_encode::ComputeDevice;
use cpack_encode::{EncoderSettings, PairTokenizer, TextKind};
use cpack_model::{ModelDir, Pooling};
use cpack_train::model::TrainableEncoder;
use cpack_train::{LossKind, TrainPrecision, TrainSettings, Trainer};
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    model: PathBuf,
    corpus: PathBuf,
    queries: usize,
    query_len: usize,
    passages: usize,
    passage_len: usize,
    reps: usize,
    threads: usize,
    mini_batch: usize,
    precision: TrainPrecision,
    json: Option<PathBuf>,
}

const USAGE: &str =
    "usage: cpack-bench train-step [--model DIR] [--corpus corpus.jsonl] [--queries 16] \
    [--query-len 32] [--passages 32] [--passage-len 128] [--reps 5] [--threads N] \
    [--mini-batch N] [--precision f32|bf16] [--json OUT]";

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        model: PathBuf::from(".cache/models/all-MiniLM-L6-v2"),
        corpus: PathBuf::from(".cache/data/insuranceqa-en/corpus.jsonl"),
        queries: 16,
        query_len: 32,
        passages: 32,
        passage_len: 128,
        reps: 5,
        threads: 0,
        mini_batch: 0,
        precision: TrainPrecision::F32,
        json: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--corpus" => a.corpus = value()?.into(),
            "--queries" => a.queries = value()?.parse()?,
            "--query-len" => a.query_len = value()?.parse()?,
            "--passages" => a.passages = value()?.parse()?,
            "--passage-len" => a.passage_len = value()?.parse()?,
            "--reps" => a.reps = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--mini-batch" => a.mini_batch = value()?.parse()?,
            "--precision" => {
                a.precision =
                    clap::ValueEnum::from_str(value()?, false).map_err(anyhow::Error::msg)?;
            }
            "--json" => a.json = Some(value()?.into()),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if a.queries == 0 || !a.passages.is_multiple_of(a.queries) {
        bail!("--passages must be a multiple of --queries (groups of equal size)");
    }
    Ok(a)
}

pub fn run(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    let threads = cpack::process::configure(a.threads);
    crate::facts::print();
    let model = ModelDir::open(&a.model)?;
    let settings = EncoderSettings {
        pooling: Pooling::Mean,
        normalize: true,
        query_max_len: a.query_len,
        passage_max_len: a.passage_len,
        query_instruction: String::new(),
        batch_size: a.passages,
        batch_tokens: 0,
    };
    let tokenizer = PairTokenizer::load(&model, &settings)?;
    let corpus = TextTable::load_jsonl(&a.corpus)?;
    // Texts that fill the longer length fill both.
    let long: Vec<String> = (0..corpus.len())
        .map(|i| corpus.full_text(i))
        .filter(|t| {
            tokenizer
                .tokenize(&[t.as_str()], TextKind::Passage)
                .is_ok_and(|ids| ids[0].len() == a.passage_len)
        })
        .take(a.queries + a.passages)
        .collect();
    if long.len() < a.queries + a.passages {
        bail!(
            "the corpus has too few passages of {} tokens",
            a.passage_len
        );
    }
    let queries: Vec<&str> = long[..a.queries].iter().map(String::as_str).collect();
    let passages: Vec<&str> = long[a.queries..].iter().map(String::as_str).collect();
    let recipe = TrainSettings {
        batch_size: a.queries,
        group_size: a.passages / a.queries,
        temperature: 0.05,
        loss: LossKind::InfoNce,
        lr: 2e-5,
        weight_decay: 0.01,
        warmup_ratio: 0.0,
        grad_accum: 1,
        max_grad_norm: 1.0,
        dropout: true,
        seed: 1,
        mini_batch: a.mini_batch,
        precision: a.precision,
        ..TrainSettings::default()
    };
    let encoder = TrainableEncoder::load(&model, Pooling::Mean, true, ComputeDevice::Cpu)?;
    let mut trainer = Trainer::new(encoder, tokenizer, recipe)?;
    let tokens = a.queries * a.query_len + a.passages * a.passage_len;
    let mut seconds = Vec::new();
    for rep in 0..=a.reps {
        let started = Instant::now();
        let dropout = trainer.encoder().dropout(true, rep as u64);
        let pass = trainer.pass(&queries, &passages, dropout.as_ref())?;
        trainer.apply(pass.grads.context("loss is not finite")?, 2e-5)?;
        let s = started.elapsed().as_secs_f64();
        // The first step warms allocators and caches.
        if rep > 0 {
            seconds.push(s);
        }
        eprintln!("step {rep}: {s:.3} s (loss {:.4})", pass.loss);
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let result = serde_json::json!({
        "bench": "train-step",
        "threads": threads,
        "machine": crate::facts::machine(),
        "queries": a.queries, "query_len": a.query_len,
        "passages": a.passages, "passage_len": a.passage_len,
        "tokens_per_step": tokens,
        "median_seconds": median,
        "tokens_per_second": tokens as f64 / median,
        "mini_batch": a.mini_batch,
        "precision": a.precision.to_string(),
        "peak_rss_mib": crate::facts::peak_rss_mib()?,
        "seconds": seconds,
    });
    println!("{result}");
    if let Some(path) = a.json {
        std::fs::write(&path, result.to_string())?;
    }
    Ok(())
}
