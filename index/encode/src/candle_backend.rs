//! The candle encoder backend: BERT forward, pooling, normalisation, on the
//! device it is given (the model picks its kernels from it).

use crate::encoder::{
    BackendKind, BackendLoader, EncoderBackend, EncoderSettings, WeightPrecision,
};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cpack_model::{BertModel, ComputeDevice, EmbeddingHead, Mode, ModelDir, Pooling, TokenBatch};

/// Padded tokens per forward pass; batches are run in slices of this size.
/// The matrix kernel packs each weight matrix once per product, so longer
/// runs amortise that; much longer ones spill the activations out of cache.
/// A benchmark result: `bench/encode_real.sh` measures it again on the
/// machine at hand.
pub(crate) const TOKENS_PER_RUN: usize = 2048;

pub struct CandleBackend {
    model: BertModel,
    head: EmbeddingHead,
    dim: usize,
    device: Device,
    compute: ComputeDevice,
    precision: WeightPrecision,
}

impl CandleBackend {
    /// Loads the model's safetensors weights onto `compute` (memory-mapped on
    /// the CPU) as f32, or as bf16 with `precision` bf16.
    pub fn load(
        model: &ModelDir,
        pooling: Pooling,
        normalize: bool,
        compute: ComputeDevice,
        precision: WeightPrecision,
    ) -> Result<Self> {
        let device = compute.candle()?;
        let dtype = match precision {
            WeightPrecision::F32 => DType::F32,
            WeightPrecision::Bf16 => DType::BF16,
            WeightPrecision::Int8 => {
                return Err(Error::Precision {
                    what: "the candle backend",
                    precision,
                    int8: false,
                })
            }
        };
        // SAFETY: the weights file is mapped read-only; cpack never writes to
        // a model folder it is reading from.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&model.weights], dtype, &device)? };
        let vb = if model.weight_prefix.is_empty() {
            vb
        } else {
            vb.pp(&model.weight_prefix)
        };
        let bert = BertModel::load(vb, &model.config).map_err(|e| {
            Error::model(
                &model.weights,
                format!("weights do not match config.json: {e}"),
            )
        })?;
        Ok(CandleBackend {
            model: bert,
            head: EmbeddingHead { pooling, normalize },
            dim: model.hidden_size(),
            device,
            compute,
            precision,
        })
    }

    /// The same backend running `kernels` (the portable ops on CPU test the
    /// path a GPU takes).
    pub fn with_kernels(mut self, kernels: cpack_model::Kernels) -> Self {
        self.model = self.model.with_kernels(kernels);
        self
    }
}

/// Loads [`CandleBackend`]s on one device in one precision: the default,
/// needing nothing beyond the weights.
pub struct CandleLoader {
    pub device: ComputeDevice,
    pub precision: WeightPrecision,
}

impl BackendLoader for CandleLoader {
    fn load(
        &self,
        model: &ModelDir,
        settings: &EncoderSettings,
    ) -> Result<Box<dyn EncoderBackend>> {
        let backend = CandleBackend::load(
            model,
            settings.pooling,
            settings.normalize,
            self.device,
            self.precision,
        )?;
        Ok(Box::new(backend))
    }
}

impl EncoderBackend for CandleBackend {
    fn embed(&self, batch: &TokenBatch) -> Result<Vec<f32>> {
        let shape = (batch.batch, batch.seq_len);
        let ids = Tensor::from_slice(&batch.input_ids, shape, &self.device)?;
        let mask = Tensor::from_slice(&batch.attention_mask, shape, &self.device)?;
        // Pooling and normalisation in f32 whatever the model computes in.
        let hidden = self
            .model
            .forward(&ids, &mask, Mode::Inference)?
            .to_dtype(DType::F32)?;
        let pooled = self.head.forward(&hidden, &mask)?;
        Ok(pooled.flatten_all()?.to_vec1::<f32>()?)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Candle
    }

    /// On a GPU the whole batch runs at once: its products want the rows,
    /// and there is no cache to stay within.
    fn tokens_per_run(&self) -> usize {
        if self.compute.is_cpu() {
            TOKENS_PER_RUN
        } else {
            usize::MAX
        }
    }

    fn device(&self) -> ComputeDevice {
        self.compute
    }

    fn precision(&self) -> WeightPrecision {
        self.precision
    }
}
