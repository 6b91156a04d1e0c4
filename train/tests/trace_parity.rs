//! Numerical parity with PyTorch: ../shared/fixtures/train-trace holds the
//! losses of 3 AdamW steps of all-MiniLM-L6-v2 on one fixed batch (InfoNCE
//! over in-batch + hard negatives, dropout off, constant lr) and the
//! embeddings of 4 probe texts afterwards. cpack's trainer must reproduce
//! the losses (relative error ≤ 1e-3) and the probes (cosine ≥ 0.999).
//! With bf16 products (`--train-precision bf16`, PyTorch's autocast recipe)
//! the bounds are the ones bf16 rounding allows: each product's operands move
//! by up to 2⁻⁹ of their size, which moves the losses by under 1 %; the
//! probes stay as close (the master weights are f32).

use cpack_encode::candle_backend::CandleBackend;
use cpack_encode::ComputeDevice;
use cpack_encode::{Encoder, EncoderSettings, PairTokenizer, TextKind};
use cpack_model::{ModelDir, Pooling};
use cpack_train::model::TrainableEncoder;
use cpack_train::{LossKind, TrainPrecision, TrainSettings, Trainer};
use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn required(path: PathBuf, hint: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {hint}", path.display());
    path
}

#[derive(serde::Deserialize)]
struct Trace {
    hyperparameters: Hyper,
    queries: Vec<String>,
    passages: Vec<String>,
    losses: Vec<f64>,
    probes: Vec<String>,
    probe_embeddings: Vec<Vec<f32>>,
}

#[derive(serde::Deserialize)]
struct Hyper {
    query_max_len: usize,
    passage_max_len: usize,
    temperature: f64,
    group_size: usize,
    lr: f64,
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    steps: usize,
    pooling: Pooling,
    normalize: bool,
    dropout: f64,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn three_adamw_steps_match_pytorch() {
    let (losses, probes) = train_the_trace(TrainPrecision::F32);
    assert!(
        losses.iter().all(|rel| *rel <= 1e-3),
        "relative loss errors {losses:?}"
    );
    assert!(
        probes.iter().all(|cos| *cos >= 0.999),
        "probe cosines {probes:?}"
    );
}

#[test]
fn three_adamw_steps_with_bf16_products_stay_within_bf16s_bound() {
    let (losses, probes) = train_the_trace(TrainPrecision::Bf16);
    assert!(
        losses.iter().all(|rel| *rel <= 1e-2),
        "relative loss errors {losses:?}"
    );
    assert!(
        losses.iter().any(|rel| *rel > 1e-4),
        "no rounding shows: {losses:?}"
    );
    assert!(
        probes.iter().all(|cos| *cos >= 0.9999),
        "probe cosines {probes:?}"
    );
}

/// Trains the trace's 3 steps with products in `precision`; returns each
/// step's relative loss error against PyTorch and each probe's cosine.
fn train_the_trace(precision: TrainPrecision) -> (Vec<f64>, Vec<f64>) {
    let trace_path = required(
        repo_root().join("../shared/fixtures/train-trace/minilm-infonce-adamw.json"),
        "the shared fixtures must sit beside the checkout",
    );
    let model_dir = required(
        repo_root().join(".cache/models/all-MiniLM-L6-v2"),
        "run scripts/setup.sh first",
    );
    let trace: Trace = serde_json::from_str(&std::fs::read_to_string(trace_path).unwrap()).unwrap();
    let h = &trace.hyperparameters;
    assert_eq!(
        (h.betas, h.eps, h.dropout),
        ([0.9, 0.999], 1e-8, 0.0),
        "the trainer's AdamW constants"
    );
    assert_eq!(trace.passages.len(), trace.queries.len() * h.group_size);
    let pooling = h.pooling;

    let model = ModelDir::open(&model_dir).unwrap();
    let settings = EncoderSettings {
        pooling,
        normalize: h.normalize,
        query_max_len: h.query_max_len,
        passage_max_len: h.passage_max_len,
        query_instruction: String::new(),
        batch_size: 8,
        batch_tokens: 0,
    };
    let encoder = TrainableEncoder::load(&model, pooling, h.normalize, ComputeDevice::Cpu).unwrap();
    let recipe = TrainSettings {
        batch_size: trace.queries.len(),
        group_size: h.group_size,
        temperature: h.temperature,
        loss: LossKind::InfoNce,
        lr: h.lr,
        weight_decay: h.weight_decay,
        warmup_ratio: 0.0,
        grad_accum: 1,
        max_grad_norm: 0.0,
        dropout: false,
        seed: 0,
        precision,
        ..TrainSettings::default()
    };
    let tokenizer = PairTokenizer::load(&model, &settings).unwrap();
    let mut trainer = Trainer::new(encoder, tokenizer, recipe).unwrap();

    let queries: Vec<&str> = trace.queries.iter().map(String::as_str).collect();
    let passages: Vec<&str> = trace.passages.iter().map(String::as_str).collect();
    let mut losses = Vec::new();
    for (step, expected) in trace.losses.iter().enumerate().take(h.steps) {
        let pass = trainer.pass(&queries, &passages, None).unwrap();
        let rel = (pass.loss as f64 - expected).abs() / expected.abs();
        eprintln!(
            "{precision} step {step}: loss {} (PyTorch {expected}, relative error {rel:.2e})",
            pass.loss
        );
        losses.push(rel);
        trainer.apply(pass.grads.unwrap(), h.lr).unwrap();
    }

    // Probes through the inference path, from the trained weights as saved.
    let run = tempfile::tempdir().unwrap();
    let state = cpack_train::checkpoint::TrainerState::new(1, h.steps as u64, h.steps as u64, None);
    let modules = cpack_train::checkpoint::Modules {
        pooling,
        normalize: h.normalize,
        max_seq_length: h.passage_max_len,
    };
    let saved = cpack_train::checkpoint::save(
        run.path(),
        &model,
        trainer.encoder(),
        trainer.optimizer(),
        &state,
        &modules,
    )
    .unwrap();
    let trained = ModelDir::open(&saved).unwrap();
    let backend = CandleBackend::load(
        &trained,
        pooling,
        h.normalize,
        cpack_encode::ComputeDevice::Cpu,
        cpack_encode::WeightPrecision::F32,
    )
    .unwrap();
    let encoder = Encoder::new(&trained, settings, Box::new(backend)).unwrap();
    let probes: Vec<&str> = trace.probes.iter().map(String::as_str).collect();
    let embedded = encoder
        .encode(&probes, TextKind::Passage, &mut |_, _| {})
        .unwrap();
    let dim = trained.hidden_size();
    let probes = trace
        .probe_embeddings
        .iter()
        .enumerate()
        .map(|(i, expected)| {
            let cos = cosine(&embedded[i * dim..(i + 1) * dim], expected);
            eprintln!("{precision} probe {i}: cosine {cos:.6}");
            cos
        });
    (losses, probes.collect())
}
