//! `cpack train`: flags merged with `[train]` into one validated recipe, then
//! the closed loop of `cpack_train::run`.

use super::{load_config, Context};
use crate::cli::TrainArgs;
use crate::config::{Config, TrainSection};
use anyhow::{bail, Context as _, Result};
use cpack_data::dataset::Dataset;
use cpack_index::align::StaleVectors;
use cpack_miner::{
    FilterPreset, MiningParams, NegativeStore, OnShort, SamplingKind, SimansWeights,
};
use cpack_run::{self as run, RunSpec, Workspace};
use cpack_train::incremental::RefreshScope;
use cpack_train::TrainSettings;
use std::path::{Path, PathBuf};

pub fn run(ctx: &Context, args: TrainArgs) -> Result<()> {
    let config = load_config(ctx, &args.overrides)?;
    let dataset = Dataset::load(config.data()?.clone())?;
    let runs_dir = runs_dir(&config.workspace);
    let name = match (&args.run, args.resume) {
        (Some(name), _) => name.clone(),
        (None, true) => {
            newest_run(&runs_dir)?.context("there is no run to resume in .cpack/runs")?
        }
        (None, false) => next_run_name(&runs_dir)?,
    };
    run::validate_run_name(&name)?;
    let spec = spec(&args, &config, &dataset, &name)?;
    let all_qrels = super::mine::all_qrels(&dataset)?;
    let store = NegativeStore::open(&config.negatives_dir())?;
    let base_index = config.index_dir();
    let (backend, workers) = super::backend_loader(&config)?;
    let ws = Workspace {
        dataset: &dataset,
        all_qrels: &all_qrels,
        store: &store,
        base_index: &base_index,
        index_kind: config.index.kind.clone(),
        precision: config.index.precision,
        backend: backend.as_ref(),
        threads: workers,
        device: args
            .overrides
            .device
            .or(config.train.device)
            .unwrap_or(config.encode_device()),
    };
    // A device this build or machine cannot use fails before a run folder exists.
    ws.device.candle()?;
    let run_dir = runs_dir.join(&name);
    let report = run::run(&ws, spec, &run_dir, args.resume, &ctx.progress)?;
    ctx.progress.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        super::report::print_table(&report);
        if let Some(last) = report.epochs.last() {
            let path = last.checkpoint.display();
            if report.spec.train.freeze_passages {
                println!(
                    "\ncheckpoint: {path}\na query encoder: passages stay the workspace model's; \
                     use it with `cpack search --query-model {path}` or `cpack eval --query-model {path}`"
                );
            } else {
                println!(
                    "\ncheckpoint: {path}\nuse it with `cpack init --model {path}` or SentenceTransformer(\"{path}\")"
                );
            }
        }
    }
    Ok(())
}

pub fn runs_dir(workspace: &Path) -> PathBuf {
    workspace.join(crate::config::STATE_DIR).join("runs")
}

/// The most recently modified run folder.
pub fn newest_run(runs_dir: &Path) -> Result<Option<String>> {
    if !runs_dir.exists() {
        return Ok(None);
    }
    let mut runs: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(runs_dir)
        .with_context(|| format!("cannot list {}", runs_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(run::SPEC_FILE).exists())
        .filter_map(|e| {
            let modified = e
                .path()
                .join(run::SPEC_FILE)
                .metadata()
                .ok()?
                .modified()
                .ok()?;
            Some((modified, e.file_name().to_string_lossy().to_string()))
        })
        .collect();
    runs.sort();
    Ok(runs.pop().map(|(_, name)| name))
}

fn next_run_name(runs_dir: &Path) -> Result<String> {
    let mut n = 1;
    while runs_dir.join(format!("run-{n:03}")).exists() {
        n += 1;
    }
    Ok(format!("run-{n:03}"))
}

/// Flag, else `[train]` key, else default.
fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>, default: T) -> T {
    flag.clone().or_else(|| file.clone()).unwrap_or(default)
}

fn spec(args: &TrainArgs, config: &Config, dataset: &Dataset, name: &str) -> Result<RunSpec> {
    let file: &TrainSection = &config.train;
    let d = TrainSettings::default();
    let group_size = pick(&args.group_size, &file.group_size, d.group_size);
    let loss = pick(&args.loss, &file.loss, d.loss);
    let train = TrainSettings {
        batch_size: pick(&args.train_batch_size, &file.batch_size, d.batch_size),
        group_size,
        temperature: pick(&args.temperature, &file.temperature, d.temperature),
        loss,
        lr: pick(&args.lr, &file.lr, d.lr),
        weight_decay: pick(&args.weight_decay, &file.weight_decay, d.weight_decay),
        warmup_ratio: pick(&args.warmup_ratio, &file.warmup_ratio, d.warmup_ratio),
        grad_accum: pick(&args.grad_accum, &file.grad_accum, d.grad_accum),
        max_grad_norm: pick(&args.max_grad_norm, &file.max_grad_norm, d.max_grad_norm),
        dropout: !args.no_dropout && file.dropout.unwrap_or(d.dropout),
        seed: pick(&args.seed, &file.seed, config.seed),
        mini_batch: pick(&args.mini_batch, &file.mini_batch, d.mini_batch),
        batching: pick(&args.batching, &file.batching, d.batching),
        freeze_passages: args.freeze_passages || file.freeze_passages.unwrap_or(d.freeze_passages),
        replace_easy: args.replace_easy.or(file.replace_easy),
    };
    validate(&train)?;
    let split = pick(&args.split, &file.split, "train".into());
    let (margin, relative_margin) = args
        .filter
        .or(file.filter)
        .map_or((None, None), FilterPreset::margins);
    let mining = MiningParams {
        split: split.clone(),
        topk: pick(&args.topk, &file.topk, 200),
        skip: pick(&args.skip, &file.skip, 10),
        skip_after_filter: false,
        negatives: pick(
            &args.negatives,
            &file.negatives,
            cpack_train::data::default_negatives(group_size, train.replace_easy.is_some()),
        ),
        sampling: pick(&args.sample, &file.sample, SamplingKind::default()).with_weights(
            SimansWeights {
                a: pick(&args.simans_a, &file.simans_a, SimansWeights::PAPER.a),
                b: pick(&args.simans_b, &file.simans_b, SimansWeights::PAPER.b),
            },
        ),
        on_short: OnShort::Keep,
        seed: config.seed,
        max_score: None,
        margin,
        relative_margin,
    };
    let eval_split = match args.eval_split.clone().or_else(|| file.eval_split.clone()) {
        Some(s) if s == "none" => None,
        Some(s) => Some(s),
        None => ["dev", "test"]
            .into_iter()
            .find(|s| dataset.paths.qrels(s).exists())
            .map(str::to_string),
    };
    let epochs = pick(&args.epochs, &file.epochs, 1);
    if epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    Ok(RunSpec {
        name: name.to_string(),
        base_model: config.model.dir.clone(),
        encoder: config.encoder.clone(),
        train,
        epochs,
        refresh_every: pick(&args.refresh_every, &file.refresh_every, 1),
        mining,
        eval_split,
        max_queries: args.max_queries.or(file.max_queries),
        negatives_from: args.negatives_from.or(file.negatives_from),
        refresh: pick(&args.refresh, &file.refresh, RefreshScope::default()),
        full_refresh_every: pick(&args.full_refresh_every, &file.full_refresh_every, 0),
        refresh_depth: args.refresh_depth.or(file.refresh_depth),
        stale_vectors: pick(
            &args.stale_vectors,
            &file.stale_vectors,
            StaleVectors::default(),
        ),
    })
}

fn validate(t: &TrainSettings) -> Result<()> {
    if t.batch_size == 0 || t.group_size == 0 || t.grad_accum == 0 {
        bail!("--train-batch-size, --group-size and --grad-accum must be at least 1");
    }
    if !(t.temperature > 0.0 && t.temperature.is_finite()) {
        bail!(
            "--temperature must be a positive number, not {}",
            t.temperature
        );
    }
    if !(t.lr > 0.0 && t.lr.is_finite()) {
        bail!("--lr must be a positive number, not {}", t.lr);
    }
    if let Some(margin) = t.replace_easy.filter(|m| !(m.is_finite() && *m >= 0.0)) {
        bail!("--replace-easy must be a margin of 0 or more, not {margin}");
    }
    if !(0.0..1.0).contains(&t.warmup_ratio) {
        bail!("--warmup-ratio must be in [0, 1), not {}", t.warmup_ratio);
    }
    Ok(())
}
