//! cpack-index: everything between a text and a vector on disk.
//!
//! It owns the encoder (Hugging Face tokenizer + a candle BERT + pooling,
//! behind the [`EncoderBackend`] trait), BEIR datasets, the persistent index
//! under `.cpack/index/` ([`store`]: memory-mapped embeddings, a
//! [`vector::VectorIndex`] and an atomically written manifest), and the
//! retrieval metrics used by `cpack eval`.

pub mod align;
pub mod candle_backend;
pub mod dataset;
pub mod device;
pub mod embeddings;
pub mod encoder;
pub mod error;
pub mod evaluate;
pub mod fsutil;
pub mod matmul;
pub mod metrics;
pub mod model;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_backend;
pub mod progress;
pub mod store;
pub mod tokenize;
pub mod vector;

pub use device::ComputeDevice;
pub use encoder::{
    BackendKind, BackendLoader, Encoder, EncoderBackend, EncoderSettings, PairTokenizer, TextKind,
    TokenBatch, WeightPrecision,
};
pub use error::{Error, Result};
pub use progress::{Progress, Silent};
#[cfg(any(test, feature = "test-model"))]
pub mod test_model;
