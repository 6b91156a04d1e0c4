//! `cpack.toml`, merged with command-line overrides into one validated [`Config`].

use crate::cli::Overrides;
use anyhow::{bail, Context, Result};
use cpack_data::dataset::DatasetPaths;
use cpack_encode::EmbeddingStamp;
use cpack_encode::{BackendKind, ComputeDevice, EncoderSettings, WeightPrecision};
use cpack_index::embeddings::Precision;
use cpack_index::store::IndexDir;
use cpack_index::vector::{IndexBackend, IndexDevice, IndexKind};
use cpack_model::{ModelDir, Pooling};
use cpack_train::LossKind;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "cpack.toml";

/// BGE's published query instructions, selectable by name.
pub const INSTRUCTION_PRESETS: [(&str, &str); 2] = [
    (
        "bge-en",
        "Represent this sentence for searching relevant passages: ",
    ),
    ("bge-zh", "为这个句子生成表示以用于检索相关文章："),
];

/// The file as written by `cpack init`; every key is optional except the paths.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TomlFile {
    pub seed: Option<u64>,
    pub data: Option<DataSection>,
    pub model: Option<ModelSection>,
    #[serde(default, alias = "encoder")]
    pub encode: EncodeSection,
    #[serde(default)]
    pub index: IndexSection,
    #[serde(default)]
    pub train: TrainSection,
}

impl TomlFile {
    /// Reads the text of a `cpack.toml`; unknown keys are errors.
    pub fn parse(text: &str) -> std::result::Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

/// `[train]`: defaults for `cpack train`, key for key the same as its flags.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub epochs: Option<usize>,
    pub refresh_every: Option<usize>,
    pub refresh: Option<cpack_train::incremental::RefreshScope>,
    pub full_refresh_every: Option<usize>,
    pub refresh_depth: Option<usize>,
    pub stale_vectors: Option<cpack_index::align::StaleVectors>,
    pub batch_size: Option<usize>,
    pub group_size: Option<usize>,
    pub temperature: Option<f64>,
    pub loss: Option<LossKind>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub warmup_ratio: Option<f64>,
    pub grad_accum: Option<usize>,
    pub mini_batch: Option<usize>,
    pub batching: Option<cpack_train::data::Batching>,
    pub seed: Option<u64>,
    pub max_grad_norm: Option<f64>,
    pub dropout: Option<bool>,
    pub freeze_passages: Option<bool>,
    pub replace_easy: Option<f32>,
    pub max_queries: Option<usize>,
    pub split: Option<String>,
    pub eval_split: Option<String>,
    pub topk: Option<usize>,
    pub skip: Option<usize>,
    pub negatives: Option<usize>,
    pub sample: Option<cpack_miner::SamplingKind>,
    pub simans_a: Option<f32>,
    pub simans_b: Option<f32>,
    pub filter: Option<cpack_miner::FilterPreset>,
    pub negatives_from: Option<u32>,
    pub device: Option<ComputeDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub dir: PathBuf,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub path: Option<PathBuf>,
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    pub query_max_len: Option<usize>,
    pub passage_max_len: Option<usize>,
    pub query_instruction: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EncodeSection {
    pub batch_size: Option<usize>,
    pub batch_tokens: Option<usize>,
    pub threads: Option<usize>,
    pub device: Option<ComputeDevice>,
    pub backend: Option<BackendKind>,
    pub precision: Option<WeightPrecision>,
    pub ort_library: Option<PathBuf>,
    pub ort_threads: Option<usize>,
    pub ort_spinning: Option<bool>,
}

/// Which runtime turns token ids into vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderRuntime {
    /// cpack's own BERT on candle: the default, nothing to install; f32, or
    /// bf16 (meant for GPUs).
    Candle {
        device: ComputeDevice,
        precision: WeightPrecision,
    },
    /// ONNX Runtime on cpack's ONNX export of the model.
    Ort(OrtConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrtConfig {
    pub precision: WeightPrecision,
    /// `None`: discovered (CPACK_ORT_LIBRARY, the setup script's cache).
    pub library: Option<PathBuf>,
    /// Intra-op threads per session (one session per worker).
    pub threads: usize,
    pub spinning: bool,
}

impl EncoderRuntime {
    fn from_settings(
        workspace: &Path,
        section: &EncodeSection,
        overrides: &Overrides,
    ) -> Result<Self> {
        let backend = overrides.encoder.or(section.backend).unwrap_or_default();
        let precision = overrides
            .encoder_precision
            .or(section.precision)
            .unwrap_or_default();
        let device = overrides.device.or(section.device).unwrap_or_default();
        if backend == BackendKind::Ort && !device.is_cpu() {
            bail!(
                "the ort backend computes on the CPU; encode on {device} with the candle backend"
            );
        }
        match backend {
            BackendKind::Candle if precision != WeightPrecision::Int8 => {
                Ok(EncoderRuntime::Candle { device, precision })
            }
            BackendKind::Candle => bail!(
                "encoder precision {precision} needs the ort backend (set encode.backend = \"ort\" or pass --encoder ort)"
            ),
            BackendKind::Ort if precision == WeightPrecision::Bf16 => bail!(
                "encoder precision bf16 needs the candle backend (set encode.backend = \"candle\")"
            ),
            BackendKind::Ort => Ok(EncoderRuntime::Ort(OrtConfig {
                precision,
                library: section.ort_library.as_ref().map(|p| resolve(workspace, p)),
                threads: section.ort_threads.unwrap_or(1),
                spinning: section.ort_spinning.unwrap_or(false),
            })),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IndexSection {
    pub backend: Option<IndexBackend>,
    pub factory: Option<String>,
    pub precision: Option<Precision>,
    pub device: Option<IndexDevice>,
}

/// Index settings after defaults and overrides.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    pub kind: IndexKind,
    pub precision: Precision,
    /// Where opened generations search (not part of what is built).
    pub device: IndexDevice,
}

/// Everything a command needs, validated.
pub struct Config {
    pub workspace: PathBuf,
    pub data: Option<DatasetPaths>,
    pub model: ModelDir,
    pub encoder: EncoderSettings,
    pub runtime: EncoderRuntime,
    pub threads: usize,
    pub index: IndexConfig,
    /// Seed of every random choice (negative sampling, training order, dropout).
    pub seed: u64,
    /// `[train]` as written; `cpack train` merges it with its flags.
    pub train: TrainSection,
}

/// The workspace's state folder, beside cpack.toml.
pub const STATE_DIR: &str = ".cpack";

/// `workspace/.cpack`, refusing a symbolic link that leads nowhere (every
/// write under it would fail with a puzzling "File exists").
pub fn state_dir(workspace: &Path) -> Result<PathBuf> {
    let dir = workspace.join(STATE_DIR);
    if let Ok(link) = std::fs::read_link(&dir) {
        if !dir.exists() {
            bail!(
                "{} is a symbolic link to {}, which does not exist; create that folder or remove the link",
                dir.display(),
                link.display()
            );
        }
    }
    Ok(dir)
}

impl Config {
    /// Reads `cpack.toml` in `workspace` (if present) and applies `overrides`.
    /// A workspace without cpack.toml is allowed when `--model` names the model.
    pub fn load(workspace: &Path, overrides: &Overrides) -> Result<Self> {
        state_dir(workspace)?;
        let toml_path = workspace.join(FILE_NAME);
        let file = if toml_path.exists() {
            let text = std::fs::read_to_string(&toml_path)
                .with_context(|| format!("cannot read {}", toml_path.display()))?;
            TomlFile::parse(&text)
                .with_context(|| format!("{} is not a valid cpack.toml", toml_path.display()))?
        } else if overrides.model.is_some() {
            TomlFile::default()
        } else {
            bail!(
                "no {FILE_NAME} in {}; create one with `cpack init --data DIR --model DIR`, or pass --workspace",
                workspace.display()
            );
        };
        let model_section = file.model.unwrap_or_default();
        let model_path = overrides
            .model
            .clone()
            .or(model_section.path)
            .context("cpack.toml has no model.path and no --model was given")?;
        let model = ModelDir::open(&locate_model(workspace, &model_path)?)?;

        let declared = EncoderSettings::declared_by(&model);
        let pooling = overrides
            .pooling
            .or(model_section.pooling)
            .unwrap_or(declared.pooling);
        let encoder = EncoderSettings {
            pooling,
            normalize: model_section.normalize.unwrap_or(declared.normalize),
            query_max_len: overrides
                .query_max_len
                .or(model_section.query_max_len)
                .unwrap_or(declared.query_max_len),
            passage_max_len: overrides
                .passage_max_len
                .or(model_section.passage_max_len)
                .unwrap_or(declared.passage_max_len),
            query_instruction: model_section.query_instruction.unwrap_or_default(),
            batch_size: overrides
                .batch_size
                .or(file.encode.batch_size)
                .unwrap_or(declared.batch_size),
            batch_tokens: overrides
                .batch_tokens
                .or(file.encode.batch_tokens)
                .unwrap_or(declared.batch_tokens),
        };
        let index = IndexConfig {
            kind: IndexKind::new(
                file.index.backend.unwrap_or_default(),
                file.index
                    .factory
                    .as_deref()
                    .unwrap_or(IndexKind::DEFAULT_FACTORY),
            )?,
            precision: file.index.precision.unwrap_or_default(),
            device: overrides
                .index_device
                .or(file.index.device)
                .unwrap_or_default(),
        };
        let runtime = EncoderRuntime::from_settings(workspace, &file.encode, overrides)?;
        Ok(Config {
            runtime,
            workspace: workspace.to_path_buf(),
            data: file
                .data
                .map(|d| DatasetPaths::beir(&resolve(workspace, &d.dir))),
            model,
            encoder,
            threads: overrides.threads.or(file.encode.threads).unwrap_or(0),
            index,
            seed: file.seed.unwrap_or(42),
            train: file.train,
        })
    }

    /// The dataset, or an error saying the workspace has none.
    pub fn data(&self) -> Result<&DatasetPaths> {
        self.data
            .as_ref()
            .with_context(|| format!("{FILE_NAME} has no [data] dir; this command needs a dataset"))
    }

    pub fn negatives_dir(&self) -> PathBuf {
        self.workspace.join(STATE_DIR).join("negatives")
    }

    pub fn index_dir(&self) -> IndexDir {
        IndexDir::new(self.workspace.join(STATE_DIR).join("index")).on(self.index.device)
    }

    /// Where the encoder computes (ONNX Runtime: always the CPU).
    pub fn encode_device(&self) -> ComputeDevice {
        match &self.runtime {
            EncoderRuntime::Candle { device, .. } => *device,
            EncoderRuntime::Ort(_) => ComputeDevice::Cpu,
        }
    }

    /// The stamp an index must carry to be searched with this configuration's encoder.
    pub fn embedding_stamp(&self, encoder: &cpack_encode::Encoder) -> Result<EmbeddingStamp> {
        Ok(EmbeddingStamp::of(&self.model, encoder)?)
    }
}

/// A model spec is a folder (relative to the workspace) or a Hugging Face hub id.
pub fn locate_model(workspace: &Path, spec: &Path) -> Result<PathBuf> {
    let local = resolve(workspace, spec);
    if !local.exists() && crate::hub::is_hub_id(spec) {
        return crate::hub::resolve(&spec.to_string_lossy());
    }
    Ok(local)
}

/// Relative paths in cpack.toml are relative to the workspace.
fn resolve(workspace: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        workspace.join(path)
    }
}

/// Expands an instruction preset name to its text; other values pass through.
pub fn expand_instruction(value: &str) -> &str {
    INSTRUCTION_PRESETS
        .iter()
        .find(|(name, _)| *name == value)
        .map_or(value, |(_, text)| text)
}

/// The commented cpack.toml that `cpack init` writes.
pub fn render_toml(
    data: &Path,
    model: &Path,
    query_instruction: &str,
    pooling: Pooling,
    normalize: bool,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        r#"# cpack workspace. Command-line flags override these keys for one run;
# state (index, negatives, checkpoints) lives in .cpack/ beside this file.

# Seed of every random choice (sampling negatives, later shuffling and dropout).
seed = 42

[data]
# BEIR-layout dataset: corpus.jsonl (id, title, text), queries.jsonl (id, text),
# qrels/<split>.tsv (query-id, corpus-id, score). Relative paths are relative to this file.
dir = {data}

[model]
# Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
path = {model}
# "mean" or "cls"; defaults to what the model's sentence-transformers files declare.
pooling = {pooling}
# L2-normalise embeddings (cosine similarity = inner product).
normalize = {normalize}
# Maximum lengths in tokens, [CLS] and [SEP] included.
query_max_len = 64
passage_max_len = 256
# Put before every query, never before passages. BGE uses
# "Represent this sentence for searching relevant passages: " (en) and
# "为这个句子生成表示以用于检索相关文章：" (zh); all-MiniLM uses none.
query_instruction = {instruction}

[encode]
# Texts per forward pass.
batch_size = 32
# Also at most this many padded tokens per forward pass, so short texts come
# many to a batch (a GPU wants e.g. 65536); 0 = rows only.
# batch_tokens = 0
# Compute threads; 0 = all cores.
threads = 0
# Where the candle encoder computes: "cpu", or "cuda" / "cuda:N" in a cpack
# built with the `cuda` feature (scripts/build-cuda.sh).
# device = "cpu"
# "candle" (cpack's own BERT: the fastest exact encoder, on a matrix kernel
# chosen from the CPU's own AVX-512 / AVX2 / NEON flags) or "ort" (ONNX
# Runtime on cpack's ONNX export of the model, made under .cpack/onnx/).
backend = "candle"
# "f32"; "int8" with ort: int8 weights, much faster, slightly different
# vectors; "bf16" with candle, for GPUs (slow on a CPU). The precision is part
# of the index's stamp: vectors of two precisions never share an index.
# precision = "f32"
# libonnxruntime.so; default: $CPACK_ORT_LIBRARY, else what scripts/setup.sh fetched.
# ort_library = "/path/to/libonnxruntime.so.1.32.0"
# ONNX Runtime threads per worker (workers = threads above), and whether idle
# ORT threads spin: spinning wastes a busy or small machine's cores.
# ort_threads = 1
# ort_spinning = false

[index]
# "faiss" (any factory string below) or "exact" (brute force in Rust, no FAISS).
backend = "faiss"
# FAISS factory string: "Flat" (exact), "IVF1024,Flat", "HNSW32", "IVF1024,PQ32", ...
factory = "Flat"
# Precision of the stored embedding file: "f32" or "f16".
precision = "f32"
# Where FAISS searches: "cpu", or "gpu" / "gpu:N" in a cpack built with the
# `cuda` feature. Indexes are saved in CPU form and open on either.
# device = "cpu"

# `cpack train` defaults (each key is also a flag; uncomment to change).
[train]
# Where the trainer keeps the weights and steps: default the encoder's
# device (encode.device, or --device for this run).
# device = "cpu"
# epochs = 1
# Re-encode, re-index and re-mine every N epochs; 0 = static negatives.
# refresh_every = 1
# What a refresh re-encodes: "full", or "incremental" (only the training
# queries' top-k pool and positives), with a full one every M refreshes (0 = never).
# refresh = "full"
# full_refresh_every = 0
# Ranks of each query's pool an incremental refresh re-encodes; default: mine.topk.
# refresh_depth = 200
# What an incremental refresh does with the passages it leaves out: "kept"
# (their old vectors) or "aligned" (mapped into the new checkpoint's space).
# stale_vectors = "kept"
# Queries per batch, and passages per query (1 positive + group_size - 1 negatives).
# batch_size = 32
# group_size = 8
# 0.02 as BGE; MiniLM-style models do better around 0.05.
# temperature = 0.02
# "infonce" or "gte".
# loss = "infonce"
# lr = 2e-5
# weight_decay = 0.01
# warmup_ratio = 0.1
# grad_accum = 1
# Gradient caching: the model runs on this many texts at a time (0 = off).
# mini_batch = 32
# "clash-free" (no passage that is one query's positive elsewhere in its batch)
# or "plain" (shuffled order, as FlagEmbedding).
# batching = "clash-free"
# Seed of the training draws; defaults to the workspace's seed above.
# seed = 42
# max_grad_norm = 1.0
# dropout = true
# Query-side training: passages keep the base model's vectors (the index is
# never re-encoded), only queries train; checkpoints are query encoders.
# freeze_passages = false
# Stop drawing a negative the model scores this far below the positive
# (cosine), moving on to the rest of the round's stored pool.
# replace_easy = 0.3
# Train on a seeded subset of N queries.
# max_queries = 2000
# split = "train"
# Evaluated after each epoch ("none" to skip); default dev if present, else test.
# eval_split = "dev"
# Mining of each round: retrieved, skipped raw ranks, stored negatives (default group_size - 1).
# topk = 200
# skip = 10
# negatives = 7
# How negatives are drawn: "random", "top" or "simans" (weighted towards
# scores near the positive's: exp(-a (s - s_pos - b)^2)).
# sample = "random"
# simans_a = 0.5
# simans_b = 0.0
# Positive-aware filter: "perc-pos" (drop above 95 % of the positive's score)
# or "margin-pos" (above the positive's - 0.05).
# filter = "perc-pos"
# Train the first round on negatives another model mined (a teacher): its
# round number in the negatives store. Off by default: a run mines its own.
# negatives_from = 1
"#,
        data = q(&data.display().to_string()),
        model = q(&model.display().to_string()),
        pooling = q(&pooling.to_string()),
        instruction = q(query_instruction),
    )
}
