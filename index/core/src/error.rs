//! Errors about files: each names the path and what was being done to it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: {problem}")]
    BadFile { path: PathBuf, problem: String },

    #[error("{what} is in use by another cpack process{}; wait for it to finish or stop it ({path})", pid.map_or(String::new(), |p| format!(", pid {p}")))]
    InUse {
        what: &'static str,
        path: PathBuf,
        pid: Option<u32>,
    },
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

/// Gives a crate's error type the file-error constructors every crate
/// words alike: `io(action, path)` for `map_err`, and `bad_file(path,
/// problem)`, both wrapping this crate's [`Error`] in the variant named.
#[macro_export]
macro_rules! file_errors {
    ($error:ident :: $variant:ident) => {
        impl $error {
            /// An I/O error naming what was being done and to which path.
            pub fn io(
                action: &'static str,
                path: impl Into<std::path::PathBuf>,
            ) -> impl FnOnce(std::io::Error) -> $error {
                let io = $crate::Error::io(action, path);
                move |source| $error::$variant(io(source))
            }

            /// A file whose content cannot be used, and why.
            pub fn bad_file(path: impl Into<std::path::PathBuf>, problem: String) -> $error {
                $error::$variant($crate::Error::BadFile {
                    path: path.into(),
                    problem,
                })
            }
        }
    };
}
