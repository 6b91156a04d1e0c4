//! The one error type of the index crate.
//!
//! Every variant names the file (and, for line-oriented input, the line) it is
//! about, so the CLI can print one readable line plus its cause chain.

use std::path::PathBuf;

/// Errors raised while loading data or models, encoding, or touching the index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}:{line}: {problem}")]
    BadLine {
        path: PathBuf,
        line: usize,
        problem: String,
    },

    #[error("{path}: {problem}")]
    BadFile { path: PathBuf, problem: String },

    #[error("{path}: invalid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

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

    #[error("vector index ({backend}): {problem}")]
    VectorIndex {
        backend: &'static str,
        problem: String,
    },

    #[error(
        "the index at {path} was built with {field} = {index_value}, but the workspace uses {workspace_value}; \
         rebuild it with `cpack index build`"
    )]
    Mismatch {
        path: PathBuf,
        field: &'static str,
        index_value: String,
        workspace_value: String,
    },

    #[error(
        "the index at {path} was built from another version of the corpus \
         (passages changed, added or removed since); rebuild it with `cpack index build`"
    )]
    StaleIndex { path: PathBuf },

    #[error("no index at {path}; build one with `cpack index build`")]
    NoIndex { path: PathBuf },

    #[error("ONNX Runtime: cannot {action}")]
    OnnxRuntime {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{what} is in use by another cpack process{}; wait for it to finish or stop it ({path})", pid.map_or(String::new(), |p| format!(", pid {p}")))]
    InUse {
        what: &'static str,
        path: PathBuf,
        pid: Option<u32>,
    },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
