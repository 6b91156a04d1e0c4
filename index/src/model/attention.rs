//! Multi-head self-attention as one kernel, for inference.
//!
//! Written with tensor ops, attention copies the QKV projection into a
//! per-head layout, runs batched products, adds the padding mask in another
//! pass, takes a softmax whose `exp` is one libm call per score, and copies
//! the context back. Here each (sequence, head) reads its queries, keys and
//! values in place from the projection's rows (strided views), multiplies
//! through [`crate::matmul`] with the mask already in the accumulator, takes
//! a vectorised softmax, and writes its context straight into its columns of
//! the output.

use super::kernel::f32_rows;
use crate::matmul::{gemm, MatMut, MatRef, ShapeError};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct Attention {
    heads: usize,
    head_dim: usize,
}

fn shape_err(e: ShapeError) -> candle_core::Error {
    candle_core::Error::Msg(format!("fused-attention: {e}"))
}

impl Attention {
    /// One sequence: `qkv` its `[seq, 3·hidden]` projection rows, `bias` its
    /// `[seq]` key bias (0 for tokens, very negative for padding), `out` its
    /// `[seq, hidden]` context rows.
    fn sequence(&self, qkv: &[f32], bias: &[f32], out: &mut [f32]) -> Result<()> {
        let seq = bias.len();
        let hidden = self.heads * self.head_dim;
        let width = 3 * hidden;
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let mut scores = vec![0f32; seq * seq];
        for head in 0..self.heads {
            let column = head * self.head_dim;
            let part = |offset| MatRef::strided(&qkv[offset..], seq, self.head_dim, width, 1);
            let q = part(column).map_err(shape_err)?;
            let k = part(hidden + column).map_err(shape_err)?;
            let v = part(2 * hidden + column).map_err(shape_err)?;
            for row in scores.chunks_exact_mut(seq) {
                row.copy_from_slice(bias);
            }
            let mut s = MatMut::row_major(&mut scores, seq, seq).map_err(shape_err)?;
            gemm(q, k.t(), &mut s, scale, 1.0, 1).map_err(shape_err)?;
            softmax_rows(&mut scores, seq);
            let probs = MatRef::row_major(&scores, seq, seq).map_err(shape_err)?;
            let mut context = MatMut::strided(&mut out[column..], seq, self.head_dim, hidden, 1)
                .map_err(shape_err)?;
            gemm(probs, v, &mut context, 1.0, 0.0, 1).map_err(shape_err)?;
        }
        Ok(())
    }
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    /// `qkv` `[batch·seq, 3·hidden]` (queries, keys, values side by side,
    /// heads in order within each), `key_bias` `[batch, seq]`; returns the
    /// context `[batch·seq, hidden]`.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qkv, width) = f32_rows(self.name(), s1, l1)?;
        let (bias, seq) = f32_rows(self.name(), s2, l2)?;
        let hidden = self.heads * self.head_dim;
        let rows = qkv.len() / width.max(1);
        if width != 3 * hidden || seq == 0 || rows != bias.len() {
            bail!(
                "{}: a [{rows}, {width}] projection and a {:?} key bias do not fit {} heads of {}",
                self.name(),
                l2.dims(),
                self.heads,
                self.head_dim
            );
        }
        let mut out = vec![0f32; rows * hidden];
        out.par_chunks_mut(seq * hidden)
            .zip(qkv.par_chunks(seq * width).zip(bias.par_chunks(seq)))
            .try_for_each(|(out, (qkv, bias))| self.sequence(qkv, bias, out))?;
        Ok((CpuStorage::F32(out), Shape::from((rows, hidden))))
    }
}

/// Softmax of each `len`-long row, with the widest vector unit the CPU has
/// (the default x86-64 target assumes only SSE2).
fn softmax_rows(scores: &mut [f32], len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { softmax_rows_avx512(scores, len) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { softmax_rows_avx2(scores, len) };
        }
    }
    softmax_rows_portable(scores, len)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_rows_avx512(scores: &mut [f32], len: usize) {
    softmax_rows_portable(scores, len)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(scores: &mut [f32], len: usize) {
    softmax_rows_portable(scores, len)
}

#[inline(always)]
fn softmax_rows_portable(scores: &mut [f32], len: usize) {
    for row in scores.chunks_exact_mut(len) {
        super::math::softmax_in_place(row);
    }
}

/// Self-attention of `qkv` (`[batch·seq, 3·hidden]`) with `key_bias`
/// (`[batch, seq]`), no gradient; returns `[batch·seq, hidden]`.
pub fn attention(qkv: &Tensor, key_bias: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    qkv.contiguous()?
        .apply_op2_no_bwd(&key_bias.contiguous()?, &Attention { heads, head_dim })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, D};

    /// The same attention in plain tensor ops, as the differentiable forward runs it.
    fn reference(qkv: &Tensor, bias: &Tensor, heads: usize, hd: usize) -> Tensor {
        let (rows, _) = qkv.dims2().unwrap();
        let (batch, seq) = bias.dims2().unwrap();
        assert_eq!(rows, batch * seq);
        let qkv = qkv
            .reshape((batch, seq, 3, heads, hd))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap()
            .contiguous()
            .unwrap();
        let q = (qkv.get(0).unwrap() / (hd as f64).sqrt()).unwrap();
        let k = qkv.get(1).unwrap();
        let v = qkv.get(2).unwrap();
        let scores = q
            .matmul(&k.t().unwrap())
            .unwrap()
            .broadcast_add(&bias.reshape((batch, 1, 1, seq)).unwrap())
            .unwrap();
        candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((rows, heads * hd))
            .unwrap()
    }

    #[test]
    fn matches_plain_ops_with_padding() {
        let (batch, seq, heads, hd) = (3, 7, 4, 8);
        let qkv = Tensor::randn(0f32, 1., (batch * seq, 3 * heads * hd), &Device::Cpu).unwrap();
        // Sequences of 7, 4 and 1 real tokens.
        let mask: Vec<f32> = [7usize, 4, 1]
            .iter()
            .flat_map(|&n| (0..seq).map(move |i| if i < n { 0.0 } else { -1e9 }))
            .collect();
        let bias = Tensor::from_vec(mask, (batch, seq), &Device::Cpu).unwrap();
        let ours = super::attention(&qkv, &bias, heads, hd).unwrap();
        let diff = crate::model::max_abs_diff(&ours, &reference(&qkv, &bias, heads, hd));
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn refuses_a_projection_that_does_not_fit_the_heads() {
        let qkv = Tensor::zeros((4, 10), candle_core::DType::F32, &Device::Cpu).unwrap();
        let bias = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(super::attention(&qkv, &bias, 2, 2).is_err());
    }
}
