//! The encoding recipe: `[model]` (which model, and how its vectors are
//! made) and `[encode]` (which runtime, how many texts at once, where). Each
//! is one type for the flags (feature `clap`) and the `cpack.toml` table;
//! a setting left unset means what the model folder declares, or the
//! default of the choice's enum.

use crate::encoder::{BackendKind, EncoderSettings, WeightPrecision};
use cpack_core::InvalidSetting;
use cpack_model::{ComputeDevice, ModelDir, Pooling};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[model]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct ModelRecipe {
    /// Model folder or Hugging Face hub id [cpack.toml: model.path].
    #[cfg_attr(
        feature = "clap",
        arg(id = "model.path", long = "model", value_name = "DIR")
    )]
    pub path: Option<PathBuf>,
    /// Pooling: mean or cls [model.pooling; default: as the model's modules.json says].
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "model.pooling",
            long = "pooling",
            value_name = "MODE",
            value_enum
        )
    )]
    pub pooling: Option<Pooling>,
    /// L2-normalise embeddings (cosine similarity = inner product) [default:
    /// as the model's modules.json says].
    #[cfg_attr(feature = "clap", arg(skip))]
    pub normalize: Option<bool>,
    /// Maximum query length in tokens, [CLS]/[SEP] included [model.query_max_len].
    #[cfg_attr(
        feature = "clap",
        arg(id = "model.query_max_len", long = "query-max-len", value_name = "N")
    )]
    pub query_max_len: Option<usize>,
    /// Maximum passage length in tokens [model.passage_max_len].
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "model.passage_max_len",
            long = "passage-max-len",
            value_name = "N"
        )
    )]
    pub passage_max_len: Option<usize>,
    /// Put before every query, never before passages (BGE-style).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub query_instruction: Option<String>,
}

/// `[encode]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct EncodeRecipe {
    /// Texts per forward pass [encode.batch_size].
    #[cfg_attr(
        feature = "clap",
        arg(id = "encode.batch_size", long = "batch-size", value_name = "N")
    )]
    pub batch_size: Option<usize>,
    /// Padded tokens per forward pass at most, 0 = rows only: short texts then come many to a
    /// batch, long ones few (on a GPU, e.g. 65536 with --batch-size 1024) [encode.batch_tokens].
    #[cfg_attr(
        feature = "clap",
        arg(id = "encode.batch_tokens", long = "batch-tokens", value_name = "N")
    )]
    pub batch_tokens: Option<usize>,
    /// Compute threads, 0 = all cores; on a busy 2-core box, 1 can beat 2 [encode.threads].
    #[cfg_attr(
        feature = "clap",
        arg(id = "encode.threads", long = "threads", value_name = "N")
    )]
    pub threads: Option<usize>,
    /// Where the candle encoder (and the trainer) computes: cpu, or cuda / cuda:N in a cpack
    /// built with the `cuda` feature (scripts/build-cuda.sh) [encode.device].
    #[cfg_attr(
        feature = "clap",
        arg(id = "encode.device", long = "device", value_name = "DEVICE")
    )]
    pub device: Option<ComputeDevice>,
    /// Encoder runtime: candle (cpack's own BERT, the fastest exact one; its matrix kernel
    /// follows the CPU's AVX-512 / AVX2 / NEON flags), or ort (ONNX Runtime on cpack's ONNX
    /// export; with --encoder-precision int8 the fastest) [encode.backend].
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "encode.backend",
            long = "encoder",
            value_name = "BACKEND",
            value_enum
        )
    )]
    pub backend: Option<BackendKind>,
    /// Encoder products: f32; int8 with --encoder ort; bf16 with candle (bf16
    /// operands, f32 sums: faster on GPUs and CPUs with AMX or AVX-512 BF16,
    /// the same numbers on other CPUs) [encode.precision].
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "encode.precision",
            long = "encoder-precision",
            value_name = "PRECISION",
            value_enum
        )
    )]
    pub precision: Option<WeightPrecision>,
    /// `libonnxruntime.so`; default: $CPACK_ORT_LIBRARY, else what
    /// scripts/setup.sh fetched.
    #[cfg_attr(feature = "clap", arg(skip))]
    pub ort_library: Option<PathBuf>,
    /// ONNX Runtime threads per worker (workers = threads / ort_threads).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub ort_threads: Option<usize>,
    /// Whether idle ONNX Runtime threads spin: spinning wastes a busy or
    /// small machine's cores.
    #[cfg_attr(feature = "clap", arg(skip))]
    pub ort_spinning: Option<bool>,
}

/// Which runtime turns token ids into vectors, with what it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Runtime {
    /// cpack's own BERT on candle: nothing to install; f32, or bf16 products.
    Candle {
        device: ComputeDevice,
        precision: WeightPrecision,
    },
    /// ONNX Runtime on cpack's ONNX export of the model (CPU).
    Ort {
        precision: WeightPrecision,
        /// `None`: found as [`crate::ort_backend::find_library`] does.
        library: Option<PathBuf>,
        /// Intra-op threads per session (one session per worker).
        threads: usize,
        spinning: bool,
    },
}

impl ModelRecipe {
    /// The settings `model` is encoded with: the recipe's, else what the
    /// model folder declares, else cpack's lengths; batching from `encode`.
    pub fn settings(&self, model: &ModelDir, encode: &EncodeRecipe) -> EncoderSettings {
        let declared = EncoderSettings::declared_by(model);
        EncoderSettings {
            pooling: self.pooling.unwrap_or(declared.pooling),
            normalize: self.normalize.unwrap_or(declared.normalize),
            query_max_len: self.query_max_len.unwrap_or(declared.query_max_len),
            passage_max_len: self.passage_max_len.unwrap_or(declared.passage_max_len),
            query_instruction: self.query_instruction.clone().unwrap_or_default(),
            batch_size: encode.batch_size.unwrap_or(declared.batch_size),
            batch_tokens: encode.batch_tokens.unwrap_or(declared.batch_tokens),
        }
    }
}

impl EncodeRecipe {
    /// Compute threads asked for; 0 = every core.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(0)
    }

    /// The runtime the recipe names, refusing combinations no backend runs.
    pub fn runtime(&self) -> Result<Runtime, InvalidSetting> {
        let backend = self.backend.unwrap_or_default();
        let precision = self.precision.unwrap_or_default();
        let device = self.device.unwrap_or_default();
        match backend {
            BackendKind::Ort if !device.is_cpu() => Err(InvalidSetting::new(
                "encode.backend",
                backend,
                format!("computes on the CPU; to encode on {device}, use "),
            )
            .setting("encode.backend", BackendKind::Candle)),
            BackendKind::Candle if precision == WeightPrecision::Int8 => {
                Err(
                    InvalidSetting::new("encode.precision", precision, "needs the ort backend (")
                        .setting("encode.backend", BackendKind::Ort)
                        .text(")"),
                )
            }
            BackendKind::Candle => Ok(Runtime::Candle { device, precision }),
            BackendKind::Ort if precision == WeightPrecision::Bf16 => Err(InvalidSetting::new(
                "encode.precision",
                precision,
                "needs the candle backend (",
            )
            .setting("encode.backend", BackendKind::Candle)
            .text(")")),
            BackendKind::Ort => Ok(Runtime::Ort {
                precision,
                library: self.ort_library.clone(),
                threads: self.ort_threads.unwrap_or(1),
                spinning: self.ort_spinning.unwrap_or(false),
            }),
        }
    }
}

impl Runtime {
    /// Where the encoder computes (ONNX Runtime: always the CPU).
    pub fn device(&self) -> ComputeDevice {
        match self {
            Runtime::Candle { device, .. } => *device,
            Runtime::Ort { .. } => ComputeDevice::Cpu,
        }
    }
}
