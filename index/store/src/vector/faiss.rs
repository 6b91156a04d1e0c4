//! FAISS indexes from factory strings, inner-product metric, saved as
//! `vectors.faiss` beside the embedding file.

use super::{Hits, VectorIndex};
use crate::embeddings::EmbeddingMatrix;
use crate::error::{Error, Result};
use ::faiss::index::{flat::FlatIndexImpl, CpuIndex, IndexImpl, NativeIndex, SearchResult};
use ::faiss::{ConcurrentIndex, Index, MetricType};
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
    pub(super) inner: Inner,
}

pub(super) enum Inner {
    /// Brute force: searched as slices of the queries side by side.
    Flat(FlatIndexImpl),
    Other(IndexImpl),
}

pub(super) fn faiss_err(problem: impl std::fmt::Display) -> Error {
    Error::VectorIndex {
        backend: "faiss",
        problem: problem.to_string(),
    }
}

impl FaissIndex {
    /// Creates the index from `factory`, trains it if it needs training, and
    /// adds every row; its products (k-means) run on `threads` threads.
    pub fn build(factory: &str, embeddings: &EmbeddingMatrix, threads: usize) -> Result<Self> {
        super::faiss_blas::with_threads(threads, || Self::build_inner(factory, embeddings))
    }

    fn build_inner(factory: &str, embeddings: &EmbeddingMatrix) -> Result<Self> {
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
        FaissIndex::new(inner)
    }

    /// Whether FAISS can make an index from `factory` for `dim`-wide vectors;
    /// the error quotes the factory and the first line of FAISS's reason.
    pub fn check_factory(factory: &str, dim: usize) -> Result<()> {
        ::faiss::index_factory(dim as u32, factory, MetricType::InnerProduct)
            .map(drop)
            .map_err(|e| {
                let text = e.to_string();
                let reason = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("rejected")
                    .rsplit(": ")
                    .next()
                    .unwrap_or("rejected")
                    .to_string();
                Error::FaissFactory {
                    factory: factory.to_string(),
                    dim,
                    reason,
                }
            })
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
            return Err(Error::bad_file(
                path,
                format!(
                    "holds {} vectors of dimension {}, the embeddings {} of dimension {}",
                    inner.ntotal(),
                    inner.d(),
                    embeddings.rows(),
                    embeddings.dim()
                ),
            ));
        }
        FaissIndex::new(inner)
    }

    fn new(index: IndexImpl) -> Result<Self> {
        // SAFETY: a dynamic cast of a live index pointer; null when not flat.
        let flat = !unsafe { faiss_IndexFlat_cast(index.inner_ptr().cast()) }.is_null();
        let inner = if flat {
            Inner::Flat(index.into_flat().map_err(faiss_err)?)
        } else {
            Inner::Other(index)
        };
        Ok(FaissIndex { inner })
    }

    /// A flat search on `threads` cores: the queries cut into one slice per
    /// thread, each searched with single-threaded products and OpenMP. FAISS's
    /// own parallel flat search alternates one product per block of rows (on
    /// a BLAS thread pool) with an OpenMP pass keeping each query's best hits,
    /// and the idle pool of each spins while the other works.
    fn search_flat(
        index: &FlatIndexImpl,
        queries: &[f32],
        k: usize,
        threads: usize,
    ) -> Result<SearchResult> {
        let dim = index.d() as usize;
        let rows = queries.len() / dim;
        let per_thread = rows.div_ceil(threads.max(1)).max(MIN_QUERIES_PER_THREAD);
        let search = |part: &[f32]| with_openmp_threads(1, || index.search(part, k));
        if per_thread >= rows {
            return search(queries).map_err(faiss_err);
        }
        let parts: Vec<_> = std::thread::scope(|scope| {
            let running: Vec<_> = queries
                .chunks(per_thread * dim)
                .map(|part| scope.spawn(move || search(part)))
                .collect();
            running
                .into_iter()
                .map(|t| t.join().expect("a FAISS search thread panicked"))
                .collect()
        });
        let mut all = SearchResult {
            distances: Vec::with_capacity(rows * k),
            labels: Vec::with_capacity(rows * k),
        };
        for part in parts {
            let part = part.map_err(faiss_err)?;
            all.distances.extend(part.distances);
            all.labels.extend(part.labels);
        }
        Ok(all)
    }
}

/// Fewer queries than this are not worth a thread of their own.
const MIN_QUERIES_PER_THREAD: usize = 64;

/// Runs `work` with the calling thread's OpenMP team size set to `threads`
/// (FAISS parallelises over queries with OpenMP), then restores it.
fn with_openmp_threads<T>(threads: usize, work: impl FnOnce() -> T) -> T {
    // SAFETY: plain getters/setters of the calling thread's OpenMP thread count.
    let previous = unsafe { omp_get_max_threads() };
    unsafe { omp_set_num_threads(threads.max(1) as c_int) };
    let out = work();
    unsafe { omp_set_num_threads(previous) };
    out
}

impl VectorIndex for FaissIndex {
    fn len(&self) -> usize {
        match &self.inner {
            Inner::Flat(index) => index.ntotal() as usize,
            Inner::Other(index) => index.ntotal() as usize,
        }
    }

    fn search(&mut self, queries: &[f32], k: usize, threads: usize) -> Result<Hits> {
        // Products run on one thread (see `faiss_blas`): the flat index's run
        // per slice, other indexes' (IVF's quantizer) are small.
        let result = match &mut self.inner {
            Inner::Flat(index) => Self::search_flat(index, queries, k, threads)?,
            Inner::Other(index) => {
                with_openmp_threads(threads, || index.search(queries, k)).map_err(faiss_err)?
            }
        };
        Ok(hits(k, result))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        match &self.inner {
            Inner::Flat(index) => write(index, &path),
            Inner::Other(index) => write(index, &path),
        }
    }
}

/// FAISS's result as [`Hits`] (missing hits as row -1).
pub(super) fn hits(k: usize, result: SearchResult) -> Hits {
    Hits {
        k,
        scores: result.distances,
        rows: result
            .labels
            .iter()
            .map(|l| l.get().map_or(-1, |v| v as i64))
            .collect(),
    }
}

/// Writes a CPU index to `path` and syncs it.
pub(super) fn write<I>(index: &I, path: &Path) -> Result<()>
where
    I: NativeIndex<Inner = <IndexImpl as NativeIndex>::Inner> + CpuIndex,
{
    let path_str = path
        .to_str()
        .ok_or_else(|| faiss_err("index path is not UTF-8"))?;
    ::faiss::write_index(index, path_str)
        .map_err(|e| faiss_err(format!("writing {}: {e}", path.display())))?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("sync", path))
}
