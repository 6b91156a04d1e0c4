//! Retrieval quality of an open index on one qrels split: encode the judged
//! queries, search, optionally rerank the top hits with a cross-encoder,
//! score (used by `cpack eval` and after each training epoch).

use crate::error::Result;
use crate::store::OpenIndex;
use cpack_core::progress::Progress;
use cpack_data::dataset::{Qrels, TextTable};
use cpack_data::metrics::{self, RetrievalMetrics};
use cpack_encode::encoder::{Encoder, TextKind};
use cpack_encode::CrossEncoder;
use std::collections::HashMap;
use std::time::Instant;

/// Depth of the ranking each query gets (Recall@100 needs 100).
pub const DEPTH: usize = 100;

pub struct Evaluation {
    pub metrics: RetrievalMetrics,
    pub encode_seconds: f64,
    pub search_seconds: f64,
    /// Scoring the reranked pairs (0 without a reranker).
    pub rerank_seconds: f64,
}

/// A cross-encoder reordering each query's first `depth` hits; the passages'
/// texts come from `corpus`.
pub struct Rerank<'a> {
    pub model: &'a CrossEncoder,
    pub corpus: &'a TextTable,
    pub depth: usize,
}

/// Metrics of `index` for the queries judged in `qrels`.
pub fn evaluate_index(
    encoder: &Encoder,
    index: &mut OpenIndex,
    queries: &TextTable,
    qrels: &Qrels,
    rerank: Option<&Rerank>,
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
    let depth = DEPTH.max(rerank.map_or(0, |r| r.depth));
    let hits = index
        .vectors
        .search(&vectors, depth.min(index.ids.len()), threads)?;
    let search_seconds = started.elapsed().as_secs_f64();
    let mut rankings: Vec<Vec<&str>> = (0..query_ids.len())
        .map(|q| hits.of(q).map(|(row, _)| index.ids[row].as_str()).collect())
        .collect();
    let started = Instant::now();
    if let Some(rerank) = rerank {
        reorder(rerank, &texts, &mut rankings, progress)?;
    }
    let rerank_seconds = if rerank.is_some() {
        started.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let runs = query_ids.iter().zip(rankings).map(|(id, ranking)| {
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
        rerank_seconds,
    })
}

/// Each ranking with its first `rerank.depth` ids in the reranker's order.
fn reorder(
    rerank: &Rerank,
    queries: &[&str],
    rankings: &mut [Vec<&str>],
    progress: &dyn Progress,
) -> Result<()> {
    let corpus = rerank.corpus;
    let candidates: Vec<Vec<String>> = rankings
        .iter()
        .map(|ranking| {
            let top = &ranking[..rerank.depth.min(ranking.len())];
            let text = |id: &&str| {
                corpus
                    .position(id)
                    .map(|i| corpus.full_text(i))
                    .unwrap_or_default()
            };
            top.iter().map(text).collect()
        })
        .collect();
    let candidates: Vec<Vec<&str>> = candidates
        .iter()
        .map(|list| list.iter().map(String::as_str).collect())
        .collect();
    let pairs = candidates.iter().map(Vec::len).sum::<usize>();
    progress.stage("reranking", pairs as u64);
    let orders = rerank.model.rank(queries, &candidates, &mut |n, t| {
        progress.advance(n as u64, t as u64)
    })?;
    for (ranking, order) in rankings.iter_mut().zip(orders) {
        let top: Vec<&str> = order.iter().map(|&(i, _)| ranking[i]).collect();
        ranking[..top.len()].copy_from_slice(&top);
    }
    Ok(())
}
