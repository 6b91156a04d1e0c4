//! The optimizer's element-wise work as single passes over f32 slices:
//! the AdamW update (weight, both moments, one read of the gradient),
//! gradient scaling for clipping, and sums of squares for the norm.
//!
//! Written with candle tensor ops, one AdamW update is a dozen passes, each
//! allocating a tensor the size of the parameter — MiniLM's word embeddings
//! alone are 11.7 M values — so the optimizer cost a large share of a step.
//! Here each parameter is one parallel pass, in place. Tensors on another
//! device take the same arithmetic as candle ops (`portable_*`), which CPU
//! tests hold to these kernels.

use candle_core::{bail, CpuStorage, InplaceOp1, InplaceOp2, Layout, Result, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

fn contiguous_f32<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: f32 tensors only")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: contiguous tensors only")
    };
    Ok(&data[start..end])
}

fn contiguous_f32_mut<'a>(
    op: &str,
    storage: &'a mut CpuStorage,
    layout: &Layout,
) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: f32 tensors only")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: contiguous tensors only")
    };
    Ok(&mut data[start..end])
}

/// The coefficients of one AdamW step for one parameter, as PyTorch's
/// `_single_tensor_adamw` computes them.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// `1 − lr·weight_decay`, or 1 for parameters without decay.
    pub decay_factor: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `√(1 − β₂ᵗ)`.
    pub bias_correction2_sqrt: f64,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f64,
    /// The gradient is multiplied by this first (the clipping coefficient).
    pub grad_scale: f64,
}

/// Updates a weight in place from its gradient; the moments (`exp_avg`,
/// `exp_avg_sq`, as long as the weight) are held by the op and updated too.
struct AdamWUpdate<'a> {
    step: AdamWStep,
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
}

impl InplaceOp2 for AdamWUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let weight = contiguous_f32_mut(self.name(), s1, l1)?;
        let grad = contiguous_f32(self.name(), s2, l2)?;
        let mut moments = self.moments.lock().expect("the op runs once at a time");
        let (exp_avg, exp_avg_sq) = &mut *moments;
        if grad.len() != weight.len() || exp_avg.len() != weight.len() {
            bail!(
                "{}: weight {}, gradient {}, moments {} differ in length",
                self.name(),
                weight.len(),
                grad.len(),
                exp_avg.len()
            );
        }
        let s = self.step;
        // The same f32 operations, in the same order, as the tensor-op
        // version this replaces (candle's affine is `v·mul + add`).
        let (decay, grad_scale) = (s.decay_factor as f32, s.grad_scale as f32);
        let (b1, one_minus_b1) = (s.beta1 as f32, (1.0 - s.beta1) as f32);
        let (b2, one_minus_b2) = (s.beta2 as f32, (1.0 - s.beta2) as f32);
        let inv_bc2 = (1.0 / s.bias_correction2_sqrt) as f32;
        let (eps, step_size) = (s.eps as f32, s.step_size as f32);
        weight
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(
                exp_avg
                    .par_chunks_mut(CHUNK)
                    .zip(exp_avg_sq.par_chunks_mut(CHUNK)),
            )
            .for_each(|((w, g), (m, v))| {
                for i in 0..w.len() {
                    let g = if grad_scale == 1.0 {
                        g[i]
                    } else {
                        g[i] * grad_scale
                    };
                    let w_decayed = if decay == 1.0 { w[i] } else { w[i] * decay };
                    m[i] = m[i] * b1 + g * one_minus_b1;
                    v[i] = v[i] * b2 + (g * g) * one_minus_b2;
                    let denom = v[i].sqrt() * inv_bc2 + eps;
                    w[i] = w_decayed - (m[i] / denom) * step_size;
                }
            });
        Ok(())
    }
}

/// One AdamW step on `weight` (in place) with `grad` and the moments.
pub fn adamw_update(
    weight: &Tensor,
    grad: &Tensor,
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    step: AdamWStep,
) -> Result<()> {
    let op = AdamWUpdate {
        step,
        moments: Mutex::new((exp_avg, exp_avg_sq)),
    };
    weight.inplace_op2(&grad.contiguous()?, &op)
}

/// Multiplies a tensor in place.
struct Scale(f32);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "scale-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let data = contiguous_f32_mut(self.name(), s, l)?;
        let factor = self.0;
        data.par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|v| *v *= factor));
        Ok(())
    }
}

/// `t *= factor`: in place on the CPU (`t` must not be shared with a tensor
/// that has to keep its values), a new tensor elsewhere.
pub fn scale(t: &mut Tensor, factor: f64) -> Result<()> {
    if t.device().is_cpu() {
        t.inplace_op1(&Scale(factor as f32))
    } else {
        *t = (&*t * factor)?;
        Ok(())
    }
}

/// Σ v² over a tensor, accumulated in f64 on the CPU.
pub fn sum_of_squares(t: &Tensor) -> Result<f64> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        drop(storage);
        return portable_sum_of_squares(&t);
    };
    let data = contiguous_f32("sum-of-squares", cpu, layout)?;
    // Partials in chunk order, added in that order: the same bits whatever
    // the threads.
    let partials: Vec<f64> = data
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect();
    Ok(partials.iter().sum())
}

/// Σ v² with candle's ops, on the tensor's device.
fn portable_sum_of_squares(t: &Tensor) -> Result<f64> {
    t.to_dtype(candle_core::DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()
}

/// [`adamw_update`] with candle's ops, for variables on any device: the
/// same f32 operations in the same order, the moments replaced by their new
/// values.
pub fn portable_adamw_update(
    weight: &candle_core::Var,
    grad: &Tensor,
    exp_avg: &mut Tensor,
    exp_avg_sq: &mut Tensor,
    s: AdamWStep,
) -> Result<()> {
    let grad = if s.grad_scale == 1.0 {
        grad.clone()
    } else {
        grad.affine(s.grad_scale, 0.0)?
    };
    let w = weight.as_tensor();
    let decayed = if s.decay_factor == 1.0 {
        w.clone()
    } else {
        w.affine(s.decay_factor, 0.0)?
    };
    *exp_avg = (exp_avg.affine(s.beta1, 0.0)? + grad.affine(1.0 - s.beta1, 0.0)?)?;
    *exp_avg_sq = (exp_avg_sq.affine(s.beta2, 0.0)? + grad.sqr()?.affine(1.0 - s.beta2, 0.0)?)?;
    let denom = exp_avg_sq
        .sqrt()?
        .affine(1.0 / s.bias_correction2_sqrt, s.eps)?;
    let update = (&*exp_avg / denom)?.affine(s.step_size, 0.0)?;
    weight.set(&(decayed - update)?)
}

/// The values of a contiguous f32 tensor, copied.
pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn both_sums_of_squares_agree() {
        let values: Vec<f32> = (0..100_003).map(|i| ((i as f32) * 0.013).cos()).collect();
        let t = Tensor::from_vec(values, (100_003,), &Device::Cpu).unwrap();
        let (kernel, portable) = (
            sum_of_squares(&t).unwrap(),
            portable_sum_of_squares(&t).unwrap(),
        );
        assert!(
            (kernel - portable).abs() <= 1e-12 * kernel,
            "{kernel} vs {portable}"
        );
        let mut scaled = t.copy().unwrap();
        scale(&mut scaled, 0.5).unwrap();
        let quarter = sum_of_squares(&scaled).unwrap();
        assert!((quarter - kernel / 4.0).abs() <= 1e-9 * kernel);
    }
}
