//! The BERT ops written with candle's own differentiable tensor ops only.
//!
//! cpack's fused kernels (`dense`, `attention`, `fused`, `gelu`,
//! `embedding_sum`, `dropout`) read and write CPU memory, so a tensor on
//! another device cannot run them. These are the same computations as plain
//! candle ops, which candle runs on every device it supports and
//! differentiates itself: the path a CUDA model takes, and on CPU the test of
//! that path against the kernels. Dropout draws the very masks the kernels
//! draw, so a training step here equals one there. In bf16 the products and
//! activations stay bf16; layer norms and softmax run in f32, as mixed
//! precision does.

use super::dropout::Mask;
use candle_core::{DType, Result, Tensor, D};

/// `x · wᵀ + b` for `x` `[rows, in]`, `w` `[out, in]`.
pub fn affine(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.matmul(&w.t()?)?.broadcast_add(b)
}

/// Layer norm over the last dimension (biased variance, as PyTorch),
/// computed in f32 and returned in `x`'s dtype.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let f32 = |t: &Tensor| t.to_dtype(DType::F32);
    let x32 = f32(x)?;
    let centered = x32.broadcast_sub(&x32.mean_keepdim(D::Minus1)?)?;
    let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered
        .broadcast_div(&(variance + eps)?.sqrt()?)?
        .broadcast_mul(&f32(gamma)?)?
        .broadcast_add(&f32(beta)?)?
        .to_dtype(x.dtype())
}

/// `words` `[batch, seq, hidden]` plus `positions` `[seq, hidden]` plus `segment` `[hidden]`.
pub fn embedding_sum(words: &Tensor, positions: &Tensor, segment: &Tensor) -> Result<Tensor> {
    words.broadcast_add(positions)?.broadcast_add(segment)
}

/// `x` times the mask's factors, element `i` of `x` (row-major) by factor `i`.
pub fn dropout(mask: Option<Mask>, x: &Tensor) -> Result<Tensor> {
    let Some(mask) = mask else {
        return Ok(x.clone());
    };
    let mut factors = vec![1f32; x.elem_count()];
    mask.apply_to(&mut factors, 0);
    let factors = Tensor::from_vec(factors, x.shape(), &candle_core::Device::Cpu)?;
    x.mul(&factors.to_dtype(x.dtype())?.to_device(x.device())?)
}

/// Multi-head self-attention: `qkv` `[batch · seq, 3 · hidden]` (queries,
/// keys, values side by side), `key_bias` `[batch, seq]` added to every
/// score of a key, `mask` on the probabilities laid out `[batch, heads,
/// seq, seq]` (the kernel's numbering). Returns `[batch · seq, hidden]`.
pub fn attention(
    qkv: &Tensor,
    key_bias: &Tensor,
    heads: usize,
    head_dim: usize,
    mask: Option<Mask>,
) -> Result<Tensor> {
    let (batch, seq) = key_bias.dims2()?;
    let hidden = heads * head_dim;
    let part = |i: usize| {
        qkv.narrow(1, i * hidden, hidden)?
            .reshape((batch, seq, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let scores =
        (q.matmul(&k.t()?)? * scale)?.broadcast_add(&key_bias.reshape((batch, 1, 1, seq))?)?;
    let probs = dropout(mask, &softmax_last(&scores)?)?;
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((batch * seq, hidden))
}

/// Softmax over the last dimension in f32, returned in `x`'s dtype; the row
/// maximum only shifts the exponent, so it is taken out of the graph.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let x32 = x.to_dtype(DType::F32)?;
    let shifted = x32.broadcast_sub(&x32.max_keepdim(D::Minus1)?.detach())?;
    let num = shifted.exp()?;
    num.broadcast_div(&num.sum_keepdim(D::Minus1)?)?
        .to_dtype(x.dtype())
}
