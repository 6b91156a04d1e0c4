//! Errors of the index crate. Each names the index folder or file it is
//! about, and says how to get a good index back.

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

    pub(crate) fn bad_file(path: impl Into<PathBuf>, problem: String) -> Error {
        Error::File(cpack_core::Error::BadFile {
            path: path.into(),
            problem,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
