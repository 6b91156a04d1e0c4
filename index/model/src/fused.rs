//! A differentiable layer norm as a single kernel with a hand-written
//! backward, for training.
//!
//! Written with plain candle ops, a layer norm is nine element-wise passes
//! forward and more backward; in a training step such passes cost about as
//! much as the matrix products. This is one pass over its rows forward and
//! one backward (rows in parallel on the rayon pool).

use super::kernel::f32_rows;
use super::reduce::sum_over_row_blocks;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Mean and 1/σ of one row.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `(x − mean) / σ · γ + β` over the last dimension.
struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let (x, cols) = f32_rows(self.name(), s1, l1)?;
        let (gamma, _) = f32_rows(self.name(), s2, l2)?;
        let (beta, _) = f32_rows(self.name(), s3, l3)?;
        if gamma.len() != cols || beta.len() != cols {
            bail!(
                "{}: weight length differs from the row length {cols}",
                self.name()
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(cols)
            .zip(x.par_chunks(cols))
            .for_each(|(o, row)| {
                let (mean, rstd) = row_stats(row, self.eps);
                for i in 0..cols {
                    o[i] = (row[i] - mean) * rstd * gamma[i] + beta[i];
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let weight_grads = x.apply_op2_no_bwd(&grad, &LayerNormWeightGrads { eps: self.eps })?;
        let grad_gamma = weight_grads.get(0)?;
        let grad_beta = weight_grads.get(1)?;
        let grad_x = x.apply_op3_no_bwd(gamma, &grad, &LayerNormInputGrad { eps: self.eps })?;
        Ok((Some(grad_x), Some(grad_gamma), Some(grad_beta)))
    }
}

/// ∂γ = Σ_rows ∂y·x̂ and ∂β = Σ_rows ∂y, in one pass over the rows (x̂
/// recomputed per row), as a `[2, cols]` tensor.
struct LayerNormWeightGrads {
    eps: f32,
}

impl CustomOp2 for LayerNormWeightGrads {
    fn name(&self) -> &'static str {
        "fused-layer-norm-weight-grads"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, cols) = f32_rows(self.name(), s1, l1)?;
        let (grad, _) = f32_rows(self.name(), s2, l2)?;
        if grad.len() != x.len() {
            bail!("{}: gradient and input differ in size", self.name());
        }
        let rows = x.len().checked_div(cols).unwrap_or(0);
        let out = sum_over_row_blocks(rows, 2 * cols, |range, acc| {
            let (acc_gamma, acc_beta) = acc.split_at_mut(cols);
            for r in range {
                let row = &x[r * cols..(r + 1) * cols];
                let dy = &grad[r * cols..(r + 1) * cols];
                let (mean, rstd) = row_stats(row, self.eps);
                for i in 0..cols {
                    acc_gamma[i] += dy[i] * ((row[i] - mean) * rstd);
                    acc_beta[i] += dy[i];
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((2, cols))))
    }
}

/// ∂x of a layer norm: with g = ∂y·γ, `∂x = (g − mean(g) − x̂·mean(g·x̂)) / σ`.
struct LayerNormInputGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormInputGrad {
    fn name(&self) -> &'static str {
        "fused-layer-norm-input-grad"
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
        let (x, cols) = f32_rows(self.name(), s1, l1)?;
        let (gamma, _) = f32_rows(self.name(), s2, l2)?;
        let (grad, _) = f32_rows(self.name(), s3, l3)?;
        let n = cols as f32;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(cols)
            .zip(x.par_chunks(cols).zip(grad.par_chunks(cols)))
            .for_each(|(o, (row, dy))| {
                let (mean, rstd) = row_stats(row, self.eps);
                let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                for i in 0..cols {
                    let g = dy[i] * gamma[i];
                    sum_g += g;
                    sum_gx += g * (row[i] - mean) * rstd;
                }
                let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
                for i in 0..cols {
                    let xhat = (row[i] - mean) * rstd;
                    o[i] = rstd * (dy[i] * gamma[i] - mean_g - xhat * mean_gx);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Differentiable layer norm over the last dimension of a contiguous `x`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        LayerNorm { eps: eps as f32 },
    )
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var, D};

    fn plain_layer_norm(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let c = x.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let n = c
            .broadcast_div(&(var + 1e-12).unwrap().sqrt().unwrap())
            .unwrap();
        n.broadcast_mul(g).unwrap().broadcast_add(b).unwrap()
    }

    /// Values and every gradient agree with the same function in plain ops.
    fn check(vars: &[&Var], fused: Tensor, plain: Tensor) {
        let diff = crate::max_abs_diff(&fused, &plain);
        assert!(diff < 1e-4, "forward differs by {diff}");
        let probe = Tensor::randn(0f32, 1., fused.shape(), &Device::Cpu).unwrap();
        let ours = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let theirs = (plain * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in vars {
            let diff = crate::max_abs_diff(
                ours.get(v.as_tensor()).unwrap(),
                theirs.get(v.as_tensor()).unwrap(),
            );
            assert!(diff < 1e-3, "gradient differs by {diff}");
        }
    }

    #[test]
    fn layer_norm_matches_plain_ops_and_their_gradients() {
        let x = Var::randn(0.5f32, 2., (6, 16), &Device::Cpu).unwrap();
        let g = Var::randn(1f32, 0.3, 16, &Device::Cpu).unwrap();
        let b = Var::randn(0f32, 0.3, 16, &Device::Cpu).unwrap();
        let fused = super::layer_norm(&x, &g, &b, 1e-12).unwrap();
        check(&[&x, &g, &b], fused, plain_layer_norm(&x, &g, &b));
    }
}
