//! The loop itself: prepare the run folder, the base model's index and
//! round, pick up a killed run's last checkpoint, then train epoch after
//! epoch, refreshing the negatives when the spec says so.

use crate::error::{Error, Result, StepFix};
use crate::layout::RunDir;
use crate::passages::{finish_epoch, Passages};
use crate::phase::ActiveModel;
use crate::report::{EpochReport, Report};
use crate::spec::RunSpec;
use crate::workspace::Workspace;
use cpack_core::{fsutil, InvalidSetting, Progress};
use cpack_data::dataset::Qrels;
use cpack_encode::PairTokenizer;
use cpack_miner::store::QueryRecord;
use cpack_model::{BertConfig, ModelDir};
use cpack_train::checkpoint::{self, Modules, Saved, TrainerState};
use cpack_train::data::{Batching, Skipped, TrainingSet};
use cpack_train::frozen::FrozenPassages;
use cpack_train::memory;
use cpack_train::model::TrainableEncoder;
use cpack_train::optim::Schedule;
use cpack_train::steps::StepLog;
use cpack_train::Trainer;

/// A round's records by query id (`None`: in-batch negatives only).
type Records = Option<Vec<(String, QueryRecord)>>;

/// Runs (or, with `resume`, continues) the run `spec` describes in `run`.
pub fn run(
    ws: &Workspace,
    spec: RunSpec,
    run: &RunDir,
    resume: bool,
    progress: &dyn Progress,
) -> Result<Report> {
    // A resumed run is the stored one (its split, its base model), however
    // the flags of this call differ.
    let spec = if resume { resumed(run, spec)? } else { spec };
    // Checked before anything is written, so a bad request leaves no run behind.
    let split_qrels = ws.dataset.qrels(&spec.mining.split)?;
    if split_qrels.is_empty() {
        let path = ws.dataset.paths.qrels(&spec.mining.split);
        return Err(Error::NothingToTrain { path });
    }
    let base_model = ModelDir::open(&spec.base_model)?;
    let spec = prepare(run, spec, resume, &base_model.config)?;
    let base = ActiveModel::open(base_model, &spec.encoder, ws)?;
    let mut report = Report::read(run)?.unwrap_or_else(|| Report::new(spec.clone()));
    let start = Start::prepare(ws, &spec, &base, &split_qrels, &mut report, run, progress)?;
    let passages = Passages::of(&spec, &base, run, ws.base_index.device());
    let mut epochs = Epochs::resume(ws, &spec, &base, run, start, &split_qrels, progress)?;
    // Entries past the checkpoint are from epochs a kill undid; the
    // checkpoint's own entry may be missing (killed before the report).
    report.epochs.retain(|e| e.epoch < epochs.first_epoch);
    if report.epochs.last().map(|e| e.epoch + 1) == Some(epochs.first_epoch) {
        epochs.unfinished = None;
    }
    epochs.note_training_set(&mut report, progress)?;
    if let Some(entry) = epochs.unfinished.take() {
        epochs.finish(entry, &passages, &mut report, progress)?;
    }
    let ids: Vec<&str> = epochs
        .set
        .examples
        .iter()
        .map(|e| e.query_id.as_str())
        .collect();
    fsutil::write_json_atomic(&run.queries_file(), &ids)?;
    for epoch in epochs.first_epoch..=spec.run.epochs {
        let entry = epochs.train(epoch, &passages, &mut report, progress)?;
        epochs.finish(entry, &passages, &mut report, progress)?;
    }
    Ok(report)
}

/// The spec the run follows: `spec` for a new run, whose folder and
/// `run.json` are created here; the stored one for a resumed run (only its
/// length may grow). Refuses a step that cannot fit in memory first.
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

/// What the base model contributes before the first epoch: its round (or a
/// teacher's), the seconds mining it took, and the passage vectors of
/// query-side training.
struct Start {
    round: Option<u32>,
    mine_seconds: f64,
    frozen: Option<FrozenPassages>,
}

impl Start {
    /// Builds the base index when anything needs it (evaluation of the base
    /// model, rounds, frozen passages), evaluates the base model once, and
    /// finds or mines the first round.
    fn prepare(
        ws: &Workspace,
        spec: &RunSpec,
        base: &ActiveModel,
        split_qrels: &Qrels,
        report: &mut Report,
        run: &RunDir,
        progress: &dyn Progress,
    ) -> Result<Start> {
        let freeze = spec.train.freeze_passages;
        let mut start = Start {
            round: None,
            mine_seconds: 0.0,
            frozen: None,
        };
        let evaluates_base = report.base.is_none() && spec.eval_split.is_some();
        if !(evaluates_base || spec.uses_rounds() || freeze) {
            return Ok(start);
        }
        let (mut index, _) = base.index(ws, ws.base_index, progress)?;
        if freeze {
            let (embeddings, corpus) = (index.embeddings.clone(), &ws.dataset.corpus);
            start.frozen = Some(FrozenPassages::new(embeddings, &index.ids, corpus)?);
        }
        if let (None, Some(split)) = (&report.base, &spec.eval_split) {
            report.base = Some(base.evaluate(ws, &mut index, split, progress)?);
            report.write(run)?;
        }
        if let (true, Some(teacher)) = (spec.uses_rounds(), spec.run.negatives_from) {
            start.round = Some(teacher_round(ws, teacher, &spec.mining.split)?);
        } else if spec.uses_rounds() {
            let (round, seconds) =
                base.round(ws, &mut index, &spec.mining, split_qrels, progress)?;
            (start.round, start.mine_seconds) = (Some(round), seconds);
        }
        Ok(start)
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
    ws: &'a Workspace<'a>,
    spec: &'a RunSpec,
    base: &'a ActiveModel,
    run: &'a RunDir,
    split_qrels: &'a Qrels,
    /// The model of the last checkpoint (the base model before the first).
    current: ActiveModel,
    trainer: Trainer,
    set: TrainingSet,
    round: Option<u32>,
    records: Records,
    /// Mining seconds not yet reported (the next epoch's round).
    mine_seconds: f64,
    schedule: Schedule,
    schedule_steps: u64,
    step_log: StepLog,
    first_epoch: usize,
    /// The last checkpoint's report entry, when the run was killed after
    /// writing the checkpoint and before reporting it.
    unfinished: Option<EpochReport>,
}

impl<'a> Epochs<'a> {
    /// Picks up the newest complete checkpoint, if any, or starts from the base.
    fn resume(
        ws: &'a Workspace<'a>,
        spec: &'a RunSpec,
        base: &'a ActiveModel,
        run: &'a RunDir,
        start: Start,
        split_qrels: &'a Qrels,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let saved = checkpoint::latest(run.path())?
            .map(|dir| checkpoint::load(&dir))
            .transpose()?;
        if let Some(saved) = &saved {
            check_resumable(saved, spec, ws)?;
            let done = (saved.state.epoch, spec.run.epochs);
            progress.note(&format!("resuming after epoch {} of {}", done.0, done.1));
        }
        let last_epoch = saved.as_ref().map_or(0, |s| s.state.epoch);
        let model = saved
            .as_ref()
            .map_or_else(|| base.model.clone(), |s| s.model.clone());
        let current = ActiveModel::open(model, &spec.encoder, ws)?;
        let round = saved.as_ref().and_then(|s| s.state.round).or(start.round);
        let retired = saved.as_ref().map(|s| s.state.retired.clone());
        let unfinished = saved
            .as_ref()
            .map(|s| EpochReport::from_state(&s.state, s.model.dir.clone()));
        let trainer = trainer(spec, ws, &current, base, start.frozen, saved)?;
        let records = load_records(ws, round)?;
        let mut set = training_set(ws, split_qrels, records.as_deref(), spec);
        if let Some(retired) = &retired {
            set.restore_retired(retired, &ws.dataset.corpus);
        }
        let schedule_steps = spec.nominal_steps(set.len());
        let per_epoch = schedule_steps / spec.run.epochs.max(1) as u64;
        let schedule = Schedule::new(
            spec.train.lr,
            spec.train.warmup_ratio,
            spec.run.epochs,
            per_epoch,
        );
        Ok(Epochs {
            ws,
            spec,
            base,
            run,
            split_qrels,
            current,
            trainer,
            set,
            round,
            records,
            mine_seconds: start.mine_seconds,
            schedule,
            schedule_steps,
            step_log: StepLog::open(run.path(), last_epoch)?,
            first_epoch: last_epoch + 1,
            unfinished,
        })
    }

    /// Refreshes the negatives if `epoch` asks for it, trains the epoch and
    /// writes its checkpoint; returns the epoch's report entry (before
    /// evaluation) with the checkpoint's model now current.
    fn train(
        &mut self,
        epoch: usize,
        passages: &Passages,
        report: &mut Report,
        progress: &dyn Progress,
    ) -> Result<EpochReport> {
        let (ws, spec) = (self.ws, self.spec);
        let overlap = if spec.refresh_before(epoch) {
            self.refresh(passages, report, progress)?
        } else {
            None
        };
        if spec.train.batching == Batching::Clustered {
            let clusters = self
                .current
                .query_clusters(ws, &self.set, spec, epoch, progress)?;
            self.set.clusters = Some(clusters);
        }
        let step_log = &mut self.step_log;
        let stats = self.trainer.train_epoch(
            &mut self.set,
            (&ws.dataset.corpus, &ws.dataset.queries),
            epoch,
            &self.schedule,
            progress,
            &mut |record| step_log.append(&record),
        )?;
        self.step_log.sync()?;
        let steps = self.trainer.optimizer().steps();
        let state = TrainerState {
            stats,
            mine_seconds: std::mem::take(&mut self.mine_seconds),
            negatives_overlap: overlap,
            retired: self.set.retired_ids(&ws.dataset.corpus),
            ..TrainerState::new(epoch, steps, self.schedule_steps, self.round)
        };
        let saved = self.save(&state, progress)?;
        self.current = ActiveModel::open(ModelDir::open(&saved)?, &spec.encoder, ws)?;
        Ok(EpochReport::from_state(&state, saved))
    }

    /// Ends an epoch whose checkpoint is written: builds what the next epoch
    /// or the evaluation needs, evaluates, and adds `entry` to the report.
    fn finish(
        &self,
        entry: EpochReport,
        passages: &Passages,
        report: &mut Report,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (ws, spec, set) = (self.ws, self.spec, &self.set);
        let entry = finish_epoch(ws, spec, &self.current, passages, set, entry, progress)?;
        report.epochs.push(entry);
        report.write(self.run)
    }

    /// Mines (or finds) the current model's round; a new one replaces the
    /// training set's negatives. Returns its overlap with the previous round.
    fn refresh(
        &mut self,
        passages: &Passages,
        report: &mut Report,
        progress: &dyn Progress,
    ) -> Result<Option<f64>> {
        let (ws, spec) = (self.ws, self.spec);
        let (mut index, _) = passages.open(ws, &self.current, progress)?;
        let (round, seconds) =
            self.current
                .round(ws, &mut index, &spec.mining, self.split_qrels, progress)?;
        self.mine_seconds = seconds;
        if Some(round) == self.round {
            return Ok(None);
        }
        let fresh = load_records(ws, Some(round))?;
        let overlap = self
            .records
            .as_deref()
            .zip(fresh.as_deref())
            .map(|(old, new)| cpack_miner::stats::overlap(new, old));
        self.records = fresh;
        self.set = training_set(ws, self.split_qrels, self.records.as_deref(), spec);
        self.round = Some(round);
        self.note_training_set(report, progress)?;
        Ok(overlap)
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
            &self.base.model,
            self.trainer.encoder(),
            self.trainer.optimizer(),
            state,
            &modules,
        )?)
    }

    /// Records the training set's size, what it left out and how the
    /// round fills its groups in `report`, and says so; refuses a round
    /// that leaves every query without a negative.
    fn note_training_set(&self, report: &mut Report, progress: &dyn Progress) -> Result<()> {
        let Skipped {
            no_positive,
            not_in_round,
        } = self.set.skipped.clone();
        if no_positive + not_in_round > 0 {
            progress.note(&format!(
                "{no_positive} queries without a positive and {not_in_round} missing from the mining round are left out"
            ));
        }
        report.train_queries = self.set.len();
        report.skipped_no_positive = no_positive;
        report.skipped_not_in_round = not_in_round;
        let (Some(round), true) = (self.round, self.spec.uses_rounds()) else {
            return Ok(());
        };
        let supply = self.set.negative_supply(self.spec.train.group_size - 1);
        // Refused before the first epoch, where the recipe can still be
        // changed; a later refresh's empty round (the model moved) is trained
        // on with the note below, or the run could never resume past it.
        if supply.is_empty() && report.epochs.is_empty() {
            let queries = supply.queries;
            return Err(Error::NoNegatives { round, queries });
        }
        if let Some(note) = supply.describe(round, self.spec.train.group_size - 1) {
            progress.note(&note);
        }
        report.negative_supply.insert(round, supply);
        Ok(())
    }
}

/// The trainer for `current`'s weights (a checkpoint's, with its optimizer
/// state when `saved`), tokenizing as the base model does.
fn trainer(
    spec: &RunSpec,
    ws: &Workspace,
    current: &ActiveModel,
    base: &ActiveModel,
    frozen: Option<FrozenPassages>,
    saved: Option<Saved>,
) -> Result<Trainer> {
    let (pooling, normalize) = (spec.encoder.pooling, spec.encoder.normalize);
    let encoder = TrainableEncoder::load(&current.model, pooling, normalize, ws.device)?;
    let tokenizer = PairTokenizer::load(&base.model, &spec.encoder)?;
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
/// mining round is gone.
fn check_resumable(saved: &Saved, spec: &RunSpec, ws: &Workspace) -> Result<()> {
    if saved.state.epoch > spec.run.epochs {
        return Err(Error::Checkpoint {
            path: saved.model.dir.join(checkpoint::STATE_FILE),
            problem: format!(
                "says epoch {} of a {}-epoch run; the checkpoint is damaged",
                saved.state.epoch, spec.run.epochs
            ),
        });
    }
    if let Some(round) = saved.state.round {
        if ws.store.round(round)?.is_none() {
            let run = spec.name.clone();
            return Err(Error::RoundGone { run, round });
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

fn training_set(
    ws: &Workspace,
    split_qrels: &Qrels,
    records: Option<&[(String, QueryRecord)]>,
    spec: &RunSpec,
) -> TrainingSet {
    TrainingSet::build(
        &ws.dataset.corpus,
        &ws.dataset.queries,
        split_qrels,
        records,
        spec.run.max_queries,
        // The subset follows the workspace's seed, not the training seed, so
        // runs that differ only in `--seed` train on the same queries.
        spec.mining.seed,
    )
}
