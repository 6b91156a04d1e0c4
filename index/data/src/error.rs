//! Errors of the data crate: every one names the file, and for
//! line-oriented input the line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] cpack_core::Error),

    #[error("{path}:{line}: {problem}")]
    BadLine {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

cpack_core::file_errors!(Error::File);

pub type Result<T, E = Error> = std::result::Result<T, E>;
