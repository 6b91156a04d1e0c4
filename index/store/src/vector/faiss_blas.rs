//! FAISS's matrix products on cpack's kernel.
//!
//! FAISS calls the Fortran BLAS `sgemm_` for a flat index's search (one
//! product per block of rows), IVF's coarse assignment and k-means. faiss-sys
//! links the system BLAS for it, and a system BLAS that does not know the CPU
//! runs generic kernels. cpack defines `sgemm_` itself, on [`cpack_model::matmul`]:
//! a definition in the program wins over the shared library's, so FAISS
//! (and the LAPACK routines FAISS uses, which still come from the system
//! library) multiply with the kernel the CPU's feature flags pick.
//!
//! The C interface has no room for a thread count, so a thread sets its own
//! with [`with_threads`]; threads that never did (FAISS's OpenMP workers,
//! cpack's search slices) multiply on one.

use cpack_model::matmul::{gemm, MatMut, MatRef};
use std::cell::Cell;
use std::io::Write as _;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static THREADS: Cell<usize> = const { Cell::new(1) };
}

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Runs `work` with FAISS's products on this thread split over `threads`
/// threads of the current rayon pool, then restores the previous count.
pub fn with_threads<T>(threads: usize, work: impl FnOnce() -> T) -> T {
    let previous = THREADS.with(|t| t.replace(threads.max(1)));
    let out = work();
    THREADS.with(|t| t.set(previous));
    out
}

/// How many products FAISS has run through cpack's `sgemm_` in this process.
pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

/// One operand of a Fortran (column-major) product: `rows × cols` after
/// `op`, stored with leading dimension `ld`.
///
/// # Safety
/// `data` must point to the matrix BLAS describes: `ld × (stored columns)`
/// elements, where the stored matrix is `op`'s argument.
unsafe fn operand<'a>(
    data: *const f32,
    trans: c_char,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Option<MatRef<'a>> {
    let transposed = matches!(trans as u8, b'T' | b't' | b'C' | b'c');
    if !transposed && !matches!(trans as u8, b'N' | b'n') {
        return None;
    }
    let (stored_rows, stored_cols) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    if stored_rows > ld.max(1) {
        return None;
    }
    let len = if stored_cols == 0 {
        0
    } else {
        ld * (stored_cols - 1) + stored_rows
    };
    let slice = if len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(data, len)
    };
    let stored = MatRef::strided(slice, stored_rows, stored_cols, 1, ld).ok()?;
    Some(if transposed { stored.t() } else { stored })
}

/// The reference BLAS `SGEMM`: `C ← alpha·op(A)·op(B) + beta·C`, column-major.
///
/// # Safety
/// Called by FAISS (and LAPACK) with BLAS's contract: every pointer valid
/// for the matrices its sizes and leading dimensions describe.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sgemm_(
    transa: *const c_char,
    transb: *const c_char,
    m: *const c_int,
    n: *const c_int,
    k: *const c_int,
    alpha: *const f32,
    a: *const f32,
    lda: *const c_int,
    b: *const f32,
    ldb: *const c_int,
    beta: *const f32,
    c: *mut f32,
    ldc: *const c_int,
) -> c_int {
    CALLS.fetch_add(1, Ordering::Relaxed);
    let dims = [*m, *n, *k, *lda, *ldb, *ldc];
    if dims.iter().any(|&d| d < 0) {
        return report_bad_call("a negative size or leading dimension");
    }
    let [m, n, k, lda, ldb, ldc] = dims.map(|d| d as usize);
    let (Some(a), Some(b)) = (
        operand(a, *transa, m, k, lda),
        operand(b, *transb, k, n, ldb),
    ) else {
        return report_bad_call("an operand that does not fit its leading dimension");
    };
    if m > ldc.max(1) {
        return report_bad_call("ldc smaller than m");
    }
    let len = if n == 0 { 0 } else { ldc * (n - 1) + m };
    let out = if len == 0 {
        &mut []
    } else {
        std::slice::from_raw_parts_mut(c, len)
    };
    let Ok(mut out) = MatMut::strided(out, m, n, 1, ldc) else {
        return report_bad_call("an output that does not fit ldc");
    };
    let threads = THREADS.with(Cell::get);
    match gemm(a, b, &mut out, *alpha, *beta, threads) {
        Ok(()) => 0,
        Err(_) => report_bad_call("operands whose shapes do not fit"),
    }
}

/// What the reference BLAS's XERBLA does: say so, and leave C untouched.
fn report_bad_call(problem: &str) -> c_int {
    // Not eprintln!: a panic cannot unwind out of this extern "C" function.
    let _ = writeln!(
        std::io::stderr(),
        "cpack: sgemm_ called with {problem}; the product was skipped"
    );
    -1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls `sgemm_` the way Fortran callers do, everything by pointer.
    #[allow(clippy::too_many_arguments)]
    fn call(
        ta: u8,
        tb: u8,
        (m, n, k): (i32, i32, i32),
        alpha: f32,
        a: &[f32],
        lda: i32,
        b: &[f32],
        ldb: i32,
        beta: f32,
        c: &mut [f32],
        ldc: i32,
    ) -> c_int {
        let (ta, tb) = (ta as c_char, tb as c_char);
        // SAFETY: the slices hold the matrices their sizes describe (the test's choice).
        unsafe {
            sgemm_(
                &ta,
                &tb,
                &m,
                &n,
                &k,
                &alpha,
                a.as_ptr(),
                &lda,
                b.as_ptr(),
                &ldb,
                &beta,
                c.as_mut_ptr(),
                &ldc,
            )
        }
    }

    #[test]
    fn column_major_products_with_transposes_and_leading_dimensions() {
        // A is 2×3 column-major with lda 3 (one padding row); B is 3×2 stored
        // transposed (2×3, ldb 2); C is 2×2 with ldc 2.
        let a = [1., 2., 99., 3., 4., 99., 5., 6., 99.]; // [[1,3,5],[2,4,6]]
        let bt = [1., 0., 0., 1., 1., 1.]; // Bᵀ = [[1,0,1],[0,1,1]]
        let mut c = [10., 20., 30., 40.];
        assert_eq!(
            call(b'N', b'T', (2, 2, 3), 1.0, &a, 3, &bt, 2, 0.5, &mut c, 2),
            0
        );
        // A·B = [[6, 8], [8, 10]], plus 0.5·C (column-major [10, 20, 30, 40]).
        assert_eq!(c, [6. + 5., 8. + 10., 8. + 15., 10. + 20.]);
    }

    #[test]
    fn refuses_bad_arguments_without_touching_c() {
        let a = [1f32; 4];
        let mut c = [7f32; 4];
        assert_eq!(
            call(b'X', b'N', (2, 2, 2), 1.0, &a, 2, &a, 2, 0.0, &mut c, 2),
            -1
        );
        assert_eq!(
            call(b'N', b'N', (2, 2, 2), 1.0, &a, 1, &a, 2, 0.0, &mut c, 2),
            -1
        );
        assert_eq!(c, [7f32; 4]);
    }
}
