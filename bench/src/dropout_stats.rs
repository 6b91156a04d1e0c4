//! `dropout-stats`: the loss and gradient norm of one fixed real batch under
//! many dropout draws, at the base model's weights, so that cpack's dropout
//! can be compared with PyTorch's in distribution (masks differ, their
//! statistics must not). The batch — training questions of InsuranceQA,
//! each with its positive and `group − 1` other answers — is written to
//! `--batch-out` for bench/peer/dropout_stats.py, which scores the same
//! texts under its own masks. Also records the batch without dropout, where
//! both sides must agree exactly. With `--gradients DIR` it also sums every
//! draw's gradient (and its square) per weight, word embeddings aside, so
//! the *expected* gradient under dropout can be compared between the sides,
//! not only its norm: a mask in the wrong place or with the wrong scale would
//! move the mean gradient while leaving the norm's distribution alone.

use anyhow::{bail, Context, Result};
use clap::Parser;
use cpack_data::dataset::{Qrels, TextTable};
use cpack_encode::ComputeDevice;
use cpack_encode::{EncoderSettings, PairTokenizer};
use cpack_model::{Dropout, ModelDir, Pooling};
use cpack_train::model::TrainableEncoder;
use cpack_train::{TrainSettings, Trainer};
use std::path::PathBuf;

/// The loss and gradient norm of one fixed batch under many dropout draws.
#[derive(clap::Parser)]
#[command(name = "cpack-bench dropout-stats")]
struct Args {
    #[arg(long, default_value = ".cache/models/all-MiniLM-L6-v2")]
    model: PathBuf,
    /// A BEIR-layout dataset with qrels/train.tsv.
    #[arg(long, default_value = ".cache/data/insuranceqa-en")]
    data: PathBuf,
    #[arg(long, default_value_t = 8)]
    queries: usize,
    /// Passages per question: its positive and `group − 1` others.
    #[arg(long, default_value_t = 4)]
    group: usize,
    #[arg(long, default_value_t = 16)]
    draws: usize,
    /// Where the batch's texts go, for bench/peer/dropout_stats.py.
    #[arg(long)]
    batch_out: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the per-weight sum and sum of squares of the draws' gradients
    /// here (`names.json`, `sum.f64`, `sumsq.f64`).
    #[arg(long)]
    gradients: Option<PathBuf>,
    /// Hidden-state drop probability instead of config.json's (0 leaves
    /// only the attention dropout: the two places can be compared apart).
    #[arg(long)]
    hidden_dropout: Option<f32>,
    /// Attention-probability drop probability instead of config.json's.
    #[arg(long)]
    attention_dropout: Option<f32>,
}

pub const USAGE: &str = "cpack-bench dropout-stats [--model DIR] [--data DIR] [--queries 8] \
    [--group 4] [--draws 16] [--hidden-dropout P] [--attention-dropout P] --batch-out BATCH.json \
    [--json OUT] [--gradients DIR]";

fn parse(args: &[String]) -> Result<Args> {
    // clap prints --help and flag errors itself and exits.
    let argv = std::iter::once("cpack-bench dropout-stats").chain(args.iter().map(String::as_str));
    let a = Args::parse_from(argv);
    if a.queries == 0 || a.group == 0 {
        bail!("--queries and --group must be at least 1");
    }
    Ok(a)
}

/// The first `n` training questions with a positive, each followed by its
/// first positive and `group − 1` answers spread over the corpus.
fn fixed_batch(a: &Args) -> Result<(Vec<String>, Vec<String>)> {
    let corpus = TextTable::load_jsonl(&a.data.join("corpus.jsonl"))?;
    let queries = TextTable::load_jsonl(&a.data.join("queries.jsonl"))?;
    let qrels = Qrels::load_tsv(&a.data.join("qrels/train.tsv"), &queries, &corpus)?;
    let (mut q, mut p) = (Vec::new(), Vec::new());
    let stride = corpus.len() / (a.queries * a.group + 1);
    for (query_id, judged) in qrels.by_query.iter() {
        let Some((positive, _)) = judged.iter().find(|(_, score)| *score > 0) else {
            continue;
        };
        let (Some(row), Some(pos)) = (queries.position(query_id), corpus.position(positive)) else {
            continue;
        };
        q.push(queries.full_text(row));
        p.push(corpus.full_text(pos));
        // Deterministic rows far from the positive and from the other
        // questions' picks: a fixed batch both sides can rebuild.
        for k in 1..a.group {
            p.push(corpus.full_text((pos + k * stride * 7 + q.len() * stride) % corpus.len()));
        }
        if q.len() == a.queries {
            return Ok((q, p));
        }
    }
    bail!("the training split has fewer than {} questions", a.queries)
}

pub fn run(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    let threads = cpack::process::configure(0);
    let (queries, passages) = fixed_batch(&a)?;
    std::fs::write(
        &a.batch_out,
        serde_json::json!({"queries": queries, "passages": passages}).to_string(),
    )?;
    let model = ModelDir::open(&a.model)?;
    let settings = EncoderSettings {
        pooling: Pooling::Mean,
        normalize: true,
        query_max_len: 32,
        passage_max_len: 128,
        query_instruction: String::new(),
        batch_size: passages.len(),
        batch_tokens: 0,
    };
    let tokenizer = PairTokenizer::load(&model, &settings)?;
    let recipe = TrainSettings {
        batch_size: a.queries,
        group_size: a.group,
        temperature: 0.05,
        dropout: true,
        ..TrainSettings::default()
    };
    let encoder = TrainableEncoder::load(&model, Pooling::Mean, true, ComputeDevice::Cpu)?;
    let trainer = Trainer::new(encoder, tokenizer, recipe)?;
    let q: Vec<&str> = queries.iter().map(String::as_str).collect();
    let p: Vec<&str> = passages.iter().map(String::as_str).collect();
    let mut moments = a.gradients.as_ref().map(|_| GradientMoments::new(&trainer));
    let (hidden, attention) = (
        a.hidden_dropout
            .unwrap_or(model.config.hidden_dropout_prob as f32),
        a.attention_dropout
            .unwrap_or(model.config.attention_probs_dropout_prob as f32),
    );
    let mut score = |seed: Option<u64>| -> Result<(f32, f64)> {
        let dropout = seed.map(|s| Dropout::new(hidden, attention, s));
        let pass = trainer.pass(&q, &p, dropout.as_ref())?;
        let grads = pass.grads.context("loss is not finite")?;
        if let (Some(m), Some(_)) = (moments.as_mut(), seed) {
            m.add(&trainer, &grads)?;
        }
        Ok((pass.loss, grads.norm()?))
    };
    let (plain_loss, plain_norm) = score(None)?;
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    for draw in 0..a.draws {
        let (loss, norm) = score(Some(1000 + draw as u64))?;
        eprintln!("draw {draw}: loss {loss:.4}, gradient norm {norm:.4}");
        losses.push(loss as f64);
        norms.push(norm);
    }
    if let (Some(m), Some(dir)) = (moments, &a.gradients) {
        m.write(dir)?;
    }
    let result = serde_json::json!({
        "bench": "dropout-stats",
        "side": "cpack",
        "threads": threads,
        "queries": a.queries, "group": a.group,
        "hidden_dropout": hidden, "attention_dropout": attention,
        "no_dropout": {"loss": plain_loss, "grad_norm": plain_norm},
        "losses": losses,
        "grad_norms": norms,
    });
    println!("{result}");
    if let Some(path) = a.json {
        std::fs::write(&path, result.to_string())?;
    }
    Ok(())
}

/// Per-weight sums of the draws' gradients and of their squares, in the
/// trainer's (sorted) variable order; the word embeddings are left out (their
/// gradient is one sparse 11.7 M-value table).
struct GradientMoments {
    names: Vec<(String, Vec<usize>)>,
    sum: Vec<f64>,
    sumsq: Vec<f64>,
    draws: usize,
}

impl GradientMoments {
    fn kept(trainer: &Trainer) -> Vec<(String, candle_core::Var)> {
        trainer
            .encoder()
            .vars()
            .into_iter()
            .filter(|(name, _)| !name.ends_with("word_embeddings.weight"))
            .collect()
    }

    fn new(trainer: &Trainer) -> Self {
        let names: Vec<(String, Vec<usize>)> = Self::kept(trainer)
            .iter()
            .map(|(n, v)| (n.clone(), v.dims().to_vec()))
            .collect();
        let len = names.iter().map(|(_, d)| d.iter().product::<usize>()).sum();
        GradientMoments {
            names,
            sum: vec![0.0; len],
            sumsq: vec![0.0; len],
            draws: 0,
        }
    }

    fn add(&mut self, trainer: &Trainer, grads: &cpack_train::optim::Gradients) -> Result<()> {
        let mut at = 0;
        for (name, var) in Self::kept(trainer) {
            let n = var.elem_count();
            if let Some(g) = grads.get(&var) {
                let values = g.flatten_all()?.to_vec1::<f32>()?;
                for (i, v) in values.iter().enumerate() {
                    let v = *v as f64;
                    self.sum[at + i] += v;
                    self.sumsq[at + i] += v * v;
                }
            } else {
                eprintln!("{name}: no gradient");
            }
            at += n;
        }
        self.draws += 1;
        Ok(())
    }

    fn write(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let names: Vec<_> = self
            .names
            .iter()
            .map(|(n, d)| serde_json::json!({"name": n, "shape": d}))
            .collect();
        let meta = serde_json::json!({"draws": self.draws, "tensors": names});
        std::fs::write(dir.join("names.json"), meta.to_string())?;
        for (file, values) in [("sum.f64", &self.sum), ("sumsq.f64", &self.sumsq)] {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(dir.join(file), bytes)?;
        }
        Ok(())
    }
}
