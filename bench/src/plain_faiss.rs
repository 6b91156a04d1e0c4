//! The mining floor as a FAISS user would measure it: the index file read and
//! searched by the FAISS library itself, not through cpack's index wrapper,
//! with FAISS's own threading (OpenMP on every core) and every thread in its
//! products (which run on cpack's kernel, as every FAISS product in this
//! process does: see `cpack_index::vector::faiss_blas`).

use anyhow::{Context, Result};
use faiss::Index;
use std::path::Path;
use std::time::Instant;

/// Seconds for one search of `queries` in `generation_dir`'s FAISS index,
/// or `None` when the index is not a FAISS one.
pub fn search_seconds(
    generation_dir: &Path,
    queries: &[f32],
    k: usize,
    threads: usize,
) -> Result<Option<f64>> {
    let path = generation_dir.join(cpack_index::vector::faiss::FILE_NAME);
    if !path.exists() {
        return Ok(None);
    }
    let path = path.to_str().context("index path is not UTF-8")?;
    let mut index = faiss::read_index(path)?;
    cpack_index::vector::faiss_blas::with_threads(threads, || {
        let started = Instant::now();
        index.search(queries, k)?;
        Ok(Some(started.elapsed().as_secs_f64()))
    })
}

/// FAISS products this process has run through cpack's `sgemm_`.
pub fn products_on_cpack_kernel() -> u64 {
    cpack_index::vector::faiss_blas::calls()
}
