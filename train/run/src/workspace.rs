//! What a run reads and writes outside its own folder: one workspace per
//! task (one for a run of a lone dataset).

use cpack_data::dataset::{Dataset, Qrels};
use cpack_encode::{BackendLoader, ComputeDevice};
use cpack_index::embeddings::Precision;
use cpack_index::store::IndexDir;
use cpack_index::vector::IndexKind;
use cpack_miner::teacher::Teacher;
use cpack_miner::NegativeStore;

/// The workspace a run reads and mines into.
pub struct Workspace<'a> {
    /// The task this workspace is, by name; empty for a lone dataset.
    pub task: String,
    pub dataset: &'a Dataset,
    /// Judgements of every split (a query's positives are never its negatives).
    pub all_qrels: &'a [Qrels],
    pub store: &'a NegativeStore,
    /// The workspace's own index (the base model's corpus encoding).
    pub base_index: &'a IndexDir,
    pub index_kind: IndexKind,
    pub precision: Precision,
    /// The encoder runtime every phase encodes with (a backend per checkpoint).
    pub backend: &'a dyn BackendLoader,
    /// Workers feeding the backend.
    pub threads: usize,
    /// Where the trainer keeps the weights and runs its steps.
    pub device: ComputeDevice,
    /// The cross-encoder that scores (and may denoise) the rounds the run mines.
    pub teacher: Option<Teacher<'a>>,
}
