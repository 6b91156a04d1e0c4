//! The flat embedding file: `rows × dim` little-endian floats (f32, or f16 to
//! halve the disk), written append-only by the builder and memory-mapped by readers.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::Path;

/// On-disk element type of the embedding file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Precision::F32 => "embeddings.f32",
            Precision::F16 => "embeddings.f16",
        }
    }

    /// Serialises f32 values in this precision.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Precision::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Precision::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }
}

/// A read-only, memory-mapped embedding matrix.
pub struct EmbeddingMatrix {
    map: memmap2::Mmap,
    rows: usize,
    dim: usize,
    precision: Precision,
}

impl EmbeddingMatrix {
    /// Maps `path`, checking its size is exactly `rows × dim` elements.
    pub fn open(path: &Path, rows: usize, dim: usize, precision: Precision) -> Result<Self> {
        let file = File::open(path).map_err(Error::io("open", path))?;
        let expected = (rows * dim * precision.bytes()) as u64;
        let actual = file.metadata().map_err(Error::io("stat", path))?.len();
        if actual != expected {
            return Err(Error::bad_file(
                path.to_path_buf(),
                format!(
                    "holds {actual} bytes, the manifest promises {expected} ({rows} rows × {dim})"
                ),
            ));
        }
        // SAFETY: index generations are immutable once published; the file is
        // only ever replaced by renaming a new generation beside it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io("map", path))?;
        Ok(EmbeddingMatrix {
            map,
            rows,
            dim,
            precision,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows `start..end` as f32, decoded if stored as f16.
    pub fn rows_f32(&self, start: usize, end: usize) -> Vec<f32> {
        let width = self.dim * self.precision.bytes();
        let bytes = &self.map[start * width..end * width];
        match self.precision {
            Precision::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Precision::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }

    /// The given rows, in their order, as f32.
    pub fn gather(&self, rows: &[usize]) -> Vec<f32> {
        rows.iter().flat_map(|&r| self.rows_f32(r, r + 1)).collect()
    }

    /// The whole matrix as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.rows_f32(0, self.rows)
    }

    /// The mapped file itself as f32s, when it is stored as f32 on a
    /// little-endian machine: no copy, so a FAISS build over a large corpus
    /// holds the vectors twice (map + FAISS) instead of three times.
    pub fn f32_view(&self) -> Option<&[f32]> {
        if self.precision != Precision::F32 || cfg!(target_endian = "big") {
            return None;
        }
        // SAFETY: the map is page-aligned and immutable while `self` lives;
        // every bit pattern is a valid f32.
        let (head, floats, tail) = unsafe { self.map.align_to::<f32>() };
        (head.is_empty() && tail.is_empty()).then_some(floats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(dir: &Path, precision: Precision, values: &[f32]) -> EmbeddingMatrix {
        let path = dir.join(precision.file_name());
        std::fs::write(&path, precision.encode(values)).unwrap();
        EmbeddingMatrix::open(&path, values.len() / 2, 2, precision).unwrap()
    }

    #[test]
    fn f32_files_are_viewed_in_place_and_f16_files_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let values = [0.5f32, -1.25, 3.0, 0.0, 7.5, -0.125];
        let f32s = matrix(dir.path(), Precision::F32, &values);
        assert_eq!(f32s.f32_view(), Some(&values[..]));
        assert_eq!(f32s.to_f32(), values);
        let f16s = matrix(dir.path(), Precision::F16, &values);
        assert_eq!(
            f16s.f32_view(),
            None,
            "f16 must be decoded, not reinterpreted"
        );
        assert_eq!(f16s.to_f32(), values, "these values are exact in f16");
    }
}
