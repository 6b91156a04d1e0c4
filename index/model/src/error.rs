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

impl Error {
    /// An I/O error naming what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let io = cpack_core::Error::io(action, path);
        move |source| Error::File(io(source))
    }

    pub(crate) fn bad_file(path: &std::path::Path, problem: String) -> Error {
        Error::File(cpack_core::Error::BadFile {
            path: path.to_path_buf(),
            problem,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
