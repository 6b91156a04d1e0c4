//! Retrieval metrics as C-MTEB / BEIR report them (pytrec_eval semantics):
//! nDCG@k with linear graded gains, MRR@k, Recall@k.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Mean metrics over the judged queries of one split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetrievalMetrics {
    pub queries: usize,
    pub ndcg_at_10: f64,
    pub mrr_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
}

/// nDCG@k of one ranking; `relevance` maps doc id → graded score (≤ 0 counts as irrelevant).
pub fn ndcg_at(ranking: &[&str], relevance: &HashMap<&str, i32>, k: usize) -> f64 {
    let gain = |rel: i32| rel.max(0) as f64;
    let discount = |rank: usize| 1.0 / ((rank + 2) as f64).log2();
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(r, id)| gain(relevance.get(id).copied().unwrap_or(0)) * discount(r))
        .sum();
    let mut ideal: Vec<i32> = relevance.values().copied().filter(|&r| r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(r, &rel)| gain(rel) * discount(r))
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// Reciprocal rank of the first relevant document within the top `k`.
pub fn mrr_at(ranking: &[&str], relevance: &HashMap<&str, i32>, k: usize) -> f64 {
    ranking
        .iter()
        .take(k)
        .position(|id| relevance.get(id).is_some_and(|&r| r > 0))
        .map_or(0.0, |r| 1.0 / (r + 1) as f64)
}

/// Share of the relevant documents found within the top `k`.
pub fn recall_at(ranking: &[&str], relevance: &HashMap<&str, i32>, k: usize) -> f64 {
    let relevant = relevance.values().filter(|&&r| r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranking
        .iter()
        .take(k)
        .filter(|id| relevance.get(*id).is_some_and(|&r| r > 0))
        .count();
    found as f64 / relevant as f64
}

/// Averages the metrics over queries; each item is (ranking, judgements).
pub fn evaluate<'a>(
    runs: impl IntoIterator<Item = (Vec<&'a str>, HashMap<&'a str, i32>)>,
) -> RetrievalMetrics {
    let mut sums = [0.0f64; 4];
    let mut n = 0;
    for (ranking, rel) in runs {
        sums[0] += ndcg_at(&ranking, &rel, 10);
        sums[1] += mrr_at(&ranking, &rel, 10);
        sums[2] += recall_at(&ranking, &rel, 10);
        sums[3] += recall_at(&ranking, &rel, 100);
        n += 1;
    }
    let mean = |s: f64| if n == 0 { 0.0 } else { s / n as f64 };
    RetrievalMetrics {
        queries: n,
        ndcg_at_10: mean(sums[0]),
        mrr_at_10: mean(sums[1]),
        recall_at_10: mean(sums[2]),
        recall_at_100: mean(sums[3]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(pairs: &[(&'static str, i32)]) -> HashMap<&'static str, i32> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn ndcg_matches_hand_computation() {
        // Relevant at ranks 2 (gain 2) and 3 (gain 1); ideal order puts 2 then 1 first.
        let r = rel(&[("b", 2), ("c", 1)]);
        let got = ndcg_at(&["a", "b", "c"], &r, 10);
        let dcg = 2.0 / 3f64.log2() + 1.0 / 4f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!((got - dcg / idcg).abs() < 1e-12);
        assert_eq!(ndcg_at(&["b", "c"], &r, 10), 1.0);
        assert_eq!(ndcg_at(&["x"], &r, 10), 0.0);
    }

    #[test]
    fn mrr_and_recall_respect_cutoffs() {
        let r = rel(&[("d", 1), ("e", 1), ("z", 0)]);
        let ranking = ["z", "a", "d", "b", "e"];
        assert_eq!(mrr_at(&ranking, &r, 10), 1.0 / 3.0);
        assert_eq!(mrr_at(&ranking, &r, 2), 0.0);
        assert_eq!(recall_at(&ranking, &r, 3), 0.5);
        assert_eq!(recall_at(&ranking, &r, 5), 1.0);
    }

    #[test]
    fn evaluate_averages_over_queries() {
        let m = evaluate(vec![
            (vec!["a"], rel(&[("a", 1)])),
            (vec!["x"], rel(&[("a", 1)])),
        ]);
        assert_eq!(m.queries, 2);
        assert_eq!(m.ndcg_at_10, 0.5);
        assert_eq!(m.mrr_at_10, 0.5);
    }
}
