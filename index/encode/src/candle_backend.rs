//! The candle encoder backend: BERT forward, pooling, normalisation, on the
//! device it is given (the model picks its kernels from it).

use crate::encoder::{
    BackendKind, BackendLoader, EncoderBackend, EncoderSettings, WeightPrecision,
};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cpack_model::matmul::Products;
use cpack_model::{
    BertModel, ComputeDevice, EmbeddingHead, Kernels, Mode, ModelDir, Pooling, TokenBatch,
};

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
    /// the CPU) as f32. With `precision` bf16 a GPU holds them and computes in
    /// bf16; the CPU keeps them f32 and runs its kernels' products on bf16
    /// operands (layer norms, softmax and activations stay f32 there).
    pub fn load(
        model: &ModelDir,
        pooling: Pooling,
        normalize: bool,
        compute: ComputeDevice,
        precision: WeightPrecision,
    ) -> Result<Self> {
        let kernels = if compute.is_cpu() {
            Kernels::Cpu
        } else {
            Kernels::Portable
        };
        Self::load_with_kernels(model, pooling, normalize, compute, precision, kernels)
    }

    /// [`CandleBackend::load`] running `kernels`: the portable ops on the CPU
    /// test the path a GPU takes, in its dtypes.
    pub fn load_with_kernels(
        model: &ModelDir,
        pooling: Pooling,
        normalize: bool,
        compute: ComputeDevice,
        precision: WeightPrecision,
        kernels: Kernels,
    ) -> Result<Self> {
        let device = compute.candle()?;
        let (dtype, products) = match (precision, kernels) {
            (WeightPrecision::F32, _) => (DType::F32, Products::F32),
            (WeightPrecision::Bf16, Kernels::Cpu) => (DType::F32, Products::bf16()),
            (WeightPrecision::Bf16, Kernels::Portable) => (DType::BF16, Products::F32),
            (WeightPrecision::Int8, _) => {
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
            model: bert.with_kernels(kernels).with_products(products),
            head: EmbeddingHead { pooling, normalize },
            dim: model.hidden_size(),
            device,
            compute,
            precision,
        })
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
