//! The model's input: token ids padded to one length, with their mask.

/// A padded batch of token ids, row-major `[batch, seq_len]`.
pub struct TokenBatch {
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<f32>,
    pub batch: usize,
    pub seq_len: usize,
}

impl TokenBatch {
    /// Pads `sequences` with id 0 to the longest one.
    pub fn pad(sequences: &[&[u32]]) -> Self {
        let seq_len = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let batch = sequences.len();
        let mut input_ids = vec![0u32; batch * seq_len];
        let mut attention_mask = vec![0f32; batch * seq_len];
        for (row, seq) in sequences.iter().enumerate() {
            let start = row * seq_len;
            input_ids[start..start + seq.len()].copy_from_slice(seq);
            attention_mask[start..start + seq.len()].fill(1.0);
        }
        TokenBatch {
            input_ids,
            attention_mask,
            batch,
            seq_len,
        }
    }

    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m > 0.0).count()
    }

    /// Rows `rows` of this batch, with the same padded length.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> TokenBatch {
        let span = rows.start * self.seq_len..rows.end * self.seq_len;
        TokenBatch {
            input_ids: self.input_ids[span.clone()].to_vec(),
            attention_mask: self.attention_mask[span].to_vec(),
            batch: rows.len(),
            seq_len: self.seq_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_masks_padding() {
        let a = [101u32, 7, 102];
        let b = [101u32, 102];
        let batch = TokenBatch::pad(&[&a, &b]);
        assert_eq!(batch.seq_len, 3);
        assert_eq!(batch.input_ids, vec![101, 7, 102, 101, 102, 0]);
        assert_eq!(batch.attention_mask, vec![1., 1., 1., 1., 1., 0.]);
        assert_eq!(batch.real_tokens(), 5);
    }
}
