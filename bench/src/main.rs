//! cpack-bench: throughput benchmarks on this machine. Not timed tests:
//! figures are printed (and written as JSON) for the README and for
//! comparison against peers measured in the same run.
//!
//! `encode`: corpus encoding throughput of an encoder backend, median over
//! repetitions, with the thread count. By default at a fixed batch shape
//! (every batch full: `batch × max_len` real tokens); with `--real N`, an
//! evenly spaced sample of N corpus passages at their real lengths, encoded
//! as `cpack index build` encodes them (chunks of the build's size,
//! length-sorted batches), in passages/s and real tokens/s.
//!
//! `mine`: mining rounds over a workspace's built index (into scratch
//! stores), next to two floors measured in the same round: the queries
//! encoded alone, and one plain FAISS search of those embeddings. Each round
//! mines twice: pipelined (the default; what it costs beyond encoding alone)
//! and stage by stage (`--no-overlap`; encoding, search, and selection +
//! storage each timed on its own). Medians over `--rounds`.
//!
//! `scale`: index build, search and mining on synthetic vectors at growing
//! corpus sizes, per FAISS factory, with peak memory (see `scale.rs`).
//!
//! `serve-load`: `/search` requests against a running `cpack serve` from
//! concurrent loopback clients (requests/s, p50/p99), beside the same
//! queries through `cpack search`'s in-process path (see `serve_load.rs`).
//!
//! `train-step`: one training step (forward + backward + AdamW) at a fixed
//! shape, median seconds and tokens/s.
//!
//! `dropout-stats`: loss and gradient norm of one fixed batch under many
//! dropout draws, for comparison with PyTorch's dropout in distribution.

mod dropout_stats;
mod facts;
#[cfg(feature = "faiss")]
mod plain_faiss;
mod scale;
mod serve_load;
mod train_step;

#[cfg(not(feature = "faiss"))]
mod plain_faiss {
    /// Without FAISS there is no plain FAISS search to compare with.
    pub fn search_seconds(
        _: &std::path::Path,
        _: &[f32],
        _: usize,
        _: usize,
    ) -> anyhow::Result<Option<f64>> {
        Ok(None)
    }

    pub fn products_on_cpack_kernel() -> u64 {
        0
    }
}

use anyhow::{bail, Context, Result};
use cpack_data::dataset::{Dataset, DatasetPaths, TextTable};
use cpack_encode::candle_backend::CandleLoader;
use cpack_encode::ort_backend::{find_library, OrtLoader, OrtOptions};
use cpack_encode::{BackendLoader, Encoder, EncoderSettings, TextKind, WeightPrecision};
use cpack_index::store::IndexDir;
use cpack_miner::{
    MineOptions, MineOutcome, MiningInput, MiningParams, NegativeStore, OnShort, Sampling,
};
use cpack_model::ModelDir;
use std::path::PathBuf;
use std::time::Instant;

struct EncodeArgs {
    model: PathBuf,
    corpus: PathBuf,
    max_len: usize,
    batch: usize,
    batches: usize,
    reps: usize,
    threads: usize,
    /// "candle" or "ort".
    backend: String,
    precision: WeightPrecision,
    /// ORT intra-op threads per session (sessions = threads / this).
    ort_threads: usize,
    spin: bool,
    /// Encode this many real passages as the index build does, instead of full batches.
    real: Option<usize>,
    json: Option<PathBuf>,
}

fn usage() -> &'static str {
    "usage: cpack-bench encode --model DIR --corpus corpus.jsonl [--max-len 128] [--batch 32] \
     [--batches 8] [--reps 5] [--threads N] [--backend candle|ort] [--precision f32|bf16|int8] \
     [--ort-threads 1] [--spin] [--real N] [--json OUT]"
}

fn parse(args: &[String]) -> Result<EncodeArgs> {
    let mut parsed = EncodeArgs {
        model: PathBuf::from(".cache/models/all-MiniLM-L6-v2"),
        corpus: PathBuf::from(".cache/data/insuranceqa-en/corpus.jsonl"),
        max_len: 128,
        batch: 32,
        batches: 8,
        reps: 5,
        threads: 0,
        backend: "candle".into(),
        precision: WeightPrecision::F32,
        ort_threads: 1,
        spin: false,
        real: None,
        json: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{}", usage()))
        };
        match flag.as_str() {
            "--model" => parsed.model = value()?.into(),
            "--corpus" => parsed.corpus = value()?.into(),
            "--max-len" => parsed.max_len = value()?.parse()?,
            "--batch" => parsed.batch = value()?.parse()?,
            "--batches" => parsed.batches = value()?.parse()?,
            "--reps" => parsed.reps = value()?.parse()?,
            "--threads" => parsed.threads = value()?.parse()?,
            "--backend" => parsed.backend = value()?.clone(),
            "--precision" => {
                parsed.precision =
                    clap::ValueEnum::from_str(value()?, false).map_err(anyhow::Error::msg)?;
            }
            "--ort-threads" => parsed.ort_threads = value()?.parse()?,
            "--spin" => parsed.spin = true,
            "--real" => parsed.real = Some(value()?.parse()?),
            "--json" => parsed.json = Some(value()?.into()),
            other => bail!("unknown flag {other}\n{}", usage()),
        }
    }
    Ok(parsed)
}

fn main() -> Result<()> {
    cpack::process::before_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("encode") => encode(parse(&args[1..])?),
        Some("mine") => mine(&args[1..]),
        Some("train-step") => train_step::run(&args[1..]),
        Some("dropout-stats") => dropout_stats::run(&args[1..]),
        Some("scale") => scale::run(&args[1..]),
        Some("scale-case") => scale::case(&args[1..]),
        Some("serve-load") => serve_load::run(&args[1..]),
        _ => bail!(
            "{}\n       cpack-bench mine --workspace DIR [--topk 200] [--skip 10] [--threads N] [--json OUT]\n       {}\n       cpack-bench train-step [--threads N] [--reps N] [--json OUT]\n       {}\n       {}",
            usage(),
            scale::usage(),
            serve_load::USAGE,
            dropout_stats::USAGE
        ),
    }
}

/// A workspace's live index with the encoder and dataset it was built from.
pub struct Workspace {
    pub index_root: PathBuf,
    pub generation: cpack_index::store::Generation,
    pub encoder: Encoder,
    pub dataset: Dataset,
    pub index: cpack_index::store::OpenIndex,
}

impl Workspace {
    /// Opens `workspace`'s live generation and a candle encoder with its settings.
    pub fn open(workspace: &std::path::Path, threads: usize) -> Result<Workspace> {
        let index_root = workspace.join(".cpack/index");
        let index_dir = IndexDir::new(index_root.clone());
        let (generation, manifest) = index_dir
            .current()?
            .context("the workspace has no index; run `cpack index build`")?;
        let stamp = manifest.plan.stamp.clone();
        let model = ModelDir::open(std::path::Path::new(&manifest.model_path))?;
        let settings = EncoderSettings {
            pooling: stamp.pooling,
            normalize: stamp.normalize,
            query_max_len: stamp.query_max_len,
            passage_max_len: stamp.passage_max_len,
            query_instruction: stamp.query_instruction.clone(),
            batch_size: 32,
            batch_tokens: 0,
        };
        let encoder = Encoder::open(
            &model,
            &settings,
            &CandleLoader {
                device: cpack_encode::ComputeDevice::Cpu,
                precision: WeightPrecision::F32,
            },
            threads,
        )?;
        let data_dir = std::path::Path::new(&manifest.corpus_path)
            .parent()
            .context("corpus path")?;
        let dataset = Dataset::load(DatasetPaths::beir(data_dir))?;
        let index = index_dir.open(&stamp, &dataset.corpus)?;
        Ok(Workspace {
            index_root,
            generation,
            encoder,
            dataset,
            index,
        })
    }
}

/// `cpack mine`'s defaults (7 random negatives, seed 42) at `topk` / `skip`.
fn mining_params(topk: usize, skip: usize) -> MiningParams {
    MiningParams {
        split: "train".into(),
        topk,
        skip,
        skip_after_filter: false,
        negatives: 7,
        sampling: Sampling::Random,
        on_short: OnShort::Keep,
        seed: 42,
        max_score: None,
        margin: None,
        relative_margin: None,
    }
}

/// The backend `args` asks for; ORT gets one session per worker.
fn backend_loader(args: &EncodeArgs, workers: usize) -> Result<Box<dyn BackendLoader>> {
    Ok(match args.backend.as_str() {
        "candle" => Box::new(CandleLoader {
            device: cpack_encode::ComputeDevice::Cpu,
            precision: args.precision,
        }),
        "ort" => Box::new(OrtLoader {
            options: OrtOptions {
                library: find_library(&[&std::env::current_dir()?])
                    .context("no ONNX Runtime library: run scripts/setup.sh")?,
                sessions: workers,
                threads: args.ort_threads,
                spinning: args.spin,
            },
            precision: args.precision,
            cache_dir: PathBuf::from("target/bench/onnx"),
        }),
        other => bail!("unknown backend {other:?} (candle or ort)"),
    })
}

/// `batch × batches` passages that each fill `max_len` tokens.
fn full_length_texts(
    encoder: &Encoder,
    corpus: &TextTable,
    args: &EncodeArgs,
) -> Result<Vec<String>> {
    let wanted = args.batch * args.batches;
    let mut texts = Vec::with_capacity(wanted);
    for chunk in (0..corpus.len()).collect::<Vec<_>>().chunks(512) {
        let candidates: Vec<String> = chunk.iter().map(|&i| corpus.full_text(i)).collect();
        let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
        let ids = encoder.tokenize(&refs, TextKind::Passage)?;
        texts.extend(
            candidates
                .into_iter()
                .zip(ids)
                .filter(|(_, ids)| ids.len() == args.max_len)
                .map(|(t, _)| t),
        );
        if texts.len() >= wanted {
            texts.truncate(wanted);
            return Ok(texts);
        }
    }
    bail!(
        "only {} passages of {} fill {} tokens",
        texts.len(),
        args.corpus.display(),
        args.max_len
    )
}

/// `n` passages spread evenly over the corpus (every one when `n` ≥ its size).
pub fn evenly_spaced(corpus: &TextTable, n: usize) -> Vec<String> {
    let n = n.min(corpus.len());
    (0..n)
        .map(|i| corpus.full_text(i * corpus.len() / n))
        .collect()
}

/// Encodes `texts` as `cpack index build` does (in chunks of its size) or,
/// for full batches, in one call; returns the real tokens encoded.
fn encode_once(encoder: &Encoder, texts: &[&str], as_index_build: bool) -> Result<usize> {
    let chunk = if as_index_build {
        cpack_index::store::BuildOptions::DEFAULT_CHUNK_ROWS
    } else {
        texts.len().max(1)
    };
    let mut tokens = 0usize;
    for part in texts.chunks(chunk) {
        encoder.encode(part, TextKind::Passage, &mut |_, t| tokens += t)?;
    }
    Ok(tokens)
}

fn encode(args: EncodeArgs) -> Result<()> {
    let threads = cpack::process::configure(args.threads);
    facts::print();
    let model = ModelDir::open(&args.model)?;
    let settings = EncoderSettings {
        passage_max_len: args.max_len,
        batch_size: args.batch,
        ..EncoderSettings::declared_by(&model)
    };
    let workers = match args.backend.as_str() {
        "ort" => (threads / args.ort_threads.max(1)).max(1),
        _ => threads,
    };
    let loader = backend_loader(&args, workers)?;
    let encoder = Encoder::open(&model, &settings, loader.as_ref(), workers)?;
    let corpus = TextTable::load_jsonl(&args.corpus)?;
    let texts = match args.real {
        Some(n) => evenly_spaced(&corpus, n),
        None => full_length_texts(&encoder, &corpus, &args)?,
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    encoder.encode(
        &refs[..args.batch.min(refs.len())],
        TextKind::Passage,
        &mut |_, _| {},
    )?; // warm-up
    let mut runs = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        let started = Instant::now();
        let tokens = encode_once(&encoder, &refs, args.real.is_some())?;
        runs.push((tokens, started.elapsed().as_secs_f64()));
    }
    let tokens = runs[0].0;
    let mut rates: Vec<f64> = runs.iter().map(|(t, s)| *t as f64 / s).collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let passages_per_second = median * texts.len() as f64 / tokens.max(1) as f64;
    let report = serde_json::json!({
        "benchmark": "encode",
        "mode": if args.real.is_some() { "real" } else { "full-batches" },
        "backend": encoder.backend_kind().to_string(),
        "precision": encoder.precision().to_string(),
        "workers": workers,
        "model": args.model.display().to_string(),
        "max_len": args.max_len,
        "batch": args.batch,
        "texts": texts.len(),
        "real_tokens": tokens,
        "threads": threads,
        "machine": facts::machine(),
        "tokens_per_second_median": median.round(),
        "passages_per_second_median": (passages_per_second * 10.0).round() / 10.0,
        "tokens_per_second_all": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
    });
    let shape = match args.real {
        Some(_) => format!(
            "{} real passages ({} tokens) at max {}",
            texts.len(),
            tokens,
            args.max_len
        ),
        None => format!("batch {} × {} tokens", args.batch, args.max_len),
    };
    println!(
        "encode {} {} · {} threads · {shape}: median {:.0} tokens/s, {:.1} passages/s (runs: {:?})",
        encoder.backend_kind(),
        encoder.precision(),
        threads,
        median,
        passages_per_second,
        rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
    );
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// One mining round of the `mine` suite, into a scratch store.
fn mine_round(
    input: MiningInput,
    topk: usize,
    skip: usize,
    chunk_queries: usize,
    overlap_encoding: bool,
) -> Result<cpack_miner::store::RoundManifest> {
    let scratch = tempfile::tempdir()?;
    let store = NegativeStore::open(&scratch.path().join("negatives"))?;
    let options = MineOptions {
        overlap_encoding,
        chunk_queries,
        ..MineOptions::default()
    };
    match cpack_miner::mine(
        &store,
        input,
        mining_params(topk, skip),
        options,
        &cpack_core::Silent,
    )? {
        MineOutcome::Mined { manifest, .. } => Ok(manifest),
        MineOutcome::UpToDate(_) => bail!("a scratch store cannot be up to date"),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mine(args: &[String]) -> Result<()> {
    let (mut workspace, mut topk, mut skip, mut threads, mut rounds, mut json_out) =
        (None, 200usize, 10usize, 0usize, 3usize, None);
    let mut chunk_queries = MineOptions::default().chunk_queries;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--workspace" => workspace = Some(PathBuf::from(value)),
            "--topk" => topk = value.parse()?,
            "--skip" => skip = value.parse()?,
            "--threads" => threads = value.parse()?,
            "--rounds" => rounds = value.parse::<usize>()?.max(1),
            "--chunk-queries" => chunk_queries = value.parse()?,
            "--json" => json_out = Some(PathBuf::from(value)),
            other => bail!("unknown flag {other}"),
        }
    }
    let workspace =
        workspace.context("--workspace DIR (a workspace with a built index) is required")?;
    let threads = cpack::process::configure(threads);
    facts::print();
    let Workspace {
        index_root,
        generation,
        encoder,
        dataset,
        mut index,
    } = Workspace::open(&workspace, threads)?;
    let train = dataset.qrels("train")?;
    let all: Vec<_> = ["train", "dev", "test"]
        .iter()
        .filter(|s| dataset.paths.qrels(s).exists())
        .map(|s| dataset.qrels(s))
        .collect::<Result<_, _>>()?;
    let texts: Vec<&str> = train
        .by_query
        .keys()
        .map(|id| dataset.queries.texts[dataset.queries.position(id).expect("validated")].as_str())
        .collect();
    let k = topk.min(index.ids.len());

    let mut per_round = Vec::new();
    for round in 1..=rounds {
        // The floors: the queries encoded alone, then one plain FAISS search of
        // those embeddings with every thread, as a FAISS user would run it
        // (and, beside it, the same single search through cpack's index).
        let started = Instant::now();
        let vectors = encoder.encode_in_batches_of(
            cpack_miner::mine::QUERY_BATCH,
            &texts,
            TextKind::Query,
            &mut |_, _| {},
        )?;
        let encode_alone = started.elapsed().as_secs_f64();
        let started = Instant::now();
        index.vectors.search(&vectors, k, threads)?;
        let one_search = started.elapsed().as_secs_f64();
        let floor = plain_faiss::search_seconds(
            &index_root.join(generation.to_string()),
            &vectors,
            k,
            threads,
        )?
        .unwrap_or(one_search);
        let mut run = |overlap| {
            let input = MiningInput {
                corpus: &dataset.corpus,
                queries: &dataset.queries,
                split_qrels: &train,
                all_qrels: &all,
                encoder: &encoder,
                index: &mut index,
                query_model_fingerprint: None,
                teacher: None,
                only: None,
            };
            mine_round(input, topk, skip, chunk_queries, overlap)
        };
        let (pipelined, staged) = if round % 2 == 1 {
            let p = run(true)?;
            (p, run(false)?)
        } else {
            let s = run(false)?;
            (run(true)?, s)
        };
        let staged_after_encoding =
            staged.timings.search_seconds + staged.timings.select_store_seconds;
        let result = serde_json::json!({
            "encode_alone_seconds": encode_alone,
            "floor_search_seconds": floor,
            "cpack_one_search_seconds": one_search,
            "pipelined_seconds": pipelined.seconds,
            "pipelined_beyond_encoding_seconds": pipelined.seconds - encode_alone,
            "staged_seconds": staged.seconds,
            "staged_encode_seconds": staged.timings.encode_seconds,
            "staged_search_seconds": staged.timings.search_seconds,
            "staged_select_store_seconds": staged.timings.select_store_seconds,
            "staged_over_floor": staged_after_encoding / floor,
            "staged_over_cpack_one_search": staged_after_encoding / one_search,
            "pipelined_beyond_encoding_over_floor": (pipelined.seconds - encode_alone) / floor,
        });
        eprintln!(
            "round {round}: encode alone {encode_alone:.2}s, floor {floor:.2}s \
             (through cpack's index {one_search:.2}s); pipelined {:.2}s \
             ({:.2}s beyond encoding); stage by stage: encode {:.2}s, search {:.2}s, select+store {:.2}s",
            pipelined.seconds,
            pipelined.seconds - encode_alone,
            staged.timings.encode_seconds,
            staged.timings.search_seconds,
            staged.timings.select_store_seconds,
        );
        per_round.push(result);
    }
    let med = |key: &str| {
        median(
            per_round
                .iter()
                .map(|r| r[key].as_f64().unwrap_or(f64::NAN))
                .collect(),
        )
    };
    let queries = texts.len();
    let report = serde_json::json!({
        "benchmark": "mine",
        "queries": queries,
        "corpus": index.ids.len(),
        "topk": topk,
        "skip": skip,
        "threads": threads,
        "machine": facts::machine(),
        "faiss_products_on_cpack_kernel": plain_faiss::products_on_cpack_kernel(),
        "rounds": per_round,
        "queries_per_second": queries as f64 / med("pipelined_seconds"),
        "floor_search_seconds": med("floor_search_seconds"),
        "search_select_store_over_floor": med("staged_over_floor"),
        "search_select_store_over_cpack_one_search": med("staged_over_cpack_one_search"),
        "pipelined_beyond_encoding_over_floor": med("pipelined_beyond_encoding_over_floor"),
    });
    println!(
        "mine · {queries} queries × top {topk} of {} · {threads} threads · medians of {rounds} rounds: \
         pipelined round {:.2}s ({:.0} queries/s), {:.2}× the floor beyond encoding alone ({:.2}s); \
         stage by stage: encode {:.2}s, search {:.2}s, select+store {:.2}s; \
         search+select+store / floor ({:.2}s) = {:.2} (/ one search through cpack's index = {:.2})",
        index.ids.len(),
        med("pipelined_seconds"),
        queries as f64 / med("pipelined_seconds"),
        med("pipelined_beyond_encoding_over_floor"),
        med("encode_alone_seconds"),
        med("staged_encode_seconds"),
        med("staged_search_seconds"),
        med("staged_select_store_seconds"),
        med("floor_search_seconds"),
        med("staged_over_floor"),
        med("staged_over_cpack_one_search"),
    );
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
