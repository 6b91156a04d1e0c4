//! No AVX-512 BF16 kernel off x86-64: the rounded f32 kernel stands in.

use super::{MatMut, MatRef, ShapeError};

pub fn available() -> bool {
    false
}

/// The rounded f32 kernel, which computes the same numbers.
pub fn gemm(
    a: MatRef,
    b: MatRef,
    out: &mut MatMut,
    alpha: f32,
    beta: f32,
    threads: usize,
) -> Result<(), ShapeError> {
    let kernel = super::bf16::Bf16Kernel::RoundedF32;
    super::bf16::gemm_bf16(kernel, a, b, out, alpha, beta, threads)
}
