//! cpack-model: the transformer — a BERT-family encoder's weights, config,
//! tokenizer and kernels, with the heads over it as small types.
//!
//! - [`ModelDir`] is a validated Hugging Face / sentence-transformers folder
//!   (config, safetensors weights, `tokenizer.json`, the module files that
//!   declare pooling and normalisation), and its fingerprint.
//! - [`BertModel`] is the forward pass, loaded through a candle `VarBuilder`
//!   so the same code runs over memory-mapped weights (inference) and over a
//!   `VarMap` (training); [`Mode`] picks kernels without a backward
//!   (inference) or differentiable ones (training).
//!   BERT and (XLM-)RoBERTa ([`Family`]) share it: they differ in how
//!   positions are numbered and whether token types matter.
//! - [`EmbeddingHead`] pools token states into one vector ([`Pooling`]);
//!   [`ClassifierHead`] scores a sentence pair (a cross-encoder's head,
//!   named as the checkpoint's [`ClassifierLayout`] says).
//! - [`TextTokenizer`] truncates with the model's own `tokenizer.json`
//!   (texts, and pairs through its pair template);
//!   [`TokenBatch`] is the padded input.
//! - [`matmul`] is the one matrix product every CPU kernel of cpack runs on;
//!   [`ComputeDevice`] is where tensors live (CPU or a CUDA GPU).
//! - [`test_model`] (feature `test-model`) writes tiny random-weight BERT
//!   folders for tests.

mod attention;
mod batch;
mod bert;
mod config;
mod dense;
pub mod device;
mod dropout;
mod embedding_sum;
pub mod error;
mod folder;
mod fused;
mod gelu;
mod head;
mod kernel;
mod math;
pub mod matmul;
mod portable;
mod reduce;
#[cfg(any(test, feature = "test-model"))]
pub mod test_model;
mod tokenize;

pub use batch::TokenBatch;
pub use bert::{BertModel, Kernels, Mode};
pub use config::{Activation, BertConfig, Family};
pub use device::ComputeDevice;
pub use dropout::Dropout;
pub use error::{Error, Result};
pub use folder::ModelDir;
pub use head::{ClassifierHead, ClassifierLayout, ClassifierNames, EmbeddingHead, Pooling};
pub use tokenize::TextTokenizer;

/// Largest absolute element-wise difference of two tensors (test helper).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
