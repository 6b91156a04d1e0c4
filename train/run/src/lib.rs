//! cpack-run: the closed loop (ANCE, in-process): train N epochs on the current mining
//! round, write the checkpoint, re-encode the corpus with it into the run's
//! own index (a new generation beside the old one, swapped atomically),
//! evaluate, re-mine with it, and go on.
//!
//! A run lives in `.cpack/runs/<name>/`: `run.json` (what was asked),
//! `epoch-N/` checkpoints, `index/` (the corpus under the newest
//! checkpoint), `report.json`, and `steps.jsonl` (every optimizer step: its
//! batches by id, learning rate, losses and gradient norm). Every piece is written atomically and every
//! stage resumes, so `--resume` after a kill continues from the last
//! checkpoint: the index build and mining pick up their own partial work,
//! and the epoch's batches are a pure function of (seed, epoch).

use cpack_core::fsutil;
use cpack_core::Progress;
use cpack_data::dataset::{Dataset, Qrels};
use cpack_data::metrics::RetrievalMetrics;
use cpack_encode::EmbeddingStamp;
use cpack_encode::{BackendLoader, Encoder, EncoderSettings, PairTokenizer, TextKind};
use cpack_index::align::{AlignmentFit, StaleVectors};
use cpack_index::embeddings::Precision;
use cpack_index::evaluate::evaluate_index;
use cpack_index::store::{
    BuildOptions, BuildOutcome, BuildPlan, IndexDir, OpenIndex, PartialPlan, Provenance,
};
use cpack_index::vector::IndexKind;
use cpack_miner::store::{QueryRecord, RoundIdentity};
use cpack_miner::{MineOptions, MineOutcome, MiningInput, MiningParams, NegativeStore};
use cpack_model::ModelDir;
use cpack_train::checkpoint::{self, Modules, TrainerState};
use cpack_train::data::{Batching, Skipped, TrainingSet};
use cpack_train::error::{Error, Result};
use cpack_train::frozen::FrozenPassages;
use cpack_train::incremental::{self, RefreshScope};
use cpack_train::memory;
use cpack_train::model::TrainableEncoder;
use cpack_train::optim::Schedule;
use cpack_train::steps::StepLog;
use cpack_train::trainer::{TrainSettings, Trainer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const SPEC_FILE: &str = "run.json";
pub const REPORT_FILE: &str = "report.json";
/// Ids of the queries the run trains on (for peers reproducing the run).
pub const QUERIES_FILE: &str = "queries.json";

/// What a run was asked to do; stored in `run.json` so `--resume` repeats it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub name: String,
    pub base_model: PathBuf,
    pub encoder: EncoderSettings,
    pub train: TrainSettings,
    pub epochs: usize,
    /// Re-encode, re-index and re-mine every this many epochs; 0 = static negatives.
    pub refresh_every: usize,
    /// Parameters of every mining round the run makes (split included).
    pub mining: MiningParams,
    /// Qrels split evaluated after each epoch; `None` = no evaluation.
    pub eval_split: Option<String>,
    /// Train on this many queries of the split (a seeded subset).
    pub max_queries: Option<usize>,
    /// The first round's negatives come from this stored round, whatever
    /// model mined it (a teacher's); `None`: the base model mines its own.
    #[serde(default)]
    pub negatives_from: Option<u32>,
    /// Which passages a refresh re-encodes.
    #[serde(default)]
    pub refresh: RefreshScope,
    /// With incremental refreshes, every this many-th refresh re-encodes
    /// the whole corpus; 0 = none does.
    #[serde(default)]
    pub full_refresh_every: usize,
    /// With incremental refreshes, how deep into each training query's pool
    /// the re-encode goes; `None`: the mining top-k, the whole pool.
    #[serde(default)]
    pub refresh_depth: Option<usize>,
    /// With incremental refreshes, what the passages left out get: their old
    /// vectors, or those mapped into the new checkpoint's space.
    #[serde(default)]
    pub stale_vectors: StaleVectors,
}

impl RunSpec {
    /// Hard negatives are used at all (group size 1 = in-batch negatives only).
    fn uses_rounds(&self) -> bool {
        self.train.group_size > 1
    }

    fn refresh_before(&self, epoch: usize) -> bool {
        self.uses_rounds()
            && self.refresh_every > 0
            && epoch > 1
            && (epoch - 1).is_multiple_of(self.refresh_every)
    }

    /// The refresh before `epoch` re-encodes the whole corpus.
    fn whole_refresh_before(&self, epoch: usize) -> bool {
        let nth = (epoch - 1) / self.refresh_every.max(1);
        self.refresh == RefreshScope::Full
            || (self.full_refresh_every > 0 && nth.is_multiple_of(self.full_refresh_every))
    }

    /// Ranks of each training query's pool an incremental refresh re-encodes.
    fn pool_depth(&self) -> usize {
        self.refresh_depth.unwrap_or(self.mining.topk)
    }

    /// The epoch whose checkpoint mined the round that `epoch` trains on
    /// (0: the base model).
    fn mined_by(&self, epoch: usize) -> usize {
        (2..=epoch)
            .rev()
            .find(|&e| self.refresh_before(e))
            .map_or(0, |e| e - 1)
    }
}

/// Retrieval quality of one model on the evaluation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub metrics: RetrievalMetrics,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    /// Mining round trained on (`None`: in-batch negatives only).
    pub round: Option<u32>,
    pub mean_loss: f64,
    pub optimizer_steps: u64,
    pub train_seconds: f64,
    pub train_tokens: u64,
    /// Mining that produced this epoch's round (0 when the round was reused).
    pub mine_seconds: f64,
    /// Jaccard overlap of this round's negatives with the previous epoch's round.
    pub negatives_overlap: Option<f64>,
    /// Negatives retired during the epoch for scoring far below the positive.
    #[serde(default)]
    pub negatives_retired: usize,
    /// Re-encoding the corpus with this epoch's checkpoint (and aligning
    /// the stale vectors, if asked), and indexing it.
    pub encode_seconds: f64,
    pub index_seconds: f64,
    /// Passages that re-encode encoded (fewer than the corpus when incremental).
    #[serde(default)]
    pub passages_encoded: usize,
    /// Encoding the corpus for the evaluation alone (incremental refreshes
    /// leave the run's index partly stale, so evaluation encodes its own).
    #[serde(default)]
    pub eval_encode_seconds: f64,
    /// How the stale vectors of an aligned incremental refresh were mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment: Option<AlignmentFit>,
    pub eval: Option<EvalPoint>,
    pub checkpoint: PathBuf,
}

/// `report.json`: the run's curve, rewritten after every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub spec: RunSpec,
    pub train_queries: usize,
    pub skipped_no_positive: usize,
    pub skipped_not_in_round: usize,
    pub base: Option<EvalPoint>,
    pub epochs: Vec<EpochReport>,
}

/// The workspace a run reads and mines into.
pub struct Workspace<'a> {
    pub dataset: &'a Dataset,
    /// Judgements of every split (a query's positives are never its negatives).
    pub all_qrels: &'a [Qrels],
    pub store: &'a NegativeStore,
    /// The workspace's own index (the base model's corpus encoding).
    pub base_index: &'a IndexDir,
    pub index_kind: IndexKind,
    pub precision: Precision,
    /// The encoder runtime every phase encodes with (a backend per checkpoint).
    pub backend: &'a dyn BackendLoader,
    /// Workers feeding the backend.
    pub threads: usize,
    /// Where the trainer keeps the weights and runs its steps.
    pub device: cpack_encode::ComputeDevice,
}

/// What building a run's index cost: seconds encoding and indexing, and
/// the passages encoded (all zero when it was already up to date).
#[derive(Default)]
struct Built {
    encode_seconds: f64,
    index_seconds: f64,
    passages: usize,
    alignment: Option<AlignmentFit>,
}

impl Built {
    fn record(self, entry: &mut EpochReport) {
        entry.encode_seconds = self.encode_seconds;
        entry.index_seconds = self.index_seconds;
        entry.passages_encoded = self.passages;
        entry.alignment = self.alignment;
    }
}

/// The model a phase of the run encodes with.
struct Current {
    model: ModelDir,
    encoder: Encoder,
}

impl Current {
    fn open(model: ModelDir, settings: &EncoderSettings, ws: &Workspace) -> Result<Self> {
        let encoder = Encoder::open(&model, settings, ws.backend, ws.threads)?;
        Ok(Current { model, encoder })
    }

    /// Builds (or finds up to date) the index of `dir` for this model, then opens it.
    fn index(
        &self,
        ws: &Workspace,
        dir: &IndexDir,
        progress: &dyn Progress,
    ) -> Result<(OpenIndex, Built)> {
        self.build(ws, dir, None, progress)
    }

    /// [`Current::index`], re-encoding only what `partial` names if given.
    fn build(
        &self,
        ws: &Workspace,
        dir: &IndexDir,
        partial: Option<PartialPlan>,
        progress: &dyn Progress,
    ) -> Result<(OpenIndex, Built)> {
        let corpus = &ws.dataset.corpus;
        let stamp = EmbeddingStamp::of(&self.model, &self.encoder)?;
        let mut plan = BuildPlan::new(stamp.clone(), corpus, ws.precision, ws.index_kind.clone());
        if let Some(partial) = partial {
            plan = plan.reencoding_only(partial);
        }
        let provenance = Provenance {
            model_path: &self.model.dir,
            corpus_path: &ws.dataset.paths.corpus,
        };
        let options = BuildOptions {
            chunk_rows: BuildOptions::DEFAULT_CHUNK_ROWS,
            force: false,
        };
        let outcome = dir.build(plan, provenance, corpus, &self.encoder, options, progress)?;
        let built = match outcome {
            BuildOutcome::Built { manifest, .. } => Built {
                encode_seconds: manifest.timings.encode_seconds
                    + manifest.alignment.map_or(0.0, |a| a.seconds),
                index_seconds: manifest.timings.index_seconds,
                passages: manifest.plan.rows - manifest.plan.stale_rows(),
                alignment: manifest.alignment,
            },
            BuildOutcome::UpToDate { .. } => Built::default(),
        };
        Ok((dir.open(&stamp, corpus)?, built))
    }

    fn evaluate(
        &self,
        ws: &Workspace,
        index: &mut OpenIndex,
        split: &str,
        progress: &dyn Progress,
    ) -> Result<EvalPoint> {
        let qrels = ws.dataset.qrels(split)?;
        let started = Instant::now();
        let e = evaluate_index(&self.encoder, index, &ws.dataset.queries, &qrels, progress)?;
        Ok(EvalPoint {
            metrics: e.metrics,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Topic clusters of the training queries under this model, one per
    /// batch's worth of queries, for `--batching clustered`.
    fn query_clusters(
        &self,
        ws: &Workspace,
        set: &TrainingSet,
        spec: &RunSpec,
        epoch: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<u32>> {
        let texts = set.query_texts(&ws.dataset.queries);
        progress.stage("clustering the training queries", texts.len() as u64);
        let vectors = self.encoder.encode(&texts, TextKind::Query, &mut |n, t| {
            progress.advance(n as u64, t as u64)
        })?;
        let k = texts.len().div_ceil(spec.train.batch_size.max(1));
        let seed = spec.train.seed ^ epoch as u64;
        Ok(cpack_train::cluster::kmeans(
            &vectors,
            self.encoder.dim(),
            k,
            seed,
        ))
    }

    /// The newest complete round of this model's queries against `index`'s
    /// very vectors with `params`, mining it if there is none. The index is
    /// this model's own, or (query-side training) the base model's.
    fn round(
        &self,
        ws: &Workspace,
        index: &mut OpenIndex,
        params: &MiningParams,
        split_qrels: &Qrels,
        progress: &dyn Progress,
    ) -> Result<(u32, f64)> {
        let own = self.model.fingerprint()?;
        let query_model = (own != index.manifest.plan.stamp.model_fingerprint).then_some(own);
        let (validated, _) = params
            .clone()
            .validated(ws.dataset.corpus.len())
            .map_err(Error::Invalid)?;
        let wanted = RoundIdentity::of_search(&index.manifest, query_model.clone(), validated);
        // A round of unknown vectors (imported, or older than format 3) is
        // never reused: it may have searched an incremental refresh's.
        let existing =
            ws.store.rounds()?.into_iter().rev().find(|m| {
                m.complete && wanted.index_embeddings.is_some() && m.identity() == wanted
            });
        if let Some(m) = existing {
            return Ok((m.round, 0.0));
        }
        let input = MiningInput {
            corpus: &ws.dataset.corpus,
            queries: &ws.dataset.queries,
            split_qrels,
            all_qrels: ws.all_qrels,
            encoder: &self.encoder,
            index,
            query_model_fingerprint: query_model,
        };
        let started = Instant::now();
        let manifest = match cpack_miner::mine(
            ws.store,
            input,
            params.clone(),
            MineOptions::default(),
            progress,
        )? {
            MineOutcome::UpToDate(m) => m,
            MineOutcome::Mined { manifest, .. } => manifest,
        };
        Ok((manifest.round, started.elapsed().as_secs_f64()))
    }
}

/// Where the current model's queries are searched after an epoch.
enum Passages<'a> {
    /// The run's own index, re-encoded with each checkpoint.
    Reencoded(IndexDir),
    /// The base model's index, never re-encoded: query-side training.
    Frozen(&'a Current),
    /// The run's own index, refreshed incrementally (see [`incremental`]);
    /// evaluation encodes the whole corpus into an index of its own.
    Incremental {
        dir: IndexDir,
        eval_dir: IndexDir,
        run_dir: PathBuf,
    },
}

impl Passages<'_> {
    /// The index for `current`'s queries (building the run's own first when
    /// it is not up to date), and what building it cost.
    fn open(
        &self,
        ws: &Workspace,
        current: &Current,
        progress: &dyn Progress,
    ) -> Result<(OpenIndex, Built)> {
        match self {
            Passages::Reencoded(dir) => current.index(ws, dir, progress),
            Passages::Frozen(base) => base.index(ws, ws.base_index, progress),
            // Refreshed after the epoch (`finish_epoch`): only opened here.
            Passages::Incremental { dir, .. } => {
                let stamp = EmbeddingStamp::of(&current.model, &current.encoder)?;
                Ok((dir.open(&stamp, &ws.dataset.corpus)?, Built::default()))
            }
        }
    }
}

/// The incremental refresh after `epoch` (see [`incremental`]): the
/// training queries' pool in the index their round was mined from is
/// re-encoded with `current` into `dir`.
fn refresh_incrementally(
    ws: &Workspace,
    spec: &RunSpec,
    current: &Current,
    (dir, run_dir): (&IndexDir, &Path),
    set: &TrainingSet,
    epoch: usize,
    progress: &dyn Progress,
) -> Result<Built> {
    let own = EmbeddingStamp::of(&current.model, &current.encoder)?;
    let live = dir.current()?;
    if live
        .as_ref()
        .is_some_and(|(_, manifest)| manifest.plan.stamp == own)
    {
        // Killed after the swap, before the report: already refreshed.
        return Ok(Built::default());
    }
    let miner = match spec.mined_by(epoch) {
        0 => spec.base_model.clone(),
        e => run_dir.join(format!("epoch-{e}")),
    };
    let miner = Current::open(ModelDir::open(&miner)?, &spec.encoder, ws)?;
    let stamp = EmbeddingStamp::of(&miner.model, &miner.encoder)?;
    let source = if live.is_some() { dir } else { ws.base_index };
    let mut base = source.open(&stamp, &ws.dataset.corpus)?;
    let rows = incremental::pool(
        set,
        &ws.dataset.queries,
        &miner.encoder,
        &mut base,
        spec.pool_depth(),
        progress,
    )?;
    let partial = PartialPlan::over(&base, rows, spec.stale_vectors)?;
    drop(base);
    let (_, built) = current.build(ws, dir, Some(partial), progress)?;
    Ok(built)
}

/// Checks that round `round`, asked for by `--negatives-from`, can train the
/// run: stored, complete, and mined for the split the run trains on.
fn teacher_round(ws: &Workspace, round: u32, split: &str) -> Result<u32> {
    let manifest = ws.store.round(round)?.ok_or_else(|| {
        Error::Invalid(format!(
            "--negatives-from {round}: the negatives store holds no round {round} (see `cpack mine stats`)"
        ))
    })?;
    if !manifest.complete {
        return Err(Error::Invalid(format!(
            "--negatives-from {round}: round {round} was never finished; run `cpack mine` to complete it"
        )));
    }
    if manifest.params.split != split {
        return Err(Error::Invalid(format!(
            "--negatives-from {round}: round {round} mined split {:?}, the run trains on {split:?}",
            manifest.params.split
        )));
    }
    Ok(round)
}

/// Runs (or, with `resume`, continues) the run described by `spec` in `run_dir`.
pub fn run(
    ws: &Workspace,
    spec: RunSpec,
    run_dir: &Path,
    resume: bool,
    progress: &dyn Progress,
) -> Result<Report> {
    // Checked before anything is written, so a bad request leaves no run behind.
    let split_qrels = ws.dataset.qrels(&spec.mining.split)?;
    if split_qrels.is_empty() {
        return Err(Error::Invalid(format!(
            "{} has no judgements to train on",
            ws.dataset.paths.qrels(&spec.mining.split).display()
        )));
    }
    if spec.refresh == RefreshScope::Incremental
        && (spec.train.freeze_passages || spec.refresh_every == 0 || !spec.uses_rounds())
    {
        return Err(Error::Invalid(
            "--refresh incremental needs refreshes of mined negatives: a --refresh-every of 1 or \
             more, a --group-size above 1, and no --freeze-passages (which never re-encodes)"
                .into(),
        ));
    }
    match spec.refresh_depth {
        Some(_) if spec.refresh != RefreshScope::Incremental => {
            return Err(Error::Invalid(
                "--refresh-depth sets how much an incremental refresh re-encodes; it needs \
                 --refresh incremental"
                    .into(),
            ));
        }
        Some(0) => {
            return Err(Error::Invalid(
                "--refresh-depth must be at least 1 (the pool's top rank)".into(),
            ));
        }
        _ => {}
    }
    if spec.stale_vectors == StaleVectors::Aligned && spec.refresh != RefreshScope::Incremental {
        return Err(Error::Invalid(
            "--stale-vectors aligned maps the passages an incremental refresh leaves out; it \
             needs --refresh incremental"
                .into(),
        ));
    }
    if !resume {
        check_memory(&spec, &ModelDir::open(&spec.base_model)?.config)?;
    }
    let spec = prepare_run_dir(run_dir, spec, resume)?;
    if resume {
        check_memory(&spec, &ModelDir::open(&spec.base_model)?.config)?;
    }
    let base = Current::open(ModelDir::open(&spec.base_model)?, &spec.encoder, ws)?;
    let mut report = read_report(run_dir)?.unwrap_or_else(|| Report {
        spec: spec.clone(),
        train_queries: 0,
        skipped_no_positive: 0,
        skipped_not_in_round: 0,
        base: None,
        epochs: Vec::new(),
    });

    // The base model's index and round: built or mined first if missing.
    let freeze = spec.train.freeze_passages;
    let needs_base_index =
        report.base.is_none() && spec.eval_split.is_some() || spec.uses_rounds() || freeze;
    let mut round = None;
    let mut mine_seconds = 0.0;
    let mut frozen = None;
    if needs_base_index {
        let (mut index, _) = base.index(ws, ws.base_index, progress)?;
        if freeze {
            frozen = Some(FrozenPassages::new(
                index.embeddings.clone(),
                &index.ids,
                &ws.dataset.corpus,
            )?);
        }
        if let (None, Some(split)) = (&report.base, &spec.eval_split) {
            report.base = Some(base.evaluate(ws, &mut index, split, progress)?);
            write_report(run_dir, &report)?;
        }
        if let (true, Some(teacher)) = (spec.uses_rounds(), spec.negatives_from) {
            round = Some(teacher_round(ws, teacher, &spec.mining.split)?);
        } else if spec.uses_rounds() {
            let (r, seconds) = base.round(ws, &mut index, &spec.mining, &split_qrels, progress)?;
            round = Some(r);
            mine_seconds = seconds;
        }
    }

    let run_index = |name: &str| IndexDir::new(run_dir.join(name)).on(ws.base_index.device());
    let passages = if freeze {
        Passages::Frozen(&base)
    } else if spec.refresh == RefreshScope::Incremental {
        Passages::Incremental {
            dir: run_index("index"),
            eval_dir: run_index("eval-index"),
            run_dir: run_dir.to_path_buf(),
        }
    } else {
        Passages::Reencoded(run_index("index"))
    };
    let resumed = checkpoint::latest(run_dir)?
        .map(|dir| checkpoint::load(&dir))
        .transpose()?;
    if let Some(saved) = &resumed {
        check_resumable(saved, &spec, ws)?;
    }
    let start_epoch = resumed.as_ref().map_or(0, |s| s.state.epoch);
    let retired = resumed.as_ref().map(|s| s.state.retired.clone());
    let model = resumed
        .as_ref()
        .map_or_else(|| base.model.clone(), |s| s.model.clone());
    let mut current = Current::open(model, &spec.encoder, ws)?;
    report.epochs.retain(|e| e.epoch <= start_epoch);
    if let Some(saved) = &resumed {
        progress.note(&format!(
            "resuming after epoch {} of {}",
            saved.state.epoch, spec.epochs
        ));
        round = saved.state.round.or(round);
    }
    // Killed between writing the checkpoint and its report entry: that epoch
    // is finished once the training set is known.
    let unfinished = resumed
        .as_ref()
        .filter(|_| report.epochs.last().map(|e| e.epoch) != Some(start_epoch))
        .map(|saved| entry_from(&saved.state, saved.model.dir.clone()));
    let encoder = TrainableEncoder::load(
        &current.model,
        spec.encoder.pooling,
        spec.encoder.normalize,
        ws.device,
    )?;
    let tokenizer = PairTokenizer::load(&base.model, &spec.encoder)?;
    let mut trainer = Trainer::new(encoder, tokenizer, spec.train.clone())?;
    if let Some(frozen) = frozen {
        trainer = trainer.with_frozen_passages(frozen)?;
    }
    if let Some(saved) = resumed {
        trainer
            .restore(saved.moments, saved.state.optimizer_steps)
            .map_err(|problem| Error::Checkpoint {
                path: saved.model.dir.clone(),
                problem,
            })?;
    }

    let mut records = load_records(ws.store, round)?;
    let mut set = training_set(ws, &split_qrels, records.as_deref(), &spec);
    if let Some(retired) = &retired {
        set.restore_retired(retired, &ws.dataset.corpus);
    }
    note_skipped(&mut report, &set, progress);
    if let Some(entry) = unfinished {
        let entry = finish_epoch(ws, &spec, &current, &passages, &set, entry, progress)?;
        report.epochs.push(entry);
        write_report(run_dir, &report)?;
    }
    let ids: Vec<&str> = set.examples.iter().map(|e| e.query_id.as_str()).collect();
    fsutil::write_json_atomic(&run_dir.join(QUERIES_FILE), &ids)?;
    let mut step_log = StepLog::open(run_dir, start_epoch)?;
    let schedule_steps = nominal_steps(&spec, set.len());
    let schedule = Schedule::new(
        spec.train.lr,
        spec.train.warmup_ratio,
        spec.epochs,
        schedule_steps / spec.epochs.max(1) as u64,
    );
    for epoch in start_epoch + 1..=spec.epochs {
        let mut overlap = None;
        if spec.refresh_before(epoch) {
            let (mut index, _) = passages.open(ws, &current, progress)?;
            let (r, seconds) =
                current.round(ws, &mut index, &spec.mining, &split_qrels, progress)?;
            if Some(r) != round {
                let fresh = load_records(ws.store, Some(r))?;
                overlap = records
                    .as_deref()
                    .zip(fresh.as_deref())
                    .map(|(a, b)| cpack_miner::stats::overlap(b, a));
                records = fresh;
                set = training_set(ws, &split_qrels, records.as_deref(), &spec);
                note_skipped(&mut report, &set, progress);
                round = Some(r);
            }
            mine_seconds = seconds;
        }
        if spec.train.batching == Batching::Clustered {
            set.clusters = Some(current.query_clusters(ws, &set, &spec, epoch, progress)?);
        }
        let stats = trainer.train_epoch(
            &mut set,
            (&ws.dataset.corpus, &ws.dataset.queries),
            epoch,
            &schedule,
            progress,
            &mut |record| step_log.append(&record),
        )?;
        step_log.sync()?;
        let state = TrainerState {
            stats,
            mine_seconds: std::mem::take(&mut mine_seconds),
            negatives_overlap: overlap,
            retired: set.retired_ids(&ws.dataset.corpus),
            ..TrainerState::new(epoch, trainer.optimizer().steps(), schedule_steps, round)
        };
        let modules = Modules {
            pooling: spec.encoder.pooling,
            normalize: spec.encoder.normalize,
            max_seq_length: spec.encoder.passage_max_len,
        };
        progress.stage(&format!("saving epoch-{epoch}"), 0);
        let saved = checkpoint::save(
            run_dir,
            &base.model,
            trainer.encoder(),
            trainer.optimizer(),
            &state,
            &modules,
        )?;
        current = Current::open(ModelDir::open(&saved)?, &spec.encoder, ws)?;
        let entry = finish_epoch(
            ws,
            &spec,
            &current,
            &passages,
            &set,
            entry_from(&state, saved),
            progress,
        )?;
        report.epochs.push(entry);
        write_report(run_dir, &report)?;
    }
    Ok(report)
}

/// Refuses a recipe whose step cannot fit in the memory available now,
/// naming a `--mini-batch` that would.
fn check_memory(spec: &RunSpec, cfg: &cpack_model::BertConfig) -> Result<()> {
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
    let advice = match memory::mini_batch_within(cfg, shape, available * 4 / 5) {
        Some(n) => format!(
            "pass --mini-batch {n} (gradient caching: the same gradients, about {} per step)",
            memory::gigabytes(memory::step_bytes(cfg, shape, n))
        ),
        None => "lower --train-batch-size, --group-size or --passage-max-len".into(),
    };
    Err(Error::Invalid(format!(
        "a training step of batch {} × group {} at {} passage tokens needs about {}, \
         and {} is available; {advice}",
        t.batch_size,
        t.group_size,
        spec.encoder.passage_max_len,
        memory::gigabytes(needed),
        memory::gigabytes(available)
    )))
}

/// Refuses a checkpoint that cannot have come from this run, or whose
/// mining round is gone.
fn check_resumable(saved: &checkpoint::Saved, spec: &RunSpec, ws: &Workspace) -> Result<()> {
    if saved.state.epoch > spec.epochs {
        return Err(Error::Checkpoint {
            path: saved.model.dir.join(checkpoint::STATE_FILE),
            problem: format!(
                "says epoch {} of a {}-epoch run; the checkpoint is damaged",
                saved.state.epoch, spec.epochs
            ),
        });
    }
    if let Some(r) = saved.state.round {
        if ws.store.round(r)?.is_none() {
            return Err(Error::Invalid(format!(
                "run {} trained on mining round {r}, which the negatives store no longer holds \
                 (removed by `cpack mine --gc`?); it cannot resume: start a new run",
                spec.name
            )));
        }
    }
    Ok(())
}

/// An epoch's report entry as its checkpoint state records it (before evaluation).
fn entry_from(state: &TrainerState, checkpoint: PathBuf) -> EpochReport {
    EpochReport {
        epoch: state.epoch,
        round: state.round,
        mean_loss: state.stats.mean_loss,
        optimizer_steps: state.stats.optimizer_steps,
        train_seconds: state.stats.seconds,
        train_tokens: state.stats.tokens,
        mine_seconds: state.mine_seconds,
        negatives_overlap: state.negatives_overlap,
        negatives_retired: state.stats.retired,
        encode_seconds: 0.0,
        index_seconds: 0.0,
        passages_encoded: 0,
        eval_encode_seconds: 0.0,
        alignment: None,
        eval: None,
        checkpoint,
    }
}

/// After an epoch's checkpoint: re-encode the corpus with it into the run's
/// index (unless the passages are frozen; only the pool of the next round's
/// negatives when refreshing incrementally) when the next epoch refreshes or
/// an evaluation is asked, then evaluate.
fn finish_epoch(
    ws: &Workspace,
    spec: &RunSpec,
    current: &Current,
    passages: &Passages,
    set: &TrainingSet,
    mut entry: EpochReport,
    progress: &dyn Progress,
) -> Result<EpochReport> {
    let refresh_next = entry.epoch < spec.epochs && spec.refresh_before(entry.epoch + 1);
    let mut eval_index = None;
    match passages {
        Passages::Incremental {
            dir,
            eval_dir,
            run_dir,
        } => {
            if refresh_next && !spec.whole_refresh_before(entry.epoch + 1) {
                let dirs = (dir, run_dir.as_path());
                refresh_incrementally(ws, spec, current, dirs, set, entry.epoch, progress)?
                    .record(&mut entry);
            } else if refresh_next {
                let (index, built) = current.index(ws, dir, progress)?;
                built.record(&mut entry);
                eval_index = Some(index);
            }
            if spec.eval_split.is_some() && eval_index.is_none() {
                let (index, built) = current.index(ws, eval_dir, progress)?;
                entry.eval_encode_seconds = built.encode_seconds + built.index_seconds;
                eval_index = Some(index);
            }
        }
        _ if spec.eval_split.is_some() || refresh_next => {
            let (index, built) = passages.open(ws, current, progress)?;
            built.record(&mut entry);
            eval_index = Some(index);
        }
        _ => {}
    }
    if let (Some(split), Some(index)) = (&spec.eval_split, eval_index.as_mut()) {
        entry.eval = Some(current.evaluate(ws, index, split, progress)?);
    }
    Ok(entry)
}

/// Creates the run folder and its `run.json`, or (resuming) reads the stored spec.
fn prepare_run_dir(run_dir: &Path, spec: RunSpec, resume: bool) -> Result<RunSpec> {
    let spec_path = run_dir.join(SPEC_FILE);
    if resume {
        if !spec_path.exists() {
            return Err(Error::Invalid(format!(
                "there is no run to resume at {} (no {SPEC_FILE})",
                run_dir.display()
            )));
        }
        let mut stored: RunSpec = fsutil::read_json(&spec_path)?;
        // Only the length of the run may change on resume.
        stored.epochs = spec.epochs.max(stored.epochs);
        fsutil::write_json_atomic(&spec_path, &stored)?;
        return Ok(stored);
    }
    if spec_path.exists() {
        return Err(Error::Invalid(format!(
            "run {} already exists at {}; continue it with --resume, or name a new one with --run",
            spec.name,
            run_dir.display()
        )));
    }
    std::fs::create_dir_all(run_dir).map_err(Error::io("create", run_dir))?;
    fsutil::write_json_atomic(&spec_path, &spec)?;
    Ok(spec)
}

fn read_report(run_dir: &Path) -> Result<Option<Report>> {
    let path = run_dir.join(REPORT_FILE);
    Ok(if path.exists() {
        Some(fsutil::read_json(&path)?)
    } else {
        None
    })
}

/// The mining rounds the newest checkpoint of each run in `runs_dir` trained
/// on: a resumed run needs its round again, so `mine --gc` keeps them.
pub fn rounds_in_use(runs_dir: &Path) -> Result<Vec<u32>> {
    if !runs_dir.exists() {
        return Ok(Vec::new());
    }
    let mut rounds = Vec::new();
    for entry in std::fs::read_dir(runs_dir).map_err(Error::io("list", runs_dir))? {
        let entry = entry.map_err(Error::io("list", runs_dir))?;
        if let Some(newest) = checkpoint::latest(&entry.path())? {
            let state: TrainerState = fsutil::read_json(&newest.join(checkpoint::STATE_FILE))?;
            rounds.extend(state.round);
        }
    }
    rounds.sort_unstable();
    rounds.dedup();
    Ok(rounds)
}

/// Refuses a run name that is not one plain path component: letters,
/// digits, `.`, `_` and `-`, not starting with `.`, at most 64 characters.
/// Checked before anything is written, so no name can place a run outside
/// `.cpack/runs/` or straight into it.
pub fn validate_run_name(name: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(plain) {
        return Err(Error::Invalid(format!(
            "run name {name:?} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', \
             not starting with '.' (it names a folder under .cpack/runs/)"
        )));
    }
    Ok(())
}

/// The report of the run in `run_dir`; an error names a missing run, or a
/// run whose first epoch has not finished.
pub fn load_report(run_dir: &Path) -> Result<Report> {
    if !run_dir.join(SPEC_FILE).exists() {
        return Err(Error::Invalid(format!(
            "there is no training run at {} (no {SPEC_FILE}); `cpack report` without --run shows the newest",
            run_dir.display()
        )));
    }
    read_report(run_dir)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no {REPORT_FILE} yet (no epoch has finished)",
            run_dir.display()
        ))
    })
}

fn write_report(run_dir: &Path, report: &Report) -> Result<()> {
    Ok(fsutil::write_json_atomic(
        &run_dir.join(REPORT_FILE),
        report,
    )?)
}

fn load_records(
    store: &NegativeStore,
    round: Option<u32>,
) -> Result<Option<Vec<(String, QueryRecord)>>> {
    round.map(|r| Ok(store.records(r)?)).transpose()
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
        spec.max_queries,
        // The subset follows the workspace's seed, not the training seed, so
        // runs that differ only in `--seed` train on the same queries.
        spec.mining.seed,
    )
}

fn note_skipped(report: &mut Report, set: &TrainingSet, progress: &dyn Progress) {
    let Skipped {
        no_positive,
        not_in_round,
    } = set.skipped.clone();
    if no_positive + not_in_round > 0 {
        progress.note(&format!(
            "{no_positive} queries without a positive and {not_in_round} missing from the mining round are left out"
        ));
    }
    report.train_queries = set.len();
    report.skipped_no_positive = no_positive;
    report.skipped_not_in_round = not_in_round;
}

/// Optimizer steps of the whole run if every batch were full: the span of
/// the learning-rate schedule.
fn nominal_steps(spec: &RunSpec, queries: usize) -> u64 {
    let batches = queries.div_ceil(spec.train.batch_size);
    (batches.div_ceil(spec.train.grad_accum) * spec.epochs) as u64
}
