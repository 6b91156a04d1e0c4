//! The AMX kernel: `tdpbf16ps` adds to a 16 × 16 f32 tile the products of
//! a 16-row × 32 bf16 tile of `a` and a 16-pair × 16-column tile of `b`,
//! in one instruction.
//!
//! The factors are packed as for the AVX-512 kernel
//! ([`super::bf16_packing`]), padded to whole tiles: the inner dimension to
//! 32 bf16 (16 pairs), `a`'s rows to blocks of 32. A row block of `a` and a
//! 32-column panel of `b` fill eight tile registers: two of `a`, two of
//! `b` and four accumulators, each 16 rows × 64 bytes. Row blocks are split
//! over the threads; each thread loads the tile layout before its block and
//! releases the tiles after it.
//!
//! Linux hands a process the tile registers only when it asks
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); without that the
//! first tile instruction kills it. [`available`] asks once and says no
//! where the CPU, or the kernel, does not allow them. Once granted, the
//! larger signal frame it implies makes a later `sigaltstack` smaller than
//! Linux's minimum fail (Rust's own threads size theirs from that minimum).
//!
//! Stable Rust has no AMX intrinsics, so the tile instructions are written
//! with `asm!`, behind a small trait ([`TileUnit`]); the tests run the same
//! block loop on a plain-Rust reading of Intel's definitions of the
//! instructions, which checks the packing, pointers and strides on any CPU.

use super::bf16_packing::{gemm_by_blocks, store_tile, Blocking, PANEL};
use super::{MatMut, MatRef, ShapeError};
use std::arch::asm;
use std::sync::OnceLock;

/// Rows (and f32 columns) of an accumulator tile; rows of every tile.
const TILE: usize = 16;
/// bf16 pairs in a tile row of `a`: 64 bytes, the widest a tile row holds.
const TILE_PAIRS: usize = 16;
/// Rows of `a` per block: two tiles.
const BLOCK_ROWS: usize = 2 * TILE;

/// `arch_prctl` code asking for permission to use an extended state.
const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
/// The extended-state component of the tile data.
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

/// Whether this CPU and this process run the kernel (the permission is
/// asked for on the first call).
pub fn available() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| cpu_has_amx_bf16() && request_tile_data())
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (bit 24).
fn cpu_has_amx_bf16() -> bool {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only where
    // the CPU reports it.
    let leaf7 = unsafe {
        if __get_cpuid_max(0).0 < 7 {
            return false;
        }
        __cpuid_count(7, 0)
    };
    leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0
}

/// Asks Linux for the tile data state; false where it refuses (a kernel
/// older than 5.16, or one that disabled AMX).
fn request_tile_data() -> bool {
    // SAFETY: arch_prctl with this code only changes what the process may
    // use; it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
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
    // SAFETY: the caller checked `available()`.
    let tiles = || unsafe { AmxTiles::configure() };
    gemm_by_blocks((a, b, out), (alpha, beta, threads), BLOCKING, on(tiles))
}

/// How the kernel takes its operands: blocks of 32 rows, the inner
/// dimension padded to whole tiles.
const BLOCKING: Blocking = Blocking {
    block_rows: BLOCK_ROWS,
    pair_multiple: TILE_PAIRS,
    row_multiple: BLOCK_ROWS,
};

/// The block function on the tile operations `unit` makes, one unit per
/// block.
fn on<T: TileUnit>(
    unit: impl Fn() -> T + Send + Sync,
) -> impl Fn(&[u32], usize, &[u32], &mut [f32], usize) + Send + Sync {
    move |a_block, pairs, b, rows, n| multiply_block(&mut unit(), a_block, pairs, b, rows, n)
}

/// The tile operations the block loop issues: AMX's (`AmxTiles`), or in
/// tests a plain-Rust reading of Intel's definitions of them, which checks
/// the packing, pointers and strides on any CPU.
trait TileUnit {
    /// Zeroes the four accumulators.
    fn zero(&mut self);
    /// Loads the two tiles of `a` and the two of `b` at `step` and adds
    /// their four products to the accumulators.
    ///
    /// # Safety
    /// Each tile's 16 rows of 64 bytes, `stride` bytes apart, are readable.
    unsafe fn multiply(&mut self, step: &Step);
    /// Stores the accumulators into the quadrants of `tile`.
    fn store(&mut self, tile: &mut Tile);
}

/// Where one pair step's tiles start, and their row strides in bytes.
struct Step {
    a_top: *const u32,
    a_bottom: *const u32,
    b_left: *const u32,
    b_right: *const u32,
    a_stride: usize,
    b_stride: usize,
}

impl Step {
    /// Pairs `first..first + 16` of the block's rows 0–15 and 16–31, and
    /// of the panel's columns 0–15 and 16–31.
    fn at(a_block: &[u32], pairs: usize, b_panel: &[u32], first: usize) -> Self {
        assert!(first + TILE_PAIRS <= pairs && a_block.len() == BLOCK_ROWS * pairs);
        assert!(b_panel.len() == pairs * PANEL);
        let a_top = a_block[first..].as_ptr();
        let a_bottom = a_block[TILE * pairs + first..].as_ptr();
        let b_left = b_panel[first * PANEL..].as_ptr();
        let b_right = b_panel[first * PANEL + TILE..].as_ptr();
        Step {
            a_top,
            a_bottom,
            b_left,
            b_right,
            a_stride: pairs * 4,
            b_stride: PANEL * 4,
        }
    }
}

/// A 32 × 32 f32 tile, aligned for the tile stores.
#[repr(C, align(64))]
struct Tile([f32; BLOCK_ROWS * PANEL]);

impl Tile {
    /// The starts of its quadrants in accumulator order (top left, top
    /// right, bottom left, bottom right), and its row stride in bytes.
    fn quadrants(&mut self) -> ([*mut f32; 4], usize) {
        // One base pointer for all four, so none invalidates another.
        let base = self.0.as_mut_ptr();
        let at = |offset: usize| base.wrapping_add(offset);
        let starts = [at(0), at(TILE), at(TILE * PANEL), at(TILE * PANEL + TILE)];
        (starts, PANEL * 4)
    }
}

/// The rows of one block (`rows.len() / n` of them, at most
/// [`BLOCK_ROWS`]): `rows` ← `a_block · b` over every panel. Nothing here
/// may call into rayon: a stolen job on this thread would reconfigure or
/// release the tiles under it.
fn multiply_block<T: TileUnit>(
    unit: &mut T,
    a_block: &[u32],
    pairs: usize,
    b_panels: &[u32],
    rows: &mut [f32],
    n: usize,
) {
    assert!(pairs.is_multiple_of(TILE_PAIRS));
    let mut tile = Tile([0.0; BLOCK_ROWS * PANEL]);
    for (panel, b) in b_panels.chunks_exact(pairs * PANEL).enumerate() {
        unit.zero();
        for first in (0..pairs).step_by(TILE_PAIRS) {
            let step = Step::at(a_block, pairs, b, first);
            // SAFETY: `Step::at` asserted that the block holds 32 rows and
            // the panel `pairs` steps, so every tile row lies inside them.
            unsafe { unit.multiply(&step) };
        }
        unit.store(&mut tile);
        store_tile(&tile.0, panel, rows, n);
    }
}

/// The layout `ldtilecfg` reads: palette 1, every tile in use 16 rows of
/// 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// Eight tiles of 16 × 64 bytes: accumulators 0–3, `a` 4–5, `b` 6–7.
    fn eight_full_tiles() -> Self {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        config.bytes_per_row[..8].fill(64);
        config.rows[..8].fill(TILE as u8);
        config
    }
}

/// This thread's tile registers, configured for [`TileConfig::eight_full_tiles`]
/// while it lives and released when it drops (also on a panic). Rust never
/// allocates tile registers itself, so they keep their values between the
/// `asm!` blocks.
struct AmxTiles;

impl AmxTiles {
    /// # Safety
    /// The CPU and the OS must run the kernel ([`available`]).
    unsafe fn configure() -> Self {
        let config = TileConfig::eight_full_tiles();
        asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly, preserves_flags));
        AmxTiles
    }
}

impl Drop for AmxTiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `configure`.
        unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
    }
}

impl TileUnit for AmxTiles {
    fn zero(&mut self) {
        // SAFETY: the tiles are configured while `self` lives.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem, preserves_flags)
            )
        };
    }

    unsafe fn multiply(&mut self, step: &Step) {
        asm!(
            "tileloadd tmm4, [{a_top} + {a_stride} * 1]",
            "tileloadd tmm5, [{a_bottom} + {a_stride} * 1]",
            "tileloadd tmm6, [{b_left} + {b_stride} * 1]",
            "tileloadd tmm7, [{b_right} + {b_stride} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a_top = in(reg) step.a_top,
            a_bottom = in(reg) step.a_bottom,
            b_left = in(reg) step.b_left,
            b_right = in(reg) step.b_right,
            a_stride = in(reg) step.a_stride,
            b_stride = in(reg) step.b_stride,
            options(nostack, readonly, preserves_flags)
        );
    }

    fn store(&mut self, tile: &mut Tile) {
        let ([top_left, top_right, bottom_left, bottom_right], stride) = tile.quadrants();
        // SAFETY: each quadrant's 16 rows of 64 bytes, `stride` apart, lie
        // inside `tile`; the tiles are configured while `self` lives.
        unsafe {
            asm!(
                "tilestored [{top_left} + {stride} * 1], tmm0",
                "tilestored [{top_right} + {stride} * 1], tmm1",
                "tilestored [{bottom_left} + {stride} * 1], tmm2",
                "tilestored [{bottom_right} + {stride} * 1], tmm3",
                top_left = in(reg) top_left,
                top_right = in(reg) top_right,
                bottom_left = in(reg) bottom_left,
                bottom_right = in(reg) bottom_right,
                stride = in(reg) stride,
                options(nostack, preserves_flags)
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::super::bf16::{gemm_bf16, Bf16Kernel};
    use super::*;

    /// Intel's definitions of `tileloadd`, `tdpbf16ps` and `tilestored` for
    /// 16 × 64-byte tiles, read literally (subnormals aside): the kernel's
    /// loop on these must compute the product.
    #[derive(Default)]
    struct Emulated {
        accumulators: [[[f32; TILE]; TILE]; 4],
    }

    /// A tile's 16 rows of 16 u32, `stride` bytes apart from `start`.
    unsafe fn load(start: *const u32, stride: usize) -> [[u32; 16]; TILE] {
        let mut tile = [[0u32; 16]; TILE];
        for (r, row) in tile.iter_mut().enumerate() {
            let at = start.cast::<u8>().add(r * stride).cast::<u32>();
            row.copy_from_slice(std::slice::from_raw_parts(at, 16));
        }
        tile
    }

    fn bf16(bits: u32) -> f32 {
        f32::from_bits(bits << 16)
    }

    /// `c[m][n] += Σ_k a[m].bf16[2k]·b[k].bf16[2n] + a[m].bf16[2k+1]·b[k].bf16[2n+1]`.
    fn tdpbf16ps(c: &mut [[f32; TILE]; TILE], a: &[[u32; 16]; TILE], b: &[[u32; 16]; TILE]) {
        for m in 0..TILE {
            for k in 0..16 {
                for n in 0..TILE {
                    c[m][n] += bf16(a[m][k] & 0xFFFF) * bf16(b[k][n] & 0xFFFF);
                    c[m][n] += bf16(a[m][k] >> 16) * bf16(b[k][n] >> 16);
                }
            }
        }
    }

    impl TileUnit for Emulated {
        fn zero(&mut self) {
            self.accumulators = Default::default();
        }

        unsafe fn multiply(&mut self, step: &Step) {
            let a = [
                load(step.a_top, step.a_stride),
                load(step.a_bottom, step.a_stride),
            ];
            let b = [
                load(step.b_left, step.b_stride),
                load(step.b_right, step.b_stride),
            ];
            // tmm0 += a0·b0, tmm1 += a0·b1, tmm2 += a1·b0, tmm3 += a1·b1.
            for (i, c) in self.accumulators.iter_mut().enumerate() {
                tdpbf16ps(c, &a[i / 2], &b[i % 2]);
            }
        }

        fn store(&mut self, tile: &mut Tile) {
            let (starts, stride) = tile.quadrants();
            for (c, start) in self.accumulators.iter().zip(starts) {
                for (r, row) in c.iter().enumerate() {
                    // SAFETY: as the tile store: 16 rows of 64 bytes inside `tile`.
                    unsafe {
                        let at = start.cast::<u8>().add(r * stride).cast::<f32>();
                        std::slice::from_raw_parts_mut(at, TILE).copy_from_slice(row);
                    }
                }
            }
        }
    }

    /// The block loop on emulated tiles gives the rounded kernel's product,
    /// over partial blocks and panels, several tiles of the inner
    /// dimension, a transposed `b`, alpha, beta and threads.
    #[test]
    fn the_tile_loop_computes_the_product() {
        let value =
            |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.0) - 1.0;
        for (m, k, n) in [(1, 1, 1), (5, 31, 7), (33, 64, 40), (70, 385, 65)] {
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
            let b_t: Vec<f32> = (0..n * k).map(|i| value(i, 2)).collect();
            let start: Vec<f32> = (0..m * n).map(|i| value(i, 3)).collect();
            for threads in [1, 2] {
                let (mut want, mut got) = (start.clone(), start.clone());
                let a_view = MatRef::row_major(&a, m, k).unwrap();
                let b_view = MatRef::row_major(&b_t, n, k).unwrap().t();
                let mut c = MatMut::row_major(&mut want, m, n).unwrap();
                gemm_bf16(Bf16Kernel::RoundedF32, a_view, b_view, &mut c, 0.5, -1.0, 1).unwrap();
                let mut c = MatMut::row_major(&mut got, m, n).unwrap();
                let emulated = on(Emulated::default);
                gemm_by_blocks(
                    (a_view, b_view, &mut c),
                    (0.5, -1.0, threads),
                    BLOCKING,
                    emulated,
                )
                .unwrap();
                for (x, (w, g)) in want.iter().zip(&got).enumerate() {
                    assert!(
                        (w - g).abs() <= 1e-5 * k as f32,
                        "{m}×{k}×{n}, {threads} threads, element {x}: {g} against {w}"
                    );
                }
            }
        }
    }
}
