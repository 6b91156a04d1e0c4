//! Matrix products through the system BLAS (OpenBLAS) for BERT's dense layers.
//!
//! candle's own CPU kernel reaches about half of what OpenBLAS does on the
//! dense layers that dominate BERT's cost; FAISS links OpenBLAS anyway.
//! [`affine`] is the inference product; [`trainable_affine`] is the same
//! product with a backward whose three gradients are sgemm calls too.

use super::kernel::f32_rows;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
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
        let (x, _) = f32_rows(self.name(), s1, l1)?;
        let (w, _) = f32_rows(self.name(), s2, l2)?;
        let (bias, _) = f32_rows(self.name(), s3, l3)?;
        let (m, k) = l1.shape().dims2()?;
        let (n, k_w) = l2.shape().dims2()?;
        if k != k_w || bias.len() != n {
            bail!(
                "{}: shapes [{m}, {k}] · [{n}, {k_w}]ᵀ + [{}] do not fit",
                self.name(),
                bias.len()
            );
        }
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
                x.as_ptr(),
                k as c_int,
                w.as_ptr(),
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

/// `x · wᵀ + b` through OpenBLAS, differentiable in all three arguments.
pub fn trainable_affine(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, TrainableAffine)
}

/// [`Affine`] plus its backward: for `y = x·wᵀ + b` and upstream `g`,
/// `∂x = g·w`, `∂w = gᵀ·x`, `∂b = Σ_rows g`.
struct TrainableAffine;

impl CustomOp3 for TrainableAffine {
    fn name(&self) -> &'static str {
        "blas-trainable-affine"
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
        Affine.cpu_fwd(s1, l1, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_x = grad.apply_op2_no_bwd(
            w,
            &Gemm {
                trans_a: false,
                trans_b: false,
            },
        )?;
        let grad_w = grad.apply_op2_no_bwd(
            x,
            &Gemm {
                trans_a: true,
                trans_b: false,
            },
        )?;
        let grad_b = grad.sum(0)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

/// `op(a) · op(b)` for contiguous row-major matrices, `op` = optional transpose.
struct Gemm {
    trans_a: bool,
    trans_b: bool,
}

impl CustomOp2 for Gemm {
    fn name(&self) -> &'static str {
        "blas-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, _) = f32_rows(self.name(), s1, l1)?;
        let (b, _) = f32_rows(self.name(), s2, l2)?;
        let (a_rows, a_cols) = l1.shape().dims2()?;
        let (b_rows, b_cols) = l2.shape().dims2()?;
        let (m, k) = if self.trans_a {
            (a_cols, a_rows)
        } else {
            (a_rows, a_cols)
        };
        let (k_b, n) = if self.trans_b {
            (b_cols, b_rows)
        } else {
            (b_rows, b_cols)
        };
        if k != k_b {
            bail!("{}: inner dimensions {k} and {k_b} differ", self.name());
        }
        let mut out = vec![0f32; m * n];
        let flag = |t: bool| if t { TRANS } else { NO_TRANS };
        // SAFETY: both inputs are contiguous from their start offsets with the
        // row-major shapes checked above (leading dimension = stored columns),
        // and `out` holds m·n elements with leading dimension n.
        unsafe {
            cblas_sgemm(
                ROW_MAJOR,
                flag(self.trans_a),
                flag(self.trans_b),
                m as c_int,
                n as c_int,
                k as c_int,
                1.0,
                a.as_ptr(),
                a_cols as c_int,
                b.as_ptr(),
                b_cols as c_int,
                0.0,
                out.as_mut_ptr(),
                n as c_int,
            );
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
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

    #[test]
    fn trainable_gradients_agree_with_candle() {
        use candle_core::Var;
        let x = Var::randn(0f32, 1., (7, 5), &Device::Cpu).unwrap();
        let w = Var::randn(0f32, 1., (3, 5), &Device::Cpu).unwrap();
        let b = Var::randn(0f32, 1., 3, &Device::Cpu).unwrap();
        let probe = Tensor::randn(0f32, 1., (7, 3), &Device::Cpu).unwrap();
        let loss = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap();
        let ours = loss(super::trainable_affine(&x, &w, &b).unwrap())
            .backward()
            .unwrap();
        let reference = loss(
            x.matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap(),
        )
        .backward()
        .unwrap();
        for v in [&x, &w, &b] {
            let diff = crate::model::max_abs_diff(
                ours.get(v.as_tensor()).unwrap(),
                reference.get(v.as_tensor()).unwrap(),
            );
            assert!(diff < 1e-5, "{diff}");
        }
    }
}
