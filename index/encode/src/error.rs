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

    #[error(transparent)]
    Setting(#[from] cpack_core::InvalidSetting),

    #[error("{what} computes with f32{}, not {precision} weights", if *int8 { " or int8" } else { "" })]
    Precision {
        what: &'static str,
        precision: crate::WeightPrecision,
        int8: bool,
    },

    #[error("ONNX Runtime library {path} does not exist; run scripts/setup.sh or set encode.ort_library")]
    NoOrtLibrary { path: PathBuf },

    #[error("ONNX Runtime is already loaded from {loaded}; one process cannot also load {wanted}")]
    OrtLoadedElsewhere { loaded: PathBuf, wanted: PathBuf },
}

impl Error {
    /// The setting this error refuses, if it is one.
    pub fn setting(&self) -> Option<&cpack_core::InvalidSetting> {
        match self {
            Error::Setting(s) => Some(s),
            _ => None,
        }
    }

    /// A model folder (its weights file, `path`) that cannot be used.
    pub(crate) fn model(path: &Path, problem: String) -> Error {
        Error::Model(cpack_model::Error::Model {
            path: path.to_path_buf(),
            problem,
        })
    }
}

cpack_core::file_errors!(Error::File);

pub type Result<T, E = Error> = std::result::Result<T, E>;
