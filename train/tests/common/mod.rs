//! One small batch and a dropout-on trainer over a tiny random BERT, shared
//! by the tests that check gradients under dropout.

use cpack_encode::ComputeDevice;
use cpack_encode::{EncoderSettings, PairTokenizer};
use cpack_model::{Kernels, ModelDir, Pooling};
use cpack_train::model::TrainableEncoder;
use cpack_train::{LossKind, TrainSettings, Trainer};
use std::path::Path;

pub const QUERIES: [&str; 3] = ["who pays the claim", "what is a premium", "renters cover"];
pub const PASSAGES: [&str; 6] = [
    "the insurer pays the claim after the adjuster looks at it",
    "a premium is the price of the policy",
    "renters insurance covers belongings",
    "car insurance follows the car",
    "an annuity pays income for life",
    "term life pays a benefit",
];

/// Writes a tiny model over the batch's words into `dir`.
pub fn tiny_model(dir: &Path) {
    let texts: Vec<&str> = QUERIES.iter().chain(&PASSAGES).copied().collect();
    cpack_model::test_model::write_tiny_model(dir, &texts, 5).unwrap();
}

/// A trainer for the batch with dropout on, running `kernels`.
pub fn trainer(model: &Path, kernels: Kernels, loss: LossKind, mini_batch: usize) -> Trainer {
    let model = ModelDir::open(model).unwrap();
    let settings = EncoderSettings {
        query_max_len: 16,
        passage_max_len: 24,
        ..EncoderSettings::declared_by(&model)
    };
    let recipe = TrainSettings {
        batch_size: QUERIES.len(),
        group_size: PASSAGES.len() / QUERIES.len(),
        temperature: 0.05,
        loss,
        dropout: true,
        mini_batch,
        ..TrainSettings::default()
    };
    let encoder = TrainableEncoder::load(&model, Pooling::Mean, true, ComputeDevice::Cpu)
        .unwrap()
        .with_kernels(kernels);
    let tokenizer = PairTokenizer::load(&model, &settings).unwrap();
    Trainer::new(encoder, tokenizer, recipe).unwrap()
}
