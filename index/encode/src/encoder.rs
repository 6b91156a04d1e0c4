//! Texts in, embeddings out: tokenisation, length-sorted batching and a
//! pluggable model backend.

use crate::batching::{in_runs, run_batches, Batches};
use crate::error::Result;
use cpack_core::{require, InvalidSetting};
use cpack_model::TextTokenizer;
use cpack_model::{ModelDir, Pooling, TokenBatch};
use serde::{Deserialize, Serialize};

/// A model runtime that turns padded token batches into pooled embeddings.
pub trait EncoderBackend: Send + Sync {
    /// Returns `[batch, dim]` row-major: pooled and, if configured, L2-normalised.
    fn embed(&self, batch: &TokenBatch) -> Result<Vec<f32>>;
    fn dim(&self) -> usize;
    /// Which runtime this is (recorded in index manifests).
    fn kind(&self) -> BackendKind;
    /// Padded tokens the backend runs at once. The encoder hands it each
    /// batch in row slices of about this size: small enough that activations
    /// stay in a core's L2 cache, large enough for efficient matrix products.
    fn tokens_per_run(&self) -> usize {
        usize::MAX
    }

    /// Precision of the weights the backend computes with.
    fn precision(&self) -> WeightPrecision {
        WeightPrecision::F32
    }

    /// Where the backend computes.
    fn device(&self) -> cpack_model::ComputeDevice {
        cpack_model::ComputeDevice::Cpu
    }
}

/// Opens a backend for a model folder. The training loop opens one per
/// checkpoint, so it takes a loader rather than a backend.
pub trait BackendLoader: Send + Sync {
    fn load(&self, model: &ModelDir, settings: &EncoderSettings)
        -> Result<Box<dyn EncoderBackend>>;
}

/// Precision of an encoder's weights; recorded in index manifests, since
/// int8 and f32 embeddings of one model must never share an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum WeightPrecision {
    #[default]
    F32,
    /// Per-column int8 weights, activations quantised at run time (ORT only).
    Int8,
    /// Matrix products on bf16 operands with f32 sums; layer norms, softmax
    /// and activations in f32 on a CPU (bf16 activations on a GPU). candle only.
    Bf16,
}

impl std::fmt::Display for WeightPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightPrecision::F32 => "f32",
            WeightPrecision::Int8 => "int8",
            WeightPrecision::Bf16 => "bf16",
        })
    }
}

/// Which runtime turns token ids into vectors (`encode.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// cpack's own BERT on candle: nothing to install, CPU or CUDA.
    #[default]
    Candle,
    /// ONNX Runtime on cpack's ONNX export of the model (CPU; f32 or int8).
    Ort,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Candle => "candle",
            BackendKind::Ort => "ort",
        })
    }
}

/// Whether a text is a query (gets the instruction) or a passage (never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Passage,
}

/// Everything that decides what vector a text gets, besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderSettings {
    pub pooling: Pooling,
    pub normalize: bool,
    pub query_max_len: usize,
    pub passage_max_len: usize,
    /// Prefix added to queries only (BGE-style instruction); may be empty.
    pub query_instruction: String,
    pub batch_size: usize,
    /// With it set, a batch also stops before its padded tokens would pass
    /// this many, so short texts come many to a batch and long ones few (what
    /// a GPU wants); 0 = rows only.
    #[serde(default)]
    pub batch_tokens: usize,
}

impl EncoderSettings {
    /// Settings a model folder declares for itself, with cpack's default lengths.
    pub fn declared_by(model: &ModelDir) -> Self {
        let max_len = model.declared_max_len.unwrap_or(512);
        EncoderSettings {
            pooling: model.declared_pooling.unwrap_or(Pooling::Mean),
            normalize: model.declared_normalize,
            query_max_len: max_len.min(64),
            passage_max_len: max_len.min(256),
            query_instruction: String::new(),
            batch_size: 32,
            batch_tokens: 0,
        }
    }
}

/// Query and passage tokenizers with their own lengths; queries get the
/// instruction, passages never do. Shared by the encoder and the trainer so
/// both feed the model identical token ids.
#[derive(Clone)]
pub struct PairTokenizer {
    query: TextTokenizer,
    passage: TextTokenizer,
    query_instruction: String,
}

impl PairTokenizer {
    pub fn load(model: &ModelDir, settings: &EncoderSettings) -> Result<Self> {
        let max_positions = model.config.max_tokens();
        for (key, len) in [
            ("model.query_max_len", settings.query_max_len),
            ("model.passage_max_len", settings.passage_max_len),
        ] {
            let problem = format!(
                "is outside 2..={max_positions} (the longest input the model's position table holds)"
            );
            require((2..=max_positions).contains(&len), key, len, &problem)?;
        }
        Ok(PairTokenizer {
            query: TextTokenizer::load(&model.tokenizer, settings.query_max_len)?,
            passage: TextTokenizer::load(&model.tokenizer, settings.passage_max_len)?,
            query_instruction: settings.query_instruction.clone(),
        })
    }

    /// Token ids exactly as the model will see them (instruction included for queries).
    pub fn tokenize(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<u32>>> {
        match kind {
            TextKind::Passage => Ok(self.passage.encode_batch(texts)?),
            TextKind::Query if self.query_instruction.is_empty() => {
                Ok(self.query.encode_batch(texts)?)
            }
            TextKind::Query => {
                let prefixed: Vec<String> = texts
                    .iter()
                    .map(|t| format!("{}{t}", self.query_instruction))
                    .collect();
                let refs: Vec<&str> = prefixed.iter().map(String::as_str).collect();
                Ok(self.query.encode_batch(&refs)?)
            }
        }
    }
}

/// A tokenizer pair plus a backend: the whole text → vector path.
pub struct Encoder {
    backend: Box<dyn EncoderBackend>,
    tokenizer: PairTokenizer,
    settings: EncoderSettings,
    workers: usize,
}

impl Encoder {
    pub fn new(
        model: &ModelDir,
        settings: EncoderSettings,
        backend: Box<dyn EncoderBackend>,
    ) -> Result<Self> {
        if settings.batch_size == 0 {
            return Err(InvalidSetting::new("encode.batch_size", 0, "must be at least 1").into());
        }
        Ok(Encoder {
            tokenizer: PairTokenizer::load(model, &settings)?,
            backend,
            settings,
            workers: 1,
        })
    }

    /// The encoder of `model` through `loader`'s backend, on `workers` threads.
    pub fn open(
        model: &ModelDir,
        settings: &EncoderSettings,
        loader: &dyn BackendLoader,
        workers: usize,
    ) -> Result<Self> {
        let backend = loader.load(model, settings)?;
        Ok(Encoder::new(model, settings.clone(), backend)?.with_workers(workers))
    }

    /// Runs batches on `workers` threads at once, each batch on one thread.
    ///
    /// On a few cores this beats splitting every matrix product across
    /// threads: no thread waits at a barrier between the many small ops of a
    /// layer. Each batch is still computed as a whole by one thread (each
    /// worker runs its kernels in a one-thread rayon pool of its own), so
    /// results are bit-identical to the sequential path.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    pub fn dim(&self) -> usize {
        self.backend.dim()
    }

    pub fn backend_kind(&self) -> BackendKind {
        self.backend.kind()
    }

    pub fn precision(&self) -> WeightPrecision {
        self.backend.precision()
    }

    pub fn device(&self) -> cpack_model::ComputeDevice {
        self.backend.device()
    }

    pub fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    /// Token ids exactly as the model will see them (instruction included for queries).
    pub fn tokenize(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<u32>>> {
        self.tokenizer.tokenize(texts, kind)
    }

    /// Embeds `texts` in order, `[texts.len(), dim]` row-major. Batches are
    /// formed from length-sorted texts so little time goes into padding, of
    /// `batch_size` rows and at most `batch_tokens` padded tokens when set;
    /// `on_batch(texts_done, tokens_done)` reports progress.
    pub fn encode(
        &self,
        texts: &[&str],
        kind: TextKind,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        let (rows, tokens) = (self.settings.batch_size, self.settings.batch_tokens);
        self.encode_batched(texts, kind, rows, tokens, on_batch)
    }

    /// [`Encoder::encode`] with an explicit batch size. Floating-point sums
    /// depend on which texts share a batch (their padded length), so callers
    /// that promise bit-identical results across runs fix the batching here.
    pub fn encode_in_batches_of(
        &self,
        batch_size: usize,
        texts: &[&str],
        kind: TextKind,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        self.encode_batched(texts, kind, batch_size, 0, on_batch)
    }

    fn encode_batched(
        &self,
        texts: &[&str],
        kind: TextKind,
        batch_rows: usize,
        batch_tokens: usize,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        let tokens = self.tokenize(texts, kind)?;
        let lengths: Vec<usize> = tokens.iter().map(Vec::len).collect();
        let batches = Batches::by_length(&lengths, batch_rows, batch_tokens);
        let dim = self.dim();
        let backend = &*self.backend;
        let embed = |rows: &[usize]| -> Result<(Vec<f32>, usize)> {
            let batch = TokenBatch::pad(
                &rows
                    .iter()
                    .map(|&i| tokens[i].as_slice())
                    .collect::<Vec<_>>(),
            );
            let embedded = in_runs(backend.tokens_per_run(), dim, &batch, &|b| backend.embed(b))?;
            Ok((embedded, batch.real_tokens()))
        };
        let mut out = vec![0f32; texts.len() * dim];
        run_batches(
            self.workers,
            &batches.rows(),
            &embed,
            &mut |rows, embedded, real_tokens| {
                for (k, &row) in rows.iter().enumerate() {
                    out[row * dim..(row + 1) * dim]
                        .copy_from_slice(&embedded[k * dim..(k + 1) * dim]);
                }
                on_batch(rows.len(), real_tokens);
            },
        )?;
        Ok(out)
    }
}
