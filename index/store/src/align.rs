//! Aligning stale vectors to a new checkpoint's space.
//!
//! An incremental refresh re-encodes some passages with the new checkpoint and
//! keeps the old vectors of the rest. Fine-tuning moves every vector a little,
//! and mostly in the same way, so old and new vectors differ by a shift the
//! new model's queries see: ranked together, stale passages score on another
//! scale than fresh ones. The re-encoded passages give pairs (old, new); a
//! least-squares linear map `new ≈ old·W + b` fitted on them, shrunk toward
//! the identity (no data: keep the vector), carries every stale vector into
//! the new space. The fit is judged on a tenth of the pairs it never saw.

use crate::error::{Error, Result};
use cpack_model::matmul::{gemm, MatMut, MatRef};
use serde::{Deserialize, Serialize};

/// What a refresh does with the vectors of the passages it does not re-encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum StaleVectors {
    /// Copied from the base index as they are.
    #[default]
    Kept,
    /// Mapped into the new model's space by a linear map fitted on the
    /// re-encoded passages' old and new vectors.
    Aligned,
}

impl std::fmt::Display for StaleVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StaleVectors::Kept => "kept",
            StaleVectors::Aligned => "aligned",
        })
    }
}

/// Shrinkage of the map toward the identity, relative to the old vectors'
/// mean variance per dimension: enough to keep a map fitted on fewer pairs
/// than dimensions sane, small beside any real signal.
const RIDGE: f64 = 1e-2;

/// Every `HOLD_OUT`-th pair is kept out of the fit to measure it.
const HOLD_OUT: usize = 10;

/// How well an alignment fitted: mean cosine between the new vectors of the
/// held-out re-encoded passages and their old vectors, kept or mapped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlignmentFit {
    pub fitted_rows: usize,
    pub held_out_rows: usize,
    /// `None` when there were too few pairs to hold any out.
    pub cosine_kept: Option<f64>,
    pub cosine_aligned: Option<f64>,
    /// Fitting and rewriting the stale vectors.
    pub seconds: f64,
}

/// `x ↦ x·W + b` on row vectors, optionally normalised to unit length.
#[derive(Debug, Clone)]
pub struct LinearMap {
    dim: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl LinearMap {
    /// Fits `new ≈ old·W + b` over the pairs of rows of `old` and `new`
    /// (row-major, `dim` wide), W shrunk toward the identity.
    pub fn fit(old: &[f32], new: &[f32], dim: usize, threads: usize) -> Result<Self> {
        if dim == 0 || old.len() != new.len() || !old.len().is_multiple_of(dim) {
            return Err(Error::AlignmentShape {
                old: old.len(),
                new: new.len(),
                dim,
            });
        }
        let rows = old.len() / dim;
        let (old_mean, old_centred) = centre(old, dim);
        let (new_mean, new_centred) = centre(new, dim);
        let gram = transposed_product(&old_centred, &old_centred, rows, dim, threads)?;
        let cross = transposed_product(&old_centred, &new_centred, rows, dim, threads)?;
        let trace: f64 = (0..dim).map(|i| gram[i * dim + i]).sum();
        let ridge = RIDGE * (trace / dim as f64).max(f64::MIN_POSITIVE);
        // (XᵀX + λI)·W = XᵀY + λI: the ridge pulls W toward I, not toward 0.
        let mut lhs = gram;
        let mut rhs = cross;
        for i in 0..dim {
            lhs[i * dim + i] += ridge;
            rhs[i * dim + i] += ridge;
        }
        let weights = solve_spd(lhs, rhs, dim)?;
        let bias = (0..dim)
            .map(|j| {
                let moved: f64 = (0..dim).map(|i| old_mean[i] * weights[i * dim + j]).sum();
                (new_mean[j] - moved) as f32
            })
            .collect();
        Ok(LinearMap {
            dim,
            weights: weights.into_iter().map(|w| w as f32).collect(),
            bias,
        })
    }

    /// The map applied to each row of `rows`.
    pub fn apply(&self, rows: &[f32], normalize: bool, threads: usize) -> Result<Vec<f32>> {
        let n = rows.len() / self.dim;
        let mut out = vec![0f32; n * self.dim];
        let a = MatRef::row_major(rows, n, self.dim)?;
        let w = MatRef::row_major(&self.weights, self.dim, self.dim)?;
        let mut o = MatMut::row_major(&mut out, n, self.dim)?;
        gemm(a, w, &mut o, 1.0, 0.0, threads)?;
        for row in out.chunks_exact_mut(self.dim) {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
            }
            if normalize {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|v| *v /= norm);
                }
            }
        }
        Ok(out)
    }
}

/// Fits the map on all but every [`HOLD_OUT`]-th pair and measures it on those.
pub fn fit_held_out(
    old: &[f32],
    new: &[f32],
    dim: usize,
    normalize: bool,
    threads: usize,
) -> Result<(LinearMap, AlignmentFit)> {
    let rows = old.len().checked_div(dim).unwrap_or(0);
    let held = |r: &usize| rows >= HOLD_OUT && r % HOLD_OUT == HOLD_OUT - 1;
    let pick = |values: &[f32], keep: bool| -> Vec<f32> {
        (0..rows)
            .filter(|r| held(r) != keep)
            .flat_map(|r| values[r * dim..(r + 1) * dim].iter().copied())
            .collect()
    };
    let map = LinearMap::fit(&pick(old, true), &pick(new, true), dim, threads)?;
    let (held_old, held_new) = (pick(old, false), pick(new, false));
    let held_out_rows = held_new.len() / dim.max(1);
    let (cosine_kept, cosine_aligned) = if held_out_rows == 0 {
        (None, None)
    } else {
        let mapped = map.apply(&held_old, normalize, threads)?;
        (
            Some(mean_cosine(&held_old, &held_new, dim)),
            Some(mean_cosine(&mapped, &held_new, dim)),
        )
    };
    let fit = AlignmentFit {
        fitted_rows: rows - held_out_rows,
        held_out_rows,
        cosine_kept,
        cosine_aligned,
        seconds: 0.0,
    };
    Ok((map, fit))
}

/// Column means (f64) and the rows less them.
fn centre(values: &[f32], dim: usize) -> (Vec<f64>, Vec<f32>) {
    let rows = values.len() / dim;
    let mut mean = vec![0f64; dim];
    for row in values.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows.max(1) as f64);
    let centred = values
        .chunks_exact(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| (*v as f64 - m) as f32))
        .collect();
    (mean, centred)
}

/// `aᵀ·b` for two `rows × dim` matrices, as f64.
fn transposed_product(
    a: &[f32],
    b: &[f32],
    rows: usize,
    dim: usize,
    threads: usize,
) -> Result<Vec<f64>> {
    let mut out = vec![0f32; dim * dim];
    let at = MatRef::row_major(a, rows, dim)?.t();
    let bm = MatRef::row_major(b, rows, dim)?;
    let mut o = MatMut::row_major(&mut out, dim, dim)?;
    gemm(at, bm, &mut o, 1.0, 0.0, threads)?;
    Ok(out.into_iter().map(f64::from).collect())
}

/// Solves `lhs·X = rhs` for a symmetric positive definite `lhs` (`dim × dim`)
/// and `dim` right-hand columns, by Cholesky.
fn solve_spd(mut lhs: Vec<f64>, mut rhs: Vec<f64>, dim: usize) -> Result<Vec<f64>> {
    // lhs ← L (lower triangle), lhs = L·Lᵀ.
    for j in 0..dim {
        let mut pivot = lhs[j * dim + j];
        for k in 0..j {
            pivot -= lhs[j * dim + k] * lhs[j * dim + k];
        }
        if !(pivot > 0.0 && pivot.is_finite()) {
            return Err(Error::NotPositiveDefinite);
        }
        let pivot = pivot.sqrt();
        lhs[j * dim + j] = pivot;
        for i in j + 1..dim {
            let mut v = lhs[i * dim + j];
            for k in 0..j {
                v -= lhs[i * dim + k] * lhs[j * dim + k];
            }
            lhs[i * dim + j] = v / pivot;
        }
    }
    // Forward (L·Z = rhs) then backward (Lᵀ·X = Z), all columns at once.
    for i in 0..dim {
        for k in 0..i {
            let l = lhs[i * dim + k];
            for c in 0..dim {
                rhs[i * dim + c] -= l * rhs[k * dim + c];
            }
        }
        let d = lhs[i * dim + i];
        rhs[i * dim..(i + 1) * dim].iter_mut().for_each(|v| *v /= d);
    }
    for i in (0..dim).rev() {
        for k in i + 1..dim {
            let l = lhs[k * dim + i];
            for c in 0..dim {
                rhs[i * dim + c] -= l * rhs[k * dim + c];
            }
        }
        let d = lhs[i * dim + i];
        rhs[i * dim..(i + 1) * dim].iter_mut().for_each(|v| *v /= d);
    }
    Ok(rhs)
}

fn mean_cosine(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let pairs = a.chunks_exact(dim).zip(b.chunks_exact(dim));
    let n = a.len() / dim;
    pairs
        .map(|(x, y)| {
            let dot: f64 = x
                .iter()
                .zip(y)
                .map(|(p, q)| (*p as f64) * (*q as f64))
                .sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
            if nx > 0.0 && ny > 0.0 {
                dot / (nx * ny)
            } else {
                0.0
            }
        })
        .sum::<f64>()
        / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream in [-1, 1).
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn unit_rows(mut v: Vec<f32>, dim: usize) -> Vec<f32> {
        for row in v.chunks_exact_mut(dim) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= n);
        }
        v
    }

    /// Old vectors, and new ones = a drifted copy: old·(I + D) + shift + noise.
    fn drifted(rows: usize, dim: usize) -> (Vec<f32>, Vec<f32>) {
        let old = unit_rows(noise(1, rows * dim), dim);
        let drift: Vec<f32> = noise(2, dim * dim).iter().map(|v| v * 0.15).collect();
        let shift: Vec<f32> = noise(3, dim).iter().map(|v| v * 0.3).collect();
        let jitter = noise(4, rows * dim);
        let mut new = vec![0f32; rows * dim];
        for r in 0..rows {
            for j in 0..dim {
                let mut v = old[r * dim + j] + shift[j] + 0.002 * jitter[r * dim + j];
                for i in 0..dim {
                    v += old[r * dim + i] * drift[i * dim + j];
                }
                new[r * dim + j] = v;
            }
        }
        (old, unit_rows(new, dim))
    }

    #[test]
    fn a_fitted_map_recovers_a_linear_drift_on_rows_it_never_saw() {
        let dim = 16;
        let (old, new) = drifted(400, dim);
        let (_, fit) = fit_held_out(&old, &new, dim, true, 1).unwrap();
        assert_eq!((fit.fitted_rows, fit.held_out_rows), (360, 40));
        let (kept, aligned) = (fit.cosine_kept.unwrap(), fit.cosine_aligned.unwrap());
        assert!(kept < 0.95, "the drift is large enough to matter: {kept}");
        assert!(aligned > 0.99, "the map undoes it: {kept} → {aligned}");
    }

    #[test]
    fn unchanged_vectors_map_to_themselves() {
        let dim = 8;
        let old = unit_rows(noise(5, 50 * dim), dim);
        let map = LinearMap::fit(&old, &old, dim, 2).unwrap();
        let mapped = map.apply(&old, true, 2).unwrap();
        let worst = old
            .iter()
            .zip(&mapped)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "identity drifted by {worst}");
    }

    #[test]
    fn fewer_pairs_than_dimensions_still_give_a_finite_map_near_the_identity() {
        let dim = 32;
        let (old, new) = drifted(5, dim);
        let map = LinearMap::fit(&old, &new, dim, 1).unwrap();
        let probe = unit_rows(noise(9, 3 * dim), dim);
        let mapped = map.apply(&probe, true, 1).unwrap();
        assert!(mapped.iter().all(|v| v.is_finite()));
        assert!(mean_cosine(&probe, &mapped, dim) > 0.5);
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        assert!(LinearMap::fit(&[0.0; 8], &[0.0; 6], 2, 1).is_err());
        assert!(LinearMap::fit(&[0.0; 7], &[0.0; 7], 2, 1).is_err());
    }
}
