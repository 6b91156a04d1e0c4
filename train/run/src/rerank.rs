//! Training a reranker on a mined round, and the owner of
//! `.cpack/rerankers/`: per training query one positive and `group − 1`
//! of the round's negatives as (query, passage) pairs, FlagEmbedding's
//! reranker loss, the embedder's optimizer, schedule, clipping and
//! mini-batches ([`cpack_train::cross`]), a checkpoint per epoch that
//! `CrossEncoder(path)` loads, and, when asked, each checkpoint's
//! evaluation: the workspace index's top hits reranked by it.
//!
//! ```text
//! .cpack/rerankers/<run>/
//!   rerank.json     the RerankSpec: what was asked, repeated by --resume
//!   report.json     per-epoch loss, timings and evaluation; rewritten atomically
//!   steps.jsonl     every optimizer step (cpack_train::steps): what a peer replays
//!   epoch-N/        checkpoints (cpack_train::checkpoint)
//! ```
//!
//! A killed run resumes from its last checkpoint: the epoch's batches are a
//! pure function of (seed, epoch) and the optimizer state is in the
//! checkpoint, so it reaches the weights an uninterrupted run reaches.

use crate::error::{Error, Result};
use crate::layout::RunDir;
use cpack_core::{fsutil, require, Progress};
use cpack_data::dataset::{Dataset, Qrels};
use cpack_data::metrics::RetrievalMetrics;
use cpack_encode::{ComputeDevice, CrossEncoder, Encoder, RerankSettings};
use cpack_index::evaluate::{evaluate_index, Rerank};
use cpack_index::store::OpenIndex;
use cpack_miner::NegativeStore;
use cpack_model::{ModelDir, TextTokenizer};
use cpack_train::checkpoint::{self, TrainerState};
use cpack_train::cross::{CrossTrainer, TrainableCrossEncoder};
use cpack_train::data::TrainingSet;
use cpack_train::optim::Schedule;
use cpack_train::steps::StepLog;
use cpack_train::trainer::run_epoch;
use cpack_train::TrainSettings;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The file that makes a folder of `.cpack/rerankers/` a reranker run.
pub const SPEC_FILE: &str = "rerank.json";
const REPORT_FILE: &str = "report.json";

/// What a reranker run was asked: stored, and repeated exactly by a resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankSpec {
    /// The model it starts from: a cross-encoder, or an embedder that gets a new head.
    pub base_model: PathBuf,
    pub base_fingerprint: String,
    /// The mining round whose negatives it trains on.
    pub round: u32,
    /// The qrels split of its training queries.
    pub split: String,
    /// Its training queries: a seeded subset of this many (the workspace's seed).
    pub max_queries: Option<usize>,
    pub subset_seed: u64,
    /// Tokens of a pair at most (the longer side cut first).
    pub max_len: usize,
    pub epochs: usize,
    pub train: TrainSettings,
}

/// One epoch of a reranker run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankEpoch {
    pub epoch: usize,
    pub mean_loss: f64,
    pub optimizer_steps: u64,
    pub train_seconds: f64,
    pub checkpoint: PathBuf,
    pub eval: Option<RerankEval>,
}

/// The workspace index's retrieval on a split, before and after the
/// checkpoint reranks each query's top `depth` hits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankEval {
    pub split: String,
    pub depth: usize,
    pub retrieval: RetrievalMetrics,
    pub reranked: RetrievalMetrics,
    pub rerank_seconds: f64,
}

/// `report.json` of a reranker run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankReport {
    pub spec: RerankSpec,
    pub epochs: Vec<RerankEpoch>,
}

/// What a reranker run reads from its workspace.
pub struct RerankWorkspace<'a> {
    pub dataset: &'a Dataset,
    pub store: &'a NegativeStore,
    pub device: ComputeDevice,
    /// Workers of the evaluation's reranking.
    pub threads: usize,
}

/// The evaluation after each epoch: the workspace's encoder and index, and
/// the split and depth to rerank.
pub struct RerankEvaluation<'a> {
    pub encoder: &'a Encoder,
    pub index: &'a mut OpenIndex,
    pub split: String,
    pub qrels: Qrels,
    pub depth: usize,
}

/// Trains (or, with `resume`, continues) the reranker run in `dir`.
pub fn train_reranker(
    ws: &RerankWorkspace,
    spec: RerankSpec,
    dir: &RunDir,
    resume: bool,
    mut evaluation: Option<RerankEvaluation>,
    progress: &dyn Progress,
) -> Result<RerankReport> {
    // Everything that can refuse the run does so before its folder exists.
    let base = ModelDir::open(&spec.base_model)?;
    check(&spec, &base)?;
    let set = training_set(ws, &spec)?;
    let spec = settle_spec(dir, spec, resume)?;
    let mut report = match fsutil::read_json::<RerankReport>(&dir.path().join(REPORT_FILE)) {
        Ok(report) if resume && report.spec == spec => report,
        _ => RerankReport {
            spec: spec.clone(),
            epochs: Vec::new(),
        },
    };
    let (mut trainer, done) = open_trainer(ws, &spec, &base, dir)?;
    report.epochs.truncate(done);
    let nominal = set.nominal_batches(spec.train.batch_size);
    let steps_per_epoch = nominal.div_ceil(spec.train.grad_accum) as u64;
    let schedule = Schedule::new(
        spec.train.lr,
        spec.train.warmup_ratio,
        spec.epochs,
        steps_per_epoch,
    );
    let mut set = set;
    let mut step_log = StepLog::open(dir.path(), done)?;
    for epoch in done + 1..=spec.epochs {
        let texts = (&ws.dataset.corpus, &ws.dataset.queries);
        let on_step = &mut |record| step_log.append(&record);
        let stats = run_epoch(
            &mut trainer,
            &mut set,
            texts,
            epoch,
            &schedule,
            progress,
            on_step,
        )?;
        step_log.sync()?;
        let steps = trainer.optimizer().steps();
        let mut state = TrainerState::new(
            epoch,
            steps,
            steps_per_epoch * spec.epochs as u64,
            Some(spec.round),
        );
        state.stats = stats.clone();
        let saved = checkpoint::save_reranker(
            dir.path(),
            &base,
            trainer.model(),
            trainer.optimizer(),
            &state,
        )?;
        let eval = match evaluation.as_mut() {
            Some(e) => Some(evaluate(ws, &spec, &saved, e, progress)?),
            None => None,
        };
        report.epochs.push(RerankEpoch {
            epoch,
            mean_loss: stats.mean_loss,
            optimizer_steps: stats.optimizer_steps,
            train_seconds: stats.seconds,
            checkpoint: saved,
            eval,
        });
        fsutil::write_json_atomic(&dir.path().join(REPORT_FILE), &report)?;
    }
    Ok(report)
}

/// Refuses settings no step can run with: the recipe's own checks, and a
/// pair length the model's position table cannot hold.
fn check(spec: &RerankSpec, base: &ModelDir) -> Result<()> {
    spec.train.validate()?;
    let held = base.config.max_tokens();
    let problem =
        format!("is outside 2..={held} (the longest input the model's position table holds)");
    require(
        (2..=held).contains(&spec.max_len),
        "max_len",
        spec.max_len,
        &problem,
    )?;
    Ok(())
}

/// The spec the run trains with: `spec`, written for a new run; the stored
/// one for a resume, which must be what was asked again.
fn settle_spec(dir: &RunDir, spec: RerankSpec, resume: bool) -> Result<RerankSpec> {
    let path = dir.path().join(SPEC_FILE);
    match (path.exists(), resume) {
        (true, false) => Err(Error::RerankRunExists {
            name: dir.name().to_string(),
            path: dir.path().to_path_buf(),
        }),
        (false, true) => Err(Error::NothingToResume {
            path: dir.path().to_path_buf(),
            file: SPEC_FILE,
        }),
        (true, true) => {
            let stored: RerankSpec = fsutil::read_json(&path)?;
            if stored != spec {
                return Err(Error::RerankSpecChanged {
                    name: dir.name().to_string(),
                });
            }
            Ok(stored)
        }
        (false, false) => {
            std::fs::create_dir_all(dir.path())
                .map_err(cpack_core::Error::io("create", dir.path()))?;
            fsutil::write_json_atomic(&path, &spec)?;
            Ok(spec)
        }
    }
}

/// The training queries with the round's negatives.
fn training_set(ws: &RerankWorkspace, spec: &RerankSpec) -> Result<TrainingSet> {
    let Some(manifest) = ws.store.round(spec.round)? else {
        return Err(Error::NoSuchRound { round: spec.round });
    };
    if manifest.corpus_fingerprint != ws.dataset.corpus.fingerprint() {
        return Err(Error::RoundOfAnotherCorpus { round: spec.round });
    }
    let records = ws.store.records(spec.round)?;
    let qrels = ws.dataset.qrels(&spec.split)?;
    let (corpus, queries) = (&ws.dataset.corpus, &ws.dataset.queries);
    let set = TrainingSet::build(
        corpus,
        queries,
        &qrels,
        Some(&records),
        spec.max_queries,
        spec.subset_seed,
    );
    if set.is_empty() {
        return Err(Error::NothingToTrain {
            path: ws.dataset.paths.qrels(&spec.split),
        });
    }
    let wanted = spec.train.group_size.saturating_sub(1);
    if wanted > 0 && set.negative_supply(wanted).is_empty() {
        return Err(Error::NoNegatives {
            round: spec.round,
            queries: set.len(),
        });
    }
    Ok(set)
}

/// The trainer at the run's last checkpoint (and the epochs it holds), or
/// at the base model.
fn open_trainer(
    ws: &RerankWorkspace,
    spec: &RerankSpec,
    base: &ModelDir,
    dir: &RunDir,
) -> Result<(CrossTrainer, usize)> {
    let seed = spec.train.seed;
    let latest = checkpoint::latest(dir.path())?;
    let saved = latest.as_deref().map(checkpoint::load).transpose()?;
    let model = match &saved {
        Some(saved) => TrainableCrossEncoder::load(&saved.model, ws.device, seed)?,
        None => TrainableCrossEncoder::load(base, ws.device, seed)?,
    };
    let tokenizer = TextTokenizer::load(&base.tokenizer, spec.max_len)?;
    let mut trainer = CrossTrainer::new(model, tokenizer, spec.train.clone())?;
    let Some(saved) = saved else {
        return Ok((trainer, 0));
    };
    let state = saved.state;
    trainer
        .restore(saved.moments, state.optimizer_steps)
        .map_err(|source| Error::OptimizerState {
            path: latest.clone().unwrap_or_default(),
            source: Box::new(source),
        })?;
    Ok((trainer, state.epoch))
}

/// The index's metrics on the split, and after the checkpoint at `saved`
/// reranks each query's top hits.
fn evaluate(
    ws: &RerankWorkspace,
    spec: &RerankSpec,
    saved: &Path,
    e: &mut RerankEvaluation,
    progress: &dyn Progress,
) -> Result<RerankEval> {
    let queries = &ws.dataset.queries;
    let plain = evaluate_index(e.encoder, e.index, queries, &e.qrels, None, progress)?;
    let model = ModelDir::open(saved)?;
    let settings = RerankSettings {
        max_len: spec.max_len,
        ..RerankSettings::declared_by(&model)
    };
    let reranker = CrossEncoder::load(&model, settings, ws.device, ws.threads)?;
    let rerank = Rerank {
        model: &reranker,
        corpus: &ws.dataset.corpus,
        depth: e.depth,
    };
    let started = Instant::now();
    let reranked = evaluate_index(
        e.encoder,
        e.index,
        queries,
        &e.qrels,
        Some(&rerank),
        progress,
    )?;
    Ok(RerankEval {
        split: e.split.clone(),
        depth: e.depth,
        retrieval: plain.metrics,
        reranked: reranked.metrics,
        rerank_seconds: started.elapsed().as_secs_f64(),
    })
}
