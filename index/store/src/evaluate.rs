//! Retrieval quality of an open index on one qrels split: encode the judged
//! queries, search, score (used by `cpack eval` and after each training epoch).

use crate::error::Result;
use crate::store::OpenIndex;
use cpack_core::progress::Progress;
use cpack_data::dataset::{Qrels, TextTable};
use cpack_data::metrics::{self, RetrievalMetrics};
use cpack_encode::encoder::{Encoder, TextKind};
use std::collections::HashMap;
use std::time::Instant;

/// Depth of the ranking each query gets (Recall@100 needs 100).
pub const DEPTH: usize = 100;

pub struct Evaluation {
    pub metrics: RetrievalMetrics,
    pub encode_seconds: f64,
    pub search_seconds: f64,
}

/// Metrics of `index` for the queries judged in `qrels`.
pub fn evaluate_index(
    encoder: &Encoder,
    index: &mut OpenIndex,
    queries: &TextTable,
    qrels: &Qrels,
    progress: &dyn Progress,
) -> Result<Evaluation> {
    let query_ids: Vec<&String> = qrels.by_query.keys().collect();
    let texts: Vec<&str> = query_ids
        .iter()
        .map(|id| queries.texts[queries.position(id).expect("qrels validated")].as_str())
        .collect();
    progress.stage("encoding queries", texts.len() as u64);
    let started = Instant::now();
    let vectors = encoder.encode(&texts, TextKind::Query, &mut |n, t| {
        progress.advance(n as u64, t as u64)
    })?;
    let encode_seconds = started.elapsed().as_secs_f64();
    progress.stage("searching", 0);
    let started = Instant::now();
    let threads = rayon::current_num_threads();
    let hits = index
        .vectors
        .search(&vectors, DEPTH.min(index.ids.len()), threads)?;
    let search_seconds = started.elapsed().as_secs_f64();
    let runs = query_ids.iter().enumerate().map(|(q, id)| {
        let ranking: Vec<&str> = hits.of(q).map(|(row, _)| index.ids[row].as_str()).collect();
        let relevance: HashMap<&str, i32> = qrels.by_query[*id]
            .iter()
            .map(|(d, s)| (d.as_str(), *s))
            .collect();
        (ranking, relevance)
    });
    Ok(Evaluation {
        metrics: metrics::evaluate(runs),
        encode_seconds,
        search_seconds,
    })
}
