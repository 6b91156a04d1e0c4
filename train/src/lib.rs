//! cpack-train: fine-tunes the encoder on mined hard negatives.
//!
//! [`model`] builds the index crate's BERT over a `VarMap` so every weight
//! trains, its products in f32 or bf16 ([`precision`]); [`data`] turns a mining round into per-epoch batches (one
//! positive + `group_size − 1` negatives per query, no clashing texts);
//! [`loss`] is InfoNCE over in-batch + hard negatives or GTE's variant;
//! [`frozen`] holds the base index's passage vectors for query-side
//! training (`--freeze-passages`); [`incremental`] picks the passages an
//! incremental refresh re-encodes (`--refresh incremental`); [`optim`] is AdamW with PyTorch semantics and the linear warm-up/decay
//! schedule; [`trainer`] runs steps and epochs — of the embedder, or of a
//! reranker ([`cross`]: the cross-encoder and its group loss); [`checkpoint`] writes
//! Hugging Face folders atomically, with the state `--resume` needs. The
//! ANCE loop around it (re-encode, re-index, re-mine) is `cpack-run`.

pub mod checkpoint;
pub mod cluster;
pub mod cross;
pub mod data;
pub mod error;
pub mod frozen;
pub mod incremental;
pub mod loss;
pub mod memory;
pub mod model;
pub mod optim;
pub mod precision;
pub mod steps;
pub mod trainer;
mod update;

pub use error::{Error, Result};
pub use loss::LossKind;
pub use precision::TrainPrecision;
pub use trainer::{TrainSettings, Trainer};
