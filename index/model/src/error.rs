//! Errors of the transformer crate: a model folder that cannot be used, a
//! tokenizer that cannot be read, a device that cannot be opened, or a
//! computation candle refused.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] cpack_core::Error),

    #[error("model {path}: {problem}")]
    Model { path: PathBuf, problem: String },

    #[error("tokenizer {path}")]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },

    #[error("model computation failed")]
    Candle(#[from] candle_core::Error),

    #[error("cannot compute on {device}: it needs an NVIDIA GPU with its driver, and a cpack built with the `cuda` feature (scripts/build-cuda.sh)")]
    Device {
        device: String,
        #[source]
        source: Box<candle_core::Error>,
    },
}

cpack_core::file_errors!(Error::File);

pub type Result<T, E = Error> = std::result::Result<T, E>;
