//! Command-line definitions. Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand};
use cpack_encode::{EncodeRecipe, ModelRecipe};
use cpack_index::vector::IndexDevice;
use cpack_index::IndexRecipe;
use cpack_miner::MiningRecipe;
use cpack_model::Pooling;
use cpack_run::TrainRecipe;
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
    /// this often during long stages (done/total, rate, ETA); 0 prints every
    /// update.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds_from_zero)]
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
    /// with dynamic activation quantisation: faster on CPUs with AVX512-VNNI,
    /// at a small cost in cosine to the f32 vectors (README: ONNX).
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
    /// Serve the encoder and index over HTTP (search, embed, rerank, health, info).
    ///
    /// POST /search {"query": "…", "k": 10} or {"queries": […]} returns ids,
    /// scores, titles and texts (the workspace's query instruction applied);
    /// POST /embed {"inputs": "…" | […], "kind": "passage" | "query"} returns
    /// one vector per input, as text-embeddings-inference; GET /health and
    /// GET /info (model fingerprint, index generation, dimension, instruction,
    /// backend). With --reranker MODEL, POST /rerank {"query": "…", "texts":
    /// […]} returns each text's index and score, best first (the sigmoid of
    /// the logit; "raw_scores": true for the logit), as text-embeddings-inference,
    /// and {"rerank": true} on /search reorders the top --rerank-depth hits.
    /// Requests arriving together are encoded as one batch. When
    /// `cpack index build` (or, with --run, a training refresh) publishes a new
    /// generation, the server switches to it between two batches.
    Serve(ServeArgs),
    /// Keep the pairs of a pairs file whose two sides score at or above a threshold.
    ///
    /// C-MTP's filter before its pair stage: each pair is scored by the
    /// cosine of its two embeddings (the query side with the query
    /// instruction and max length, the passage side as a passage), and the
    /// lines whose pairs reach --min-score are written unchanged; a line with
    /// a list of passages keeps those that reach it, and is dropped if none
    /// does. The input is streamed in chunks (constant memory); into a file,
    /// a killed filter resumes from its last chunk when run again with the
    /// same settings. Prints the score histogram and the share kept.
    Filter(FilterArgs),
    /// Score (query, passage) pairs with a reranker (cross-encoder).
    ///
    /// Each line of a pairs file is written back with its pairs' scores
    /// beside the passage field: `pos_scores` (a list, in the passages'
    /// order) for FlagEmbedding's {"query": …, "pos": […]}, `<field>_score`
    /// for a field holding one string — the teacher scores FlagEmbedding's
    /// distillation reads. A score is the model's logit (higher is more
    /// relevant; sentence-transformers' CrossEncoder.predict shows its
    /// sigmoid). Streamed in chunks; into a file, a killed run resumes.
    /// `cpack rerank train` trains a reranker on a mined round.
    #[command(after_help = "Examples:
  cpack rerank pairs.jsonl --reranker BAAI/bge-reranker-base -o scored.jsonl
  cpack rerank pairs.jsonl --reranker ./my-reranker --passage-field neg > neg-scored.jsonl
  cpack rerank train --epochs 1 --group-size 8")]
    Rerank(RerankArgs),
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RerankArgs {
    #[command(subcommand)]
    pub action: Option<RerankAction>,
    #[command(flatten)]
    pub score: RerankScoreArgs,
}

#[derive(Subcommand, Debug)]
pub enum RerankAction {
    /// Train a reranker on the workspace's qrels and a mined round.
    ///
    /// Per training query one positive and --group-size − 1 of the round's
    /// negatives, as (query, passage) pairs; the loss is the cross-entropy
    /// of each group's logits with the positive as the target
    /// (FlagEmbedding's reranker loss), through the embedder's AdamW,
    /// schedule, clipping and --mini-batch. Starts from a cross-encoder, or
    /// from an embedder (the workspace's model by default), which gets a new
    /// classification head drawn from --seed. Each epoch writes a checkpoint
    /// under .cpack/rerankers/<run>/ that sentence-transformers'
    /// CrossEncoder(path) loads, and, with an eval split, reports the
    /// workspace index's metrics before and after the checkpoint reranks
    /// each query's top --rerank-depth hits. A killed run continues with --resume.
    #[command(after_help = "Examples:
  cpack mine --topk 200 --skip 10
  cpack rerank train --epochs 1 --group-size 8 --max-len 256
  cpack search \"how do I file a claim?\" --reranker .cpack/rerankers/rerank-001/epoch-1")]
    Train(Box<RerankTrainArgs>),
}

#[derive(Args, Debug)]
pub struct RerankTrainArgs {
    /// The model to start from: a cross-encoder, or an embedder that gets a
    /// new head [default: the workspace's model].
    #[arg(long, value_name = "MODEL")]
    pub from: Option<PathBuf>,
    /// Mining round whose negatives it trains on [default: the newest complete one].
    #[arg(long, value_name = "N")]
    pub round: Option<u32>,
    /// Run name (folder under .cpack/rerankers/) [default: rerank-NNN, the next free number].
    #[arg(long)]
    pub run: Option<String>,
    /// Continue a killed run (--run, or the newest) from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub epochs: usize,
    /// Qrels split of the training queries.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Train on a seeded subset of N queries of the split (the workspace's seed picks it).
    #[arg(long, value_name = "N")]
    pub max_queries: Option<usize>,
    /// Tokens of a (query, passage) pair at most, special tokens included;
    /// the longer side is cut first.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_len: usize,
    /// Queries per batch (each brings its group of pairs).
    #[arg(long = "train-batch-size", value_name = "N", default_value_t = cpack_train::TrainSettings::default().batch_size)]
    pub batch_size: usize,
    /// Pairs per query: its positive and N−1 of the round's negatives.
    #[arg(long, value_name = "N", default_value_t = cpack_train::TrainSettings::default().group_size)]
    pub group_size: usize,
    /// Peak learning rate of AdamW.
    #[arg(long, default_value_t = cpack_train::TrainSettings::default().lr)]
    pub lr: f64,
    /// Share of the steps spent warming the learning rate up linearly; then it decays linearly to 0.
    #[arg(long, default_value_t = cpack_train::TrainSettings::default().warmup_ratio)]
    pub warmup_ratio: f64,
    /// Decoupled weight decay (biases and LayerNorm excluded).
    #[arg(long, default_value_t = cpack_train::TrainSettings::default().weight_decay)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; 0 disables.
    #[arg(long, default_value_t = cpack_train::TrainSettings::default().max_grad_norm)]
    pub max_grad_norm: f64,
    /// Batches whose gradients are summed into one optimizer step.
    #[arg(long, value_name = "N", default_value_t = cpack_train::TrainSettings::default().grad_accum)]
    pub grad_accum: usize,
    /// Run the model on about N pairs at a time (whole groups), summing the
    /// gradients: the memory of a step no longer grows with the batch (0 = off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub mini_batch: usize,
    /// No dropout (deterministic forward passes).
    #[arg(long = "no-dropout", action = clap::ArgAction::SetFalse)]
    pub dropout: bool,
    /// Seed of the draws (order, negatives, dropout, a new head) [default: cpack.toml's seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Split to evaluate after each epoch (the workspace index's top hits,
    /// reranked), `none` to skip [default: test, when it exists and the index is built].
    #[arg(long, value_name = "SPLIT")]
    pub eval_split: Option<String>,
    /// Hits each evaluated query has reranked.
    #[arg(long, value_name = "N", default_value_t = cpack_encode::RerankRecipe::DEFAULT_DEPTH)]
    pub rerank_depth: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Args, Debug)]
pub struct RerankScoreArgs {
    /// Pairs JSONL: FlagEmbedding's {"query": …, "pos": […]}, or any two
    /// fields named by --query-field and --passage-field; `-` reads stdin.
    #[arg(value_name = "PAIRS.jsonl", required = true)]
    pub input: Option<PathBuf>,
    /// Where the scored lines go: a file appears whole at the end (its
    /// partial work sits beside it until then); `-` writes stdout.
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,
    #[command(flatten)]
    pub fields: PairFieldArgs,
    #[command(flatten)]
    pub rerank: cpack_encode::RerankRecipe,
    /// Compute threads, 0 = all cores.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Where the reranker computes: cpu, or cuda / cuda:N in a cpack built with `cuda`.
    #[arg(long, value_name = "DEVICE", default_value_t = cpack_model::ComputeDevice::Cpu)]
    pub device: cpack_model::ComputeDevice,
    /// Pairs scored between two resumable checkpoints.
    #[arg(long, value_name = "N", default_value_t = cpack_data::filter::FilterSettings::DEFAULT_CHUNK_PAIRS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub chunk_pairs: usize,
    /// Print the summary (pairs, lines, rate) as JSON on stdout (needs --output FILE).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Pairs JSONL: FlagEmbedding's {"query": …, "pos": […]} (extra fields
    /// such as "neg" are kept as they are), or any two fields named by
    /// --query-field and --passage-field; `-` reads stdin.
    #[arg(value_name = "PAIRS.jsonl")]
    pub input: PathBuf,
    /// Where the kept lines go: a file appears whole at the end (replaced
    /// atomically; its partial work sits beside it until then); `-` writes
    /// stdout and a FIFO or device is written through, as lines are kept.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// Keep pairs scoring at or above this cosine (C-MTP kept 0.43 and up
    /// under Text2Vec-Chinese).
    #[arg(long, value_name = "SCORE", allow_negative_numbers = true, default_value_t = cpack_data::filter::FilterSettings::DEFAULT_MIN_SCORE, value_parser = cosine)]
    pub min_score: f32,
    #[command(flatten)]
    pub fields: PairFieldArgs,
    /// Instruction put before each query-side text: the text, a preset
    /// (bge-en, bge-zh), or "" for none (C-MTP scored (title, passage) pairs
    /// without one) [default: the workspace's query instruction].
    #[arg(long, value_name = "TEXT")]
    pub query_instruction: Option<String>,
    /// Pairs scored between two resumable checkpoints.
    #[arg(long, value_name = "N", default_value_t = cpack_data::filter::FilterSettings::DEFAULT_CHUNK_PAIRS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub chunk_pairs: usize,
    /// Print the summary (counts, share kept, histogram) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Which fields of a pairs file hold its two sides.
#[derive(Args, Debug, Clone)]
pub struct PairFieldArgs {
    /// The field of each pairs line holding the query side (a string).
    #[arg(long, value_name = "NAME", default_value_t = cpack_data::pairs::PairFields::default().query)]
    pub query_field: String,
    /// The field holding the passage side (a string, or a list of strings:
    /// one pair each).
    #[arg(long, value_name = "NAME", default_value_t = cpack_data::pairs::PairFields::default().passage)]
    pub passage_field: String,
}

impl PairFieldArgs {
    pub fn fields(&self) -> cpack_data::pairs::PairFields {
        cpack_data::pairs::PairFields {
            query: self.query_field.clone(),
            passage: self.passage_field.clone(),
        }
    }
}

/// A cosine threshold: a finite number from -1 to 1.
fn cosine(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(s) if (-1.0..=1.0).contains(&s) => Ok(s),
        Ok(_) => Err("must be a cosine, from -1 to 1".into()),
        Err(e) => Err(e.to_string()),
    }
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
    #[arg(long, value_name = "RUN", conflicts_with = "model.path")]
    pub run: Option<String>,
    /// Connections open at once; more are answered 503 and closed.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// Seconds a client has to send a request's header, and then its body,
    /// and an idle connection stays open; a slower one is cut off (408).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = positive_seconds)]
    pub read_timeout: f64,
    /// Also serve a cross-encoder: POST /rerank, and {"rerank": true} on
    /// /search reorders the top --rerank-depth hits.
    #[command(flatten)]
    pub rerank: cpack_encode::RerankRecipe,
}

/// Seconds, at most a day: `above_zero` or from zero up.
fn seconds(text: &str, above_zero: bool) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (s > 0.0 || (!above_zero && s == 0.0)) && s <= 86_400.0 => Ok(s),
        Ok(_) if above_zero => Err("must be a number of seconds above 0 (at most a day)".into()),
        Ok(_) => Err("must be a number of seconds, 0 or more (at most a day)".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    seconds(text, true)
}

fn seconds_from_zero(text: &str) -> Result<f64, String> {
    seconds(text, false)
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub recipe: TrainRecipe,
    /// Run name (folder under .cpack/runs/) [default: run-NNN, the next free number].
    #[arg(long)]
    pub run: Option<String>,
    /// Continue a killed run (--run, or the newest) from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Train on a pairs file instead of the workspace's dataset: C-MTP's
    /// pair stage. Each line's query side and passage make a pair (the
    /// fields as --query-field / --passage-field say); there is no corpus
    /// to mine, so every pair trains against the other pairs of its batch
    /// only (group size 1), and no split to evaluate. Large batches take
    /// --mini-batch. The file's checksum is recorded: --resume trains on
    /// the same bytes.
    #[arg(long, value_name = "PAIRS.jsonl")]
    pub pairs: Option<PathBuf>,
    #[command(flatten)]
    pub pair_fields: PairFieldArgs,
    /// With --pairs whose two sides are alike (NLI, paraphrases: C-MTP's
    /// cmnli and ocnli): the query side is encoded as a passage, without the
    /// query instruction and at the passage max length. With --loss gte the
    /// other pairs' query sides are negatives too.
    #[arg(long, requires = "pairs")]
    pub symmetric: bool,
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
    /// Also write the curves (metrics and loss per epoch) as an HTML page
    /// with SVG charts (replaced atomically; `-` writes stdout).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also draw the curves (nDCG@10 and loss per epoch) as a PNG picture
    /// (replaced atomically; `-` writes stdout).
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

/// Settings of the model, the encoder and the index that every command can
/// override: the flags of `[model]` and `[encode]`, and where the index searches.
#[derive(Args, Debug, Default, Clone)]
pub struct Overrides {
    #[command(flatten)]
    pub model: ModelRecipe,
    #[command(flatten)]
    pub encode: EncodeRecipe,
    /// Where FAISS searches an opened index: cpu, or gpu / gpu:N in a cpack built with the
    /// `cuda` feature. Indexes are saved in CPU form, so either opens without a rebuild
    /// [index.device].
    #[arg(id = "index.device", long = "index-device", value_name = "DEVICE")]
    pub index_device: Option<IndexDevice>,
    /// In a workspace of several [[task]]s: work on this task alone
    /// [default: every task; search and the round commands need one].
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
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
    pub pooling: Option<Pooling>,
    /// Model folder, checkpoint (.cpack/runs/<run>/epoch-N) or Hugging Face hub id.
    #[arg(value_name = "CHECKPOINT")]
    pub model: PathBuf,
    /// The ONNX file to write (atomically: it appears whole or not at all);
    /// `-` writes stdout, a FIFO or device is written through.
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
        /// In a workspace of several [[task]]s: the index of this task.
        #[arg(long, value_name = "NAME")]
        task: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(flatten)]
    pub index: IndexRecipe,
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
    /// Rerank the top --rerank-depth hits with a cross-encoder; results
    /// show both scores.
    #[command(flatten)]
    pub rerank: cpack_encode::RerankRecipe,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// JSONL input, one {"text": …} object per line; `-` reads stdin.
    #[arg(long, short, value_name = "FILE")]
    pub input: PathBuf,
    /// JSONL output (each input object plus "embedding"), replaced
    /// atomically; `-` writes stdout, a FIFO or device is written through.
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
    /// Rerank each query's top --rerank-depth hits with a cross-encoder
    /// and report the metrics of the reranked lists.
    #[command(flatten)]
    pub rerank: cpack_encode::RerankRecipe,
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
    /// In a workspace of several [[task]]s: the task whose store holds the round.
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
    /// FlagEmbedding JSONL; every query and passage text must occur in the dataset.
    pub input: PathBuf,
    /// The qrels split that judges these queries: a run training on that
    /// split can use the round (`cpack train --negatives-from N`)
    /// [default: the workspace's mining split, [mine] split].
    #[arg(long, value_name = "SPLIT")]
    pub split: Option<String>,
}

#[derive(Args, Debug)]
pub struct MineRunArgs {
    #[command(flatten)]
    pub recipe: MiningRecipe,
    /// Seed of the random sampling [cpack.toml: seed].
    #[arg(long)]
    pub seed: Option<u64>,
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
    /// In a workspace of several [[task]]s: the task whose store holds the round.
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
    /// Round to export (default: the newest complete one).
    #[arg(long)]
    pub round: Option<u32>,
    /// flag-embedding ({"query","pos","neg","pos_scores","neg_scores","prompt"}), triplets or ids.
    #[arg(long, value_enum, default_value_t = cpack_miner::export::ExportFormat::FlagEmbedding)]
    pub format: cpack_miner::export::ExportFormat,
    /// Output file, replaced atomically; `-` writes stdout, a FIFO or
    /// device (/dev/stdout) is written through, a symlink's target replaced.
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct MineStatsArgs {
    /// In a workspace of several [[task]]s: the task whose store holds the round.
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
    /// Round to describe (default: the newest complete one).
    #[arg(long)]
    pub round: Option<u32>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}
