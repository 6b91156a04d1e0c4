//! `cpack train`: `[train]` with the flags given over it, resolved into a
//! run spec, then the closed loop of `cpack_run`.

use crate::cli::TrainArgs;
use crate::config::Config;
use crate::runtime::{backend_loader, Context};
use anyhow::{bail, Context as _, Result};
use cpack_core::Progress;
use cpack_data::dataset::{all_qrels, Dataset, DatasetPaths};
use cpack_data::pairs::{PairsSource, PairsView};
use cpack_miner::NegativeStore;
use cpack_run::{Report, RunDir, RunSpec, Workspace};

pub fn run(ctx: &Context, args: TrainArgs) -> Result<()> {
    let config = ctx.config(&args.overrides)?;
    let run = run_dir(&config, &args)?;
    let pairs = pairs_source(&args, &run)?;
    let dataset = match &pairs {
        Some(source) => pairs_dataset(ctx, &config, source)?,
        None => Dataset::load(config.data()?.clone())?,
    };
    let mut spec = spec(ctx, &args, &config, &dataset, run.name(), pairs.is_some())?;
    spec.pairs = pairs;
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

/// The pairs file the run trains on: a resumed run's own, else `--pairs`.
fn pairs_source(args: &TrainArgs, run: &RunDir) -> Result<Option<PairsSource>> {
    if args.resume && run.spec_file().exists() {
        return Ok(run.spec()?.pairs);
    }
    let Some(path) = &args.pairs else {
        return Ok(None);
    };
    Ok(Some(PairsSource::of(path, args.pair_fields.fields())?))
}

/// The BEIR view of a pairs file, made under `.cpack/pairs/` on first use.
fn pairs_dataset(ctx: &Context, config: &Config, source: &PairsSource) -> Result<Dataset> {
    let dir = config.state.pairs_view(source);
    let view = source.view(&dir)?;
    ctx.progress.note(&format!(
        "training on the pairs of {}: {} pairs, {} distinct query sides, {} distinct passages",
        source.path.display(),
        view.pairs,
        view.queries,
        view.passages
    ));
    Ok(Dataset::load(DatasetPaths::beir(&dir))?)
}

/// `[train]` with the flags given over it, resolved for this workspace;
/// with `pairs`, in-batch negatives only (there is no corpus to mine).
fn spec(
    ctx: &Context,
    args: &TrainArgs,
    config: &Config,
    dataset: &Dataset,
    name: &str,
    pairs: bool,
) -> Result<RunSpec> {
    let mut recipe = config.train_recipe(&args.recipe, &ctx.given)?;
    if pairs {
        if ctx.given.contains("group_size") && recipe.trainer.group_size > 1 {
            bail!(
                "--pairs trains on in-batch negatives only (a pairs file has no corpus to mine): \
                 drop --group-size {} or set it to 1",
                recipe.trainer.group_size
            );
        }
        recipe.trainer.group_size = 1;
        recipe.mining.split = PairsView::SPLIT.to_string();
    }
    let eval_split = recipe
        .eval_split
        .resolve(|split| dataset.paths.qrels(split).exists());
    let mut encoder = config.encoder.clone();
    if args.symmetric {
        encoder.query_instruction.clear();
        encoder.query_max_len = encoder.passage_max_len;
    }
    Ok(RunSpec::new(
        name,
        config.model.dir.clone(),
        encoder,
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
