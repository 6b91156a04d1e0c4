//! Heads over the encoder's token states: the pooled sentence embedding of
//! sentence-transformers (mean or `[CLS]` pooling, then an optional L2
//! normalisation), and the sequence-classification head of a cross-encoder
//! (reranker). Both are shared by inference and training.

use crate::dropout::Dropout;
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
    /// The head a model of `family` gets when it has none (a reranker
    /// trained from an embedder), with one label, as transformers names it.
    pub fn new_for(family: crate::Family) -> Self {
        let names = match family {
            crate::Family::Bert => ClassifierNames::BertPooler,
            crate::Family::Roberta => ClassifierNames::RobertaHead,
        };
        ClassifierLayout { names, labels: 1 }
    }

    /// The `architectures` entry of a checkpoint with this head.
    pub fn architecture(&self) -> &'static str {
        match self.names {
            ClassifierNames::BertPooler => "BertForSequenceClassification",
            ClassifierNames::RobertaHead => "XLMRobertaForSequenceClassification",
        }
    }

    /// The tensor names of the head's two layers, under the weights' root
    /// (`encoder_prefix` is where the encoder's own tensors sit, e.g. `bert`);
    /// each layer has `.weight` and `.bias`.
    pub fn layer_names(&self, encoder_prefix: &str) -> [String; 2] {
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
    names: ClassifierNames,
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
            names: layout.names,
            dense: linear(&dense, hidden)?,
            out: linear(&out, layout.labels)?,
        })
    }

    /// `[batch, seq, hidden]` states to `[batch, labels]` logits.
    pub fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_train(hidden, None)
    }

    /// [`ClassifierHead::forward`] with training-time dropout where each
    /// checkpoint kind applies it: BERT on the pooled state before the
    /// classifier, RoBERTa on the `[CLS]` state and again after the tanh.
    pub fn forward_train(
        &self,
        hidden: &Tensor,
        dropout: Option<&Dropout>,
    ) -> candle_core::Result<Tensor> {
        let drop = |x: Tensor| -> candle_core::Result<Tensor> {
            match dropout {
                None => Ok(x),
                Some(_) if x.device().is_cpu() => Dropout::hidden(dropout, &x),
                Some(_) => {
                    crate::portable::dropout(Dropout::hidden_mask(dropout), &x.contiguous()?)
                }
            }
        };
        let roberta = self.names == ClassifierNames::RobertaHead;
        let mut x = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        if roberta {
            x = drop(x)?;
        }
        let [w, b] = &self.dense;
        let pooled = drop(crate::portable::affine(&x, w, b)?.tanh()?)?;
        let [w, b] = &self.out;
        crate::portable::affine(&pooled, w, b)
    }
}
