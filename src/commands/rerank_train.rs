//! `cpack rerank train`: a reranker trained on the workspace's qrels and a
//! mined round (`cpack_run::rerank`), evaluated after each epoch over the
//! workspace index when it can be.

use crate::cli::RerankTrainArgs;
use crate::config::{locate_model, Config};
use crate::runtime::{open_encoder, Context};
use anyhow::{bail, Context as _, Result};
use cpack_data::dataset::Dataset;
use cpack_miner::NegativeStore;
use cpack_model::ModelDir;
use cpack_run::rerank::{
    train_reranker, RerankEvaluation, RerankReport, RerankSpec, RerankWorkspace,
};
use cpack_run::RunDir;
use cpack_train::TrainSettings;

pub fn run(ctx: &Context, args: RerankTrainArgs) -> Result<()> {
    let config = ctx
        .config(&args.overrides)?
        .single_task("rerank train")?
        .config;
    let dataset = Dataset::load(config.data()?.clone())?;
    let store = NegativeStore::open(&config.negatives_dir())?;
    let dir = run_dir(&config, &args)?;
    let spec = spec(&config, &store, &args)?;
    let device = (args.overrides.encode.device)
        .or(config.train.device)
        .unwrap_or(config.runtime.device());
    let ws = RerankWorkspace {
        dataset: &dataset,
        store: &store,
        device,
        threads: config.threads,
    };
    let encoder;
    let mut index;
    let evaluation = match eval_split(&config, &dataset, &args)? {
        Some(split) => {
            encoder = open_encoder(&config)?;
            index = config
                .index_dir()
                .open(&config.embedding_stamp(&encoder)?, &dataset.corpus)?;
            Some(RerankEvaluation {
                encoder: &encoder,
                index: &mut index,
                qrels: dataset.qrels(&split)?,
                split,
                depth: args.rerank_depth,
            })
        }
        None => None,
    };
    let report = train_reranker(&ws, spec, &dir, args.resume, evaluation, &ctx.progress)?;
    ctx.progress.finish();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print(&report)?;
    }
    Ok(())
}

/// The run's folder: `--run`, else the newest when resuming, else the next free `rerank-NNN`.
fn run_dir(config: &Config, args: &RerankTrainArgs) -> Result<RunDir> {
    let runs = config.state.rerankers();
    Ok(match (&args.run, args.resume) {
        (Some(name), _) => runs.run(name)?,
        (None, true) => runs
            .newest()?
            .context("there is no reranker run to resume in .cpack/rerankers")?,
        (None, false) => runs.run(&runs.next_name_with("rerank"))?,
    })
}

/// What the flags ask, resolved against the workspace.
fn spec(config: &Config, store: &NegativeStore, args: &RerankTrainArgs) -> Result<RerankSpec> {
    let round = match args.round {
        Some(round) => round,
        None => (store.rounds()?.into_iter())
            .filter(|m| m.complete)
            .map(|m| m.round)
            .max()
            .context("the workspace has no complete mining round: run `cpack mine` first")?,
    };
    let base = match &args.from {
        Some(path) => ModelDir::open(&locate_model(&config.workspace, path)?)?,
        None => config.model.clone(),
    };
    let base_model = std::fs::canonicalize(&base.dir)
        .with_context(|| format!("cannot resolve {}", base.dir.display()))?;
    let train = TrainSettings {
        batch_size: args.batch_size,
        group_size: args.group_size,
        lr: args.lr,
        warmup_ratio: args.warmup_ratio,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        grad_accum: args.grad_accum,
        mini_batch: args.mini_batch,
        dropout: args.dropout,
        seed: args.seed.unwrap_or(config.seed),
        ..TrainSettings::default()
    };
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    Ok(RerankSpec {
        base_fingerprint: base.fingerprint()?,
        base_model,
        round,
        split: args.split.clone(),
        max_queries: args.max_queries,
        subset_seed: config.seed,
        max_len: args.max_len,
        epochs: args.epochs,
        train,
    })
}

/// The split to evaluate after each epoch: the one asked (`none`: none),
/// else `test` when it exists and the workspace index is built.
fn eval_split(
    config: &Config,
    dataset: &Dataset,
    args: &RerankTrainArgs,
) -> Result<Option<String>> {
    match args.eval_split.as_deref() {
        Some("none") => Ok(None),
        Some(split) => Ok(Some(split.to_string())),
        None => {
            let judged = dataset.paths.qrels("test").exists();
            let indexed = config.index_dir().current()?.is_some();
            Ok((judged && indexed).then(|| "test".to_string()))
        }
    }
}

fn print(report: &RerankReport) -> std::io::Result<()> {
    outln!(
        "{:>5} {:>9} {:>7} {:>9}  nDCG@10 (retrieval → reranked)",
        "epoch",
        "loss",
        "steps",
        "seconds"
    )?;
    for e in &report.epochs {
        let eval = match &e.eval {
            Some(v) => format!(
                "{:.4} → {:.4} on {} (top {})",
                v.retrieval.ndcg_at_10, v.reranked.ndcg_at_10, v.split, v.depth
            ),
            None => "-".into(),
        };
        outln!(
            "{:>5} {:>9.4} {:>7} {:>9.1}  {eval}",
            e.epoch,
            e.mean_loss,
            e.optimizer_steps,
            e.train_seconds
        )?;
    }
    if let Some(last) = report.epochs.last() {
        let path = last.checkpoint.display();
        outln!("\ncheckpoint: {path}\nrerank with it: `cpack search --reranker {path} …`, `cpack eval --reranker {path}`, CrossEncoder(\"{path}\")")?;
    }
    Ok(())
}
