//! FAISS indexes from factory strings, inner-product metric, saved as
//! `vectors.faiss` beside the embedding file.

use super::{Hits, VectorIndex};
use crate::embeddings::EmbeddingMatrix;
use crate::error::{Error, Result};
use ::faiss::index::IndexImpl;
use ::faiss::{Index, MetricType};
use std::path::Path;

pub const FILE_NAME: &str = "vectors.faiss";

pub struct FaissIndex {
    inner: IndexImpl,
}

fn faiss_err(problem: impl std::fmt::Display) -> Error {
    Error::VectorIndex {
        backend: "faiss",
        problem: problem.to_string(),
    }
}

impl FaissIndex {
    /// Creates the index from `factory`, trains it if it needs training, and adds every row.
    pub fn build(factory: &str, embeddings: &EmbeddingMatrix) -> Result<Self> {
        let dim = embeddings.dim() as u32;
        let mut inner = ::faiss::index_factory(dim, factory, MetricType::InnerProduct)
            .map_err(|e| faiss_err(format!("factory string {factory:?}: {e}")))?;
        let decoded;
        let vectors = match embeddings.f32_view() {
            Some(view) => view,
            None => {
                decoded = embeddings.to_f32();
                &decoded
            }
        };
        if !inner.is_trained() {
            inner.train(vectors).map_err(|e| {
                faiss_err(format!(
                    "training {factory:?} on {} vectors: {e}",
                    embeddings.rows()
                ))
            })?;
        }
        inner.add(vectors).map_err(faiss_err)?;
        Ok(FaissIndex { inner })
    }

    /// Reads `vectors.faiss` from `dir`, checking it agrees with the embeddings.
    pub fn open(dir: &Path, embeddings: &EmbeddingMatrix) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let path_str = path
            .to_str()
            .ok_or_else(|| faiss_err("index path is not UTF-8"))?;
        let inner = ::faiss::read_index(path_str)
            .map_err(|e| faiss_err(format!("reading {}: {e}", path.display())))?;
        if inner.ntotal() as usize != embeddings.rows() || inner.d() as usize != embeddings.dim() {
            return Err(Error::BadFile {
                path,
                problem: format!(
                    "holds {} vectors of dimension {}, the embeddings {} of dimension {}",
                    inner.ntotal(),
                    inner.d(),
                    embeddings.rows(),
                    embeddings.dim()
                ),
            });
        }
        Ok(FaissIndex { inner })
    }
}

impl VectorIndex for FaissIndex {
    fn len(&self) -> usize {
        self.inner.ntotal() as usize
    }

    fn search(&mut self, queries: &[f32], k: usize) -> Result<Hits> {
        let result = self.inner.search(queries, k).map_err(faiss_err)?;
        Ok(Hits {
            k,
            scores: result.distances,
            rows: result
                .labels
                .iter()
                .map(|l| l.get().map_or(-1, |v| v as i64))
                .collect(),
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        let path_str = path
            .to_str()
            .ok_or_else(|| faiss_err("index path is not UTF-8"))?;
        ::faiss::write_index(&self.inner, path_str)
            .map_err(|e| faiss_err(format!("writing {}: {e}", path.display())))?;
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(Error::io("sync", &path))
    }
}
