//! The index recipe: `[index]` of `cpack.toml`, and the flags of `cpack
//! index build` that set what is built. Unset settings take the defaults of
//! their types ([`IndexBackend`], [`Precision`], [`IndexDevice`]) and
//! [`IndexKind::DEFAULT_FACTORY`].

use crate::embeddings::Precision;
use crate::error::Result;
use crate::vector::{IndexBackend, IndexDevice, IndexKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct IndexRecipe {
    /// Index backend: faiss or exact (brute force in Rust) [index.backend].
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "index.backend",
            long = "backend",
            value_name = "NAME",
            value_enum
        )
    )]
    pub backend: Option<IndexBackend>,
    /// FAISS factory string, e.g. Flat, IVF1024,Flat, HNSW32, IVF1024,PQ32 [index.factory].
    #[cfg_attr(
        feature = "clap",
        arg(id = "index.factory", long = "factory", value_name = "STRING")
    )]
    pub factory: Option<String>,
    /// Precision of the stored embeddings: f32 or f16 [index.precision].
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "index.precision",
            long = "precision",
            value_name = "P",
            value_enum
        )
    )]
    pub precision: Option<Precision>,
    /// Where FAISS searches an opened index (chosen when opened, not built):
    /// the flag is `--index-device`, on every command that searches.
    #[cfg_attr(feature = "clap", arg(skip))]
    pub device: Option<IndexDevice>,
}

impl IndexRecipe {
    /// What is built: backend and factory string.
    pub fn kind(&self) -> Result<IndexKind> {
        let factory = self
            .factory
            .as_deref()
            .unwrap_or(IndexKind::DEFAULT_FACTORY);
        IndexKind::new(self.backend.unwrap_or_default(), factory)
    }

    pub fn precision(&self) -> Precision {
        self.precision.unwrap_or_default()
    }

    pub fn device(&self) -> IndexDevice {
        self.device.unwrap_or_default()
    }
}
