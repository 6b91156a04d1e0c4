//! Sums over rows — the backward of every broadcast in the encoder (dense
//! biases, layer-norm weights, position embeddings).
//!
//! candle's `sum(0)` walks a reduction over the outer dimension one element
//! at a time with an index division each; these are row-by-row vector adds.
//! Rows are cut into fixed blocks whose partial sums are added in block
//! order, so the result does not depend on the number of threads.

use super::kernel::f32_rows;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows per partial sum: enough work per rayon task, few partials to add.
const BLOCK_ROWS: usize = 128;

/// Adds up what `per_block` accumulates, for blocks of [`BLOCK_ROWS`] of
/// `rows` rows, into a vector of `width` (blocks in parallel, partials added
/// in block order).
pub fn sum_over_row_blocks(
    rows: usize,
    width: usize,
    per_block: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let partials: Vec<Vec<f32>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0f32; width];
            per_block(b * BLOCK_ROWS..rows.min((b + 1) * BLOCK_ROWS), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0f32; width];
    for partial in partials {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += p;
        }
    }
    total
}

/// Column sums of a row-major `[rows, cols]` matrix held in `data`.
fn column_sums(data: &[f32], cols: usize) -> Vec<f32> {
    if cols == 0 {
        return Vec::new();
    }
    sum_over_row_blocks(data.len() / cols, cols, |range, acc| {
        for row in data[range.start * cols..range.end * cols].chunks_exact(cols) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    })
}

/// `x` summed over its first dimension (no gradient).
struct SumRows;

impl CustomOp1 for SumRows {
    fn name(&self) -> &'static str {
        "sum-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (data, _) = f32_rows(self.name(), s, l)?;
        let dims = l.dims();
        let inner: Vec<usize> = dims.iter().skip(1).copied().collect();
        let cols = inner.iter().product::<usize>();
        let out = column_sums(data, cols);
        Ok((CpuStorage::F32(out), Shape::from(inner)))
    }
}

/// Sums `x` over its first dimension; the result has the remaining
/// dimensions. For gradients inside backward passes, so it records none.
pub fn sum_rows(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&SumRows)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn sums_rows_as_candle_does_for_any_block_split() {
        // Small integers: every partial sum is exact in f32, so any block
        // split must give exactly candle's result.
        for rows in [1, 7, 128, 129, 1000] {
            let values: Vec<f32> = (0..rows * 15)
                .map(|i| ((i * 7919) % 17) as f32 - 8.0)
                .collect();
            let x = Tensor::from_vec(values, (rows, 3, 5), &Device::Cpu).unwrap();
            let ours = super::sum_rows(&x).unwrap();
            let reference = x.sum(0).unwrap();
            assert_eq!(ours.dims(), &[3, 5]);
            assert_eq!(crate::max_abs_diff(&ours, &reference), 0.0, "{rows} rows");
        }
    }
}
