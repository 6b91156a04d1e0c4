//! `report.json`: the run's curve, one entry per finished epoch, rewritten
//! atomically after each.

use crate::error::{Error, Result};
use crate::layout::RunDir;
use crate::spec::RunSpec;
use cpack_core::fsutil;
use cpack_data::metrics::RetrievalMetrics;
use cpack_index::align::AlignmentFit;
use cpack_train::checkpoint::TrainerState;
use cpack_train::data::NegativeSupply;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// Mining that produced this epoch's round (0 when the round was
    /// reused), the teacher's scoring not included.
    pub mine_seconds: f64,
    /// A teacher's scoring of the round's pools.
    #[serde(default)]
    pub teacher_seconds: f64,
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
    /// The evaluation; with several tasks, the mean of theirs.
    pub eval: Option<EvalPoint>,
    pub checkpoint: PathBuf,
    /// With several tasks: each task's round and evaluation, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, TaskEpoch>,
}

/// One task's part of an epoch of a run over several.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskEpoch {
    pub round: Option<u32>,
    pub eval: Option<EvalPoint>,
}

/// A training set's part of a run (the run's, or one task's of several):
/// its training queries, how its rounds fill its groups, and the base
/// model's evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub train_queries: usize,
    pub skipped_no_positive: usize,
    pub skipped_not_in_round: usize,
    /// How each round trained on filled the training groups (queries left
    /// without negatives, or short of a group), by round.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "rounds_keyed"
    )]
    pub negative_supply: BTreeMap<u32, NegativeSupply>,
    pub base: Option<EvalPoint>,
}

/// Round numbers as the JSON object's keys, read back as numbers: a map of
/// a flattened struct reaches serde with its keys as strings only.
fn rounds_keyed<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<u32, NegativeSupply>, D::Error> {
    let by_text = BTreeMap::<String, NegativeSupply>::deserialize(deserializer)?;
    (by_text.into_iter())
        .map(|(key, supply)| match key.parse() {
            Ok(round) => Ok((round, supply)),
            Err(_) => Err(serde::de::Error::custom(format!(
                "round {key:?} is not a number"
            ))),
        })
        .collect()
}

/// `report.json`: the run's curve, rewritten after every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub spec: RunSpec,
    /// The run's training set and base model (stored at the top level of
    /// `report.json`); with several tasks, the sums of their queries and
    /// the mean of their base evaluations.
    #[serde(flatten)]
    pub totals: TaskReport,
    pub epochs: Vec<EpochReport>,
    /// With several tasks: each task's part, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, TaskReport>,
}

impl Report {
    /// The report of a run that has not finished an epoch yet.
    pub fn new(spec: RunSpec) -> Self {
        Report {
            spec,
            totals: TaskReport::default(),
            epochs: Vec::new(),
            tasks: BTreeMap::new(),
        }
    }

    /// The report of `run`, if one was written.
    pub fn read(run: &RunDir) -> Result<Option<Report>> {
        let path = run.report_file();
        Ok(if path.exists() {
            Some(fsutil::read_json(&path)?)
        } else {
            None
        })
    }

    /// The report of `run`; an error names a missing run, or a run whose
    /// first epoch has not finished.
    pub fn load(run: &RunDir) -> Result<Report> {
        run.spec()?;
        Report::read(run)?.ok_or_else(|| Error::NoReport {
            path: run.path().to_path_buf(),
            file: RunDir::REPORT_FILE,
        })
    }

    pub fn write(&self, run: &RunDir) -> Result<()> {
        Ok(fsutil::write_json_atomic(&run.report_file(), self)?)
    }
}

impl EpochReport {
    /// An epoch's report entry as its checkpoint state records it (before evaluation).
    pub fn from_state(state: &TrainerState, checkpoint: PathBuf) -> EpochReport {
        EpochReport {
            epoch: state.epoch,
            round: state.round,
            mean_loss: state.stats.mean_loss,
            optimizer_steps: state.stats.optimizer_steps,
            train_seconds: state.stats.seconds,
            train_tokens: state.stats.tokens,
            mine_seconds: state.mine_seconds,
            teacher_seconds: state.teacher_seconds,
            negatives_overlap: state.negatives_overlap,
            negatives_retired: state.stats.retired,
            encode_seconds: 0.0,
            index_seconds: 0.0,
            passages_encoded: 0,
            eval_encode_seconds: 0.0,
            alignment: None,
            eval: None,
            checkpoint,
            tasks: (state.task_rounds.iter())
                .map(|(name, &round)| {
                    let round = Some(round);
                    (name.clone(), TaskEpoch { round, eval: None })
                })
                .collect(),
        }
    }
}

/// The mean of several tasks' evaluations (each task weighs alike, as
/// C-MTEB averages its tasks) over the tasks that have one (a pairs task
/// has no judged split); `None` if none has.
pub fn mean_eval<'a>(points: impl IntoIterator<Item = Option<&'a EvalPoint>>) -> Option<EvalPoint> {
    let points: Vec<&EvalPoint> = points.into_iter().flatten().collect();
    if points.is_empty() {
        return None;
    }
    let n = points.len() as f64;
    let mean =
        |f: fn(&RetrievalMetrics) -> f64| points.iter().map(|p| f(&p.metrics)).sum::<f64>() / n;
    Some(EvalPoint {
        metrics: RetrievalMetrics {
            queries: points.iter().map(|p| p.metrics.queries).sum(),
            ndcg_at_10: mean(|m| m.ndcg_at_10),
            mrr_at_10: mean(|m| m.mrr_at_10),
            recall_at_10: mean(|m| m.recall_at_10),
            recall_at_100: mean(|m| m.recall_at_100),
        },
        seconds: points.iter().map(|p| p.seconds).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run-level part is flattened into the top level of `report.json`
    /// (where it always was) and reads back whole, round keys included.
    #[test]
    fn a_report_reads_back_what_it_writes_at_the_top_level() {
        let spec: RunSpec =
            serde_json::from_str(include_str!("testdata/run-before-the-split.json")).unwrap();
        let mut report = Report::new(spec);
        report.totals.train_queries = 7;
        let supply = NegativeSupply {
            queries: 7,
            without: 1,
            short: 2,
        };
        report.totals.negative_supply.insert(3, supply);
        report.tasks.insert("a".into(), report.totals.clone());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["train_queries"], 7);
        assert_eq!(json["negative_supply"]["3"]["short"], 2);
        assert!(json.get("totals").is_none());
        let read: Report = serde_json::from_value(json).unwrap();
        assert_eq!(read, report);
    }
}
