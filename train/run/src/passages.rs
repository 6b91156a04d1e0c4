//! Where the passages a run searches come from after each epoch — its own
//! index re-encoded by the new checkpoint, the base index kept frozen, or
//! its own index refreshed incrementally — and what an epoch's end builds.

use crate::error::Result;
use crate::layout::RunDir;
use crate::phase::{ActiveModel, Built};
use crate::report::{EpochReport, EvalPoint};
use crate::spec::RunSpec;
use crate::workspace::Workspace;
use cpack_core::Progress;
use cpack_encode::EmbeddingStamp;
use cpack_index::store::{IndexDir, OpenIndex, PartialPlan};
use cpack_index::vector::IndexDevice;
use cpack_model::ModelDir;
use cpack_train::data::TrainingSet;
use cpack_train::incremental::{self, RefreshScope};

/// Where the current model's queries are searched after an epoch.
pub enum Passages {
    /// The run's own index (a task's own, with several), re-encoded with each checkpoint.
    Reencoded(IndexDir),
    /// The base model's index, never re-encoded: query-side training.
    Frozen,
    /// The run's own index, refreshed incrementally (see
    /// [`cpack_train::incremental`]);
    /// evaluation encodes the whole corpus into an index of its own.
    Incremental {
        dir: IndexDir,
        eval_dir: IndexDir,
        run: RunDir,
    },
}

impl Passages {
    /// Where `spec`'s run in `run` finds the passages of `task` (empty: the
    /// run's one dataset).
    pub fn of(spec: &RunSpec, task: &str, run: &RunDir, device: IndexDevice) -> Self {
        if spec.train.freeze_passages {
            Passages::Frozen
        } else if spec.run.refresh == RefreshScope::Incremental {
            Passages::Incremental {
                dir: run.index(device),
                eval_dir: run.eval_index(device),
                run: run.clone(),
            }
        } else {
            Passages::Reencoded(run.task_index(task, device))
        }
    }

    /// The index for `current`'s queries (building the run's own first when
    /// it is not up to date), and what building it cost; `base` is the base model.
    pub fn open(
        &self,
        ws: &Workspace,
        (base, current): (&ActiveModel, &ActiveModel),
        progress: &dyn Progress,
    ) -> Result<(OpenIndex, Built)> {
        match self {
            Passages::Reencoded(dir) => current.index(ws, dir, progress),
            // Frozen passages are never re-encoded: nothing to report.
            Passages::Frozen => {
                let (index, _) = base.index(ws, ws.base_index, progress)?;
                Ok((index, Built::default()))
            }
            // Refreshed after the epoch (`finish_epoch`): only opened here.
            Passages::Incremental { dir, .. } => {
                let stamp = EmbeddingStamp::of(&current.model, &current.encoder)?;
                Ok((dir.open(&stamp, &ws.dataset.corpus)?, Built::default()))
            }
        }
    }
}

/// The incremental refresh after `epoch` (see [`cpack_train::incremental`]): the
/// training queries' pool in the index their round was mined from is
/// re-encoded with `current` into `dir`.
fn refresh_incrementally(
    ws: &Workspace,
    spec: &RunSpec,
    current: &ActiveModel,
    (dir, run): (&IndexDir, &RunDir),
    set: &TrainingSet,
    epoch: usize,
    progress: &dyn Progress,
) -> Result<Built> {
    let own = EmbeddingStamp::of(&current.model, &current.encoder)?;
    let live = dir.current()?;
    if let Some((_, manifest)) = live.as_ref().filter(|(_, m)| m.plan.stamp == own) {
        // Killed after the swap, before the report: already refreshed, and
        // the manifest says how.
        return Ok(Built::of(manifest));
    }
    let miner = match spec.mined_by(epoch) {
        0 => spec.base_model.clone(),
        e => run.checkpoint(e),
    };
    let miner = ActiveModel::open(ModelDir::open(&miner)?, &spec.encoder, ws)?;
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
    let partial = PartialPlan::over(&base, rows, spec.run.stale_vectors)?;
    drop(base);
    let (_, built) = current.build(ws, dir, Some(partial), progress)?;
    Ok(built)
}

/// After an epoch's checkpoint: re-encode the corpus with it into the run's
/// index (unless the passages are frozen; only the pool of the next round's
/// negatives when refreshing incrementally) when the next epoch refreshes or
/// an evaluation is asked, then evaluate. What building cost is added to
/// `entry`; the evaluation (of `eval_split`) is returned.
pub fn finish_epoch(
    ws: &Workspace,
    spec: &RunSpec,
    (base, current): (&ActiveModel, &ActiveModel),
    (passages, eval_split): (&Passages, Option<&str>),
    set: &TrainingSet,
    entry: &mut EpochReport,
    progress: &dyn Progress,
) -> Result<Option<EvalPoint>> {
    let refresh_next = entry.epoch < spec.run.epochs && spec.refresh_before(entry.epoch + 1);
    let mut eval_index = None;
    match passages {
        Passages::Incremental { dir, eval_dir, run } => {
            if refresh_next && !spec.whole_refresh_before(entry.epoch + 1) {
                let dirs = (dir, run);
                refresh_incrementally(ws, spec, current, dirs, set, entry.epoch, progress)?
                    .record(entry);
            } else if refresh_next {
                let (index, built) = current.index(ws, dir, progress)?;
                built.record(entry);
                eval_index = Some(index);
            }
            if eval_split.is_some() && eval_index.is_none() {
                let (index, built) = current.index(ws, eval_dir, progress)?;
                entry.eval_encode_seconds += built.encode_seconds + built.index_seconds;
                eval_index = Some(index);
            }
        }
        _ if eval_split.is_some() || refresh_next => {
            let (index, built) = passages.open(ws, (base, current), progress)?;
            built.record(entry);
            eval_index = Some(index);
        }
        _ => {}
    }
    match (eval_split, eval_index.as_mut()) {
        (Some(split), Some(index)) => Ok(Some(current.evaluate(ws, index, split, progress)?)),
        _ => Ok(None),
    }
}
