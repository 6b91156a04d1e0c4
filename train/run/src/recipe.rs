//! The training recipe: one type for `cpack train`'s flags (feature `clap`)
//! and the `[train]` table of `cpack.toml`. It is three parts, each owned
//! by the crate it steers: the loop's own settings ([`LoopSettings`], here),
//! the trainer's ([`TrainSettings`], cpack-train) and the rounds' mining
//! ([`MiningRecipe`], cpack-miner). Their `Default`s are the one source of
//! every default; [`TrainRecipe::validate`] is the one place a recipe is
//! checked before a run folder exists.

use cpack_core::{require, InvalidSetting};
use cpack_index::align::StaleVectors;
use cpack_miner::MiningRecipe;
use cpack_model::ComputeDevice;
use cpack_train::data::TaskOrder;
use cpack_train::incremental::RefreshScope;
use cpack_train::TrainSettings;
use serde::{Deserialize, Serialize};

/// How the loop runs: epochs, when and how the negatives are refreshed,
/// which queries train. Stored in `run.json` beside the other parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct LoopSettings {
    /// Epochs to train.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = LoopSettings::default().epochs))]
    pub epochs: usize,
    /// Re-encode, re-index and re-mine every N epochs; 0 keeps the first
    /// round's negatives (static).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = LoopSettings::default().refresh_every))]
    pub refresh_every: usize,
    /// What a refresh re-encodes: full (the whole corpus) or incremental (only
    /// the training queries' top-k pool in the last round's index and their
    /// positives; the other passages keep their vectors, marked stale in the
    /// index manifest; evaluation then encodes the corpus into an index of its own).
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "SCOPE", default_value_t = LoopSettings::default().refresh))]
    pub refresh: RefreshScope,
    /// With --refresh incremental, every Mth refresh re-encodes the whole
    /// corpus (0 = never).
    #[cfg_attr(feature = "clap", arg(long, value_name = "M", default_value_t = LoopSettings::default().full_refresh_every))]
    pub full_refresh_every: usize,
    /// With --refresh incremental, re-encode only the top K ranks of each
    /// training query's pool (and its positives): fewer passages re-encoded,
    /// more left stale. The next round still mines the whole --topk
    /// [default: the mining --topk].
    #[cfg_attr(feature = "clap", arg(long, value_name = "K"))]
    pub refresh_depth: Option<usize>,
    /// With --refresh incremental, what the passages left out get: `kept`,
    /// their old vectors; `aligned`, those vectors mapped into the new
    /// checkpoint's space by a linear map fitted on the re-encoded passages'
    /// old and new vectors, so the next round ranks stale and fresh passages alike.
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "HOW", default_value_t = LoopSettings::default().stale_vectors))]
    pub stale_vectors: StaleVectors,
    /// Train on a seeded subset of N queries of the split (the workspace's
    /// seed picks it, so runs that differ only in --seed train on the same queries).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub max_queries: Option<usize>,
    /// Train on negatives mined by another model (a larger teacher): round N
    /// of the negatives store, for the first epoch and, with
    /// --refresh-every 0, for all. By default a run never trains on a round
    /// another model mined.
    #[cfg_attr(feature = "clap", arg(long, value_name = "ROUND"))]
    pub negatives_from: Option<u32>,
    /// With several [[task]]s in cpack.toml: how their batches (each of one
    /// task) follow one another. proportional shuffles them all together,
    /// so a task comes up in proportion to its queries times its weight;
    /// round-robin takes one batch of each task in turn.
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "ORDER", default_value_t = LoopSettings::default().task_order))]
    #[serde(skip_serializing_if = "TaskOrder::is_proportional")]
    pub task_order: TaskOrder,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            epochs: 1,
            refresh_every: 1,
            refresh: RefreshScope::Full,
            full_refresh_every: 0,
            refresh_depth: None,
            stale_vectors: StaleVectors::Kept,
            max_queries: None,
            negatives_from: None,
            task_order: TaskOrder::Proportional,
        }
    }
}

impl LoopSettings {
    /// Refuses a loop that cannot run with `trainer`'s settings.
    pub fn validate(&self, trainer: &TrainSettings) -> Result<(), InvalidSetting> {
        require(
            self.epochs >= 1,
            "epochs",
            self.epochs,
            "must be at least 1",
        )?;
        if let Some(n) = self.max_queries {
            require(
                n >= 1,
                "max_queries",
                n,
                "must be at least 1 (it counts training queries)",
            )?;
        }
        let incremental = self.refresh == RefreshScope::Incremental;
        let refreshes_rounds =
            !trainer.freeze_passages && self.refresh_every > 0 && trainer.group_size > 1;
        require(
            !incremental || refreshes_rounds,
            "refresh",
            "incremental",
            "needs refreshes of mined negatives: a refresh_every of 1 or more, a group_size \
             above 1, and no freeze_passages (which never re-encodes)",
        )?;
        if let Some(depth) = self.refresh_depth {
            require(
                depth >= 1,
                "refresh_depth",
                depth,
                "must be at least 1 (the pool's top rank)",
            )?;
            if !incremental {
                let problem = "sets how much an incremental refresh re-encodes";
                return Err(InvalidSetting::new("refresh_depth", depth, problem)
                    .needs("refresh", RefreshScope::Incremental));
            }
        }
        if !incremental && self.stale_vectors != StaleVectors::Kept {
            let problem = "maps the passages an incremental refresh leaves out";
            return Err(
                InvalidSetting::new("stale_vectors", self.stale_vectors, problem)
                    .needs("refresh", RefreshScope::Incremental),
            );
        }
        Ok(())
    }
}

/// The split evaluated after each epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum EvalSplit {
    /// `dev` if the dataset has it, else `test`, else none.
    #[default]
    Auto,
    /// No evaluation.
    None,
    /// This qrels split.
    Split(String),
}

impl EvalSplit {
    /// The split to evaluate, among those `has(split)` says exist.
    pub fn resolve(&self, has: impl Fn(&str) -> bool) -> Option<String> {
        match self {
            EvalSplit::Auto => ["dev", "test"]
                .into_iter()
                .find(|s| has(s))
                .map(str::to_string),
            EvalSplit::None => None,
            EvalSplit::Split(split) => Some(split.clone()),
        }
    }
}

impl From<String> for EvalSplit {
    fn from(s: String) -> Self {
        match s.as_str() {
            "auto" => EvalSplit::Auto,
            "none" => EvalSplit::None,
            _ => EvalSplit::Split(s),
        }
    }
}

impl From<EvalSplit> for String {
    fn from(e: EvalSplit) -> String {
        e.to_string()
    }
}

impl std::str::FromStr for EvalSplit {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.to_string().into())
    }
}

impl std::fmt::Display for EvalSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalSplit::Auto => f.write_str("auto"),
            EvalSplit::None => f.write_str("none"),
            EvalSplit::Split(split) => f.write_str(split),
        }
    }
}

/// Everything `cpack train` is asked: the `[train]` table, its flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct TrainRecipe {
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(flatten)]
    pub run: LoopSettings,
    /// Split evaluated after each epoch: a qrels split, `none`, or `auto`
    /// (dev if present, else test).
    #[cfg_attr(feature = "clap", arg(long, value_name = "SPLIT", default_value_t = EvalSplit::default()))]
    pub eval_split: EvalSplit,
    /// Where the trainer keeps the weights and runs its steps (`cpu`,
    /// `cuda`, `cuda:N`); default: where the encoder computes. The flag is
    /// `--device`, shared with the encoder.
    #[cfg_attr(feature = "clap", arg(skip))]
    pub device: Option<ComputeDevice>,
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(flatten)]
    pub trainer: TrainSettings,
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(flatten)]
    pub mining: MiningRecipe,
}

impl TrainRecipe {
    /// Refuses a recipe no run could follow (before anything is written).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.trainer.validate()?;
        self.run.validate(&self.trainer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_split_words_round_trip() {
        for (text, split) in [
            ("auto", EvalSplit::Auto),
            ("none", EvalSplit::None),
            ("dev", EvalSplit::Split("dev".into())),
        ] {
            assert_eq!(text.parse::<EvalSplit>().unwrap(), split);
            assert_eq!(split.to_string(), text);
        }
        let has_test = |s: &str| s == "test";
        assert_eq!(EvalSplit::Auto.resolve(has_test), Some("test".into()));
        assert_eq!(EvalSplit::None.resolve(has_test), None);
    }

    #[test]
    fn incremental_settings_without_an_incremental_refresh_are_refused() {
        let trainer = TrainSettings::default();
        let deep = LoopSettings {
            refresh_depth: Some(12),
            ..LoopSettings::default()
        };
        assert_eq!(deep.validate(&trainer).unwrap_err().key, "refresh_depth");
        let frozen = TrainSettings {
            freeze_passages: true,
            ..trainer.clone()
        };
        let incremental = LoopSettings {
            refresh: RefreshScope::Incremental,
            ..LoopSettings::default()
        };
        assert_eq!(incremental.validate(&frozen).unwrap_err().key, "refresh");
        assert!(incremental.validate(&trainer).is_ok());
    }
}
