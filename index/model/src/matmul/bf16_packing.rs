//! What the x86-64 bf16 kernels share: both factors packed into bf16 pairs
//! (the layout `vdpbf16ps` and `tdpbf16ps` both read), and the split of the
//! product's rows over the threads.
//!
//! `a` is packed as rows of pairs (`a[i, 2p]`, `a[i, 2p+1]`) in one u32 each;
//! `b` in panels of [`PANEL`] columns, each pair step holding
//! `(b[2p, j], b[2p+1, j])` for the panel's columns. Everything past the
//! edges (an odd inner dimension, padding a kernel asks for) is zero, so it
//! adds nothing to the sums.

use super::bf16::bf16_bits;
use super::MatRef;
use rayon::prelude::*;

/// Columns per panel of `b`: two AVX-512 vectors, or two AMX tiles, wide.
pub const PANEL: usize = 32;

/// `a`'s rows as `pairs` bf16 pairs each (low half the even column), then
/// zero rows up to `rows`.
pub fn pack_rows(a: MatRef, pairs: usize, rows: usize) -> Vec<u32> {
    let at = |i: usize, p: usize| {
        if p < a.cols {
            bf16_bits(a.data[i * a.row_stride + p * a.col_stride]) as u32
        } else {
            0
        }
    };
    let mut packed = Vec::with_capacity(rows.max(a.rows) * pairs);
    for i in 0..a.rows {
        packed.extend((0..pairs).map(|p| at(i, 2 * p) | at(i, 2 * p + 1) << 16));
    }
    packed.resize(rows.max(a.rows) * pairs, 0);
    packed
}

/// `b` in panels of [`PANEL`] columns: for each of `pairs` steps, the
/// panel's columns' pairs in order.
pub fn pack_panels(b: MatRef, pairs: usize) -> Vec<u32> {
    let at = |p: usize, j: usize| {
        if p < b.rows && j < b.cols {
            bf16_bits(b.data[p * b.row_stride + j * b.col_stride]) as u32
        } else {
            0
        }
    };
    let panels = b.cols.div_ceil(PANEL);
    let mut packed = Vec::with_capacity(panels * pairs * PANEL);
    for panel in 0..panels {
        for p in 0..pairs {
            packed.extend(
                (panel * PANEL..(panel + 1) * PANEL).map(|j| at(2 * p, j) | at(2 * p + 1, j) << 16),
            );
        }
    }
    packed
}

/// Calls `block(index, rows)` for each run of `block_rows` rows of the
/// row-major `product` (`n` columns; the last run may be shorter), over the
/// current rayon pool when `threads > 1`.
pub fn for_each_row_block<F>(
    product: &mut [f32],
    n: usize,
    block_rows: usize,
    threads: usize,
    block: F,
) where
    F: Fn((usize, &mut [f32])) + Send + Sync,
{
    if threads > 1 {
        product
            .par_chunks_mut(block_rows * n)
            .enumerate()
            .for_each(block);
    } else {
        product
            .chunks_mut(block_rows * n)
            .enumerate()
            .for_each(block);
    }
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
