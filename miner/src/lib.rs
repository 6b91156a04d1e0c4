//! cpack-miner: ANCE-style hard negatives, mined from the persistent index
//! and kept in sled.
//!
//! For every query of a training split it searches the current index,
//! drops the top raw ranks (false-negative guard), the positives, the
//! query's own text and copies of a positive, applies the optional score
//! filters, samples the negatives ([`select`]), and stores them per mining
//! round ([`store`]). Rounds resume after a crash at chunk granularity and
//! are deterministic for a given seed. [`export`] writes FlagEmbedding JSONL,
//! triplets or ids, [`import`] reads FlagEmbedding JSONL back in, and
//! [`stats`] summarises a round. [`MiningRecipe`] is what a user sets about
//! a round (flags, `[mine]`, the mining keys of `[train]`).

pub mod codec;
pub mod error;
pub mod export;
pub mod import;
pub mod mine;
pub mod params;
pub mod recipe;
pub mod select;
pub mod stats;
pub mod store;
pub mod teacher;

pub use error::{Error, Result};
pub use mine::{mine, MineOptions, MineOutcome, MiningInput};
pub use params::{FilterPreset, MiningParams, OnShort, Sampling, SamplingKind, SimansWeights};
pub use recipe::MiningRecipe;
pub use store::NegativeStore;
