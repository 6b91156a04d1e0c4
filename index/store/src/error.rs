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

    #[error(transparent)]
    Setting(#[from] cpack_core::InvalidSetting),

    #[error("FAISS cannot build index.factory = {factory:?} for {dim}-dimensional vectors ({reason}); see https://github.com/facebookresearch/faiss/wiki/The-index-factory")]
    FaissFactory {
        factory: String,
        dim: usize,
        reason: String,
    },

    #[error("this cpack was built without the `{feature}` feature; {instead}")]
    NotBuiltWith {
        feature: &'static str,
        instead: &'static str,
    },

    #[error("FAISS on the GPU returns at most {max} hits per query, {k} were asked; ask for fewer, or search on the CPU (index.device = \"cpu\")")]
    TooManyHits { k: usize, max: usize },

    #[error("row {row} is past the {rows} rows of the base index")]
    RowOutOfRange { row: usize, rows: usize },

    #[error("alignment: cannot align {old} old values to {new} new ones of width {dim}")]
    AlignmentShape { old: usize, new: usize, dim: usize },

    #[error("alignment: the old vectors' covariance is not positive definite (NaN in the index?)")]
    NotPositiveDefinite,

    #[error("matrix product")]
    Product(#[from] cpack_model::matmul::ShapeError),
}

impl Error {
    /// The setting this error refuses, if it is one.
    pub fn setting(&self) -> Option<&cpack_core::InvalidSetting> {
        match self {
            Error::Setting(s) => Some(s),
            Error::Encode(e) => e.setting(),
            _ => None,
        }
    }
}

cpack_core::file_errors!(Error::File);

pub type Result<T, E = Error> = std::result::Result<T, E>;
