//! `cpack train`: `[train]` with the flags given over it, resolved into a
//! run spec, then the closed loop of `cpack_run`.

use crate::cli::TrainArgs;
use crate::config::{Config, TaskConfig};
use crate::runtime::{backend_loader, open_teacher, Context};
use anyhow::{bail, Context as _, Result};
use cpack_core::Progress;
use cpack_data::dataset::{all_qrels, Dataset, DatasetPaths};
use cpack_data::pairs::{PairsSource, PairsView};
use cpack_index::store::IndexDir;
use cpack_miner::teacher::Teacher;
use cpack_miner::NegativeStore;
use cpack_run::spec::TaskSpec;
use cpack_run::{Report, RunDir, RunSpec, Workspace};

pub fn run(ctx: &Context, args: TrainArgs) -> Result<()> {
    let config = ctx.config(&args.overrides)?;
    let run = run_dir(&config, &args)?;
    let pairs = pairs_source(&args, &run)?;
    // The pair stage trains the pairs file alone, whatever tasks the workspace lists.
    let tasks = match &pairs {
        Some(_) => vec![TaskConfig {
            name: String::new(),
            section: None,
            config: Config {
                tasks: Vec::new(),
                ..config.clone()
            },
        }],
        None => config.task_configs()?,
    };
    let mut datasets = Vec::new();
    for task in &tasks {
        datasets.push(match &pairs {
            Some(source) => pairs_dataset(ctx, &config, source)?,
            None => Dataset::load(task.config.data()?.clone())?,
        });
    }
    let mut spec = spec(
        ctx,
        &args,
        &config,
        &datasets[0],
        run.name(),
        pairs.is_some(),
    )?;
    spec.pairs = pairs;
    spec.tasks = task_specs(ctx, &args, (&config, &tasks), &datasets, &spec)?;
    let all_qrels = datasets
        .iter()
        .map(all_qrels)
        .collect::<Result<Vec<_>, _>>()?;
    let stores = (tasks.iter())
        .map(|t| NegativeStore::open(&t.config.negatives_dir()))
        .collect::<Result<Vec<_>, _>>()?;
    let base_indexes: Vec<IndexDir> = tasks.iter().map(|t| t.config.index_dir()).collect();
    let (backend, workers) = backend_loader(&config)?;
    let device = (args.overrides.encode.device)
        .or(config.train.device)
        .unwrap_or(config.runtime.device());
    // A device this build or machine cannot use fails before a run folder exists.
    device.candle()?;
    // A resumed run's teacher is the one it began with.
    let teacher_spec = match args.resume && run.spec_file().exists() {
        true => run.spec()?.teacher,
        false => spec.teacher.clone(),
    };
    let teacher_model = open_teacher(&config, teacher_spec.as_ref())?;
    let teacher = (teacher_spec.as_ref().zip(teacher_model.as_ref()))
        .map(|(t, model)| Teacher::new(model, t));
    let workspaces: Vec<Workspace> = (0..tasks.len())
        .map(|i| Workspace {
            task: tasks[i].name.clone(),
            dataset: &datasets[i],
            all_qrels: &all_qrels[i],
            store: &stores[i],
            base_index: &base_indexes[i],
            index_kind: config.index.kind.clone(),
            precision: config.index.precision,
            backend: backend.as_ref(),
            threads: workers,
            device,
            teacher,
        })
        .collect();
    let report = cpack_run::run(&workspaces, spec, &run, args.resume, &ctx.progress)?;
    ctx.progress.finish();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        crate::report_table::print(&report)?;
        print_next_steps(&report)?;
    }
    Ok(())
}

/// Each `[[task]]` of the run, resolved: its data, its instruction (none
/// with `--symmetric`), its weight, and its splits.
fn task_specs(
    ctx: &Context,
    args: &TrainArgs,
    (config, tasks): (&Config, &[TaskConfig]),
    datasets: &[Dataset],
    spec: &RunSpec,
) -> Result<Vec<TaskSpec>> {
    let recipe = config.train_recipe(&args.recipe, &ctx.given)?;
    let mut specs = Vec::new();
    for (task, dataset) in tasks.iter().zip(datasets) {
        let Some(section) = &task.section else {
            continue;
        };
        let mut query_instruction = task.config.encoder.query_instruction.clone();
        if args.symmetric {
            query_instruction.clear();
        }
        let split = match section.pairs {
            Some(_) => PairsView::SPLIT.to_string(),
            None => (section.split.clone()).unwrap_or_else(|| spec.mining.split.clone()),
        };
        specs.push(TaskSpec {
            name: task.name.clone(),
            data: task.config.data()?.dir.clone(),
            query_instruction,
            weight: section.weight,
            split,
            // A pairs task has its training pairs alone: nothing to evaluate.
            eval_split: (recipe.eval_split)
                .resolve(|split| dataset.paths.qrels(split).exists())
                .filter(|_| section.pairs.is_none()),
        });
    }
    Ok(specs)
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
