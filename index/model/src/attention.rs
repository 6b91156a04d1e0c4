//! Multi-head self-attention as one kernel, forward and backward.
//!
//! Written with tensor ops, attention copies the QKV projection into a
//! per-head layout, runs batched products, adds the padding mask in another
//! pass, takes a softmax whose `exp` is one libm call per score, and copies
//! the context back; for the backward it keeps the scores, the
//! probabilities, the dropout mask and the dropped probabilities of every
//! head — at 256 tokens most of a training step's memory. Here each
//! (sequence, head) reads its queries, keys and values in place from the
//! projection's rows (strided views), multiplies through [`crate::matmul`]
//! with the mask already in the accumulator, takes a vectorised softmax, and
//! writes its context straight into its columns of the output. The backward
//! keeps nothing but the projection: it recomputes each head's
//! probabilities (one more product per head) and asks the dropout stream
//! for its mask again.

use super::dropout::Mask;
use super::kernel::f32_rows;
use crate::matmul::{MatMut, MatRef, Products, ShapeError};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The geometry of the heads and the dropout on their probabilities.
#[derive(Clone, Copy)]
struct Attention {
    heads: usize,
    head_dim: usize,
    dropout: Option<Mask>,
    products: Products,
}

fn shape_err(e: ShapeError) -> candle_core::Error {
    candle_core::Error::Msg(format!("fused-attention: {e}"))
}

/// One head of one sequence: views into the projection rows of the sequence.
struct Head<'a> {
    q: MatRef<'a>,
    k: MatRef<'a>,
    v: MatRef<'a>,
    /// First column of this head within each of Q, K, V (and the context).
    column: usize,
    /// Index of this (sequence, head) among all of the batch's.
    number: usize,
}

impl Attention {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Head `head` of the sequence `sequence` whose projection rows are `qkv`.
    fn head<'a>(
        &self,
        qkv: &'a [f32],
        seq: usize,
        sequence: usize,
        head: usize,
    ) -> Result<Head<'a>> {
        let (hidden, column) = (self.hidden(), head * self.head_dim);
        let part = |offset| {
            MatRef::strided(&qkv[offset..], seq, self.head_dim, 3 * hidden, 1).map_err(shape_err)
        };
        Ok(Head {
            q: part(column)?,
            k: part(hidden + column)?,
            v: part(2 * hidden + column)?,
            column,
            number: sequence * self.heads + head,
        })
    }

    /// `probs ← softmax(scale·Q·Kᵀ + bias)`, row by row.
    fn probabilities(&self, head: &Head, bias: &[f32], probs: &mut [f32]) -> Result<()> {
        let seq = bias.len();
        for row in probs.chunks_exact_mut(seq) {
            row.copy_from_slice(bias);
        }
        let mut s = MatMut::row_major(probs, seq, seq).map_err(shape_err)?;
        self.products
            .gemm(head.q, head.k.t(), &mut s, self.scale(), 1.0, 1)
            .map_err(shape_err)?;
        softmax_rows(probs, seq);
        Ok(())
    }

    /// The dropout mask of a head on `probs` (a no-op without dropout).
    fn drop(&self, head: &Head, probs: &mut [f32]) {
        if let Some(mask) = &self.dropout {
            mask.apply_to(probs, (head.number * probs.len()) as u64);
        }
    }

    /// One sequence: `qkv` its `[seq, 3·hidden]` projection rows, `bias` its
    /// `[seq]` key bias (0 for tokens, very negative for padding), `out` its
    /// `[seq, hidden]` context rows.
    fn forward_sequence(
        &self,
        sequence: usize,
        qkv: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let seq = bias.len();
        let mut probs = vec![0f32; seq * seq];
        for h in 0..self.heads {
            let head = self.head(qkv, seq, sequence, h)?;
            self.probabilities(&head, bias, &mut probs)?;
            self.drop(&head, &mut probs);
            let p = MatRef::row_major(&probs, seq, seq).map_err(shape_err)?;
            let mut context = MatMut::strided(
                &mut out[head.column..],
                seq,
                self.head_dim,
                self.hidden(),
                1,
            )
            .map_err(shape_err)?;
            self.products
                .gemm(p, head.v, &mut context, 1.0, 0.0, 1)
                .map_err(shape_err)?;
        }
        Ok(())
    }

    /// The gradient of one sequence's projection rows, `grad_qkv`, from the
    /// gradient of its context rows, `grad_out`.
    fn backward_sequence(
        &self,
        sequence: usize,
        qkv: &[f32],
        bias: &[f32],
        grad_out: &[f32],
        grad_qkv: &mut [f32],
    ) -> Result<()> {
        let seq = bias.len();
        let (hidden, hd) = (self.hidden(), self.head_dim);
        let mut probs = vec![0f32; seq * seq];
        let mut dropped = vec![0f32; seq * seq];
        let mut grad_probs = vec![0f32; seq * seq];
        for h in 0..self.heads {
            let head = self.head(qkv, seq, sequence, h)?;
            self.probabilities(&head, bias, &mut probs)?;
            dropped.copy_from_slice(&probs);
            self.drop(&head, &mut dropped);
            let d_context =
                MatRef::strided(&grad_out[head.column..], seq, hd, hidden, 1).map_err(shape_err)?;
            // ∂V = P̃ᵀ·∂O, with P̃ the dropped probabilities.
            let p_dropped = MatRef::row_major(&dropped, seq, seq).map_err(shape_err)?;
            let mut d_v = MatMut::strided(
                &mut grad_qkv[2 * hidden + head.column..],
                seq,
                hd,
                3 * hidden,
                1,
            )
            .map_err(shape_err)?;
            self.products
                .gemm(p_dropped.t(), d_context, &mut d_v, 1.0, 0.0, 1)
                .map_err(shape_err)?;
            // ∂P̃ = ∂O·Vᵀ, then back through the mask: ∂P = ∂P̃ ⊙ mask.
            let mut d_p = MatMut::row_major(&mut grad_probs, seq, seq).map_err(shape_err)?;
            self.products
                .gemm(d_context, head.v.t(), &mut d_p, 1.0, 0.0, 1)
                .map_err(shape_err)?;
            self.drop(&head, &mut grad_probs);
            // Softmax: ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)), kept in grad_probs.
            for (g, p) in grad_probs
                .chunks_exact_mut(seq)
                .zip(probs.chunks_exact(seq))
            {
                let dot: f32 = g.iter().zip(p).map(|(a, b)| a * b).sum();
                for (gi, pi) in g.iter_mut().zip(p) {
                    *gi = pi * (*gi - dot);
                }
            }
            let d_s = MatRef::row_major(&grad_probs, seq, seq).map_err(shape_err)?;
            // S = scale·Q·Kᵀ: ∂Q = scale·∂S·K, ∂K = scale·∂Sᵀ·Q.
            let mut d_q = MatMut::strided(&mut grad_qkv[head.column..], seq, hd, 3 * hidden, 1)
                .map_err(shape_err)?;
            self.products
                .gemm(d_s, head.k, &mut d_q, self.scale(), 0.0, 1)
                .map_err(shape_err)?;
            let mut d_k = MatMut::strided(
                &mut grad_qkv[hidden + head.column..],
                seq,
                hd,
                3 * hidden,
                1,
            )
            .map_err(shape_err)?;
            self.products
                .gemm(d_s.t(), head.q, &mut d_k, self.scale(), 0.0, 1)
                .map_err(shape_err)?;
        }
        Ok(())
    }

    /// Rows of the projection and sequence length, checked against the heads.
    fn geometry(
        &self,
        op: &str,
        qkv: &[f32],
        width: usize,
        l2: &Layout,
        bias: &[f32],
    ) -> Result<(usize, usize)> {
        let seq = *l2.dims().last().unwrap_or(&0);
        let rows = qkv.len() / width.max(1);
        if width != 3 * self.hidden() || seq == 0 || rows != bias.len() {
            bail!(
                "{op}: a [{rows}, {width}] projection and a {:?} key bias do not fit {} heads of {}",
                l2.dims(),
                self.heads,
                self.head_dim
            );
        }
        Ok((rows, seq))
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
        let (bias, _) = f32_rows(self.name(), s2, l2)?;
        let (rows, seq) = self.geometry(self.name(), qkv, width, l2, bias)?;
        let hidden = self.hidden();
        let mut out = vec![0f32; rows * hidden];
        out.par_chunks_mut(seq * hidden)
            .zip(qkv.par_chunks(seq * width).zip(bias.par_chunks(seq)))
            .enumerate()
            .try_for_each(|(n, (out, (qkv, bias)))| self.forward_sequence(n, qkv, bias, out))?;
        Ok((CpuStorage::F32(out), Shape::from((rows, hidden))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        key_bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_qkv =
            qkv.apply_op3_no_bwd(key_bias, &grad.contiguous()?, &AttentionGrad(*self))?;
        Ok((Some(grad_qkv), None))
    }
}

/// The backward of [`Attention`]: (qkv, key bias, ∂context) → ∂qkv.
struct AttentionGrad(Attention);

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "fused-attention-grad"
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
        let a = &self.0;
        let (qkv, width) = f32_rows(self.name(), s1, l1)?;
        let (bias, _) = f32_rows(self.name(), s2, l2)?;
        let (grad_out, _) = f32_rows(self.name(), s3, l3)?;
        let (rows, seq) = a.geometry(self.name(), qkv, width, l2, bias)?;
        if grad_out.len() != rows * a.hidden() {
            bail!(
                "{}: the context gradient has {} elements",
                self.name(),
                grad_out.len()
            );
        }
        let mut grad_qkv = vec![0f32; qkv.len()];
        grad_qkv
            .par_chunks_mut(seq * width)
            .zip(qkv.par_chunks(seq * width))
            .zip(
                bias.par_chunks(seq)
                    .zip(grad_out.par_chunks(seq * a.hidden())),
            )
            .enumerate()
            .try_for_each(|(n, ((g, qkv), (bias, d_out)))| {
                a.backward_sequence(n, qkv, bias, d_out, g)
            })?;
        Ok((CpuStorage::F32(grad_qkv), l1.shape().clone()))
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
/// (`[batch, seq]`), no gradient, its products in `products`; returns
/// `[batch·seq, hidden]`.
pub fn attention(
    qkv: &Tensor,
    key_bias: &Tensor,
    heads: usize,
    head_dim: usize,
    products: Products,
) -> Result<Tensor> {
    let op = Attention {
        heads,
        head_dim,
        dropout: None,
        products,
    };
    qkv.contiguous()?
        .apply_op2_no_bwd(&key_bias.contiguous()?, &op)
}

/// [`attention`] with `dropout` on the probabilities, differentiable in `qkv`.
pub(crate) fn trainable_attention(
    qkv: &Tensor,
    key_bias: &Tensor,
    heads: usize,
    head_dim: usize,
    dropout: Option<Mask>,
    products: Products,
) -> Result<Tensor> {
    let op = Attention {
        heads,
        head_dim,
        dropout,
        products,
    };
    qkv.contiguous()?.apply_op2(&key_bias.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use crate::matmul::Products::F32;
    use candle_core::{Device, Tensor, Var, D};

    const SHAPE: (usize, usize, usize, usize) = (3, 7, 4, 8);

    /// The same attention in plain tensor ops (differentiable, no dropout).
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

    /// A projection and a key bias for sequences of 7, 4 and 1 real tokens.
    fn inputs() -> (Var, Tensor) {
        let (batch, seq, heads, hd) = SHAPE;
        let qkv = Var::randn(0f32, 1., (batch * seq, 3 * heads * hd), &Device::Cpu).unwrap();
        let mask: Vec<f32> = [7usize, 4, 1]
            .iter()
            .flat_map(|&n| (0..seq).map(move |i| if i < n { 0.0 } else { -1e9 }))
            .collect();
        (
            qkv,
            Tensor::from_vec(mask, (batch, seq), &Device::Cpu).unwrap(),
        )
    }

    #[test]
    fn matches_plain_ops_with_padding() {
        let (_, _, heads, hd) = SHAPE;
        let (qkv, bias) = inputs();
        let ours = super::attention(qkv.as_tensor(), &bias, heads, hd, F32).unwrap();
        let diff = crate::max_abs_diff(&ours, &reference(qkv.as_tensor(), &bias, heads, hd));
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn the_backward_matches_plain_ops() {
        let (_, _, heads, hd) = SHAPE;
        let (qkv, bias) = inputs();
        let ours =
            super::trainable_attention(qkv.as_tensor(), &bias, heads, hd, None, F32).unwrap();
        let theirs = reference(qkv.as_tensor(), &bias, heads, hd);
        let probe = Tensor::randn(0f32, 1., ours.shape(), &Device::Cpu).unwrap();
        let grad = |y: &Tensor| {
            let grads = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(qkv.as_tensor()).unwrap().clone()
        };
        let diff = crate::max_abs_diff(&grad(&ours), &grad(&theirs));
        assert!(diff < 1e-4, "{diff}");
    }

    /// With dropout, the gradient is that of the same masked computation:
    /// checked against central finite differences of a scalar probe.
    #[test]
    fn the_backward_with_dropout_matches_finite_differences() {
        let (_, _, heads, hd) = SHAPE;
        let (qkv, bias) = inputs();
        let mask = crate::Dropout::attention_mask(Some(&crate::Dropout::new(0.0, 0.3, 9)));
        let run = |x: &Tensor| super::trainable_attention(x, &bias, heads, hd, mask, F32).unwrap();
        let probe = Tensor::randn(0f32, 1., run(qkv.as_tensor()).shape(), &Device::Cpu).unwrap();
        let value = |x: &Tensor| {
            (run(x) * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let grads = (run(qkv.as_tensor()) * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let analytic = grads
            .get(qkv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let base = qkv
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let shape = qkv.as_tensor().shape().clone();
        for index in (0..base.len()).step_by(37) {
            let nudged = |delta: f32| {
                let mut v = base.clone();
                v[index] += delta;
                Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap()
            };
            let eps = 1e-2;
            let numeric = (value(&nudged(eps)) - value(&nudged(-eps))) / (2.0 * eps as f64);
            let got = analytic[index] as f64;
            assert!(
                (got - numeric).abs() < 2e-2 * (1.0 + numeric.abs()),
                "element {index}: {got} vs {numeric}"
            );
        }
    }

    #[test]
    fn refuses_a_projection_that_does_not_fit_the_heads() {
        let qkv = Tensor::zeros((4, 10), candle_core::DType::F32, &Device::Cpu).unwrap();
        let bias = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(super::attention(&qkv, &bias, 2, 2, F32).is_err());
    }
}
