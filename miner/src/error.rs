//! Errors of the miner crate.

/// Everything that can go wrong while mining, storing or exporting negatives.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Index(#[from] cpack_index::Error),

    #[error(transparent)]
    Encode(#[from] cpack_encode::Error),

    #[error(transparent)]
    Data(#[from] cpack_data::Error),

    #[error(transparent)]
    File(#[from] cpack_core::Error),

    #[error("negative store {path}")]
    Store {
        path: std::path::PathBuf,
        #[source]
        source: sled::Error,
    },

    #[error("negative store: cannot decode a {what} record")]
    Decode {
        what: &'static str,
        #[source]
        source: bincode::error::DecodeError,
    },

    #[error("negative store: {what} record written by a newer cpack (format {found}, this one reads up to {supported})")]
    NewerFormat {
        what: &'static str,
        found: u8,
        supported: u8,
    },

    #[error("negative store: empty {what} record")]
    EmptyRecord { what: &'static str },

    #[error(transparent)]
    Setting(#[from] cpack_core::InvalidSetting),

    #[error("{path}:{line}: {problem}")]
    BadLine {
        path: std::path::PathBuf,
        line: usize,
        problem: String,
    },

    #[error("{path} holds no FlagEmbedding records: nothing to import (no round was made)")]
    NothingToImport { path: std::path::PathBuf },

    #[error("{kind} {id:?} of the round is not in the dataset any more")]
    Vanished { kind: &'static str, id: String },

    #[error("split {split:?} has no judged queries to mine (no round was made)")]
    NoJudgedQueries { split: String },

    #[error("positives not in the index (first few: {}); rebuild it with `cpack index build`", first.join(", "))]
    PositivesNotIndexed { first: Vec<String> },
}

impl Error {
    /// The setting this error refuses, if it is one.
    pub fn setting(&self) -> Option<&cpack_core::InvalidSetting> {
        match self {
            Error::Setting(s) => Some(s),
            Error::Index(e) => e.setting(),
            Error::Encode(e) => e.setting(),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
