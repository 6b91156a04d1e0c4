//! Hugging Face `tokenizer.json` with cpack's truncation and no padding
//! (batches are padded after sorting by length).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// A tokenizer that truncates to one maximum length, special tokens included.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_len: usize,
}

impl TextTokenizer {
    pub fn load(path: &Path, max_len: usize) -> Result<Self> {
        let tok_err = |source| Error::Tokenizer {
            path: path.to_path_buf(),
            source,
        };
        let mut inner = Tokenizer::from_file(path).map_err(tok_err)?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(tok_err)?;
        inner.with_padding(None);
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
            max_len,
        })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids of each text, `[CLS] … [SEP]` included, truncated to `max_len`.
    /// Runs on the rayon pool.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|source| Error::Tokenizer {
                path: self.path.clone(),
                source,
            })?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }
}
