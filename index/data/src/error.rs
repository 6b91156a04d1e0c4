//! Errors of the data crate: every one names the file, and for
//! line-oriented input the line.

use std::path::{Path, PathBuf};

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

impl Error {
    /// An I/O error naming what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let io = cpack_core::Error::io(action, path);
        move |source| Error::File(io(source))
    }

    pub(crate) fn bad_file(path: &Path, problem: String) -> Error {
        Error::File(cpack_core::Error::BadFile {
            path: path.to_path_buf(),
            problem,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
