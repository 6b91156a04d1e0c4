//! Single-precision matrix products for all of cpack: the encoder's and the
//! trainer's dense layers, and (through `vector::faiss_blas`) FAISS's flat
//! searches and k-means.
//!
//! They run on the pure-Rust `gemm` crate, which picks its micro-kernel from
//! the CPU's feature flags when first called (AVX-512F, else AVX2 + FMA on
//! x86-64; NEON on ARM) rather than from a table of CPU models. A system BLAS
//! that does not know the processor falls back to generic kernels: Debian's
//! OpenBLAS 0.3.21 runs its SSE3 "Prescott" code on newer Xeons, which made
//! every product several times slower. Nothing here reads an environment
//! variable.
//!
//! Threads are a value the caller passes: 1 runs the product inline on the
//! calling thread; more splits it over the current rayon pool.
//!
//! [`Products`] says in which precision a model's products run: f32, or bf16
//! operands with f32 sums ([`bf16`]).

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx_bf16;
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[path = "no_native_bf16.rs"]
mod amx_bf16;
#[cfg(target_arch = "x86_64")]
mod avx512_bf16;
#[cfg(not(target_arch = "x86_64"))]
#[path = "no_native_bf16.rs"]
mod avx512_bf16;
pub mod bf16;
#[cfg(target_arch = "x86_64")]
mod bf16_packing;

pub use bf16::{gemm_bf16, Bf16Kernel};
use gemm::Parallelism;

/// The precision a model's matrix products run in (everything else, layer
/// norms, softmax and activations, stays f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Products {
    #[default]
    F32,
    /// bf16 operands, f32 sums, on this kernel.
    Bf16(Bf16Kernel),
}

impl Products {
    /// bf16 products on the fastest kernel this CPU has.
    pub fn bf16() -> Self {
        Products::Bf16(Bf16Kernel::detect())
    }

    /// `out ← alpha·a·b + beta·out` in this precision (see [`gemm`]).
    pub fn gemm(
        self,
        a: MatRef,
        b: MatRef,
        out: &mut MatMut,
        alpha: f32,
        beta: f32,
        threads: usize,
    ) -> Result<(), ShapeError> {
        match self {
            Products::F32 => gemm(a, b, out, alpha, beta, threads),
            Products::Bf16(kernel) => gemm_bf16(kernel, a, b, out, alpha, beta, threads),
        }
    }
}

/// A read-only `rows × cols` matrix inside a slice, element `(i, j)` at
/// `i·row_stride + j·col_stride`. Transposing is swapping the strides.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable matrix, laid out as [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Why a product was refused: the shapes or the slices do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("a {rows}×{cols} matrix with strides ({row_stride}, {col_stride}) needs {needed} elements, the slice has {len}")]
    OutOfBounds {
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
        needed: usize,
        len: usize,
    },
    #[error("cannot multiply {a_rows}×{a_cols} by {b_rows}×{b_cols} into {out_rows}×{out_cols}")]
    Mismatch {
        a_rows: usize,
        a_cols: usize,
        b_rows: usize,
        b_cols: usize,
        out_rows: usize,
        out_cols: usize,
    },
}

/// Elements a strided matrix reaches: one past its last element.
fn extent(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }
}

fn check_bounds(
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<(), ShapeError> {
    let needed = extent(rows, cols, row_stride, col_stride);
    if needed > len {
        return Err(ShapeError::OutOfBounds {
            rows,
            cols,
            row_stride,
            col_stride,
            needed,
            len,
        });
    }
    Ok(())
}

impl<'a> MatRef<'a> {
    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, ShapeError> {
        check_bounds(data.len(), rows, cols, row_stride, col_stride)?;
        Ok(MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// Rows stored one after another, `cols` elements each.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, ShapeError> {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

impl<'a> MatMut<'a> {
    pub fn strided(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, ShapeError> {
        check_bounds(data.len(), rows, cols, row_stride, col_stride)?;
        Ok(MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, ShapeError> {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// `self ← alpha·product + beta·self` for a row-major `product` of this
    /// shape (`beta = 0` never reads `self`).
    fn accumulate(&mut self, product: &[f32], alpha: f32, beta: f32) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                let v = &mut self.data[i * self.row_stride + j * self.col_stride];
                let kept = if beta == 0.0 { 0.0 } else { *v * beta };
                *v = alpha * product[i * self.cols + j] + kept;
            }
        }
    }

    fn scale(&mut self, beta: f32) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                let v = &mut self.data[i * self.row_stride + j * self.col_stride];
                // BLAS semantics: beta = 0 overwrites, even NaN.
                *v = if beta == 0.0 { 0.0 } else { *v * beta };
            }
        }
    }
}

/// Whether `a·b` fits `out`.
fn check_shapes(a: &MatRef, b: &MatRef, out: &MatMut) -> Result<(), ShapeError> {
    if a.cols != b.rows || a.rows != out.rows || b.cols != out.cols {
        return Err(ShapeError::Mismatch {
            a_rows: a.rows,
            a_cols: a.cols,
            b_rows: b.rows,
            b_cols: b.cols,
            out_rows: out.rows,
            out_cols: out.cols,
        });
    }
    Ok(())
}

/// `out ← alpha·a·b + beta·out`, with BLAS's rule that `beta = 0` never reads
/// `out` (it may hold garbage). `threads` > 1 splits the product over the
/// current rayon pool; the result does not depend on it.
pub fn gemm(
    a: MatRef,
    b: MatRef,
    out: &mut MatMut,
    alpha: f32,
    beta: f32,
    threads: usize,
) -> Result<(), ShapeError> {
    check_shapes(&a, &b, out)?;
    if out.rows == 0 || out.cols == 0 {
        return Ok(());
    }
    if a.cols == 0 || alpha == 0.0 {
        out.scale(beta);
        return Ok(());
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: every matrix was bounds-checked against its slice when it was
    // made, shapes agree (checked above), and `out` is borrowed mutably, so it
    // cannot alias `a` or `b`. gemm's convention is dst := α·dst + β·lhs·rhs.
    unsafe {
        gemm::gemm(
            out.rows,
            out.cols,
            a.cols,
            out.data.as_mut_ptr(),
            out.col_stride as isize,
            out.row_stride as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// The micro-kernel family `gemm` runs on this CPU, for benchmark reports.
pub fn kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "avx2+fma"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            "neon"
        } else {
            "scalar"
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strided matrix filled with a deterministic pattern, with junk
    /// between and after its elements so stray reads and writes show.
    fn strided_data(rows: usize, cols: usize, rs: usize, cs: usize, seed: u32) -> Vec<f32> {
        let mut data = vec![f32::NAN; extent(rows, cols, rs, cs) + 3];
        for i in 0..rows {
            for j in 0..cols {
                let x = (i as u32 * 31 + j as u32 * 17 + seed * 7) % 23;
                data[i * rs + j * cs] = x as f32 / 11.0 - 1.0;
            }
        }
        data
    }

    fn naive(a: &MatRef, b: &MatRef, i: usize, j: usize) -> f32 {
        (0..a.cols)
            .map(|p| {
                a.data[i * a.row_stride + p * a.col_stride]
                    * b.data[p * b.row_stride + j * b.col_stride]
            })
            .sum()
    }

    #[test]
    fn agrees_with_the_definition_for_every_layout_alpha_beta_and_thread_count() {
        let (m, n, k) = (37, 29, 45);
        for (a_rm, b_rm, out_rm) in [
            (true, true, true),
            (false, true, true),
            (true, false, false),
            (false, false, false),
        ] {
            let strides = |rows: usize, cols: usize, rm: bool| {
                if rm {
                    (cols + 2, 1)
                } else {
                    (1, rows + 3)
                }
            };
            let (ars, acs) = strides(m, k, a_rm);
            let (brs, bcs) = strides(k, n, b_rm);
            let (ors, ocs) = strides(m, n, out_rm);
            let a_data = strided_data(m, k, ars, acs, 1);
            let b_data = strided_data(k, n, brs, bcs, 2);
            let a = MatRef::strided(&a_data, m, k, ars, acs).unwrap();
            let b = MatRef::strided(&b_data, k, n, brs, bcs).unwrap();
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                for threads in [1, 2] {
                    let start = strided_data(m, n, ors, ocs, 3);
                    let mut out_data = start.clone();
                    if beta == 0.0 {
                        // beta = 0 must not read the old values.
                        for i in 0..m {
                            for j in 0..n {
                                out_data[i * ors + j * ocs] = f32::NAN;
                            }
                        }
                    }
                    let mut out = MatMut::strided(&mut out_data, m, n, ors, ocs).unwrap();
                    gemm(a, b, &mut out, alpha, beta, threads).unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let at = i * ors + j * ocs;
                            let old = if beta == 0.0 { 0.0 } else { beta * start[at] };
                            let want = alpha * naive(&a, &b, i, j) + old;
                            let got = out_data[at];
                            assert!((got - want).abs() < 1e-4, "({i},{j}): {got} vs {want}");
                        }
                    }
                    let untouched = out_data.len() - 3..out_data.len();
                    assert!(out_data[untouched].iter().all(|v| v.is_nan()));
                }
            }
        }
    }

    #[test]
    fn transposed_views_multiply_as_transposes() {
        let a_data = strided_data(5, 3, 3, 1, 4);
        let b_data = strided_data(4, 3, 3, 1, 5);
        let a = MatRef::row_major(&a_data[..15], 5, 3).unwrap();
        let b = MatRef::row_major(&b_data[..12], 4, 3).unwrap();
        let mut out_data = vec![0f32; 20];
        let mut out = MatMut::row_major(&mut out_data, 5, 4).unwrap();
        gemm(a, b.t(), &mut out, 1.0, 0.0, 1).unwrap();
        for i in 0..5 {
            for j in 0..4 {
                let want: f32 = (0..3).map(|p| a_data[i * 3 + p] * b_data[j * 3 + p]).sum();
                assert!((out_data[i * 4 + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn empty_inner_dimension_only_scales_the_output() {
        let mut out_data = vec![2f32; 6];
        let mut out = MatMut::row_major(&mut out_data, 2, 3).unwrap();
        let a = MatRef::row_major(&[], 2, 0).unwrap();
        let b = MatRef::row_major(&[], 0, 3).unwrap();
        gemm(a, b, &mut out, 1.0, 0.5, 1).unwrap();
        assert_eq!(out_data, vec![1.0; 6]);
    }

    #[test]
    fn refuses_slices_too_short_and_shapes_that_do_not_fit() {
        let data = vec![0f32; 11];
        assert!(matches!(
            MatRef::row_major(&data, 3, 4),
            Err(ShapeError::OutOfBounds { needed: 12, .. })
        ));
        let a = MatRef::row_major(&data[..6], 2, 3).unwrap();
        let b = MatRef::row_major(&data[..8], 4, 2).unwrap();
        let mut out_data = vec![0f32; 4];
        let mut out = MatMut::row_major(&mut out_data, 2, 2).unwrap();
        assert!(matches!(
            gemm(a, b, &mut out, 1.0, 0.0, 1),
            Err(ShapeError::Mismatch { .. })
        ));
    }
}
