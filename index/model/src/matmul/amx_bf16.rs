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
//! where the CPU, or the kernel, does not allow them. Stable Rust has no AMX
//! intrinsics, so the tile instructions are written with `asm!`.

use super::bf16_packing::{for_each_row_block, pack_panels, pack_rows, store_tile, PANEL};
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
    super::check_shapes(&a, &b, out)?;
    let (m, n) = (out.rows, out.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if a.cols == 0 || alpha == 0.0 {
        out.scale(beta);
        return Ok(());
    }
    let pairs = a.cols.div_ceil(2).next_multiple_of(TILE_PAIRS);
    let a_packed = pack_rows(a, pairs, m.next_multiple_of(BLOCK_ROWS));
    let b_packed = pack_panels(b, pairs);
    let mut product = vec![0f32; m * n];
    let block = |(index, rows): (usize, &mut [f32])| {
        let a_block = &a_packed[index * BLOCK_ROWS * pairs..(index + 1) * BLOCK_ROWS * pairs];
        // SAFETY: the caller checked `available()`; `a_block` holds a whole
        // block of rows and `b_packed` whole panels, both padded to tiles.
        unsafe { multiply_block(a_block, pairs, &b_packed, rows, n) }
    };
    for_each_row_block(&mut product, n, BLOCK_ROWS, threads, block);
    out.accumulate(&product, alpha, beta);
    Ok(())
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

/// A 32 × 32 f32 tile, aligned for the tile stores.
#[repr(C, align(64))]
struct Tile([f32; BLOCK_ROWS * PANEL]);

/// The rows of one block (`rows.len() / n` of them, at most
/// [`BLOCK_ROWS`]): `rows` ← `a_block · b` over every panel.
///
/// # Safety
/// The CPU must run the kernel; `a_block` holds [`BLOCK_ROWS`] rows of
/// `pairs` pairs, a multiple of [`TILE_PAIRS`]; `b_panels` whole panels of
/// `pairs` steps.
unsafe fn multiply_block(
    a_block: &[u32],
    pairs: usize,
    b_panels: &[u32],
    rows: &mut [f32],
    n: usize,
) {
    assert!(pairs.is_multiple_of(TILE_PAIRS) && a_block.len() == BLOCK_ROWS * pairs);
    let config = TileConfig::eight_full_tiles();
    asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
    let mut tile = Tile([0.0; BLOCK_ROWS * PANEL]);
    let a_stride = pairs * 4;
    let b_stride = PANEL * 4;
    for (panel, b) in b_panels.chunks_exact(pairs * PANEL).enumerate() {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for step in (0..pairs).step_by(TILE_PAIRS) {
            // SAFETY: rows 0–15 and 16–31 of the block, and pair steps
            // `step..step + 16` of the panel, lie inside the slices (their
            // lengths are asserted and checked by `chunks_exact`).
            let a_top = a_block.as_ptr().add(step);
            let a_bottom = a_top.add(TILE * pairs);
            let b_left = b.as_ptr().add(step * PANEL);
            let b_right = b_left.add(TILE);
            asm!(
                "tileloadd tmm4, [{a_top} + {a_stride} * 1]",
                "tileloadd tmm5, [{a_bottom} + {a_stride} * 1]",
                "tileloadd tmm6, [{b_left} + {b_stride} * 1]",
                "tileloadd tmm7, [{b_right} + {b_stride} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a_top = in(reg) a_top,
                a_bottom = in(reg) a_bottom,
                b_left = in(reg) b_left,
                b_right = in(reg) b_right,
                a_stride = in(reg) a_stride,
                b_stride = in(reg) b_stride,
                options(nostack, readonly)
            );
        }
        let out = tile.0.as_mut_ptr();
        asm!(
            "tilestored [{top_left} + {stride} * 1], tmm0",
            "tilestored [{top_right} + {stride} * 1], tmm1",
            "tilestored [{bottom_left} + {stride} * 1], tmm2",
            "tilestored [{bottom_right} + {stride} * 1], tmm3",
            top_left = in(reg) out,
            top_right = in(reg) out.add(TILE),
            bottom_left = in(reg) out.add(TILE * PANEL),
            bottom_right = in(reg) out.add(TILE * PANEL + TILE),
            stride = in(reg) PANEL * 4,
            options(nostack)
        );
        store_tile(&tile.0, panel, rows, n);
    }
    asm!("tilerelease", options(nostack, nomem));
}
