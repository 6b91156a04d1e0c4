//! Errors of the encoding crate.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] cpack_model::Error),

    #[error(transparent)]
    File(#[from] cpack_core::Error),

    #[error("model computation failed")]
    Candle(#[from] candle_core::Error),

    #[error("ONNX Runtime: cannot {action}")]
    OnnxRuntime {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{0}")]
    Invalid(String),
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

    /// A model folder (its weights file, `path`) that cannot be used.
    pub(crate) fn model(path: &Path, problem: String) -> Error {
        Error::Model(cpack_model::Error::Model {
            path: path.to_path_buf(),
            problem,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
