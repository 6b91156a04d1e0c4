//! The AVX-512 BF16 kernel: `vdpbf16ps` adds, in each of 16 f32 lanes, the
//! products of one pair of bf16 values from each factor.
//!
//! Both factors are packed once per product ([`super::bf16_packing`]): a
//! pair of `a` is broadcast to every lane, a pair step of a `b` panel is
//! two vectors wide. A micro-kernel keeps a tile of up to 8 rows × 32
//! columns in 16 accumulators over the whole inner dimension; tiles are
//! written to a row-major buffer, split by rows over the threads, and then
//! scaled into `out`.

use super::bf16_packing::{gemm_by_blocks, store_tile, Blocking, PANEL};
use super::{MatMut, MatRef, ShapeError};
use std::arch::x86_64::*;
/// Rows per tile, the most whose accumulators fit the 32 vector registers
/// beside the panel's two vectors and the broadcast.
const TILE_ROWS: usize = 8;

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// `out ← alpha·a·b + beta·out` on bf16 operands (see the module).
///
/// # Safety
/// The CPU must run the kernel ([`available`]).
pub unsafe fn gemm(
    a: MatRef,
    b: MatRef,
    out: &mut MatMut,
    alpha: f32,
    beta: f32,
    threads: usize,
) -> Result<(), ShapeError> {
    let blocking = Blocking {
        block_rows: TILE_ROWS,
        pair_multiple: 1,
        row_multiple: 1,
    };
    gemm_by_blocks(
        (a, b, out),
        (alpha, beta, threads),
        blocking,
        |a_rows, pairs, b, rows, n| {
            // SAFETY: the caller checked `available()`; the slices hold the
            // tile's rows and every panel (see `multiply_rows`).
            unsafe { multiply_rows(a_rows, pairs, b, rows, n) }
        },
    )
}

/// The rows of one tile (`rows.len() / n` of them, at most [`TILE_ROWS`]):
/// `rows` ← `a_rows · b` over every panel.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 BF16; `a_rows` holds the tile's
/// rows (`pairs` each), `b_panels` every panel of `pairs` steps.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn multiply_rows(
    a_rows: &[u32],
    pairs: usize,
    b_panels: &[u32],
    rows: &mut [f32],
    n: usize,
) {
    let tile_rows = rows.len() / n;
    let mut tile = [0f32; TILE_ROWS * PANEL];
    for (panel, b) in b_panels.chunks_exact(pairs * PANEL).enumerate() {
        match tile_rows {
            8 => micro::<8>(a_rows, pairs, b, &mut tile),
            7 => micro::<7>(a_rows, pairs, b, &mut tile),
            6 => micro::<6>(a_rows, pairs, b, &mut tile),
            5 => micro::<5>(a_rows, pairs, b, &mut tile),
            4 => micro::<4>(a_rows, pairs, b, &mut tile),
            3 => micro::<3>(a_rows, pairs, b, &mut tile),
            2 => micro::<2>(a_rows, pairs, b, &mut tile),
            _ => micro::<1>(a_rows, pairs, b, &mut tile),
        }
        store_tile(&tile, panel, rows, n);
    }
}

/// `tile[r, ·]` ← row `r` of `a_rows` times one panel, for `R` rows.
///
/// # Safety
/// As [`multiply_rows`]; `a_rows` holds at least `R` rows, `b` one panel.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro<const R: usize>(
    a_rows: &[u32],
    pairs: usize,
    b: &[u32],
    tile: &mut [f32; TILE_ROWS * PANEL],
) {
    assert!(a_rows.len() >= R * pairs && b.len() >= pairs * PANEL && R <= TILE_ROWS);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (a_ptr, b_ptr) = (a_rows.as_ptr(), b.as_ptr());
    for p in 0..pairs {
        // SAFETY: p < pairs, so both loads stay inside the panel (asserted).
        let step = b_ptr.add(p * PANEL);
        let left: __m512bh = std::mem::transmute(_mm512_loadu_si512(step.cast()));
        let right: __m512bh = std::mem::transmute(_mm512_loadu_si512(step.add(16).cast()));
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R rows of `pairs` (asserted).
            let pair = *a_ptr.add(r * pairs + p);
            let broadcast: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], broadcast, left);
            acc[1] = _mm512_dpbf16_ps(acc[1], broadcast, right);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = tile.as_mut_ptr().add(r * PANEL);
        _mm512_storeu_ps(row, acc[0]);
        _mm512_storeu_ps(row.add(16), acc[1]);
    }
}
