//! What a run was asked to do, resolved: the recipe with every default and
//! the workspace's choices filled in, stored in `run.json` so `--resume`
//! repeats it exactly.

use crate::recipe::{LoopSettings, TrainRecipe};
use cpack_core::InvalidSetting;
use cpack_data::pairs::PairsSource;
use cpack_encode::EncoderSettings;
use cpack_miner::teacher::TeacherSpec;
use cpack_miner::MiningParams;
use cpack_train::incremental::RefreshScope;
use cpack_train::TrainSettings;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub name: String,
    pub base_model: PathBuf,
    pub encoder: EncoderSettings,
    pub train: TrainSettings,
    /// Epochs, refreshes and the training queries (stored at the top level
    /// of `run.json`, as before the loop's settings had a type).
    #[serde(flatten)]
    pub run: LoopSettings,
    /// Parameters of every mining round the run makes (split included).
    pub mining: MiningParams,
    /// The cross-encoder that scores (and may denoise) the rounds the run mines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherSpec>,
    /// Qrels split evaluated after each epoch; `None` = no evaluation.
    pub eval_split: Option<String>,
    /// The pairs file trained on instead of the workspace's dataset (the
    /// pair stage), through its BEIR view; absent in runs of a dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<PairsSource>,
    /// The tasks of a run over several (`[[task]]` in cpack.toml), in the
    /// order of the workspaces the loop is given; empty for one dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskSpec>,
}

/// One task of a run over several, resolved: where its data is, what its
/// queries are prefixed with, its share of each epoch, and its splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    /// The task's BEIR folder.
    pub data: PathBuf,
    pub query_instruction: String,
    /// Visits of each of its queries per epoch (see [`cpack_train::data::TaskShare`]).
    pub weight: f64,
    /// The split its queries train on (and its rounds are mined for).
    pub split: String,
    /// The split evaluated after each epoch; `None` = not evaluated.
    pub eval_split: Option<String>,
}

impl RunSpec {
    /// The run `recipe` asks for, named `name`, from `base_model` encoded as
    /// `encoder` says; its rounds sample with `mining_seed` (the
    /// workspace's, so runs that differ in the training seed mine alike).
    pub fn new(
        name: &str,
        base_model: PathBuf,
        encoder: EncoderSettings,
        recipe: &TrainRecipe,
        mining_seed: u64,
        eval_split: Option<String>,
    ) -> Result<Self, InvalidSetting> {
        recipe.validate()?;
        let negatives = recipe.trainer.default_negatives();
        let mining = recipe.mining.params(negatives, mining_seed)?;
        let teacher = recipe.mining.teacher_spec()?;
        if let (Some(kind), None, None) =
            (recipe.trainer.distill, &teacher, recipe.run.negatives_from)
        {
            return Err(InvalidSetting::new(
                "distill",
                kind,
                "needs a teacher's scores in the rounds trained on: set teacher (--teacher \
                 RERANKER), or train on a round that has them (--negatives-from)",
            ));
        }
        // Checked against no corpus here: its size only clamps topk.
        mining.clone().validated(usize::MAX)?;
        Ok(RunSpec {
            name: name.to_string(),
            base_model,
            encoder,
            train: recipe.trainer.clone(),
            run: recipe.run.clone(),
            mining,
            teacher,
            eval_split,
            pairs: None,
            tasks: Vec::new(),
        })
    }

    /// Hard negatives are used at all (group size 1 = in-batch negatives only).
    pub fn uses_rounds(&self) -> bool {
        self.train.group_size > 1
    }

    /// A refresh (re-encode, re-index, re-mine) comes before `epoch`.
    pub fn refresh_before(&self, epoch: usize) -> bool {
        self.uses_rounds()
            && self.run.refresh_every > 0
            && epoch > 1
            && (epoch - 1).is_multiple_of(self.run.refresh_every)
    }

    /// The refresh before `epoch` re-encodes the whole corpus.
    pub fn whole_refresh_before(&self, epoch: usize) -> bool {
        let nth = (epoch - 1) / self.run.refresh_every.max(1);
        let every = self.run.full_refresh_every;
        self.run.refresh == RefreshScope::Full || (every > 0 && nth.is_multiple_of(every))
    }

    /// Ranks of each training query's pool an incremental refresh re-encodes.
    pub fn pool_depth(&self) -> usize {
        self.run.refresh_depth.unwrap_or(self.mining.topk)
    }

    /// The epoch whose checkpoint mined the round that `epoch` trains on
    /// (0: the base model).
    pub fn mined_by(&self, epoch: usize) -> usize {
        (2..=epoch)
            .rev()
            .find(|&e| self.refresh_before(e))
            .map_or(0, |e| e - 1)
    }

    /// Optimizer steps of the whole run if every batch were full, given an
    /// epoch's `batches`: the span of the learning-rate schedule.
    pub fn nominal_steps(&self, batches: usize) -> u64 {
        (batches.div_ceil(self.train.grad_accum) * self.run.epochs) as u64
    }

    /// The run's tasks as the loop works through them: each task's
    /// settings, or the run's own for a run of one dataset.
    pub fn task_plans(&self) -> Vec<TaskPlan> {
        if self.tasks.is_empty() {
            return vec![TaskPlan {
                name: String::new(),
                id_prefix: String::new(),
                encoder: self.encoder.clone(),
                mining: self.mining.clone(),
                eval_split: self.eval_split.clone(),
                weight: 1.0,
            }];
        }
        let plan = |task: &TaskSpec| TaskPlan {
            name: task.name.clone(),
            id_prefix: format!("{}/", task.name),
            encoder: EncoderSettings {
                query_instruction: task.query_instruction.clone(),
                ..self.encoder.clone()
            },
            mining: MiningParams {
                split: task.split.clone(),
                ..self.mining.clone()
            },
            eval_split: task.eval_split.clone(),
            weight: task.weight,
        };
        self.tasks.iter().map(plan).collect()
    }

    /// The encoder settings the trainer tokenizes with: with several tasks,
    /// each task's instruction is already part of its merged query texts.
    pub fn trainer_encoder(&self) -> EncoderSettings {
        let mut settings = self.encoder.clone();
        if !self.tasks.is_empty() {
            settings.query_instruction.clear();
        }
        settings
    }
}

/// One task's settings in a run (the run's own for a single dataset).
#[derive(Debug, Clone)]
pub struct TaskPlan {
    /// Empty for the single dataset of a run without tasks.
    pub name: String,
    /// What its ids are prefixed with in the merged training set.
    pub id_prefix: String,
    pub encoder: EncoderSettings,
    pub mining: MiningParams,
    pub eval_split: Option<String>,
    pub weight: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpack_index::align::StaleVectors;
    use cpack_model::Pooling;

    fn spec(refresh_every: usize, epochs: usize) -> RunSpec {
        let recipe = TrainRecipe {
            run: LoopSettings {
                epochs,
                refresh_every,
                ..LoopSettings::default()
            },
            ..TrainRecipe::default()
        };
        let encoder = EncoderSettings {
            pooling: Pooling::Mean,
            normalize: true,
            query_max_len: 32,
            passage_max_len: 64,
            query_instruction: String::new(),
            batch_size: 8,
            batch_tokens: 0,
        };
        RunSpec::new("r", "model".into(), encoder, &recipe, 1, None).unwrap()
    }

    #[test]
    fn refreshes_fall_every_n_epochs_and_rounds_remember_their_miner() {
        let every_other = spec(2, 5);
        let refreshed: Vec<usize> = (1..=5).filter(|&e| every_other.refresh_before(e)).collect();
        assert_eq!(refreshed, [3, 5]);
        assert_eq!(
            (1..=5).map(|e| every_other.mined_by(e)).collect::<Vec<_>>(),
            [0, 0, 2, 2, 4]
        );
        let fixed = spec(0, 3);
        assert!((1..=3).all(|e| !fixed.refresh_before(e) && fixed.mined_by(e) == 0));
    }

    #[test]
    fn a_spec_reads_the_run_json_it_writes_with_the_loop_at_the_top_level() {
        let written = spec(1, 2);
        let json = serde_json::to_value(&written).unwrap();
        assert_eq!(json["epochs"], 2);
        assert_eq!(json["refresh_every"], 1);
        let read: RunSpec = serde_json::from_value(json).unwrap();
        assert_eq!(read, written);
    }

    /// `run.json` as the binary before the crate split wrote it (the
    /// loop's settings were plain fields of `RunSpec` then): `--resume` and
    /// `cpack report` on an older run read it unchanged.
    #[test]
    fn a_run_json_written_before_the_split_still_reads() {
        let old = include_str!("testdata/run-before-the-split.json");
        let spec: RunSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.name, "run-001");
        assert_eq!(spec.run.epochs, 1);
        assert_eq!(spec.run.refresh, RefreshScope::Incremental);
        assert_eq!(spec.run.stale_vectors, StaleVectors::Kept);
        assert_eq!((spec.mining.topk, spec.mining.skip), (20, 2));
        assert_eq!(spec.train.group_size, 3);
        assert_eq!(spec.eval_split, None);
        let rewritten = serde_json::to_value(&spec).unwrap();
        let original: serde_json::Value = serde_json::from_str(old).unwrap();
        assert_eq!(rewritten, original, "the layout written now is the old one");
    }
}
