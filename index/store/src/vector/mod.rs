//! The vector-index boundary: build from embeddings, search, save, open.
//!
//! Two implementations share one contract (and one test suite):
//! [`exact`], a brute-force inner-product scan in Rust that needs no native
//! library, and `faiss` (feature `faiss`), any FAISS factory string.

pub mod exact;
#[cfg(feature = "faiss")]
pub mod faiss;
#[cfg(feature = "faiss")]
pub mod faiss_blas;
#[cfg(all(feature = "faiss", feature = "cuda"))]
mod faiss_gpu;
#[cfg(all(feature = "faiss", not(feature = "cuda")))]
#[path = "no_gpu.rs"]
mod faiss_gpu;

use crate::embeddings::EmbeddingMatrix;
use crate::error::{Error, Result};
use cpack_core::InvalidSetting;
use cpack_model::device::UnknownDevice;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The `k` best rows for each of `queries` queries, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Hits {
    pub k: usize,
    /// `[queries × k]` inner products.
    pub scores: Vec<f32>,
    /// `[queries × k]` row numbers; `-1` where fewer than `k` rows exist.
    pub rows: Vec<i64>,
}

impl Hits {
    /// The (row, score) pairs of query `q`, skipping empty slots.
    pub fn of(&self, q: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let span = q * self.k..(q + 1) * self.k;
        self.rows[span.clone()]
            .iter()
            .zip(&self.scores[span])
            .filter(|(r, _)| **r >= 0)
            .map(|(r, s)| (*r as usize, *s))
    }
}

/// A searchable set of vectors (inner-product similarity).
pub trait VectorIndex: Send {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Searches `queries` (row-major, `dim` wide) for the top `k` rows each,
    /// on up to `threads` cores (1 while encoders run beside the search).
    fn search(&mut self, queries: &[f32], k: usize, threads: usize) -> Result<Hits>;
    /// The most hits one search can return per query.
    fn max_k(&self) -> usize {
        usize::MAX
    }
    /// Persists whatever this index keeps beyond the embedding file.
    fn save(&self, dir: &Path) -> Result<()>;
}

/// Where an index searches. What an index is ([`IndexKind`], saved with it)
/// does not depend on it: every index is built and saved in its CPU form and
/// opens on either device. Written `cpu`, `gpu` (GPU 0) or `gpu:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum IndexDevice {
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal (FAISS-GPU, feature `cuda`).
    Gpu(usize),
}

impl std::fmt::Display for IndexDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexDevice::Cpu => f.write_str("cpu"),
            IndexDevice::Gpu(ordinal) => write!(f, "gpu:{ordinal}"),
        }
    }
}

impl std::str::FromStr for IndexDevice {
    type Err = UnknownDevice;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownDevice> {
        let ordinal = cpack_model::device::parse_device(s, "gpu", "index device")?;
        Ok(ordinal.map_or(IndexDevice::Cpu, IndexDevice::Gpu))
    }
}

impl TryFrom<String> for IndexDevice {
    type Error = UnknownDevice;
    fn try_from(s: String) -> std::result::Result<Self, UnknownDevice> {
        s.parse()
    }
}

impl From<IndexDevice> for String {
    fn from(d: IndexDevice) -> String {
        d.to_string()
    }
}

/// Which implementation backs an index, and with what FAISS factory string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum IndexKind {
    /// Brute force over the embedding file; no extra files.
    Exact,
    /// A FAISS index from a factory string (`Flat`, `IVF1024,Flat`, `HNSW32`, …).
    Faiss { factory: String },
}

/// The implementation an index is built with (`index.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    /// FAISS, from a factory string (`index.factory`).
    #[default]
    Faiss,
    /// Brute force in Rust over the embedding file.
    Exact,
}

impl std::fmt::Display for IndexBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IndexBackend::Faiss => "faiss",
            IndexBackend::Exact => "exact",
        })
    }
}

impl IndexKind {
    /// The factory string of an index nobody configured: exact inner product.
    pub const DEFAULT_FACTORY: &'static str = "Flat";

    /// `backend`, with `factory` for FAISS.
    pub fn new(backend: IndexBackend, factory: &str) -> Result<Self> {
        match backend {
            IndexBackend::Exact => Ok(IndexKind::Exact),
            IndexBackend::Faiss if cfg!(feature = "faiss") => Ok(IndexKind::Faiss {
                factory: factory.to_string(),
            }),
            IndexBackend::Faiss => Err(Error::NotBuiltWith {
                feature: "faiss",
                instead: "use index.backend = \"exact\"",
            }),
        }
    }

    pub fn backend(&self) -> IndexBackend {
        match self {
            IndexKind::Exact => IndexBackend::Exact,
            IndexKind::Faiss { .. } => IndexBackend::Faiss,
        }
    }

    /// The FAISS factory string; [`IndexKind::DEFAULT_FACTORY`] for exact search.
    pub fn factory(&self) -> &str {
        match self {
            IndexKind::Exact => Self::DEFAULT_FACTORY,
            IndexKind::Faiss { factory } => factory,
        }
    }

    /// Fails now, before any encoding, if vectors of `dim` dimensions cannot
    /// be indexed this way (an unknown FAISS factory string).
    pub fn check(&self, dim: usize) -> Result<()> {
        match self {
            IndexKind::Exact => Ok(()),
            IndexKind::Faiss { factory } => check_faiss(factory, dim),
        }
    }

    /// Builds an index over all rows of `embeddings` on up to `threads` cores
    /// (FAISS trains k-means with them).
    pub fn build(
        &self,
        embeddings: Arc<EmbeddingMatrix>,
        threads: usize,
    ) -> Result<Box<dyn VectorIndex>> {
        match self {
            IndexKind::Exact => Ok(Box::new(exact::ExactIndex::new(embeddings))),
            IndexKind::Faiss { factory } => build_faiss(factory, &embeddings, threads),
        }
    }

    /// Opens an index saved in `dir` over `embeddings`, to search on `device`.
    pub fn open(
        &self,
        dir: &Path,
        embeddings: Arc<EmbeddingMatrix>,
        device: IndexDevice,
    ) -> Result<Box<dyn VectorIndex>> {
        match (self, device) {
            (IndexKind::Exact, IndexDevice::Cpu) => {
                Ok(Box::new(exact::ExactIndex::new(embeddings)))
            }
            (IndexKind::Exact, IndexDevice::Gpu(_)) => Err(InvalidSetting::new(
                "index.device",
                device,
                "searches FAISS indexes only; the exact backend searches on the CPU",
            )
            .needs("index.backend", IndexBackend::Faiss)
            .into()),
            (IndexKind::Faiss { .. }, device) => open_faiss(dir, &embeddings, device),
        }
    }
}

impl std::fmt::Display for IndexKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexKind::Exact => f.write_str("exact"),
            IndexKind::Faiss { factory } => write!(f, "faiss {factory}"),
        }
    }
}

#[cfg(feature = "faiss")]
fn build_faiss(
    factory: &str,
    embeddings: &EmbeddingMatrix,
    threads: usize,
) -> Result<Box<dyn VectorIndex>> {
    Ok(Box::new(faiss::FaissIndex::build(
        factory, embeddings, threads,
    )?))
}

#[cfg(feature = "faiss")]
fn check_faiss(factory: &str, dim: usize) -> Result<()> {
    faiss::FaissIndex::check_factory(factory, dim)
}

#[cfg(feature = "faiss")]
fn open_faiss(
    dir: &Path,
    embeddings: &EmbeddingMatrix,
    device: IndexDevice,
) -> Result<Box<dyn VectorIndex>> {
    let index = faiss::FaissIndex::open(dir, embeddings)?;
    match device {
        IndexDevice::Cpu => Ok(Box::new(index)),
        IndexDevice::Gpu(ordinal) => faiss_gpu::upload(index, ordinal),
    }
}

#[cfg(not(feature = "faiss"))]
fn build_faiss(_: &str, _: &EmbeddingMatrix, _: usize) -> Result<Box<dyn VectorIndex>> {
    Err(Error::NotBuiltWith {
        feature: "faiss",
        instead: "use index.backend = \"exact\"",
    })
}

#[cfg(not(feature = "faiss"))]
fn check_faiss(_: &str, _: usize) -> Result<()> {
    Err(Error::NotBuiltWith {
        feature: "faiss",
        instead: "use index.backend = \"exact\"",
    })
}

#[cfg(not(feature = "faiss"))]
fn open_faiss(_: &Path, _: &EmbeddingMatrix, _: IndexDevice) -> Result<Box<dyn VectorIndex>> {
    Err(Error::NotBuiltWith {
        feature: "faiss",
        instead: "this index was built with FAISS: rebuild it with index.backend = \"exact\"",
    })
}

#[cfg(test)]
mod tests;
