//! Gradient caching (`mini_batch`) gives the gradients of the whole batch:
//! on a tiny random BERT with mini-batches that do and do not divide the
//! batch, with both losses, and on the real MiniLM with the PyTorch trace's
//! batch.

use cpack_encode::ComputeDevice;
use cpack_encode::{EncoderSettings, PairTokenizer};
use cpack_model::{ModelDir, Pooling};
use cpack_train::loss::{DistillKind, GroupScores};
use cpack_train::model::TrainableEncoder;
use cpack_train::optim::Gradients;
use cpack_train::{LossKind, TrainSettings, Trainer};
use std::path::{Path, PathBuf};

fn trainer(model: &Path, mini_batch: usize, loss: LossKind, group_size: usize) -> Trainer {
    let recipe = TrainSettings {
        batch_size: 4,
        group_size,
        temperature: 0.05,
        loss,
        dropout: false,
        mini_batch,
        ..TrainSettings::default()
    };
    trainer_with(model, recipe)
}

fn trainer_with(model: &Path, recipe: TrainSettings) -> Trainer {
    let model = ModelDir::open(model).unwrap();
    let settings = EncoderSettings {
        query_max_len: 24,
        passage_max_len: 48,
        ..EncoderSettings::declared_by(&model)
    };
    let encoder = TrainableEncoder::load(&model, Pooling::Mean, true, ComputeDevice::Cpu).unwrap();
    let tokenizer = PairTokenizer::load(&model, &settings).unwrap();
    Trainer::new(encoder, tokenizer, recipe).unwrap()
}

/// The largest relative difference ‖a − b‖ / ‖b‖ over the variables, matched
/// by name (each trainer has variables of its own).
fn worst_difference(ta: &Trainer, a: &Gradients, tb: &Trainer, b: &Gradients) -> f64 {
    let mut worst = 0f64;
    for ((name, va), (name_b, vb)) in ta.encoder().vars().into_iter().zip(tb.encoder().vars()) {
        assert_eq!(name, name_b);
        let (Some(x), Some(y)) = (a.get(&va), b.get(&vb)) else {
            assert_eq!(a.get(&va).is_some(), b.get(&vb).is_some(), "{name}");
            continue;
        };
        let norm = |t: &candle_core::Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let base = norm(y).sqrt();
        // Key biases shift every score of a query row equally, which softmax
        // ignores: their true gradient is 0 and both sides hold rounding noise.
        if !name.ends_with("attention.self.key.bias") {
            worst = worst.max(norm(&(x - y).unwrap()).sqrt() / base.max(1e-30));
        }
    }
    worst
}

fn check(model: &Path, queries: &[&str], passages: &[&str], limit: f64) {
    let group_size = passages.len() / queries.len();
    for loss in [LossKind::InfoNce, LossKind::Gte] {
        let whole = trainer(model, 0, loss, group_size);
        let reference = whole.pass(queries, passages, None).unwrap();
        for mini in [1, 3, 8] {
            let cached = trainer(model, mini, loss, group_size);
            let pass = cached.pass(queries, passages, None).unwrap();
            assert!(
                (pass.loss - reference.loss).abs() <= 1e-5 * reference.loss.abs(),
                "{loss}, mini-batch {mini}: loss {} vs {}",
                pass.loss,
                reference.loss
            );
            let worst = worst_difference(
                &cached,
                pass.grads.as_ref().unwrap(),
                &whole,
                reference.grads.as_ref().unwrap(),
            );
            assert!(
                worst <= limit,
                "{loss}, mini-batch {mini}: gradients differ by {worst:.2e}"
            );
        }
    }
}

const QUERIES: [&str; 4] = [
    "who pays the claim",
    "what is a premium",
    "renters cover",
    "car insurance",
];
const PASSAGES: [&str; 8] = [
    "the insurer pays the claim",
    "a premium is the price",
    "renters insurance covers belongings",
    "car insurance follows the car",
    "an annuity pays income",
    "term life pays a benefit",
    "medicare covers visits",
    "disability replaces income",
];

fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<&str> = QUERIES.iter().chain(&PASSAGES).copied().collect();
    cpack_model::test_model::write_tiny_model(dir.path(), &texts, 5).unwrap();
    dir
}

#[test]
fn cached_gradients_equal_the_whole_batch_on_a_tiny_model() {
    let dir = tiny_model();
    check(dir.path(), &QUERIES, &PASSAGES, 1e-5);
}

/// The distillation term rides on the cached pass: the same loss and
/// gradients as the whole batch, and a loss the teacher changes.
#[test]
fn cached_gradients_carry_the_distillation_term() {
    let dir = tiny_model();
    // Groups of 2; the last query's negative was never scored.
    let teacher = GroupScores {
        scores: vec![4.0, -1.0, 2.5, 3.0, 6.0, 0.5, 1.0, f32::NAN],
        group_size: 2,
    };
    for kind in [DistillKind::Kl, DistillKind::MarginMse] {
        let recipe = |mini_batch| TrainSettings {
            batch_size: 4,
            group_size: 2,
            temperature: 0.05,
            dropout: false,
            mini_batch,
            distill: Some(kind),
            distill_weight: 0.5,
            ..TrainSettings::default()
        };
        let whole = trainer_with(dir.path(), recipe(0));
        let reference = whole
            .pass_with(&QUERIES, &PASSAGES, Some(&teacher), None)
            .unwrap();
        let untaught = whole.pass(&QUERIES, &PASSAGES, None).unwrap();
        assert!(
            reference.loss > untaught.loss + 1e-3,
            "{kind}: the term adds to InfoNCE ({} vs {})",
            reference.loss,
            untaught.loss
        );
        let cached = trainer_with(dir.path(), recipe(3));
        let pass = cached
            .pass_with(&QUERIES, &PASSAGES, Some(&teacher), None)
            .unwrap();
        assert!((pass.loss - reference.loss).abs() <= 1e-5 * reference.loss.abs());
        let worst = worst_difference(
            &cached,
            pass.grads.as_ref().unwrap(),
            &whole,
            reference.grads.as_ref().unwrap(),
        );
        assert!(worst <= 1e-5, "{kind}: gradients differ by {worst:.2e}");
    }
}

#[test]
fn cached_gradients_equal_the_whole_batch_on_minilm() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join(".cache/models/all-MiniLM-L6-v2");
    assert!(
        model.exists(),
        "{} is missing: run scripts/setup.sh",
        model.display()
    );
    let trace_path = root.join("../shared/fixtures/train-trace/minilm-infonce-adamw.json");
    assert!(trace_path.exists(), "{} is missing", trace_path.display());
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(trace_path).unwrap()).unwrap();
    let texts = |key: &str| -> Vec<String> { serde_json::from_value(trace[key].clone()).unwrap() };
    let (queries, passages) = (texts("queries"), texts("passages"));
    let q: Vec<&str> = queries.iter().map(String::as_str).collect();
    let p: Vec<&str> = passages.iter().map(String::as_str).collect();
    check(&model, &q, &p, 1e-5);
}
