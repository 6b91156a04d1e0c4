//! Exact GELU, vectorisable and parallel, with a one-pass backward for training.
//!
//! candle's `gelu_erf` calls a scalar `erf` per element, a large share of a
//! MiniLM forward pass, and its backward is several more passes; this uses
//! [`super::math::erf`], which the compiler vectorises.

use super::kernel::f32_rows;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + super::math::erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Writes `gelu(i[j])` into `o[j]`, with the widest vector unit the CPU has
/// (the default x86-64 target only assumes SSE2).
fn gelu_slice(o: &mut [std::mem::MaybeUninit<f32>], i: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { gelu_slice_avx512(o, i) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { gelu_slice_avx2(o, i) };
        }
    }
    gelu_slice_portable(o, i)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_slice_avx512(o: &mut [std::mem::MaybeUninit<f32>], i: &[f32]) {
    gelu_slice_portable(o, i)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(o: &mut [std::mem::MaybeUninit<f32>], i: &[f32]) {
    gelu_slice_portable(o, i)
}

#[inline(always)]
fn gelu_slice_portable(o: &mut [std::mem::MaybeUninit<f32>], i: &[f32]) {
    let n = o.len().min(i.len());
    let (o, i) = (&mut o[..n], &i[..n]);
    for j in 0..n {
        o[j].write(gelu(i[j]));
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fast-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, _) = f32_rows(self.name(), storage, layout)?;
        let mut out: Vec<f32> = Vec::with_capacity(input.len());
        out.spare_capacity_mut()
            .par_chunks_mut(1 << 14)
            .zip(input.par_chunks(1 << 14))
            .for_each(|(o, i)| gelu_slice(o, i));
        // SAFETY: the loop above wrote every one of the input.len() elements.
        unsafe { out.set_len(input.len()) };
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// [`gelu_erf`] on CPU storage, for ops that fuse it.
pub fn gelu_erf_cpu(storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
    Gelu.cpu_fwd(storage, layout)
}

/// GELU with exact erf semantics (Hugging Face's `"gelu"`), no gradient.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Gelu)
}

/// GELU's input gradient: `∂y · gelu'(x)` for the input `x` and upstream `∂y`.
pub fn gelu_erf_grad(x: &Tensor, grad: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)
}

/// `∂y · (Φ(x) + x·φ(x))`, GELU's derivative times the upstream gradient.
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "fast-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, _) = f32_rows(self.name(), s1, l1)?;
        let (dy, _) = f32_rows(self.name(), s2, l2)?;
        let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14).zip(dy.par_chunks(1 << 14)))
            .for_each(|(o, (x, dy))| {
                for j in 0..o.len() {
                    let cdf =
                        0.5 * (1.0 + super::math::erf(x[j] * std::f32::consts::FRAC_1_SQRT_2));
                    let pdf = (-0.5 * x[j] * x[j]).exp() * inv_sqrt_2pi;
                    o[j] = dy[j] * (cdf + x[j] * pdf);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_matches_candle_gelu_erf() {
        let x = Tensor::randn(0f32, 3., (64, 33), &candle_core::Device::Cpu).unwrap();
        let fast = gelu_erf(&x).unwrap();
        let reference = x.gelu_erf().unwrap();
        let diff = crate::max_abs_diff(&fast, &reference);
        assert!(diff < 2e-6, "{diff}");
    }

    #[test]
    fn input_gradient_matches_candle() {
        let x = candle_core::Var::randn(0f32, 3., (64, 33), &candle_core::Device::Cpu).unwrap();
        let probe = Tensor::randn(0f32, 1., (64, 33), &candle_core::Device::Cpu).unwrap();
        let theirs = (x.gelu_erf().unwrap() * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let ours = gelu_erf_grad(x.as_tensor(), &probe).unwrap();
        let diff = crate::max_abs_diff(&ours, theirs.get(x.as_tensor()).unwrap());
        assert!(diff < 1e-5, "{diff}");
    }
}
