//! cpack-index: everything between a text and a vector on disk.
//!
//! It owns the encoder (Hugging Face tokenizer + a candle BERT + pooling,
//! behind the [`EncoderBackend`] trait), BEIR datasets, the persistent index
//! under `.cpack/index/` (memory-mapped embeddings, a [`VectorIndex`], and an
//! atomically written manifest), and the retrieval metrics used by `cpack eval`.

pub mod candle_backend;
pub mod dataset;
pub mod encoder;
pub mod error;
pub mod fsutil;
pub mod model;
pub mod tokenize;

pub use encoder::{Encoder, EncoderBackend, EncoderSettings, TextKind, TokenBatch};
pub use error::{Error, Result};
