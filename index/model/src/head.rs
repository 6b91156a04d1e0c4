//! Heads over the encoder's token states: the pooled sentence embedding of
//! sentence-transformers (mean or `[CLS]` pooling, then an optional L2
//! normalisation), and the sequence-classification head of a cross-encoder
//! (reranker). Both are shared by inference and training.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
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

/// How a checkpoint names its sequence-classification head: the same
/// computation (`[CLS]` → dense → tanh → dense) under two sets of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifierNames {
    /// `BertForSequenceClassification`: the encoder's `pooler.dense`, then `classifier`.
    BertPooler,
    /// `(XLM)RobertaForSequenceClassification`: `classifier.dense`, then `classifier.out_proj`.
    RobertaHead,
}

/// A checkpoint's classification head: its names and how many labels it scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifierLayout {
    pub names: ClassifierNames,
    pub labels: usize,
}

impl ClassifierLayout {
    /// The tensor names of the head's two layers, under the weights' root
    /// (`encoder_prefix` is where the encoder's own tensors sit, e.g. `bert`).
    fn layer_names(&self, encoder_prefix: &str) -> [String; 2] {
        match self.names {
            ClassifierNames::BertPooler => {
                let pooler = if encoder_prefix.is_empty() {
                    "pooler.dense".to_string()
                } else {
                    format!("{encoder_prefix}.pooler.dense")
                };
                [pooler, "classifier".into()]
            }
            ClassifierNames::RobertaHead => {
                ["classifier.dense".into(), "classifier.out_proj".into()]
            }
        }
    }
}

/// The cross-encoder head: the `[CLS]` state through a dense layer and
/// tanh, then a dense layer to one logit per label.
pub struct ClassifierHead {
    dense: [Tensor; 2],
    out: [Tensor; 2],
}

impl ClassifierHead {
    /// Loads the head under `vb` (the weights' root, not the encoder's prefix).
    pub fn load(
        vb: &VarBuilder,
        layout: &ClassifierLayout,
        encoder_prefix: &str,
        hidden: usize,
    ) -> candle_core::Result<Self> {
        let [dense, out] = layout.layer_names(encoder_prefix);
        let linear = |name: &str, rows: usize| -> candle_core::Result<[Tensor; 2]> {
            let vb = vb.pp(name);
            Ok([vb.get((rows, hidden), "weight")?, vb.get(rows, "bias")?])
        };
        Ok(ClassifierHead {
            dense: linear(&dense, hidden)?,
            out: linear(&out, layout.labels)?,
        })
    }

    /// `[batch, seq, hidden]` states to `[batch, labels]` logits.
    pub fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let [w, b] = &self.dense;
        let pooled = crate::portable::affine(&cls, w, b)?.tanh()?;
        let [w, b] = &self.out;
        crate::portable::affine(&pooled, w, b)
    }
}
