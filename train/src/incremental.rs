//! Incremental refresh: between epochs, re-encode only the passages that can
//! become the next round's negatives — the training queries' top-k pool in
//! the index their current round was mined from, plus their positives — and
//! keep every other passage's vector from that index (stale, recorded as such
//! in the new index's manifest). Every `full_refresh_every`-th refresh
//! re-encodes the whole corpus instead.

use crate::data::TrainingSet;
use crate::error::Result;
use cpack_core::Progress;
use cpack_data::dataset::TextTable;
use cpack_encode::{Encoder, TextKind};
use cpack_index::store::OpenIndex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Which passages a refresh re-encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RefreshScope {
    /// The whole corpus, with the new checkpoint (ANCE).
    #[default]
    Full,
    /// The training queries' top-k pool and their positives; the other
    /// passages keep their vectors.
    Incremental,
}

impl std::fmt::Display for RefreshScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefreshScope::Full => "full",
            RefreshScope::Incremental => "incremental",
        })
    }
}

/// Corpus rows worth re-encoding: every row in the top `topk` of a training
/// query of `set` when `encoder` (the model that built `index`) searches
/// `index`, and every positive of those queries. Ascending.
pub fn pool(
    set: &TrainingSet,
    queries: &TextTable,
    encoder: &Encoder,
    index: &mut OpenIndex,
    topk: usize,
    progress: &dyn Progress,
) -> Result<Vec<u32>> {
    let texts = set.query_texts(queries);
    progress.stage("finding the passages to re-encode", texts.len() as u64);
    let vectors = encoder.encode(&texts, TextKind::Query, &mut |n, t| {
        progress.advance(n as u64, t as u64)
    })?;
    let k = topk.min(index.vectors.len());
    let hits = index
        .vectors
        .search(&vectors, k, rayon::current_num_threads())?;
    let mut rows = BTreeSet::new();
    for (q, example) in set.examples.iter().enumerate() {
        rows.extend(hits.of(q).map(|(row, _)| row as u32));
        rows.extend(example.positives.iter().map(|&row| row as u32));
    }
    Ok(rows.into_iter().collect())
}
