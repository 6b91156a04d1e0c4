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

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
