//! BERT's dense layers as single matrix products ([`crate::matmul`]), bias
//! included: [`affine`] for inference, [`trainable_affine`] with a backward
//! whose three gradients are matrix products too.

use super::kernel::f32_rows;
use crate::matmul::{MatMut, MatRef, Products};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// Threads for a product: those of the rayon pool the op runs in. Encoder
/// workers each run in a one-thread pool; training runs in the global pool.
fn pool_threads() -> usize {
    rayon::current_num_threads()
}

fn shape_err(op: &str, e: crate::matmul::ShapeError) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: {e}"))
}

/// `x · wᵀ + b` for `x` `[m, k]`, a weight `w` `[n, k]` as stored by Hugging
/// Face, and a bias `b` `[n]`: the bias rows are written first and the
/// product accumulates onto them (beta = 1), saving a separate broadcast pass.
struct Affine {
    products: Products,
}

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "dense-affine"
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
        let err = |e| shape_err(self.name(), e);
        let x = MatRef::row_major(x, m, k).map_err(err)?;
        let w = MatRef::row_major(w, n, k).map_err(err)?;
        let mut y = MatMut::row_major(&mut out, m, n).map_err(err)?;
        self.products
            .gemm(x, w.t(), &mut y, 1.0, 1.0, pool_threads())
            .map_err(err)?;
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `x · wᵀ + b` (no gradient), its product in `products`.
pub fn affine(x: &Tensor, w: &Tensor, b: &Tensor, products: Products) -> Result<Tensor> {
    let op = Affine { products };
    x.contiguous()?
        .apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &op)
}

/// `x · wᵀ + b`, differentiable in all three arguments; its products (and
/// those of the backward) in `products`.
pub fn trainable_affine(x: &Tensor, w: &Tensor, b: &Tensor, products: Products) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        TrainableAffine { products },
    )
}

/// [`Affine`] plus its backward: for `y = x·wᵀ + b` and upstream `g`,
/// `∂x = g·w`, `∂w = gᵀ·x`, `∂b = Σ_rows g`.
struct TrainableAffine {
    products: Products,
}

impl CustomOp3 for TrainableAffine {
    fn name(&self) -> &'static str {
        "dense-trainable-affine"
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
        let products = self.products;
        Affine { products }.cpu_fwd(s1, l1, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        affine_grads(x, w, grad, self.products)
    }
}

/// The three gradients of `y = x·wᵀ + b` for upstream `grad`.
fn affine_grads(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    products: Products,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    {
        let grad = grad.contiguous()?;
        let grad_x = grad.apply_op2_no_bwd(
            w,
            &Gemm {
                trans_a: false,
                trans_b: false,
                products,
            },
        )?;
        let grad_w = grad.apply_op2_no_bwd(
            x,
            &Gemm {
                trans_a: true,
                trans_b: false,
                products,
            },
        )?;
        let grad_b = super::reduce::sum_rows(&grad)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

/// `gelu(x · wᵀ + b)` (exact GELU), differentiable in all three arguments:
/// BERT's intermediate layer as one node of the graph. The pre-activation is
/// kept by the op for its backward (as a separate GELU node would keep it),
/// and the backward goes from the output's gradient straight to the three
/// inputs' without a gradient for the pre-activation passing through the graph.
pub fn trainable_affine_gelu(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    products: Products,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        TrainableAffineGelu {
            pre_activation: Mutex::new(None),
            products,
        },
    )
}

struct TrainableAffineGelu {
    pre_activation: Mutex<Option<Tensor>>,
    products: Products,
}

impl CustomOp3 for TrainableAffineGelu {
    fn name(&self) -> &'static str {
        "dense-trainable-affine-gelu"
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
        let products = self.products;
        let (pre, shape) = Affine { products }.cpu_fwd(s1, l1, s2, l2, s3, l3)?;
        let out = super::gelu::gelu_erf_cpu(&pre, &Layout::contiguous(&shape))?;
        let CpuStorage::F32(pre) = pre else {
            bail!("{}: f32 only", self.name())
        };
        let pre = Tensor::from_vec(pre, &shape, &candle_core::Device::Cpu)?;
        *self.pre_activation.lock().expect("not poisoned") = Some(pre);
        Ok(out)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let pre = self.pre_activation.lock().expect("not poisoned").clone();
        let Some(pre) = pre else {
            bail!("{}: backward before forward", self.name())
        };
        let grad = super::gelu::gelu_erf_grad(&pre, grad)?;
        affine_grads(x, w, &grad, self.products)
    }
}

/// `op(a) · op(b)` for contiguous row-major matrices, `op` = optional transpose.
struct Gemm {
    trans_a: bool,
    trans_b: bool,
    products: Products,
}

impl CustomOp2 for Gemm {
    fn name(&self) -> &'static str {
        "dense-gemm"
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
        let err = |e| shape_err(self.name(), e);
        let view = |data, rows, cols, trans| {
            MatRef::row_major(data, rows, cols).map(|v| if trans { v.t() } else { v })
        };
        let a = view(a, a_rows, a_cols, self.trans_a).map_err(err)?;
        let b = view(b, b_rows, b_cols, self.trans_b).map_err(err)?;
        let mut c = MatMut::row_major(&mut out, m, n).map_err(err)?;
        self.products
            .gemm(a, b, &mut c, 1.0, 0.0, pool_threads())
            .map_err(err)?;
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

#[cfg(test)]
mod tests {
    use crate::matmul::Products::F32;
    use candle_core::{Device, Tensor};

    #[test]
    fn agrees_with_candle_matmul() {
        let x = Tensor::randn(0f32, 1., (7, 5), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1., (3, 5), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1., 3, &Device::Cpu).unwrap();
        let ours = super::affine(&x, &w, &b, F32).unwrap();
        let reference = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let diff = crate::max_abs_diff(&ours, &reference);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn fused_gelu_layer_and_its_gradients_agree_with_candle() {
        use candle_core::Var;
        let x = Var::randn(0f32, 1., (7, 5), &Device::Cpu).unwrap();
        let w = Var::randn(0f32, 1., (3, 5), &Device::Cpu).unwrap();
        let b = Var::randn(0f32, 1., 3, &Device::Cpu).unwrap();
        let probe = Tensor::randn(0f32, 1., (7, 3), &Device::Cpu).unwrap();
        let ours = super::trainable_affine_gelu(&x, &w, &b, F32).unwrap();
        let reference = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap()
            .gelu_erf()
            .unwrap();
        assert!(crate::max_abs_diff(&ours, &reference) < 1e-5);
        let loss = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap();
        let ours = loss(ours).backward().unwrap();
        let reference = loss(reference).backward().unwrap();
        for v in [&x, &w, &b] {
            let diff = crate::max_abs_diff(
                ours.get(v.as_tensor()).unwrap(),
                reference.get(v.as_tensor()).unwrap(),
            );
            assert!(diff < 1e-5, "{diff}");
        }
    }

    #[test]
    fn trainable_gradients_agree_with_candle() {
        use candle_core::Var;
        let x = Var::randn(0f32, 1., (7, 5), &Device::Cpu).unwrap();
        let w = Var::randn(0f32, 1., (3, 5), &Device::Cpu).unwrap();
        let b = Var::randn(0f32, 1., 3, &Device::Cpu).unwrap();
        let probe = Tensor::randn(0f32, 1., (7, 3), &Device::Cpu).unwrap();
        let loss = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap();
        let ours = loss(super::trainable_affine(&x, &w, &b, F32).unwrap())
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
            let diff = crate::max_abs_diff(
                ours.get(v.as_tensor()).unwrap(),
                reference.get(v.as_tensor()).unwrap(),
            );
            assert!(diff < 1e-5, "{diff}");
        }
    }
}
