//! Where a native bf16 kernel cannot run on this target (AVX-512 BF16 off
//! x86-64; AMX off x86-64 Linux, which must grant the tile state): the same
//! two functions, so the dispatch reads the same everywhere.

use super::{MatMut, MatRef, ShapeError};

pub fn available() -> bool {
    false
}

/// Never called: [`available`] is false.
///
/// # Safety
/// None needed.
pub unsafe fn gemm(
    _: MatRef,
    _: MatRef,
    _: &mut MatMut,
    _: f32,
    _: f32,
    _: usize,
) -> Result<(), ShapeError> {
    unreachable!("no native bf16 kernel on this target")
}
