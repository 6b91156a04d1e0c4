//! The one error type of the train crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] cpack_core::Error),

    #[error(transparent)]
    Model(#[from] cpack_model::Error),

    #[error(transparent)]
    Encode(#[from] cpack_encode::Error),

    #[error(transparent)]
    Data(#[from] cpack_data::Error),

    /// Boxed, as `Miner`: their errors are the largest of the stages'.
    #[error(transparent)]
    Index(Box<cpack_index::Error>),

    #[error(transparent)]
    Miner(Box<cpack_miner::Error>),

    #[error("training computation failed")]
    Candle(#[from] candle_core::Error),

    #[error("checkpoint {path}: {problem}")]
    Checkpoint { path: PathBuf, problem: String },

    #[error(
        "the loss became {value} at epoch {epoch}, batch {batch} (step {step}; queries {queries}); \
         training stopped and the last good checkpoint was kept — try a lower --lr or a higher --temperature"
    )]
    NonFiniteLoss {
        value: f32,
        epoch: usize,
        batch: usize,
        step: u64,
        queries: String,
    },

    #[error(transparent)]
    Setting(#[from] cpack_core::InvalidSetting),

    #[error("{path}, line {line}: not a step record")]
    BadStep {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },

    #[error("passage {id} is not in the index the passages are frozen to; rebuild it with `cpack index build`")]
    NotInFrozenIndex { id: String },

    #[error("the frozen passage vectors have {frozen} dimensions and the model {model}")]
    FrozenDimension { frozen: usize, model: usize },

    #[error("the loss does not reach the embeddings")]
    DetachedLoss,

    #[error("optimizer state: {0}")]
    OptimizerState(#[from] StateError),
}

impl From<cpack_index::Error> for Error {
    fn from(e: cpack_index::Error) -> Self {
        Error::Index(Box::new(e))
    }
}

impl From<cpack_miner::Error> for Error {
    fn from(e: cpack_miner::Error) -> Self {
        Error::Miner(Box::new(e))
    }
}

impl Error {
    /// The setting this error refuses, if it is one.
    pub fn setting(&self) -> Option<&cpack_core::InvalidSetting> {
        match self {
            Error::Setting(s) => Some(s),
            Error::Encode(e) => e.setting(),
            Error::Index(e) => e.setting(),
            Error::Miner(e) => e.setting(),
            _ => None,
        }
    }
}

/// Saved optimizer state that does not fit the model it is restored to.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no {key}")]
    Missing { key: String },
    #[error("{key} has shape {found:?}, expected {expected:?}")]
    Shape {
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("the moments of {name} cannot be read")]
    Unreadable {
        name: String,
        #[source]
        source: candle_core::Error,
    },
}

cpack_core::file_errors!(Error::File);

pub type Result<T, E = Error> = std::result::Result<T, E>;
