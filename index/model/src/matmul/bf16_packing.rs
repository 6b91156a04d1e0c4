//! What the x86-64 bf16 kernels share: both factors packed into bf16 pairs
//! (the layout `vdpbf16ps` and `tdpbf16ps` both read), the split of the
//! product's rows into blocks over the threads, and the scaling into `out`
//! ([`gemm_by_blocks`]).
//!
//! `a` is packed as rows of pairs (`a[i, 2p]`, `a[i, 2p+1]`) in one u32 each;
//! `b` in panels of [`PANEL`] columns, each pair step holding
//! `(b[2p, j], b[2p+1, j])` for the panel's columns. Everything past the
//! edges (an odd inner dimension, padding a kernel asks for) is zero, so it
//! adds nothing to the sums.

use super::bf16::bf16_bits;
use super::{MatMut, MatRef, ShapeError};
use rayon::prelude::*;

/// Columns per panel of `b`: two AVX-512 vectors, or two AMX tiles, wide.
pub const PANEL: usize = 32;

/// Rows `first..first + count` of `a` as `pairs` bf16 pairs each (low half
/// the even column); rows past `a`'s last are zero.
fn pack_rows(a: MatRef, first: usize, count: usize, pairs: usize) -> Vec<u32> {
    let at = |i: usize, p: usize| {
        if p < a.cols {
            bf16_bits(a.data[i * a.row_stride + p * a.col_stride]) as u32
        } else {
            0
        }
    };
    let mut packed = vec![0u32; count * pairs];
    let real_rows = a.rows.saturating_sub(first).min(count);
    for (r, row) in packed.chunks_exact_mut(pairs).take(real_rows).enumerate() {
        let i = first + r;
        for (p, pair) in row.iter_mut().enumerate() {
            *pair = at(i, 2 * p) | at(i, 2 * p + 1) << 16;
        }
    }
    packed
}

/// `b` in panels of [`PANEL`] columns: for each of `pairs` steps, the
/// panel's columns' pairs in order. Panels are packed on the current rayon
/// pool when `threads > 1`.
fn pack_panels(b: MatRef, pairs: usize, threads: usize) -> Vec<u32> {
    let at = |p: usize, j: usize| {
        if p < b.rows && j < b.cols {
            bf16_bits(b.data[p * b.row_stride + j * b.col_stride]) as u32
        } else {
            0
        }
    };
    let fill = |(panel, packed): (usize, &mut [u32])| {
        for (p, step) in packed.chunks_exact_mut(PANEL).enumerate() {
            for (c, pair) in step.iter_mut().enumerate() {
                let j = panel * PANEL + c;
                *pair = at(2 * p, j) | at(2 * p + 1, j) << 16;
            }
        }
    };
    let mut packed = vec![0u32; b.cols.div_ceil(PANEL) * pairs * PANEL];
    if threads > 1 {
        packed
            .par_chunks_mut(pairs * PANEL)
            .enumerate()
            .for_each(fill);
    } else {
        packed.chunks_mut(pairs * PANEL).enumerate().for_each(fill);
    }
    packed
}

/// How a kernel takes its operands: rows of `a` per block (one call of
/// its block function), and the multiples it needs the pairs of the inner
/// dimension and a block's rows of `a` padded to.
pub struct Blocking {
    pub block_rows: usize,
    pub pair_multiple: usize,
    pub row_multiple: usize,
}

/// `out ← alpha·a·b + beta·out`, the product computed block by block:
/// `multiply(a_block, pairs, b_panels, rows, n)` writes `rows` (row-major,
/// `n` columns, at most `block_rows` rows) from the packed rows of its block
/// and every packed panel of `b`. Blocks run on the current rayon pool when
/// `threads > 1`.
pub fn gemm_by_blocks<F>(
    (a, b, out): (MatRef, MatRef, &mut MatMut),
    (alpha, beta, threads): (f32, f32, usize),
    blocking: Blocking,
    multiply: F,
) -> Result<(), ShapeError>
where
    F: Fn(&[u32], usize, &[u32], &mut [f32], usize) + Send + Sync,
{
    super::check_shapes(&a, &b, out)?;
    let (m, n) = (out.rows, out.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if a.cols == 0 || alpha == 0.0 {
        out.scale(beta);
        return Ok(());
    }
    let pairs = a.cols.div_ceil(2).next_multiple_of(blocking.pair_multiple);
    let b_packed = pack_panels(b, pairs, threads);
    let mut product = vec![0f32; m * n];
    let step = blocking.block_rows;
    // Each block packs its own rows of `a`, on the thread that multiplies
    // them.
    let block = |(index, out_rows): (usize, &mut [f32])| {
        let count = (out_rows.len() / n).next_multiple_of(blocking.row_multiple);
        let a_block = pack_rows(a, index * step, count, pairs);
        multiply(&a_block, pairs, &b_packed, out_rows, n)
    };
    if threads > 1 {
        product.par_chunks_mut(step * n).enumerate().for_each(block);
    } else {
        product.chunks_mut(step * n).enumerate().for_each(block);
    }
    out.accumulate(&product, alpha, beta);
    Ok(())
}

/// Copies the first `rows.len() / n` rows and the valid columns of a
/// kernel's tile (`PANEL` floats a row) into panel `panel` of `rows`.
pub fn store_tile(tile: &[f32], panel: usize, rows: &mut [f32], n: usize) {
    let first = panel * PANEL;
    let width = PANEL.min(n - first);
    for r in 0..rows.len() / n {
        rows[r * n + first..r * n + first + width]
            .copy_from_slice(&tile[r * PANEL..r * PANEL + width]);
    }
}
