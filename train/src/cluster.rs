//! Topic clusters of the training queries for `--batching clustered`
//! (TAS-Balanced, Hofstätter et al. 2021): k-means over the current model's
//! query embeddings, so a batch drawn from one cluster holds topical
//! in-batch negatives.
//!
//! Lloyd's algorithm, seeded: the first centroid is a seeded random query,
//! each next one the query farthest from those chosen (a deterministic
//! k-means++ variant), then assignment and update rounds until nothing moves.
//! A few thousand queries take milliseconds; every step is sequential, so
//! the clusters are the same bits whatever the threads.

use cpack_miner::select::Rng;

/// Rounds of assignment and update at most.
const MAX_ROUNDS: usize = 50;

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The cluster (0..k) of each of the `vectors.len() / dim` rows, `k` clamped
/// to the number of rows.
pub fn kmeans(vectors: &[f32], dim: usize, k: usize, seed: u64) -> Vec<u32> {
    let rows = vectors.len().checked_div(dim).unwrap_or(0);
    let k = k.clamp(1, rows.max(1));
    if rows == 0 {
        return Vec::new();
    }
    let row = |i: usize| &vectors[i * dim..(i + 1) * dim];
    let mut rng = Rng::for_query(seed, "kmeans");
    let mut centroids: Vec<f32> = row(rng.below(rows)).to_vec();
    let mut nearest: Vec<f32> = (0..rows)
        .map(|i| squared_distance(row(i), &centroids[..dim]))
        .collect();
    while centroids.len() < k * dim {
        let far = (0..rows)
            .max_by(|&a, &b| nearest[a].total_cmp(&nearest[b]).then(b.cmp(&a)))
            .expect("rows > 0");
        centroids.extend_from_slice(row(far));
        let c = &centroids[centroids.len() - dim..];
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(squared_distance(row(i), c));
        }
    }
    let mut assignment = vec![u32::MAX; rows];
    for _ in 0..MAX_ROUNDS {
        let mut moved = false;
        for (i, slot) in assignment.iter_mut().enumerate() {
            let best = (0..k)
                .min_by(|&a, &b| {
                    let da = squared_distance(row(i), &centroids[a * dim..(a + 1) * dim]);
                    let db = squared_distance(row(i), &centroids[b * dim..(b + 1) * dim]);
                    da.total_cmp(&db).then(a.cmp(&b))
                })
                .expect("k ≥ 1") as u32;
            moved |= *slot != best;
            *slot = best;
        }
        if !moved {
            break;
        }
        let mut sums = vec![0f32; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &c) in assignment.iter().enumerate() {
            counts[c as usize] += 1;
            for (s, v) in sums[c as usize * dim..(c as usize + 1) * dim]
                .iter_mut()
                .zip(row(i))
            {
                *s += v;
            }
        }
        for c in 0..k {
            // An emptied cluster keeps its centroid.
            if counts[c] > 0 {
                for (m, s) in centroids[c * dim..(c + 1) * dim]
                    .iter_mut()
                    .zip(&sums[c * dim..(c + 1) * dim])
                {
                    *m = s / counts[c] as f32;
                }
            }
        }
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_well_separated_blobs_and_is_seeded() {
        // Three blobs of 20 points around (0,0), (10,0), (0,10).
        let mut rng = Rng::for_query(1, "blobs");
        let mut points = Vec::new();
        for (cx, cy) in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)] {
            for _ in 0..20 {
                let jitter = |r: &mut Rng| (r.below(1000) as f32 / 1000.0) - 0.5;
                points.push(cx + jitter(&mut rng));
                points.push(cy + jitter(&mut rng));
            }
        }
        let labels = kmeans(&points, 2, 3, 7);
        assert_eq!(labels.len(), 60);
        for blob in labels.chunks(20) {
            assert!(blob.iter().all(|&l| l == blob[0]), "{labels:?}");
        }
        let distinct: std::collections::HashSet<u32> = labels.iter().copied().collect();
        assert_eq!(distinct.len(), 3);
        assert_eq!(labels, kmeans(&points, 2, 3, 7));
        assert_eq!(
            kmeans(&points, 2, 100, 7).len(),
            60,
            "k is clamped to the rows"
        );
        assert!(kmeans(&[], 2, 3, 7).is_empty());
    }
}
