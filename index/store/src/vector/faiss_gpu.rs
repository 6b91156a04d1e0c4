//! FAISS indexes searched on a CUDA GPU (feature `cuda`). An index is built
//! and saved in its CPU form; opening it with `index.device = "gpu"` copies
//! it to the GPU, and saving copies it back, so one generation on disk
//! serves both devices.

use super::faiss::{faiss_err, FaissIndex, Inner, FILE_NAME};
use super::{Hits, VectorIndex};
use crate::error::{Error, Result};
use ::faiss::index::{IndexImpl, UpcastIndex};
use ::faiss::GpuIndexImpl;
use ::faiss::Index;
use ::faiss::StandardGpuResources;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The most hits FAISS's GPU search returns per query.
pub const MAX_K: usize = 2048;

/// One `StandardGpuResources` per GPU for the whole process: each holds a
/// CUDA stream, cuBLAS handle and scratch memory, too dear to make per index
/// (a training run opens a new index every refresh).
struct Resources(&'static StandardGpuResources);

// SAFETY: FAISS's resources are not safe to use from two threads at once;
// cpack searches a GPU index from one thread at a time (each search takes
// the index by `&mut`, and one process keeps one live index per GPU).
unsafe impl Send for Resources {}
unsafe impl Sync for Resources {}

fn resources(ordinal: usize) -> Result<&'static StandardGpuResources> {
    static ALL: OnceLock<Mutex<Vec<(usize, Resources)>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .expect("GPU resources lock");
    if let Some((_, r)) = all.iter().find(|(o, _)| *o == ordinal) {
        return Ok(r.0);
    }
    let made = StandardGpuResources::new().map_err(|e| faiss_err(format!("GPU {ordinal}: {e}")))?;
    let leaked: &'static StandardGpuResources = Box::leak(Box::new(made));
    all.push((ordinal, Resources(leaked)));
    Ok(leaked)
}

pub struct GpuFaissIndex {
    inner: GpuIndexImpl<'static, IndexImpl>,
    ordinal: usize,
}

/// Copies `index` to GPU `ordinal`.
pub fn upload(index: FaissIndex, ordinal: usize) -> Result<Box<dyn VectorIndex>> {
    let res = resources(ordinal)?;
    let cpu = match index.inner {
        Inner::Flat(flat) => flat.upcast(),
        Inner::Other(other) => other,
    };
    let inner = cpu
        .into_gpu(res, ordinal as i32)
        .map_err(|e| faiss_err(format!("moving the index to GPU {ordinal}: {e}")))?;
    Ok(Box::new(GpuFaissIndex { inner, ordinal }))
}

impl VectorIndex for GpuFaissIndex {
    fn len(&self) -> usize {
        self.inner.ntotal() as usize
    }

    fn max_k(&self) -> usize {
        MAX_K
    }

    fn search(&mut self, queries: &[f32], k: usize, _threads: usize) -> Result<Hits> {
        if k > MAX_K {
            return Err(Error::TooManyHits { k, max: MAX_K });
        }
        let result = self
            .inner
            .search(queries, k)
            .map_err(|e| faiss_err(format!("searching on GPU {}: {e}", self.ordinal)))?;
        Ok(super::faiss::hits(k, result))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let cpu = self
            .inner
            .to_cpu()
            .map_err(|e| faiss_err(format!("copying the index back from the GPU: {e}")))?;
        super::faiss::write(&cpu, &dir.join(FILE_NAME))
    }
}
