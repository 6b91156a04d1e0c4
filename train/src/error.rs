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

    #[error(transparent)]
    Index(#[from] cpack_index::Error),

    #[error(transparent)]
    Miner(#[from] cpack_miner::Error),

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

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A file-system error naming the action and the path (cpack-core's
    /// I/O error, so every crate words these alike).
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let io = cpack_core::Error::io(action, path);
        move |source| Error::File(io(source))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
