//! cpack-encode: texts in, vectors out.
//!
//! [`Encoder`] tokenizes texts (queries get the instruction, passages never),
//! sorts them by length, cuts padded batches and hands them to an
//! [`EncoderBackend`]: a runtime that turns a [`TokenBatch`] into pooled
//! embeddings. [`BackendLoader`] opens a backend for a model folder (the
//! training loop opens one per checkpoint). Two backends:
//!
//! - [`candle_backend`]: cpack's own BERT ([`cpack_model`]) on the CPU or a
//!   CUDA GPU, always built;
//! - [`ort_backend`] (feature `ort`): ONNX Runtime, loaded at run time, on
//!   cpack's own ONNX export of the model ([`onnx`], feature `onnx`).
//!
//! [`CrossEncoder`] is the other model kind: a reranker scoring (query,
//! passage) pairs with a classification head, batched the same way
//! (`batching`).
//!
//! [`EmbeddingStamp`] is what an index records about the vectors in it;
//! [`ModelRecipe`] and [`EncodeRecipe`] are what a user sets (`[model]`,
//! `[encode]`, their flags), [`Runtime`] the backend they resolve to.

mod batching;
pub mod candle_backend;
pub mod encoder;
pub mod error;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_backend;
pub mod recipe;
pub mod rerank;
pub mod stamp;

pub use cpack_model::{ComputeDevice, TokenBatch};
pub use encoder::{
    BackendKind, BackendLoader, Encoder, EncoderBackend, EncoderSettings, PairTokenizer, TextKind,
    WeightPrecision,
};
pub use error::{Error, Result};
pub use recipe::{EncodeRecipe, ModelRecipe, Runtime};
pub use rerank::{CrossEncoder, RerankRecipe, RerankSettings};
pub use stamp::EmbeddingStamp;
