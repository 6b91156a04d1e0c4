//! cpack-index: the persistent vector index under `.cpack/index/`.
//!
//! [`store`] keeps generations of a corpus's vectors: each one immutable once
//! published, with a manifest that records what made it (the
//! [`cpack_encode::EmbeddingStamp`], the corpus fingerprint, the index kind)
//! and the size and checksum of every file; builds resume after a kill and
//! are swapped in atomically. A build encodes through the small
//! [`PassageEncoder`] trait. [`embeddings`] memory-maps the stored vectors,
//! [`vector`] searches them ([`vector::VectorIndex`]: exact brute force, or
//! FAISS with feature `faiss`, on the GPU with feature `cuda`), [`align`]
//! maps stale vectors into a new checkpoint's space, and [`evaluate`]
//! scores an open index on a qrels split. [`IndexRecipe`] is what a user
//! sets (`[index]`, the flags of `cpack index build`).

pub mod align;
pub mod embeddings;
pub mod error;
pub mod evaluate;
mod generation;
pub mod recipe;
pub mod store;
pub mod vector;

pub use error::{Error, Result};
pub use recipe::IndexRecipe;
pub use store::{
    BuildOptions, BuildOutcome, BuildPlan, Generation, IndexDir, Manifest, OpenIndex, PartialPlan,
    PassageEncoder, Provenance,
};
