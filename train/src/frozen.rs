//! Query-side training (`--freeze-passages`, after ADORE, Zhan et al. 2021):
//! the passage side stays the base model, so its vectors are the base
//! index's, read instead of encoded. A step runs the model on the queries
//! only, the index never needs re-encoding, and a refresh is a query encode
//! and a search of that same index.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use cpack_data::dataset::TextTable;
use cpack_index::embeddings::EmbeddingMatrix;
use std::collections::HashMap;
use std::sync::Arc;

/// The fixed passage vectors of the corpus, by corpus row.
pub struct FrozenPassages {
    vectors: Arc<EmbeddingMatrix>,
    /// Row of `vectors` holding each corpus row's passage.
    rows: Vec<usize>,
}

impl FrozenPassages {
    /// The vectors of an index whose rows are the passages `ids`; every
    /// passage of `corpus` must be among them.
    pub fn new(vectors: Arc<EmbeddingMatrix>, ids: &[String], corpus: &TextTable) -> Result<Self> {
        let row_of: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let rows = corpus
            .ids
            .iter()
            .map(|id| {
                row_of
                    .get(id.as_str())
                    .copied()
                    .ok_or_else(|| Error::NotInFrozenIndex { id: id.clone() })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FrozenPassages { vectors, rows })
    }

    /// Width of a vector.
    pub fn dim(&self) -> usize {
        self.vectors.dim()
    }

    /// `[passages, dim]`: the vectors of `corpus_rows`, in order.
    pub fn gather(&self, corpus_rows: &[usize], device: &Device) -> Result<Tensor> {
        let rows: Vec<usize> = corpus_rows.iter().map(|&row| self.rows[row]).collect();
        let values = self.vectors.gather(&rows);
        Ok(Tensor::from_vec(
            values,
            (corpus_rows.len(), self.dim()),
            device,
        )?)
    }
}
