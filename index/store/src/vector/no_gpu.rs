//! Stands in for `faiss_gpu` in a build without the `cuda` feature: an
//! index asked to search on a GPU is refused with what to do instead.

use super::faiss::FaissIndex;
use super::VectorIndex;
use crate::error::{Error, Result};

pub fn upload(_index: FaissIndex, _ordinal: usize) -> Result<Box<dyn VectorIndex>> {
    Err(Error::NotBuiltWith {
        feature: "cuda",
        instead: "index.device = \"gpu\" needs one (scripts/build-cuda.sh); this one searches on the CPU only",
    })
}
