//! `cpack index build` and `cpack index info`.

use crate::cli::{BuildArgs, IndexCommand};
use crate::config::Config;
use crate::runtime::{open_encoder, Context};
use crate::state::StateDir;
use anyhow::{bail, Result};
use cpack_core::Progress;
use cpack_data::dataset::Dataset;
use cpack_index::store::{BuildOptions, BuildOutcome, Provenance};

pub fn run(ctx: &Context, cmd: IndexCommand) -> Result<()> {
    match cmd {
        IndexCommand::Build(args) => build(ctx, *args),
        IndexCommand::Info { json, task } => info(ctx, json, task.as_deref()),
    }
}

/// Builds the index of each task the command works on (the workspace's
/// lone dataset, every `[[task]]`, or the one `--task` names).
fn build(ctx: &Context, args: BuildArgs) -> Result<()> {
    let mut config = ctx.config(&args.overrides)?;
    config.with_index_flags(&args.index)?;
    if args.chunk_rows == 0 {
        bail!("--chunk-rows must be at least 1");
    }
    let tasks = config.task_configs()?;
    let mut outcomes = serde_json::Map::new();
    for task in &tasks {
        if !task.name.is_empty() {
            ctx.progress.note(&format!("task {}", task.name));
        }
        let outcome = build_one(ctx, &task.config, &args)?;
        ctx.progress.finish();
        match (args.json, task.name.as_str()) {
            (true, "") => outln!("{}", outcome_json(&outcome))?,
            (true, name) => drop(outcomes.insert(name.to_string(), outcome_json(&outcome))),
            (false, "") => outln!("{}", outcome_line(&outcome))?,
            (false, name) => outln!("task {name}: {}", outcome_line(&outcome))?,
        }
    }
    if args.json && !outcomes.is_empty() {
        outln!("{}", serde_json::json!({ "tasks": outcomes }))?;
    }
    Ok(())
}

fn build_one(ctx: &Context, config: &Config, args: &BuildArgs) -> Result<BuildOutcome> {
    let data = config.data()?.clone();
    ctx.progress.stage("loading corpus", 0);
    let corpus = Dataset::load_corpus(&data)?;
    let encoder = open_encoder(config)?;
    let plan = config.build_plan(config.embedding_stamp(&encoder)?, &corpus);
    let provenance = Provenance {
        model_path: &config.model.dir,
        corpus_path: &data.corpus,
    };
    let options = BuildOptions {
        chunk_rows: args.chunk_rows,
        force: args.force,
    };
    let dir = config.index_dir();
    Ok(dir.build(plan, provenance, &corpus, &encoder, options, &ctx.progress)?)
}

fn outcome_json(outcome: &BuildOutcome) -> serde_json::Value {
    match outcome {
        BuildOutcome::UpToDate { generation } => {
            serde_json::json!({"status": "up-to-date", "generation": generation})
        }
        BuildOutcome::Built {
            generation,
            resumed_from_row,
            manifest,
        } => serde_json::json!({
            "status": "built",
            "generation": generation,
            "resumed_from_row": resumed_from_row,
            "rows": manifest.plan.rows,
            "dim": manifest.plan.stamp.dim,
            "index": manifest.plan.index.to_string(),
            "timings": manifest.timings,
        }),
    }
}

fn outcome_line(outcome: &BuildOutcome) -> String {
    match outcome {
        BuildOutcome::UpToDate { generation } => {
            format!("index {generation} is up to date (use --force to rebuild)")
        }
        BuildOutcome::Built {
            generation,
            resumed_from_row,
            manifest,
        } => {
            let t = &manifest.timings;
            format!(
                "built index {generation}: {} passages × {} dims, {}; encode {:.1}s ({:.0} tokens/s), index {:.1}s{}",
                manifest.plan.rows,
                manifest.plan.stamp.dim,
                manifest.plan.index,
                t.encode_seconds,
                t.tokens as f64 / t.encode_seconds.max(1e-9),
                t.index_seconds,
                if *resumed_from_row > 0 {
                    format!(" (resumed at row {resumed_from_row})")
                } else {
                    String::new()
                }
            )
        }
    }
}

fn info(ctx: &Context, json: bool, task: Option<&str>) -> Result<()> {
    let mut state = StateDir::of(&ctx.workspace)?;
    if let Some(task) = task {
        crate::config::check_task_name(task)?;
        state = state.for_task(task);
    }
    let dir = state.index(Default::default());
    let Some((generation, manifest)) = dir.current()? else {
        let hint = match task {
            None if state.has_tasks() => " (this workspace has tasks: name one with --task)",
            _ => "",
        };
        bail!(
            "no index in {}; build one with `cpack index build`{hint}",
            dir.root().display()
        );
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&manifest)?)?;
        return Ok(());
    }
    let p = &manifest.plan;
    outln!("generation        {generation}")?;
    outln!("passages          {} ({})", p.rows, manifest.corpus_path)?;
    outln!(
        "model             {} (fingerprint {})",
        manifest.model_path,
        p.stamp.model_fingerprint
    )?;
    outln!(
        "encoder           {} {} · {} pooling · normalize {}",
        p.stamp.encoder_backend,
        p.stamp.encoder_precision,
        p.stamp.pooling,
        p.stamp.normalize
    )?;
    outln!(
        "max lengths       query {} · passage {}",
        p.stamp.query_max_len,
        p.stamp.passage_max_len
    )?;
    outln!("query instruction {:?}", p.stamp.query_instruction)?;
    outln!(
        "index             {} · {} dims · {:?}",
        p.index,
        p.stamp.dim,
        p.precision
    )?;
    outln!(
        "timings           encode {:.1}s · index {:.1}s · {} tokens",
        manifest.timings.encode_seconds,
        manifest.timings.index_seconds,
        manifest.timings.tokens
    )?;
    Ok(())
}
