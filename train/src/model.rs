//! The encoder as the trainer sees it: the same BERT code as inference, built
//! over a `VarMap` so every weight is a trainable variable.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use cpack_encode::{ComputeDevice, TokenBatch};
use cpack_model::matmul::Products;
use cpack_model::{BertModel, Dropout, EmbeddingHead, Kernels, ModelDir, Pooling};

pub struct TrainableEncoder {
    varmap: VarMap,
    bert: BertModel,
    pooling: Pooling,
    normalize: bool,
    /// `hidden_dropout_prob`, `attention_probs_dropout_prob` from config.json.
    dropout: (f32, f32),
    /// Width of an embedding (the hidden size).
    dim: usize,
    device: ComputeDevice,
}

impl TrainableEncoder {
    /// Loads every weight of `model` into fresh f32 variables on `device`
    /// (the model then runs the kernels of that device).
    pub fn load(
        model: &ModelDir,
        pooling: Pooling,
        normalize: bool,
        device: ComputeDevice,
    ) -> Result<Self> {
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device.candle()?);
        let vb = if model.weight_prefix.is_empty() {
            vb
        } else {
            vb.pp(&model.weight_prefix)
        };
        let bad = |e: candle_core::Error| Error::Checkpoint {
            path: model.weights.clone(),
            problem: format!("weights do not match config.json: {e}"),
        };
        let bert = BertModel::load(vb, &model.config).map_err(bad)?;
        varmap.load(&model.weights).map_err(bad)?;
        Ok(TrainableEncoder {
            varmap,
            bert,
            pooling,
            normalize,
            dropout: (
                model.config.hidden_dropout_prob as f32,
                model.config.attention_probs_dropout_prob as f32,
            ),
            dim: model.config.hidden_size,
            device,
        })
    }

    /// The same encoder running `kernels` (the portable ops on CPU test the
    /// path other devices take).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.bert = self.bert.with_kernels(kernels);
        self
    }

    /// The same encoder with its CPU kernels' products in `products`.
    pub fn with_products(mut self, products: Products) -> Self {
        self.bert = self.bert.with_products(products);
        self
    }

    /// Where the weights live.
    pub fn compute_device(&self) -> ComputeDevice {
        self.device
    }

    /// Trainable variables by tensor name, sorted, so every walk over them
    /// (optimizer, checkpoints) has one fixed order.
    pub fn vars(&self) -> Vec<(String, Var)> {
        sorted_vars(&self.varmap)
    }

    /// Dropout for one forward pass, as the model config sets it; `None` when disabled.
    pub fn dropout(&self, enabled: bool, seed: u64) -> Option<Dropout> {
        config_dropout(self.dropout, enabled, seed)
    }

    /// Pooled (and, if configured, normalised) embeddings `[batch, dim]`, with gradients.
    pub fn embed(&self, batch: &TokenBatch, dropout: Option<&Dropout>) -> Result<Tensor> {
        let shape = (batch.batch, batch.seq_len);
        let device = self.bert.device();
        let ids = Tensor::from_slice(&batch.input_ids, shape, device)?;
        let mask = Tensor::from_slice(&batch.attention_mask, shape, device)?;
        let hidden = self.bert.forward_train(&ids, &mask, dropout)?;
        Ok(EmbeddingHead {
            pooling: self.pooling,
            normalize: self.normalize,
        }
        .forward(&hidden, &mask)?)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn device(&self) -> &candle_core::Device {
        self.bert.device()
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn normalize(&self) -> bool {
        self.normalize
    }
}

/// The variables of `varmap` by tensor name, sorted.
pub(crate) fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut vars: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Dropout at the config's `(hidden, attention)` rates for one forward
/// pass; `None` when disabled or both rates are 0.
pub(crate) fn config_dropout(
    (hidden, attention): (f32, f32),
    enabled: bool,
    seed: u64,
) -> Option<Dropout> {
    (enabled && (hidden > 0.0 || attention > 0.0)).then(|| Dropout::new(hidden, attention, seed))
}
