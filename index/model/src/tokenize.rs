//! Hugging Face `tokenizer.json` with cpack's truncation and no padding
//! (batches are padded after sorting by length). Sentence pairs go through
//! the file's own pair template (`[CLS] A [SEP] B [SEP]`, `<s> A </s></s> B
//! </s>`) and its `longest_first` truncation, never joined by hand.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tokenizers::{
    EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

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
        let inputs = texts.iter().map(|&t| EncodeInput::from(t)).collect();
        Ok(self
            .encode(inputs)?
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Token ids and token types of each (first, second) pair through the
    /// pair template, the longer side cut first to fit `max_len`.
    /// Runs on the rayon pool.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let inputs = pairs
            .iter()
            .map(|&(a, b)| EncodeInput::from((a, b)))
            .collect();
        Ok(self
            .encode(inputs)?
            .into_iter()
            .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
            .collect())
    }

    fn encode(&self, inputs: Vec<EncodeInput>) -> Result<Vec<tokenizers::Encoding>> {
        self.inner
            .encode_batch(inputs, true)
            .map_err(|source| Error::Tokenizer {
                path: self.path.clone(),
                source,
            })
    }
}
