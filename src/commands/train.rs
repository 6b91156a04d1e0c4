//! `cpack train`: `[train]` with the flags given over it, resolved into a
//! run spec, then the closed loop of `cpack_run`.

use crate::cli::TrainArgs;
use crate::config::Config;
use crate::runtime::{backend_loader, Context};
use anyhow::{Context as _, Result};
use cpack_data::dataset::{all_qrels, Dataset};
use cpack_miner::NegativeStore;
use cpack_run::{Report, RunDir, RunSpec, Workspace};

pub fn run(ctx: &Context, args: TrainArgs) -> Result<()> {
    let config = ctx.config(&args.overrides)?;
    let dataset = Dataset::load(config.data()?.clone())?;
    let run = run_dir(&config, &args)?;
    let spec = spec(ctx, &args, &config, &dataset, run.name())?;
    let all_qrels = all_qrels(&dataset)?;
    let store = NegativeStore::open(&config.negatives_dir())?;
    let base_index = config.index_dir();
    let (backend, workers) = backend_loader(&config)?;
    let ws = Workspace {
        dataset: &dataset,
        all_qrels: &all_qrels,
        store: &store,
        base_index: &base_index,
        index_kind: config.index.kind.clone(),
        precision: config.index.precision,
        backend: backend.as_ref(),
        threads: workers,
        device: (args.overrides.encode.device)
            .or(config.train.device)
            .unwrap_or(config.runtime.device()),
    };
    // A device this build or machine cannot use fails before a run folder exists.
    ws.device.candle()?;
    let report = cpack_run::run(&ws, spec, &run, args.resume, &ctx.progress)?;
    ctx.progress.finish();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        crate::report_table::print(&report)?;
        print_next_steps(&report)?;
    }
    Ok(())
}

/// The run's folder: `--run`, else the newest run when resuming, else the
/// next free `run-NNN`.
fn run_dir(config: &Config, args: &TrainArgs) -> Result<RunDir> {
    let runs = config.state.runs();
    Ok(match (&args.run, args.resume) {
        (Some(name), _) => runs.run(name)?,
        (None, true) => runs
            .newest()?
            .context("there is no run to resume in .cpack/runs")?,
        (None, false) => runs.run(&runs.next_name())?,
    })
}

/// `[train]` with the flags given over it, resolved for this workspace.
fn spec(
    ctx: &Context,
    args: &TrainArgs,
    config: &Config,
    dataset: &Dataset,
    name: &str,
) -> Result<RunSpec> {
    let recipe = config.train_recipe(&args.recipe, &ctx.given)?;
    let eval_split = recipe
        .eval_split
        .resolve(|split| dataset.paths.qrels(split).exists());
    Ok(RunSpec::new(
        name,
        config.model.dir.clone(),
        config.encoder.clone(),
        &recipe,
        config.seed,
        eval_split,
    )?)
}

/// Where the final checkpoint goes next.
fn print_next_steps(report: &Report) -> std::io::Result<()> {
    let Some(last) = report.epochs.last() else {
        return Ok(());
    };
    let path = last.checkpoint.display();
    if report.spec.train.freeze_passages {
        outln!(
            "\ncheckpoint: {path}\na query encoder: passages stay the workspace model's; \
             use it with `cpack search --query-model {path}` or `cpack eval --query-model {path}`"
        )?;
    } else {
        outln!(
            "\ncheckpoint: {path}\nuse it with `cpack init --model {path}` or SentenceTransformer(\"{path}\")"
        )?;
    }
    Ok(())
}
