//! Errors of a training run: the stages' own errors, and what the run
//! itself refuses (a recipe that cannot run, a run folder that is not one).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Boxed: the trainer's error holds every stage's below it.
    #[error(transparent)]
    Train(Box<cpack_train::Error>),

    #[error(transparent)]
    Miner(#[from] cpack_miner::Error),

    #[error(transparent)]
    Index(#[from] cpack_index::Error),

    #[error(transparent)]
    Encode(#[from] cpack_encode::Error),

    #[error(transparent)]
    Model(#[from] cpack_model::Error),

    #[error(transparent)]
    Data(#[from] cpack_data::Error),

    #[error(transparent)]
    File(#[from] cpack_core::Error),

    #[error(transparent)]
    Setting(#[from] cpack_core::InvalidSetting),

    #[error("run name {name:?} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' (it names a folder under .cpack/runs/)")]
    BadRunName { name: String },

    #[error("run {name} already exists at {path}; continue it with `cpack train --resume`, or name a new one with `cpack train --run NAME`")]
    RunExists { name: String, path: PathBuf },

    #[error("reranker run {name} already exists at {path}; continue it with `cpack rerank train --resume`, or name a new one with --run NAME")]
    RerankRunExists { name: String, path: PathBuf },

    #[error("reranker run {name} was started with other settings; resume it with the same flags, or start a new run with --run NAME")]
    RerankSpecChanged { name: String },

    #[error("the negatives store holds no mining round {round}; `cpack mine` makes one, `cpack mine stats` lists them")]
    NoSuchRound { round: u32 },

    #[error("there is no run to resume at {path} (no {file})")]
    NothingToResume { path: PathBuf, file: &'static str },

    #[error("there is no training run at {path} (no {file}); `cpack report` shows the newest run")]
    NoRun { path: PathBuf, file: &'static str },

    #[error("{path} has no {file} yet (no epoch has finished)")]
    NoReport { path: PathBuf, file: &'static str },

    #[error("run {run} trained over the tasks {stored}; the workspace now lists {given}: it cannot resume with other tasks, start a new run")]
    TasksChanged {
        run: String,
        stored: String,
        given: String,
    },

    #[error("{path} has no judgements to train on")]
    NothingToTrain { path: PathBuf },

    #[error("mining round {round} has no negatives for any of its {queries} training queries (its filters or --skip left none); training on it would use random passages alone: loosen the filters, lower the skip or raise the top-k, then mine again")]
    NoNegatives { round: u32, queries: usize },

    #[error("--distill needs a teacher's scores, and mining round {round} has none for its {queries} training queries: mine it with --teacher RERANKER, or import FlagEmbedding JSONL that carries pos_scores and neg_scores")]
    NothingToDistil { round: u32, queries: usize },

    #[error("mining round {round} was mined on another version of the corpus (passages were added, removed or changed since): its negatives may no longer exist; mine a new round with `cpack mine`")]
    RoundOfAnotherCorpus { round: u32 },

    #[error("run {run} trained on mining round {round}, which the negatives store no longer holds (removed by `cpack mine --gc`?); it cannot resume: start a new run")]
    RoundGone { run: String, round: u32 },

    #[error("checkpoint {path}: {problem}")]
    Checkpoint { path: PathBuf, problem: String },

    #[error("checkpoint {path}: its optimizer state does not fit the model")]
    OptimizerState {
        path: PathBuf,
        #[source]
        source: Box<cpack_train::error::StateError>,
    },

    #[error("a training step of batch {batch} × group {group} at {passage_len} passage tokens needs about {needed}, and {available} is available; {fix}")]
    StepTooLarge {
        batch: usize,
        group: usize,
        passage_len: usize,
        needed: String,
        available: String,
        fix: Box<StepFix>,
    },
}

impl From<cpack_train::Error> for Error {
    fn from(e: cpack_train::Error) -> Self {
        Error::Train(Box::new(e))
    }
}

impl Error {
    /// The setting this error refuses, if it is one.
    pub fn setting(&self) -> Option<&cpack_core::InvalidSetting> {
        match self {
            Error::Setting(s) => Some(s),
            Error::Train(e) => e.setting(),
            Error::Miner(e) => e.setting(),
            Error::Index(e) => e.setting(),
            Error::Encode(e) => e.setting(),
            _ => None,
        }
    }
}

/// What would make a training step fit in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum StepFix {
    /// Gradient caching over `mini_batch` texts at a time: the same
    /// gradients, in about `per_step` of memory.
    MiniBatch { mini_batch: usize, per_step: String },
    /// Nothing but a smaller step.
    Smaller,
}

impl std::fmt::Display for StepFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepFix::MiniBatch { mini_batch, per_step } => write!(
                f,
                "set mini_batch = {mini_batch} (gradient caching: the same gradients, about {per_step} per step)"
            ),
            StepFix::Smaller => f.write_str("lower batch_size, group_size or passage_max_len"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
