//! Heads over the encoder's token states. Today one: the pooled sentence
//! embedding of sentence-transformers (mean or `[CLS]` pooling, then an
//! optional L2 normalisation), shared by inference and training.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Average over real (non-padding) tokens, as all-MiniLM and GTE.
    Mean,
    /// The `[CLS]` token's state, as BGE.
    Cls,
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        })
    }
}

/// The sentence-embedding head: pooling, then (optionally) unit length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingHead {
    pub pooling: Pooling,
    pub normalize: bool,
}

impl EmbeddingHead {
    /// Pools `[batch, seq, hidden]` states under `mask` (`[batch, seq]`,
    /// 1 for real tokens) into `[batch, hidden]`, then normalises if asked.
    /// Built of differentiable ops: training runs it too.
    pub fn forward(&self, hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let mask3 = mask.unsqueeze(D::Minus1)?;
                let summed = hidden.broadcast_mul(&mask3)?.sum(1)?;
                let counts = mask.sum_keepdim(1)?.clamp(1e-9, f64::INFINITY)?;
                summed.broadcast_div(&counts)?
            }
        };
        if !self.normalize {
            return Ok(pooled);
        }
        // torch.nn.functional.normalize: x / max(‖x‖, 1e-12).
        let norms = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::INFINITY)?;
        pooled.broadcast_div(&norms)
    }
}
