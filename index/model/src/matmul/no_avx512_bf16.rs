//! No AVX-512 BF16 kernel off x86-64.

use super::{MatMut, MatRef, ShapeError};

pub fn available() -> bool {
    false
}

/// Never called: [`available`] is false.
///
/// # Safety
/// None needed; it only keeps the dispatch the same on every target.
pub unsafe fn gemm(
    _: MatRef,
    _: MatRef,
    _: &mut MatMut,
    _: f32,
    _: f32,
    _: usize,
) -> Result<(), ShapeError> {
    unreachable!("no AVX-512 BF16 kernel on this target")
}
