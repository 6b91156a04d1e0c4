//! Brute-force inner-product search over the memory-mapped embeddings.
//! Exact by construction: the reference the FAISS indexes are checked against.

use super::{Hits, VectorIndex};
use crate::embeddings::EmbeddingMatrix;
use crate::error::Result;
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;

pub struct ExactIndex {
    embeddings: Arc<EmbeddingMatrix>,
    /// Decoded once: f16 files are widened here, f32 files copied out of the map.
    rows: Vec<f32>,
}

impl ExactIndex {
    pub fn new(embeddings: Arc<EmbeddingMatrix>) -> Self {
        let rows = embeddings.to_f32();
        ExactIndex { embeddings, rows }
    }
}

/// Indices of the `k` largest scores, best first; ties go to the lower row
/// so results do not depend on thread scheduling.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let better = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut all: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    let k = k.min(all.len());
    if k == 0 {
        return Vec::new();
    }
    if k < all.len() {
        all.select_nth_unstable_by(k - 1, better);
        all.truncate(k);
    }
    all.sort_by(better);
    all
}

impl VectorIndex for ExactIndex {
    fn len(&self) -> usize {
        self.embeddings.rows()
    }

    fn search(&mut self, queries: &[f32], k: usize, threads: usize) -> Result<Hits> {
        let dim = self.embeddings.dim();
        let best_of = |q: &[f32]| {
            let scores: Vec<f32> = self
                .rows
                .chunks_exact(dim)
                .map(|row| row.iter().zip(q).map(|(a, b)| a * b).sum())
                .collect();
            top_k(&scores, k)
        };
        let per_query: Vec<Vec<(usize, f32)>> = if threads > 1 {
            queries.par_chunks(dim).map(best_of).collect()
        } else {
            queries.chunks(dim).map(best_of).collect()
        };
        let mut hits = Hits {
            k,
            scores: vec![f32::NEG_INFINITY; per_query.len() * k],
            rows: vec![-1; per_query.len() * k],
        };
        for (q, best) in per_query.iter().enumerate() {
            for (j, &(row, score)) in best.iter().enumerate() {
                hits.rows[q * k + j] = row as i64;
                hits.scores[q * k + j] = score;
            }
        }
        Ok(hits)
    }

    fn save(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn top_k_orders_best_first_and_breaks_ties_by_row() {
        let got = top_k(&[0.1, 0.9, 0.5, 0.9, -1.0], 3);
        assert_eq!(got, vec![(1, 0.9), (3, 0.9), (2, 0.5)]);
        assert_eq!(top_k(&[0.3], 5), vec![(0, 0.3)]);
        assert!(top_k(&[0.3], 0).is_empty());
    }
}
