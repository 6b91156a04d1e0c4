//! Matrix products through the system BLAS (OpenBLAS), for the inference path.
//!
//! candle's own CPU kernel reaches about half of what OpenBLAS does on the
//! dense layers that dominate BERT's cost; FAISS links OpenBLAS anyway. These
//! products have no backward, so only [`super::Mode::Inference`] uses them.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::os::raw::c_int;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

#[link(name = "openblas")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(threads: c_int);
}

/// Sets OpenBLAS's thread count (it reads OPENBLAS_NUM_THREADS only at start-up).
pub fn set_threads(threads: usize) {
    // SAFETY: plain setter of OpenBLAS's global thread count.
    unsafe { openblas_set_num_threads(threads as c_int) }
}

/// `x · wᵀ + b` for `x` `[m, k]`, a weight `w` `[n, k]` as stored by Hugging
/// Face, and a bias `b` `[n]`: the bias rows are written first and sgemm
/// accumulates onto them (beta = 1), saving a separate broadcast pass.
struct Affine;

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "blas-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) = (s1, s2, s3) else {
            bail!("{}: f32 inputs only", self.name())
        };
        let (Some((x_start, _)), Some((w_start, _)), Some((b_start, b_end))) = (
            l1.contiguous_offsets(),
            l2.contiguous_offsets(),
            l3.contiguous_offsets(),
        ) else {
            bail!("{}: contiguous inputs only", self.name())
        };
        let (m, k) = l1.shape().dims2()?;
        let (n, k_w) = l2.shape().dims2()?;
        if k != k_w || b_end - b_start != n {
            bail!(
                "{}: shapes [{m}, {k}] · [{n}, {k_w}]ᵀ + [{}] do not fit",
                self.name(),
                b_end - b_start
            );
        }
        let bias = &b[b_start..b_end];
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        for _ in 0..m {
            out.extend_from_slice(bias);
        }
        // SAFETY: both inputs are contiguous with at least m·k and n·k elements
        // from their start offsets (checked above through their layouts), and
        // `out` holds m·n initialised elements with leading dimension n.
        unsafe {
            cblas_sgemm(
                ROW_MAJOR,
                NO_TRANS,
                TRANS,
                m as c_int,
                n as c_int,
                k as c_int,
                1.0,
                x[x_start..].as_ptr(),
                k as c_int,
                w[w_start..].as_ptr(),
                k as c_int,
                1.0,
                out.as_mut_ptr(),
                n as c_int,
            );
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `x · wᵀ + b` through OpenBLAS (no gradient).
pub fn affine(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &Affine)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn agrees_with_candle_matmul() {
        let x = Tensor::randn(0f32, 1., (7, 5), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1., (3, 5), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1., 3, &Device::Cpu).unwrap();
        let blas = super::affine(&x, &w, &b).unwrap();
        let reference = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let diff = crate::model::max_abs_diff(&blas, &reference);
        assert!(diff < 1e-5, "{diff}");
    }
}
