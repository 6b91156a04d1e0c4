//! Command-line definitions. Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand};
use cpack_miner::{FilterPreset, OnShort, SamplingKind, SimansWeights};
use std::path::PathBuf;

/// cpack — hard-negative mining and retrieval for BGE-style embedders.
///
/// cpack works inside a workspace: a directory holding `cpack.toml` (made by
/// `cpack init`), the way cargo works on Cargo.toml. State (the index, the
/// mined negatives, later checkpoints) lives under `.cpack/` beside it.
/// Every flag that mirrors a `cpack.toml` key overrides it for one run.
#[derive(Parser, Debug)]
#[command(
    name = "cpack",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Typical session:
  cpack init --data ./my-beir-set --model ./all-MiniLM-L6-v2
  cpack index build
  cpack eval --split test
  cpack search \"how do I file a claim?\"
  cpack mine --topk 200 --skip 10
  cpack mine export --format flag-embedding --output train.jsonl
  cpack train --epochs 2 --refresh-every 1
  cpack report --html curves.html"
)]
pub struct Cli {
    /// Workspace directory (holding cpack.toml); default: the current directory.
    #[arg(
        long,
        short = 'C',
        global = true,
        value_name = "DIR",
        env = "CPACK_WORKSPACE"
    )]
    pub workspace: Option<PathBuf>,

    /// No progress bars or notes on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// When stderr is not a terminal (a log file, CI), print a progress line
    /// this often during long stages (done/total, rate, ETA).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5.0)]
    pub progress_every: f64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create cpack.toml for a dataset and a model in the workspace directory.
    Init(InitArgs),
    /// Build or inspect the persistent vector index of the corpus.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Search the index with a query (the workspace's query instruction is applied).
    Search(SearchArgs),
    /// Embed texts from a JSONL file: each {"text": …} line gets an "embedding".
    Embed(EmbedArgs),
    /// Evaluate retrieval on a qrels split: nDCG@10, MRR@10, Recall@10/100.
    Eval(EvalArgs),
    /// Mine hard negatives for a split's queries into .cpack/negatives (sled).
    ///
    /// Each run makes a new round (or resumes an interrupted one with the same
    /// settings, or does nothing if the last round already matches). Per query:
    /// search the top --topk passages, drop the first --skip raw ranks (as
    /// FlagEmbedding's range_for_sampling 10-210: likely false negatives), the
    /// positives of every qrels split, the query's own text and copies of a
    /// positive, apply the optional score filters, then sample --negatives.
    Mine(MineArgs),
    /// Write a model or checkpoint as one ONNX file, for ONNX Runtime anywhere.
    ///
    /// The graph (opset 17, with ONNX Runtime's fused transformer kernels from
    /// the com.microsoft domain) takes input_ids, attention_mask and
    /// token_type_ids (int64, dynamic batch and sequence) and returns
    /// sentence_embedding (pooled, normalised as the model declares) and
    /// token_embeddings. --int8 stores dense weights as per-column int8, run
    /// with dynamic activation quantisation: about 2x faster on CPUs with
    /// AVX512-VNNI, cosine ≥ 0.97 to the f32 vectors.
    Export(ExportArgs),
    /// Fine-tune the encoder on mined hard negatives, refreshing them as it learns.
    ///
    /// Trains with InfoNCE over in-batch + hard negatives (or --loss gte): per
    /// query one positive and --group-size − 1 negatives from the current
    /// mining round; queries get the workspace's instruction, passages never.
    /// Every --refresh-every epochs the corpus is re-encoded with the new
    /// checkpoint into the run's own index and the negatives are mined again
    /// (ANCE). Missing base index or round are built/mined first. Checkpoints go
    /// to .cpack/runs/<run>/epoch-N/ in Hugging Face / sentence-transformers
    /// layout; report.json records loss, metrics and timings per epoch.
    /// Every flag can also be set under [train] in cpack.toml.
    Train(Box<TrainArgs>),
    /// Show a training run's report: per-epoch loss, metrics and timings.
    Report(ReportArgs),
    /// Serve the encoder and index over HTTP (search, embed, health, info).
    ///
    /// POST /search {"query": "…", "k": 10} or {"queries": […]} returns ids,
    /// scores, titles and texts (the workspace's query instruction applied);
    /// POST /embed {"inputs": "…" | […], "kind": "passage" | "query"} returns
    /// one vector per input, as text-embeddings-inference; GET /health and
    /// GET /info (model fingerprint, index generation, dimension, instruction,
    /// backend). Requests arriving together are encoded as one batch. When
    /// `cpack index build` (or, with --run, a training refresh) publishes a new
    /// generation, the server switches to it between two batches.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub overrides: Overrides,
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Serve a training run's newest checkpoint and its index instead of the
    /// workspace's model and index.
    #[arg(long, value_name = "RUN", conflicts_with = "model")]
    pub run: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Epochs to train [default: 1].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Re-encode, re-index and re-mine every N epochs; 0 keeps the first round's negatives (static) [default: 1].
    #[arg(long, value_name = "N")]
    pub refresh_every: Option<usize>,
    /// What a refresh re-encodes: full (the whole corpus) or incremental (only
    /// the training queries' top-k pool in the last round's index and their
    /// positives; the other passages keep their vectors, marked stale in the
    /// index manifest; evaluation then encodes the corpus into an index of its
    /// own) [train.refresh; default: full].
    #[arg(long, value_enum, value_name = "SCOPE")]
    pub refresh: Option<cpack_train::incremental::RefreshScope>,
    /// With --refresh incremental, every Mth refresh re-encodes the whole corpus
    /// (0 = never) [train.full_refresh_every; default: 0].
    #[arg(long, value_name = "M")]
    pub full_refresh_every: Option<usize>,
    /// With --refresh incremental, re-encode only the top K ranks of each
    /// training query's pool (and its positives): fewer passages re-encoded,
    /// more left stale. The next round still mines the whole --topk
    /// [train.refresh_depth; default: the mining --topk].
    #[arg(long, value_name = "K")]
    pub refresh_depth: Option<usize>,
    /// With --refresh incremental, what the passages left out get: `kept`,
    /// their old vectors; `aligned`, those vectors mapped into the new
    /// checkpoint's space by a linear map fitted on the re-encoded passages'
    /// old and new vectors, so the next round ranks stale and fresh passages
    /// alike [train.stale_vectors; default: kept].
    #[arg(long, value_enum, value_name = "HOW")]
    pub stale_vectors: Option<cpack_index::align::StaleVectors>,
    /// Queries per batch; every passage of the batch is a negative for the other queries [default: 32].
    #[arg(long, value_name = "N")]
    pub train_batch_size: Option<usize>,
    /// Passages per query: 1 positive + N−1 hard negatives; 1 = in-batch negatives only [default: 8].
    #[arg(long, value_name = "N")]
    pub group_size: Option<usize>,
    /// Softmax temperature: 0.02 as BGE; MiniLM-style models do better around 0.05 [default: 0.02].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// infonce, or gte (adds query–query and passage–passage terms to the partition function) [default: infonce].
    #[arg(long, value_enum)]
    pub loss: Option<cpack_train::loss::LossKind>,
    /// Peak learning rate of AdamW [default: 2e-5].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Decoupled weight decay (biases and LayerNorm excluded) [default: 0.01].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Share of the steps spent warming the learning rate up linearly, then it decays linearly to 0 [default: 0.1].
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// Batches whose gradients are summed into one optimizer step [default: 1].
    #[arg(long, value_name = "N")]
    pub grad_accum: Option<usize>,
    /// Gradient caching: run the model on N texts at a time, so the memory of
    /// a step no longer grows with the batch; same gradients as the whole
    /// batch, at the cost of a second forward pass [train.mini_batch; 0 = off].
    #[arg(long, value_name = "N")]
    pub mini_batch: Option<usize>,
    /// How batches are formed: clash-free (no passage that is one query's positive
    /// anywhere else in its batch) or plain (shuffled order, as FlagEmbedding) [default: clash-free].
    #[arg(long, value_enum)]
    pub batching: Option<cpack_train::data::Batching>,
    /// Seed of the training draws (order, positives, negatives, dropout); the
    /// query subset and the mining keep the workspace's seed [train.seed; default: cpack.toml seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Clip the global gradient norm to this; 0 disables [default: 1.0].
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// Turn the model's dropout off (deterministic forward passes).
    #[arg(long)]
    pub no_dropout: bool,
    /// Query-side training (ADORE): passages keep the base model's vectors
    /// from the workspace index, only the queries run through the model.
    /// Steps skip the passages' passes and a refresh is a query encode and a
    /// search: the index is never re-encoded. Checkpoints are then query
    /// encoders, to pair with the base model's index [train.freeze_passages].
    #[arg(long)]
    pub freeze_passages: bool,
    /// Dynamic negatives (after Conan-embedding): a drawn negative that the
    /// model, in the step's own forward pass, scores more than MARGIN below
    /// the query's positive is not drawn again while the query has others
    /// in its stored pool; later epochs move on to the rest of the pool with
    /// no corpus re-encode. Rounds then store 4 × (group size − 1)
    /// negatives unless --negatives says otherwise [train.replace_easy].
    #[arg(long, value_name = "MARGIN")]
    pub replace_easy: Option<f32>,
    /// Train on a seeded subset of N queries of the split.
    #[arg(long, value_name = "N")]
    pub max_queries: Option<usize>,
    /// Qrels split to train on [default: train].
    #[arg(long)]
    pub split: Option<String>,
    /// Split evaluated after each epoch, or "none" [default: dev if present, else test].
    #[arg(long)]
    pub eval_split: Option<String>,
    /// Passages retrieved per query when mining [default: 200].
    #[arg(long)]
    pub topk: Option<usize>,
    /// Raw ranks skipped when mining (false-negative guard) [default: 10].
    #[arg(long)]
    pub skip: Option<usize>,
    /// Negatives stored per query and round [default: group size − 1].
    #[arg(long)]
    pub negatives: Option<usize>,
    /// How each round draws its negatives: random, top or simans [train.sample; default: random].
    #[arg(long, value_enum, value_name = "HOW")]
    pub sample: Option<SamplingKind>,
    /// SimANS's a [train.simans_a; default: the paper's 0.5].
    #[arg(long, value_name = "A", allow_negative_numbers = true)]
    pub simans_a: Option<f32>,
    /// SimANS's b [train.simans_b; default: 0].
    #[arg(long, value_name = "B", allow_negative_numbers = true)]
    pub simans_b: Option<f32>,
    /// Train on negatives mined by another model (a larger teacher): round N
    /// of the negatives store, for the first epoch and, with
    /// --refresh-every 0, for all. By default a run never trains on a round
    /// another model mined [train.negatives_from].
    #[arg(long, value_name = "ROUND")]
    pub negatives_from: Option<u32>,
    /// Positive-aware filter of each round: perc-pos or margin-pos (see `cpack mine --help`) [train.filter].
    #[arg(long, value_enum, value_name = "PRESET")]
    pub filter: Option<FilterPreset>,
    /// Run name (folder under .cpack/runs/) [default: run-NNN, the next free number].
    #[arg(long)]
    pub run: Option<String>,
    /// Continue a killed run (--run, or the newest) from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run to show [default: the newest].
    #[arg(long)]
    pub run: Option<String>,
    /// Print report.json as is.
    #[arg(long)]
    pub json: bool,
    /// Also write the curves (metrics and loss per epoch) as an HTML page with SVG charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also draw the curves (nDCG@10 and loss per epoch) as a PNG picture.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Dataset folder in BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// Model folder in Hugging Face / sentence-transformers layout
    /// (config.json, model.safetensors, tokenizer.json, modules.json), or a
    /// hub id such as BAAI/bge-small-en-v1.5 (downloaded into the Hugging Face
    /// cache on first use; HF_HUB_OFFLINE=1 uses the cache only).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,

    /// Instruction put before every query (never before passages). Either the
    /// text itself, or a preset: `bge-en` ("Represent this sentence for searching
    /// relevant passages: ") or `bge-zh` ("为这个句子生成表示以用于检索相关文章：").
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub query_instruction: String,

    /// Overwrite an existing cpack.toml.
    #[arg(long)]
    pub force: bool,
}

/// Settings of the encoder and index that every command can override.
#[derive(Args, Debug, Default, Clone)]
pub struct Overrides {
    /// Model folder or Hugging Face hub id [cpack.toml: model.path].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Pooling: mean or cls [model.pooling; default: as the model's modules.json says].
    #[arg(long, value_name = "MODE", value_enum)]
    pub pooling: Option<cpack_model::Pooling>,
    /// Maximum query length in tokens, [CLS]/[SEP] included [model.query_max_len].
    #[arg(long, value_name = "N")]
    pub query_max_len: Option<usize>,
    /// Maximum passage length in tokens [model.passage_max_len].
    #[arg(long, value_name = "N")]
    pub passage_max_len: Option<usize>,
    /// Texts per forward pass [encode.batch_size].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Padded tokens per forward pass at most, 0 = rows only: short texts then come many to a
    /// batch, long ones few (on a GPU, e.g. 65536 with --batch-size 1024) [encode.batch_tokens].
    #[arg(long, value_name = "N")]
    pub batch_tokens: Option<usize>,
    /// Compute threads, 0 = all cores [encode.threads]. On a busy 2-core box, 1 can beat 2.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Encoder runtime: candle (default: cpack's own BERT, the fastest exact one; its matrix
    /// kernel follows the CPU's AVX-512 / AVX2 / NEON flags), or ort (ONNX Runtime on
    /// cpack's ONNX export; with --encoder-precision int8 the fastest overall) [encode.backend].
    #[arg(long, value_name = "BACKEND", value_enum)]
    pub encoder: Option<cpack_encode::BackendKind>,
    /// Encoder weights and products: f32; int8 with --encoder ort; bf16 with candle, for
    /// GPUs (on a CPU it runs the slow portable ops) [encode.precision].
    #[arg(long, value_name = "PRECISION", value_enum)]
    pub encoder_precision: Option<cpack_encode::WeightPrecision>,
    /// Where the candle encoder computes: cpu, or cuda / cuda:N in a cpack
    /// built with the `cuda` feature (scripts/build-cuda.sh) [encode.device].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<cpack_encode::ComputeDevice>,
    /// Where FAISS searches an opened index: cpu, or gpu / gpu:N in a cpack built with the
    /// `cuda` feature. Indexes are saved in CPU form, so either opens without a rebuild
    /// [index.device].
    #[arg(long, value_name = "DEVICE")]
    pub index_device: Option<cpack_index::vector::IndexDevice>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write ONNX (the only export format so far).
    #[arg(long, required = true)]
    pub onnx: bool,
    /// Per-column int8 weights (DynamicQuantizeMatMul) instead of f32.
    #[arg(long)]
    pub int8: bool,
    /// Pooling baked into the graph: mean or cls [default: as the model declares].
    #[arg(long, value_name = "MODE", value_enum)]
    pub pooling: Option<cpack_model::Pooling>,
    /// Model folder, checkpoint (.cpack/runs/<run>/epoch-N) or Hugging Face hub id.
    #[arg(value_name = "CHECKPOINT")]
    pub model: PathBuf,
    /// The ONNX file to write (atomically: it appears whole or not at all).
    #[arg(value_name = "OUT.onnx")]
    pub output: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Encode the corpus with the current model and build the vector index.
    ///
    /// Passages are encoded in chunks that are synced to disk as they finish:
    /// an interrupted build resumes where it stopped when run again with the
    /// same settings. The new index is built beside the live one and swapped
    /// in atomically once complete.
    Build(Box<BuildArgs>),
    /// Show the live index's manifest: model, corpus, settings, timings.
    Info {
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub overrides: Overrides,
    /// Index backend: faiss or exact (brute force in Rust) [index.backend].
    #[arg(long, value_name = "NAME", value_enum)]
    pub backend: Option<cpack_index::vector::IndexBackend>,
    /// FAISS factory string, e.g. Flat, IVF1024,Flat, HNSW32, IVF1024,PQ32 [index.factory].
    #[arg(long, value_name = "STRING")]
    pub factory: Option<String>,
    /// Precision of the stored embeddings: f32 or f16 [index.precision].
    #[arg(long, value_name = "P", value_enum)]
    pub precision: Option<cpack_index::embeddings::Precision>,
    /// Passages encoded between two resumable checkpoints of the build.
    #[arg(long, value_name = "N", default_value_t = cpack_index::store::BuildOptions::DEFAULT_CHUNK_ROWS)]
    pub chunk_rows: usize,
    /// Rebuild even if the live index already matches model, corpus and settings.
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The query text.
    pub query: String,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Encode the queries with this model instead, over the same index: the
    /// query encoder a `cpack train --freeze-passages` run saves (its
    /// epoch-N folder), whose passages stay the workspace model's.
    #[arg(long, value_name = "DIR")]
    pub query_model: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// JSONL input, one {"text": …} object per line; `-` reads stdin.
    #[arg(long, short, value_name = "FILE")]
    pub input: PathBuf,
    /// JSONL output (each input object plus "embedding"); `-` writes stdout.
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,
    /// Treat the texts as queries: apply the query instruction and query max length.
    #[arg(long)]
    pub query: bool,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Qrels split to evaluate (qrels/<split>.tsv).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Print metrics as JSON.
    #[arg(long)]
    pub json: bool,
    /// Encode the queries with this model instead, over the same index: the
    /// query encoder a `cpack train --freeze-passages` run saves (its
    /// epoch-N folder), whose passages stay the workspace model's.
    #[arg(long, value_name = "DIR")]
    pub query_model: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MineArgs {
    #[command(subcommand)]
    pub action: Option<MineAction>,
    #[command(flatten)]
    pub run: MineRunArgs,
}

#[derive(Subcommand, Debug)]
pub enum MineAction {
    /// Write a round as FlagEmbedding JSONL, triplets or ids.
    Export(MineExportArgs),
    /// Summarise a round: coverage, shortages, filters, positive ranks, overlap with the previous round.
    Stats(MineStatsArgs),
    /// Store negatives mined elsewhere (FlagEmbedding JSONL: query, pos, neg texts) as a new round.
    Import(MineImportArgs),
}

#[derive(Args, Debug)]
pub struct MineImportArgs {
    /// FlagEmbedding JSONL; every query and passage text must occur in the dataset.
    pub input: PathBuf,
}

/// SimANS's weights, `exp(−a·(s − s⁺ − b)²)` for a candidate scoring `s`
/// against the query's lowest positive `s⁺`; used with `--sample simans`.
#[derive(Args, Debug)]
pub struct SimansArgs {
    /// How sharply the weight falls off away from s⁺ + b. Scores are cosines
    /// for normalised models: the paper's 0.5 (on unnormalised scores) then
    /// weighs nearly evenly, and values in the tens concentrate the draw.
    #[arg(long, value_name = "A", allow_negative_numbers = true, default_value_t = SimansWeights::PAPER.a)]
    pub simans_a: f32,
    /// Where the weight peaks, relative to the positive's score.
    #[arg(long, value_name = "B", allow_negative_numbers = true, default_value_t = SimansWeights::PAPER.b)]
    pub simans_b: f32,
}

impl SimansArgs {
    pub fn weights(&self) -> SimansWeights {
        SimansWeights {
            a: self.simans_a,
            b: self.simans_b,
        }
    }
}

#[derive(Args, Debug)]
pub struct MineRunArgs {
    /// Qrels split whose queries are mined.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Passages retrieved per query (raw ranks).
    #[arg(long, default_value_t = 200)]
    pub topk: usize,
    /// Drop the first N raw ranks, before any other filter (FlagEmbedding semantics).
    #[arg(long, default_value_t = 10)]
    pub skip: usize,
    /// Count --skip among the candidates that survive the filters (sentence-transformers' range_min).
    #[arg(long)]
    pub skip_after_filter: bool,
    /// Negatives stored per query (FlagEmbedding's train_group_size − 1).
    #[arg(long, default_value_t = 7)]
    pub negatives: usize,
    /// How negatives are drawn from the survivors: random (seeded), top, or
    /// simans (weighted towards scores near the positive's; see --simans-a).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = SamplingKind::Random)]
    pub sample: SamplingKind,
    #[command(flatten)]
    pub simans: SimansArgs,
    /// When fewer survive than --negatives: keep (store fewer), drop (store none) or pad (random passages).
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = OnShort::Keep)]
    pub on_short: OnShort,
    /// Seed of the random sampling [cpack.toml: seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Drop candidates scoring above S (likely unlabelled positives).
    #[arg(long, value_name = "S")]
    pub max_score: Option<f32>,
    /// Drop candidates scoring within M of the query's lowest positive.
    #[arg(long, value_name = "M")]
    pub margin: Option<f32>,
    /// Drop candidates scoring above (1 − R) × the lowest positive's score (sign-aware).
    #[arg(long, value_name = "R")]
    pub relative_margin: Option<f32>,
    /// A positive-aware filter by name (NV-Retriever): perc-pos drops
    /// candidates above 95 % of the positive's score (--relative-margin 0.05),
    /// margin-pos those above the positive's − 0.05 (--margin 0.05). The
    /// paper uses them instead of a rank skip: add --skip 0 for its recipe.
    #[arg(long, value_enum, value_name = "PRESET", conflicts_with_all = ["margin", "relative_margin"])]
    pub filter: Option<FilterPreset>,
    /// Mine a new round even if the last one matches these settings.
    #[arg(long)]
    pub force: bool,
    /// Queries per resumable chunk (a killed run redoes at most one chunk).
    #[arg(long, default_value_t = 2048, hide = true)]
    pub chunk_queries: usize,
    /// Run encoding, search and selection one after another on every core,
    /// instead of encoding the next chunk of queries while this one is
    /// searched. Slower on most machines, but `mine stats` then shows what
    /// each stage costs on its own. The negatives are the same either way.
    #[arg(long)]
    pub no_overlap: bool,
    /// Instead of mining, delete all rounds but the newest --keep.
    #[arg(long)]
    pub gc: bool,
    /// Rounds kept by --gc.
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Args, Debug)]
pub struct MineExportArgs {
    /// Round to export (default: the newest complete one).
    #[arg(long)]
    pub round: Option<u32>,
    /// flag-embedding ({"query","pos","neg","pos_scores","neg_scores","prompt"}), triplets or ids.
    #[arg(long, value_enum, default_value_t = cpack_miner::export::ExportFormat::FlagEmbedding)]
    pub format: cpack_miner::export::ExportFormat,
    /// Output file; `-` writes stdout.
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct MineStatsArgs {
    /// Round to describe (default: the newest complete one).
    #[arg(long)]
    pub round: Option<u32>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}
