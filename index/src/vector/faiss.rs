//! FAISS indexes from factory strings, inner-product metric, saved as
//! `vectors.faiss` beside the embedding file.

use super::{Hits, VectorIndex};
use crate::embeddings::EmbeddingMatrix;
use crate::error::{Error, Result};
use ::faiss::index::IndexImpl;
use ::faiss::{Index, MetricType};
use std::os::raw::{c_int, c_void};
use std::path::Path;

pub const FILE_NAME: &str = "vectors.faiss";

// FAISS's C API and the OpenMP runtime it is built with (both linked by faiss-sys).
extern "C" {
    fn faiss_IndexFlat_cast(index: *mut c_void) -> *mut c_void;
    fn omp_set_num_threads(threads: c_int);
    fn omp_get_max_threads() -> c_int;
}

pub struct FaissIndex {
    inner: IndexImpl,
    /// A flat (brute-force) index, whose search is BLAS products.
    flat: bool,
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
        Ok(FaissIndex::new(inner))
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
        Ok(FaissIndex::new(inner))
    }

    fn new(inner: IndexImpl) -> Self {
        // SAFETY: a dynamic cast of a live index pointer; null when not flat.
        let flat = !unsafe { faiss_IndexFlat_cast(inner.inner_ptr().cast()) }.is_null();
        FaissIndex { inner, flat }
    }
}

/// Runs a search on `threads` cores. A flat search alternates one sgemm per
/// block of rows (OpenBLAS's thread pool) with an OpenMP pass that keeps each
/// query's best hits; with both pools active their idle workers spin while
/// the other works, which cost a quarter of the time at 2,048-query batches
/// (measured on 2 cores). So the flat index parallelises only inside BLAS,
/// every other index only over queries (OpenMP).
fn with_search_threads<T>(flat: bool, threads: usize, search: impl FnOnce() -> T) -> T {
    let (blas, openmp) = if flat { (threads, 1) } else { (1, threads) };
    // SAFETY: plain getters/setters of the calling thread's OpenMP thread count.
    let previous = unsafe { omp_get_max_threads() };
    unsafe { omp_set_num_threads(openmp.max(1) as c_int) };
    let out = crate::model::with_kernel_threads(blas, search);
    unsafe { omp_set_num_threads(previous) };
    out
}

impl VectorIndex for FaissIndex {
    fn len(&self) -> usize {
        self.inner.ntotal() as usize
    }

    fn search(&mut self, queries: &[f32], k: usize, threads: usize) -> Result<Hits> {
        let inner = &mut self.inner;
        let result = with_search_threads(self.flat, threads, || inner.search(queries, k))
            .map_err(faiss_err)?;
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
