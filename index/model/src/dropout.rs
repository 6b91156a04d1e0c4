//! Training-time dropout, as Hugging Face's BERT applies it: after the
//! embeddings, on the attention probabilities, and on both sublayer outputs
//! before their residual sums. Kept elements are scaled by 1/(1 − p).
//!
//! Masks are counter-based: element `i` of a mask stream is kept or dropped
//! by a hash of (stream, i). Nothing is stored for the backward — it asks
//! the same stream again — the masks of a step follow from its seed, and a
//! pass can be repeated with identical masks (gradient caching runs each
//! mini-batch twice), all without candle's unseeded random source.

use super::kernel::f32_rows;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// The dropout of one forward pass: rates and a seed; each place it is
/// applied draws the next mask stream.
pub struct Dropout {
    hidden: f32,
    attention: f32,
    seed: u64,
    streams: AtomicU64,
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Dropout {
    /// `hidden` and `attention` are the drop probabilities (`hidden_dropout_prob`,
    /// `attention_probs_dropout_prob` in config.json).
    pub fn new(hidden: f32, attention: f32, seed: u64) -> Self {
        Dropout {
            hidden,
            attention,
            seed,
            streams: AtomicU64::new(0),
        }
    }

    /// An independent dropout at the same rates, a pure function of this
    /// one's seed and `salt`: for forward passes that must be repeated with
    /// the same masks.
    pub fn fork(&self, salt: u64) -> Dropout {
        Dropout::new(
            self.hidden,
            self.attention,
            mix(self.seed ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03)),
        )
    }

    fn next(&self, p: f32) -> Option<Mask> {
        let n = self.streams.fetch_add(1, Ordering::Relaxed);
        Mask::new(p, mix(self.seed.wrapping_add(n.wrapping_mul(GOLDEN))))
    }

    /// The mask for the next hidden-state dropout, `None` at rate 0.
    pub(crate) fn hidden_mask(dropout: Option<&Dropout>) -> Option<Mask> {
        dropout.and_then(|d| d.next(d.hidden))
    }

    /// The mask for the next attention-probability dropout, `None` at rate 0.
    pub(crate) fn attention_mask(dropout: Option<&Dropout>) -> Option<Mask> {
        dropout.and_then(|d| d.next(d.attention))
    }

    /// `x` with the next hidden-state mask applied (differentiable).
    pub(crate) fn hidden(dropout: Option<&Dropout>, x: &Tensor) -> Result<Tensor> {
        match Self::hidden_mask(dropout) {
            Some(mask) => x.contiguous()?.apply_op1(mask),
            None => Ok(x.clone()),
        }
    }
}

/// One mask stream: element `i` is dropped when the top 24 bits of
/// `hash(stream, i)` fall below p·2²⁴, else scaled by 1/(1 − p).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mask {
    stream: u64,
    threshold: u64,
    scale: f32,
}

impl Mask {
    fn new(p: f32, stream: u64) -> Option<Self> {
        (p > 0.0).then(|| Mask {
            stream,
            threshold: (p as f64 * (1u64 << 24) as f64) as u64,
            scale: 1.0 / (1.0 - p),
        })
    }

    /// 0 or 1/(1 − p) for element `index`.
    #[inline(always)]
    pub(crate) fn factor(&self, index: u64) -> f32 {
        if mix(self.stream ^ index.wrapping_mul(GOLDEN)) >> 40 < self.threshold {
            0.0
        } else {
            self.scale
        }
    }

    /// Multiplies `values`, elements `first..` of the stream, by their factors.
    pub(crate) fn apply_to(&self, values: &mut [f32], first: u64) {
        for (i, v) in values.iter_mut().enumerate() {
            *v *= self.factor(first + i as u64);
        }
    }
}

/// Elements per parallel task of the element-wise op.
const CHUNK: usize = 1 << 14;

impl CustomOp1 for Mask {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, _) = f32_rows(self.name(), storage, layout)?;
        let mut out = x.to_vec();
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| self.apply_to(chunk, (c * CHUNK) as u64));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    /// The same mask on the gradient: `∂x = ∂y · factor`.
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn drops_at_its_rate_scales_survivors_and_repeats_per_seed() {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
        let masked = |seed| {
            Dropout::hidden(Some(&Dropout::new(0.1, 0.0, seed)), &x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let a = masked(7);
        let dropped = a.iter().filter(|&&v| v == 0.0).count();
        assert!(
            (800..1200).contains(&dropped),
            "{dropped} of 10000 dropped at p = 0.1"
        );
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(a, masked(7), "same seed, same mask");
        assert_ne!(a, masked(8));
        let d = Dropout::new(0.1, 0.0, 7);
        let first = Dropout::hidden(Some(&d), &x).unwrap();
        let second = Dropout::hidden(Some(&d), &x).unwrap();
        assert!(
            crate::max_abs_diff(&first, &second) > 0.0,
            "each call draws a new stream"
        );
        let fork = |salt| Dropout::hidden(Some(&d.fork(salt)), &x).unwrap();
        assert_eq!(crate::max_abs_diff(&fork(3), &fork(3)), 0.0);
        assert!(Dropout::hidden(Some(&Dropout::new(0.0, 0.0, 1)), &x).is_ok());
    }

    #[test]
    fn the_gradient_goes_through_the_same_mask() {
        let x = Var::randn(0f32, 1., (64, 33), &Device::Cpu).unwrap();
        let probe = Tensor::randn(0f32, 1., (64, 33), &Device::Cpu).unwrap();
        let y = Dropout::hidden(Some(&Dropout::new(0.3, 0.0, 5)), &x).unwrap();
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grad = grads.get(x.as_tensor()).unwrap();
        // y = x·factor, so ∂x = probe·factor = probe·y/x.
        let factor = (&y / x.as_tensor()).unwrap();
        let expected = (&probe * &factor).unwrap();
        assert!(crate::max_abs_diff(grad, &expected) < 1e-5);
    }
}
