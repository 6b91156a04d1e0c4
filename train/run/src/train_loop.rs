//! The loop itself: prepare the run folder, each task's base index and
//! round, pick up a killed run's last checkpoint, then train epoch after
//! epoch, refreshing the negatives when the spec says so.
//!
//! A run trains one dataset, or several tasks (`[[task]]`): each task keeps
//! its own workspace (corpus, index, negatives store), its own encoder
//! settings (its query instruction) and its own rounds; only the training
//! set is merged, its batches each drawn from one task.

use crate::error::{Error, Result, StepFix};
use crate::layout::RunDir;
use crate::passages::{finish_epoch, Passages};
use crate::phase::{ActiveModel, MiningCost};
use crate::report::{mean_eval, EpochReport, EvalPoint, Report, TaskReport};
use crate::spec::{RunSpec, TaskPlan};
use crate::workspace::Workspace;
use cpack_core::{fsutil, InvalidSetting, Progress};
use cpack_data::dataset::{MergedPart, Qrels, TextTable};
use cpack_encode::PairTokenizer;
use cpack_index::store::OpenIndex;
use cpack_miner::store::QueryRecord;
use cpack_model::{BertConfig, ModelDir};
use cpack_train::checkpoint::{self, Modules, Saved, TrainerState};
use cpack_train::data::{Batching, MergePart, Skipped, TaskShare, TrainingSet};
use cpack_train::frozen::FrozenPassages;
use cpack_train::incremental::RefreshScope;
use cpack_train::memory;
use cpack_train::model::TrainableEncoder;
use cpack_train::optim::Schedule;
use cpack_train::steps::StepLog;
use cpack_train::Trainer;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// A round's records by query id (`None`: in-batch negatives only).
type Records = Option<Vec<(String, QueryRecord)>>;

/// Runs (or, with `resume`, continues) the run `spec` describes in `run`,
/// over `workspaces`: one per task of the spec, in its order (one for a
/// run of one dataset).
pub fn run(
    workspaces: &[Workspace],
    spec: RunSpec,
    run: &RunDir,
    resume: bool,
    progress: &dyn Progress,
) -> Result<Report> {
    // A resumed run is the stored one (its split, its base model), however
    // the flags of this call differ.
    let spec = if resume { resumed(run, spec)? } else { spec };
    let plans = spec.task_plans();
    check_tasks(&spec, &plans, workspaces, run)?;
    // Checked before anything is written, so a bad request leaves no run behind.
    let mut split_qrels = Vec::new();
    for (ws, plan) in workspaces.iter().zip(&plans) {
        let qrels = ws.dataset.qrels(&plan.mining.split)?;
        if qrels.is_empty() {
            let path = ws.dataset.paths.qrels(&plan.mining.split);
            return Err(Error::NothingToTrain { path });
        }
        split_qrels.push(qrels);
    }
    let base_model = ModelDir::open(&spec.base_model)?;
    let spec = prepare(run, spec, resume, &base_model.config)?;
    let mut report = Report::read(run)?.unwrap_or_else(|| Report::new(spec.clone()));
    let mut tasks = Vec::new();
    let mut start = Start::default();
    let parts = workspaces.iter().zip(plans).zip(split_qrels);
    for ((ws, plan), split_qrels) in parts {
        let mut task = TaskRun::open(ws, plan, split_qrels, &base_model, &spec, run)?;
        task.prepare(&spec, &mut report, &mut start, run, progress)?;
        tasks.push(task);
    }
    if !spec.tasks.is_empty() && report.totals.base.is_none() {
        report.totals.base = mean_eval(report.tasks.values().map(|t| t.base.as_ref()));
        report.write(run)?;
    }
    let saved = checkpoint::latest(run.path())?
        .map(|dir| checkpoint::load(&dir))
        .transpose()?;
    let first_epoch = saved.as_ref().map_or(0, |s| s.state.epoch) + 1;
    // Entries past the checkpoint are from epochs a kill undid; the
    // checkpoint's own entry may be missing (killed before the report).
    report.epochs.retain(|e| e.epoch < first_epoch);
    let mut epochs = Epochs::resume(&spec, tasks, run, start, saved, &mut report, progress)?;
    if report.epochs.last().map(|e| e.epoch + 1) == Some(epochs.first_epoch) {
        epochs.unfinished = None;
    }
    if let Some(entry) = epochs.unfinished.take() {
        epochs.finish(entry, &mut report, progress)?;
    }
    let ids: Vec<&str> = epochs
        .set
        .examples
        .iter()
        .map(|e| e.query_id.as_str())
        .collect();
    fsutil::write_json_atomic(&run.queries_file(), &ids)?;
    for epoch in epochs.first_epoch..=spec.run.epochs {
        let entry = epochs.train(epoch, &mut report, progress)?;
        epochs.finish(entry, &mut report, progress)?;
    }
    Ok(report)
}

/// The stored spec of the run to resume; `requested` may only add epochs.
fn resumed(run: &RunDir, requested: RunSpec) -> Result<RunSpec> {
    if !run.spec_file().exists() {
        return Err(Error::NothingToResume {
            path: run.path().to_path_buf(),
            file: RunDir::SPEC_FILE,
        });
    }
    let mut stored = run.spec()?;
    stored.run.epochs = requested.run.epochs.max(stored.run.epochs);
    Ok(stored)
}

/// Refuses workspaces that are not the spec's tasks (a resumed run's
/// tasks are its own), and what a run over several tasks cannot do yet.
fn check_tasks(
    spec: &RunSpec,
    plans: &[TaskPlan],
    workspaces: &[Workspace],
    run: &RunDir,
) -> Result<()> {
    let names = |names: Vec<&str>| match names.as_slice() {
        [""] => "(one dataset, no [[task]])".to_string(),
        names => names.join(", "),
    };
    if let Some(ws) = (workspaces.iter()).find(|ws| ws.teacher.is_some() != spec.teacher.is_some())
    {
        let (value, problem) = match ws.teacher {
            Some(_) => ("given", "was not part of this run, which mines without one"),
            None => (
                "missing",
                "is part of this run: its rounds are scored by the run's teacher",
            ),
        };
        return Err(InvalidSetting::new("teacher", value, problem).into());
    }
    let given: Vec<&str> = workspaces.iter().map(|ws| ws.task.as_str()).collect();
    let stored: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    if given != stored {
        return Err(Error::TasksChanged {
            run: run.name().to_string(),
            stored: names(stored),
            given: names(given),
        });
    }
    if spec.tasks.len() < 2 {
        return Ok(());
    }
    let refuse = |key: &'static str, value: String, why: &str| -> Result<()> {
        let problem = format!("cannot be used with several tasks yet ({why})");
        Err(InvalidSetting::new(key, value, problem).into())
    };
    if spec.train.freeze_passages {
        refuse(
            "freeze_passages",
            "true".into(),
            "the frozen vectors are one corpus's",
        )?;
    }
    if spec.run.refresh == RefreshScope::Incremental {
        refuse(
            "refresh",
            "incremental".into(),
            "its pool is one corpus's; use full",
        )?;
    }
    if let Some(round) = spec.run.negatives_from {
        refuse(
            "negatives_from",
            round.to_string(),
            "a round is one task's store's",
        )?;
    }
    Ok(())
}

/// Checks that `spec` fits in memory and writes it (a resumed run's
/// `spec` is [`resumed`]'s).
fn prepare(run: &RunDir, spec: RunSpec, resume: bool, base: &BertConfig) -> Result<RunSpec> {
    let spec_path = run.spec_file();
    check_memory(&spec, base)?;
    if resume {
        fsutil::write_json_atomic(&spec_path, &spec)?;
        return Ok(spec);
    }
    if spec_path.exists() {
        return Err(Error::RunExists {
            name: spec.name.clone(),
            path: run.path().to_path_buf(),
        });
    }
    std::fs::create_dir_all(run.path()).map_err(cpack_core::Error::io("create", run.path()))?;
    fsutil::write_json_atomic(&spec_path, &spec)?;
    Ok(spec)
}

/// Refuses a recipe whose step cannot fit in the memory available now,
/// naming a `mini_batch` that would.
fn check_memory(spec: &RunSpec, cfg: &BertConfig) -> Result<()> {
    let Some(available) = memory::available_bytes() else {
        return Ok(());
    };
    let t = &spec.train;
    let shape = memory::StepShape {
        queries: t.batch_size,
        query_len: spec.encoder.query_max_len,
        // Frozen passages are read, not run through the model.
        passages: if t.freeze_passages {
            0
        } else {
            t.batch_size * t.group_size
        },
        passage_len: spec.encoder.passage_max_len,
    };
    let needed = memory::step_bytes(cfg, shape, t.mini_batch);
    if needed <= available {
        return Ok(());
    }
    let fix = match memory::mini_batch_within(cfg, shape, available * 4 / 5) {
        Some(mini_batch) => StepFix::MiniBatch {
            mini_batch,
            per_step: memory::gigabytes(memory::step_bytes(cfg, shape, mini_batch)),
        },
        None => StepFix::Smaller,
    };
    Err(Error::StepTooLarge {
        batch: t.batch_size,
        group: t.group_size,
        passage_len: spec.encoder.passage_max_len,
        needed: memory::gigabytes(needed),
        available: memory::gigabytes(available),
        fix: Box::new(fix),
    })
}

/// What the base model contributes before the first epoch: the seconds
/// mining its rounds took, and the passage vectors of query-side training.
#[derive(Default)]
struct Start {
    mining: MiningCost,
    frozen: Option<FrozenPassages>,
}

/// One task of the run as the loop works it: its workspace and settings,
/// the models that encode its texts, where its passages are searched, and
/// the round its queries train on.
struct TaskRun<'a> {
    ws: &'a Workspace<'a>,
    plan: TaskPlan,
    split_qrels: Qrels,
    base: ActiveModel,
    /// The model of the last checkpoint (the base model before the first).
    current: ActiveModel,
    passages: Passages,
    round: Option<u32>,
    records: Records,
    /// The queries its rounds mine when not the whole split: a teacher's
    /// run scores only the queries it trains on.
    mined_queries: Option<BTreeSet<String>>,
}

impl<'a> TaskRun<'a> {
    fn open(
        ws: &'a Workspace<'a>,
        plan: TaskPlan,
        split_qrels: Qrels,
        base_model: &ModelDir,
        spec: &RunSpec,
        run: &RunDir,
    ) -> Result<Self> {
        let base = ActiveModel::open(base_model.clone(), &plan.encoder, ws)?;
        let current = ActiveModel::open(base_model.clone(), &plan.encoder, ws)?;
        let passages = Passages::of(spec, &plan.name, run, ws.base_index.device());
        let mined_queries = (spec.teacher.as_ref().and(spec.run.max_queries)).and_then(|limit| {
            // The subset training draws when every query is in the round;
            // none when that is every query (the round is then a plain
            // `cpack mine --teacher` round, and one already mined is reused).
            let (corpus, queries) = (&ws.dataset.corpus, &ws.dataset.queries);
            let seed = spec.mining.seed;
            let draw = |limit| TrainingSet::build(corpus, queries, &split_qrels, None, limit, seed);
            if draw(None).examples.len() <= limit {
                return None;
            }
            Some(
                draw(Some(limit))
                    .examples
                    .into_iter()
                    .map(|e| e.query_id)
                    .collect(),
            )
        });
        Ok(TaskRun {
            ws,
            plan,
            split_qrels,
            base,
            current,
            passages,
            round: None,
            records: None,
            mined_queries,
        })
    }

    /// What a note about this task starts with (nothing for a lone dataset).
    fn label(&self) -> String {
        match self.plan.name.as_str() {
            "" => String::new(),
            name => format!("task {name}: "),
        }
    }

    /// Builds the base index when anything needs it (evaluation of the base
    /// model, rounds, frozen passages), evaluates the base model once, and
    /// finds or mines the first round.
    fn prepare(
        &mut self,
        spec: &RunSpec,
        report: &mut Report,
        start: &mut Start,
        run: &RunDir,
        progress: &dyn Progress,
    ) -> Result<()> {
        let ws = self.ws;
        let freeze = spec.train.freeze_passages;
        let eval_split = self.plan.eval_split.clone();
        let evaluates_base = base_slot(report, &self.plan.name).is_none() && eval_split.is_some();
        if !(evaluates_base || spec.uses_rounds() || freeze) {
            return Ok(());
        }
        let (mut index, _) = self.base.index(ws, ws.base_index, progress)?;
        if freeze {
            let (embeddings, corpus) = (index.embeddings.clone(), &ws.dataset.corpus);
            start.frozen = Some(FrozenPassages::new(embeddings, &index.ids, corpus)?);
        }
        if let (true, Some(split)) = (evaluates_base, &eval_split) {
            let point = self.base.evaluate(ws, &mut index, split, progress)?;
            *base_slot(report, &self.plan.name) = Some(point);
            report.write(run)?;
        }
        if let (true, Some(teacher)) = (spec.uses_rounds(), spec.run.negatives_from) {
            self.round = Some(teacher_round(ws, teacher, &self.plan.mining.split)?);
        } else if spec.uses_rounds() {
            let (round, cost) = self.mine(&self.base, &mut index, progress)?;
            self.round = Some(round);
            start.mining += cost;
        }
        Ok(())
    }

    /// `model`'s round of this task's queries against `index` (found or
    /// mined), and what mining it cost.
    fn mine(
        &self,
        model: &ActiveModel,
        index: &mut OpenIndex,
        progress: &dyn Progress,
    ) -> Result<(u32, MiningCost)> {
        let (mining, qrels) = (&self.plan.mining, &self.split_qrels);
        let queries = (mining, self.mined_queries.as_ref());
        model.round(self.ws, index, queries, qrels, progress)
    }

    /// Mines (or finds) the current model's round. Returns what mining
    /// cost, and whether the round is new with its overlap with the last.
    fn refresh(&mut self, progress: &dyn Progress) -> Result<(MiningCost, Option<Option<f64>>)> {
        let ws = self.ws;
        let models = (&self.base, &self.current);
        let (mut index, _) = self.passages.open(ws, models, progress)?;
        let (round, cost) = self.mine(&self.current, &mut index, progress)?;
        if Some(round) == self.round {
            return Ok((cost, None));
        }
        let fresh = load_records(ws, Some(round))?;
        let overlap = self
            .records
            .as_deref()
            .zip(fresh.as_deref())
            .map(|(old, new)| cpack_miner::stats::overlap(new, old));
        self.records = fresh;
        self.round = Some(round);
        Ok((cost, Some(overlap)))
    }

    /// The task's own training set, over its own tables.
    fn training_set(&self, spec: &RunSpec) -> TrainingSet {
        TrainingSet::build(
            &self.ws.dataset.corpus,
            &self.ws.dataset.queries,
            &self.split_qrels,
            self.records.as_deref(),
            spec.run.max_queries,
            // The subset follows the workspace's seed, not the training seed, so
            // runs that differ only in `--seed` train on the same queries.
            spec.mining.seed,
        )
    }

    /// Records the task's training set, what it left out and how its round
    /// fills the groups in `part`, and says so; refuses a round that
    /// leaves every query without a negative before the first epoch.
    fn note_set(
        &self,
        set: &TrainingSet,
        spec: &RunSpec,
        before_training: bool,
        part: &mut TaskReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        let Skipped {
            no_positive,
            not_in_round,
        } = set.skipped.clone();
        if no_positive + not_in_round > 0 {
            progress.note(&format!(
                "{}{no_positive} queries without a positive and {not_in_round} missing from the mining round are left out",
                self.label()
            ));
        }
        part.train_queries = set.len();
        part.skipped_no_positive = no_positive;
        part.skipped_not_in_round = not_in_round;
        let (Some(round), true) = (self.round, spec.uses_rounds()) else {
            return Ok(());
        };
        let wanted = spec.train.group_size - 1;
        let supply = set.negative_supply(wanted);
        // Refused before the first epoch, where the recipe can still be
        // changed; a later refresh's empty round (the model moved) is trained
        // on with the note below, or the run could never resume past it.
        if supply.is_empty() && before_training {
            let queries = supply.queries;
            return Err(Error::NoNegatives { round, queries });
        }
        if spec.train.distill.is_some() && set.taught() == 0 && before_training {
            let queries = set.len();
            return Err(Error::NothingToDistil { round, queries });
        }
        if let Some(note) = supply.describe(round, wanted) {
            progress.note(&format!("{}{note}", self.label()));
        }
        part.negative_supply.insert(round, supply);
        Ok(())
    }
}

/// Where the base model's evaluation of task `name` goes in `report`.
fn base_slot<'r>(report: &'r mut Report, name: &str) -> &'r mut Option<EvalPoint> {
    &mut part_of(report, name).base
}

/// Task `name`'s part of `report`: the run's own for a lone dataset.
fn part_of<'r>(report: &'r mut Report, name: &str) -> &'r mut TaskReport {
    match name {
        "" => &mut report.totals,
        name => report.tasks.entry(name.to_string()).or_default(),
    }
}

/// Checks that round `round`, named by `negatives_from`, can train the
/// run: stored, complete, and mined for the split the run trains on.
fn teacher_round(ws: &Workspace, round: u32, split: &str) -> Result<u32> {
    let refuse = |problem: String| InvalidSetting::new("negatives_from", round, problem);
    let Some(manifest) = ws.store.round(round)? else {
        let problem = format!("names no stored round: the negatives store holds no round {round} (see `cpack mine stats`)");
        return Err(refuse(problem).into());
    };
    if !manifest.complete {
        let problem = format!(
            "names round {round}, which was never finished; run `cpack mine` to complete it"
        );
        return Err(refuse(problem).into());
    }
    if manifest.params.split != split {
        let problem = format!(
            "names round {round}, mined for split {:?}; the run trains on {split:?}",
            manifest.params.split
        );
        return Err(refuse(problem).into());
    }
    Ok(round)
}

/// The state the epochs carry from one to the next.
struct Epochs<'a> {
    spec: &'a RunSpec,
    run: &'a RunDir,
    tasks: Vec<TaskRun<'a>>,
    /// The texts the trainer reads: the lone dataset's tables, or every
    /// task's merged (ids prefixed, queries carrying their instruction).
    corpus: Cow<'a, TextTable>,
    queries: Cow<'a, TextTable>,
    trainer: Trainer,
    set: TrainingSet,
    /// Mining not yet reported (the next epoch's rounds).
    mining: MiningCost,
    schedule: Schedule,
    schedule_steps: u64,
    step_log: StepLog,
    first_epoch: usize,
    /// The last checkpoint's report entry, when the run was killed after
    /// writing the checkpoint and before reporting it.
    unfinished: Option<EpochReport>,
}

impl<'a> Epochs<'a> {
    /// Picks up `saved`, the newest complete checkpoint, if any, or starts from the base.
    fn resume(
        spec: &'a RunSpec,
        mut tasks: Vec<TaskRun<'a>>,
        run: &'a RunDir,
        start: Start,
        saved: Option<Saved>,
        report: &mut Report,
        progress: &dyn Progress,
    ) -> Result<Self> {
        if let Some(saved) = &saved {
            check_resumable(saved, spec, &tasks)?;
            let done = (saved.state.epoch, spec.run.epochs);
            progress.note(&format!("resuming after epoch {} of {}", done.0, done.1));
            for task in &mut tasks {
                let round = match task.plan.name.as_str() {
                    "" => saved.state.round,
                    name => saved.state.task_rounds.get(name).copied(),
                };
                task.round = round.or(task.round);
                task.current = ActiveModel::open(saved.model.clone(), &task.plan.encoder, task.ws)?;
            }
        }
        for task in &mut tasks {
            task.records = load_records(task.ws, task.round)?;
        }
        let last_epoch = saved.as_ref().map_or(0, |s| s.state.epoch);
        let unfinished = saved
            .as_ref()
            .map(|s| EpochReport::from_state(&s.state, s.model.dir.clone()));
        let retired = saved.as_ref().map(|s| s.state.retired.clone());
        let (corpus, queries) = training_texts(&tasks);
        let trainer = trainer(spec, &tasks[0], start.frozen, saved)?;
        let mut epochs = Epochs {
            spec,
            run,
            tasks,
            corpus,
            queries,
            trainer,
            set: TrainingSet::merge(Vec::new(), spec.run.task_order),
            mining: start.mining,
            schedule: Schedule::new(spec.train.lr, spec.train.warmup_ratio, spec.run.epochs, 1),
            schedule_steps: 0,
            step_log: StepLog::open(run.path(), last_epoch)?,
            first_epoch: last_epoch + 1,
            unfinished,
        };
        epochs.rebuild_set(report, progress)?;
        if let Some(retired) = &retired {
            epochs.set.restore_retired(retired, &epochs.corpus);
        }
        epochs.schedule_steps =
            spec.nominal_steps(epochs.set.nominal_batches(spec.train.batch_size));
        let per_epoch = epochs.schedule_steps / spec.run.epochs.max(1) as u64;
        epochs.schedule = Schedule::new(
            spec.train.lr,
            spec.train.warmup_ratio,
            spec.run.epochs,
            per_epoch,
        );
        Ok(epochs)
    }

    /// Refreshes the negatives if `epoch` asks for it, trains the epoch and
    /// writes its checkpoint; returns the epoch's report entry (before
    /// evaluation) with the checkpoint's model now current.
    fn train(
        &mut self,
        epoch: usize,
        report: &mut Report,
        progress: &dyn Progress,
    ) -> Result<EpochReport> {
        let spec = self.spec;
        let overlap = if spec.refresh_before(epoch) {
            self.refresh(report, progress)?
        } else {
            None
        };
        if spec.train.batching == Batching::Clustered {
            let clusters = self.query_clusters(epoch, progress)?;
            self.set.clusters = Some(clusters);
        }
        let step_log = &mut self.step_log;
        let stats = self.trainer.train_epoch(
            &mut self.set,
            (&*self.corpus, &*self.queries),
            epoch,
            &self.schedule,
            progress,
            &mut |record| step_log.append(&record),
        )?;
        self.step_log.sync()?;
        let steps = self.trainer.optimizer().steps();
        let (round, task_rounds) = match self.tasks.as_slice() {
            [lone] if lone.plan.name.is_empty() => (lone.round, Default::default()),
            tasks => (
                None,
                (tasks.iter())
                    .filter_map(|t| Some((t.plan.name.clone(), t.round?)))
                    .collect(),
            ),
        };
        let state = TrainerState {
            stats,
            mine_seconds: self.mining.mine_seconds,
            teacher_seconds: std::mem::take(&mut self.mining).teacher_seconds,
            negatives_overlap: overlap,
            retired: self.set.retired_ids(&self.corpus),
            task_rounds,
            ..TrainerState::new(epoch, steps, self.schedule_steps, round)
        };
        let saved = ModelDir::open(&self.save(&state, progress)?)?;
        for task in &mut self.tasks {
            task.current = ActiveModel::open(saved.clone(), &task.plan.encoder, task.ws)?;
        }
        Ok(EpochReport::from_state(&state, saved.dir))
    }

    /// Topic clusters of the training queries under the current model,
    /// encoded as the trainer sees them.
    fn query_clusters(&self, epoch: usize, progress: &dyn Progress) -> Result<Vec<u32>> {
        let first = &self.tasks[0];
        let merged;
        let model = if self.spec.tasks.is_empty() {
            &first.current
        } else {
            let settings = self.spec.trainer_encoder();
            merged = ActiveModel::open(first.current.model.clone(), &settings, first.ws)?;
            &merged
        };
        model.query_clusters(&self.queries, &self.set, self.spec, epoch, progress)
    }

    /// Ends an epoch whose checkpoint is written: builds what the next epoch
    /// or the evaluation needs, evaluates each task, and adds `entry` to the report.
    fn finish(
        &self,
        mut entry: EpochReport,
        report: &mut Report,
        progress: &dyn Progress,
    ) -> Result<()> {
        for task in &self.tasks {
            let models = (&task.base, &task.current);
            let passages = (&task.passages, task.plan.eval_split.as_deref());
            let eval = finish_epoch(
                task.ws, self.spec, models, passages, &self.set, &mut entry, progress,
            )?;
            match task.plan.name.as_str() {
                "" => entry.eval = eval,
                name => entry.tasks.entry(name.to_string()).or_default().eval = eval,
            }
        }
        if !self.spec.tasks.is_empty() {
            entry.eval = mean_eval(entry.tasks.values().map(|t| t.eval.as_ref()));
        }
        report.epochs.push(entry);
        report.write(self.run)
    }

    /// Mines (or finds) every task's round under the current model; new
    /// ones replace the training set's negatives. Returns the mean overlap
    /// of the new rounds with the ones they replace.
    fn refresh(&mut self, report: &mut Report, progress: &dyn Progress) -> Result<Option<f64>> {
        let mut overlaps = Vec::new();
        let mut changed = false;
        for task in &mut self.tasks {
            let (cost, fresh) = task.refresh(progress)?;
            self.mining += cost;
            if let Some(overlap) = fresh {
                changed = true;
                overlaps.extend(overlap);
            }
        }
        if changed {
            self.rebuild_set(report, progress)?;
        }
        let n = overlaps.len();
        Ok((n > 0).then(|| overlaps.iter().sum::<f64>() / n as f64))
    }

    /// The training set of the tasks' current rounds (each task's built over
    /// its own tables, then merged), noted in `report`.
    fn rebuild_set(&mut self, report: &mut Report, progress: &dyn Progress) -> Result<()> {
        let spec = self.spec;
        let before_training = report.epochs.is_empty() && self.unfinished.is_none();
        let mut parts = Vec::new();
        for task in &self.tasks {
            let set = task.training_set(spec);
            let part = part_of(report, &task.plan.name);
            task.note_set(&set, spec, before_training, part, progress)?;
            parts.push(MergePart {
                set,
                id_prefix: task.plan.id_prefix.clone(),
                queries: task.ws.dataset.queries.len(),
                share: TaskShare {
                    weight: task.plan.weight,
                },
            });
        }
        if !spec.tasks.is_empty() {
            let parts = report.tasks.values();
            let totals = &mut report.totals;
            totals.train_queries = parts.clone().map(|t| t.train_queries).sum();
            totals.skipped_no_positive = parts.clone().map(|t| t.skipped_no_positive).sum();
            totals.skipped_not_in_round = parts.map(|t| t.skipped_not_in_round).sum();
        }
        self.set = match (spec.tasks.is_empty(), parts.pop()) {
            (true, Some(lone)) => lone.set,
            (_, last) => {
                parts.extend(last);
                TrainingSet::merge(parts, spec.run.task_order)
            }
        };
        Ok(())
    }

    /// Writes the epoch's checkpoint; returns its folder.
    fn save(&self, state: &TrainerState, progress: &dyn Progress) -> Result<std::path::PathBuf> {
        let encoder = &self.spec.encoder;
        let modules = Modules {
            pooling: encoder.pooling,
            normalize: encoder.normalize,
            max_seq_length: encoder.passage_max_len,
        };
        progress.stage(&format!("saving epoch-{}", state.epoch), 0);
        Ok(checkpoint::save(
            self.run.path(),
            &self.tasks[0].base.model,
            self.trainer.encoder(),
            self.trainer.optimizer(),
            state,
            &modules,
        )?)
    }
}

/// The tables the trainer reads: a lone dataset's own, or every task's
/// merged, each id prefixed with its task and each query with its task's
/// instruction (the trainer's tokenizer then adds none).
fn training_texts<'a>(tasks: &[TaskRun<'a>]) -> (Cow<'a, TextTable>, Cow<'a, TextTable>) {
    if let [lone] = tasks {
        if lone.plan.id_prefix.is_empty() {
            let dataset = lone.ws.dataset;
            return (
                Cow::Borrowed(&dataset.corpus),
                Cow::Borrowed(&dataset.queries),
            );
        }
    }
    let part = |table, id_prefix, text_prefix| MergedPart {
        table,
        id_prefix,
        text_prefix,
    };
    let corpus: Vec<MergedPart> = (tasks.iter())
        .map(|t| part(&t.ws.dataset.corpus, &t.plan.id_prefix, ""))
        .collect();
    let queries: Vec<MergedPart> = (tasks.iter())
        .map(|t| {
            part(
                &t.ws.dataset.queries,
                &t.plan.id_prefix,
                &t.plan.encoder.query_instruction,
            )
        })
        .collect();
    (
        Cow::Owned(TextTable::merged(&corpus)),
        Cow::Owned(TextTable::merged(&queries)),
    )
}

/// The trainer for the current weights (a checkpoint's, with its optimizer
/// state when `saved`), tokenizing as the base model does.
fn trainer(
    spec: &RunSpec,
    first: &TaskRun,
    frozen: Option<FrozenPassages>,
    saved: Option<Saved>,
) -> Result<Trainer> {
    let (pooling, normalize) = (spec.encoder.pooling, spec.encoder.normalize);
    let model = &first.current.model;
    let encoder = TrainableEncoder::load(model, pooling, normalize, first.ws.device)?;
    let tokenizer = PairTokenizer::load(&first.base.model, &spec.trainer_encoder())?;
    let mut trainer = Trainer::new(encoder, tokenizer, spec.train.clone())?;
    if let Some(frozen) = frozen {
        trainer = trainer.with_frozen_passages(frozen)?;
    }
    if let Some(saved) = saved {
        trainer
            .restore(saved.moments, saved.state.optimizer_steps)
            .map_err(|source| Error::OptimizerState {
                path: saved.model.dir.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(trainer)
}

/// Refuses a checkpoint that cannot have come from this run, or whose
/// mining rounds are gone.
fn check_resumable(saved: &Saved, spec: &RunSpec, tasks: &[TaskRun]) -> Result<()> {
    if saved.state.epoch > spec.run.epochs {
        return Err(Error::Checkpoint {
            path: saved.model.dir.join(checkpoint::STATE_FILE),
            problem: format!(
                "says epoch {} of a {}-epoch run; the checkpoint is damaged",
                saved.state.epoch, spec.run.epochs
            ),
        });
    }
    for task in tasks {
        let round = match task.plan.name.as_str() {
            "" => saved.state.round,
            name => saved.state.task_rounds.get(name).copied(),
        };
        if let Some(round) = round {
            if task.ws.store.round(round)?.is_none() {
                let run = spec.name.clone();
                return Err(Error::RoundGone { run, round });
            }
        }
    }
    Ok(())
}

/// The records of `round`, refused when the round was mined on another
/// version of the corpus: its negatives could name passages since removed
/// or changed, and dropping those quietly would train on a different round.
fn load_records(ws: &Workspace, round: Option<u32>) -> Result<Records> {
    let Some(round) = round else {
        return Ok(None);
    };
    if let Some(manifest) = ws.store.round(round)? {
        if manifest.corpus_fingerprint != ws.dataset.corpus.fingerprint() {
            return Err(Error::RoundOfAnotherCorpus { round });
        }
    }
    Ok(Some(ws.store.records(round)?))
}
