//! The model's input: token ids padded to one length, with their mask.

/// A padded batch of token ids, row-major `[batch, seq_len]`.
pub struct TokenBatch {
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<f32>,
    /// Each token's segment (0 first text, 1 second) for sentence pairs;
    /// empty for single texts (one segment).
    pub token_type_ids: Vec<u32>,
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
            token_type_ids: Vec::new(),
            batch,
            seq_len,
        }
    }

    /// Pads tokenized sentence pairs (`(ids, token types)` each) to the longest.
    pub fn pad_pairs(pairs: &[(&[u32], &[u32])]) -> Self {
        let ids: Vec<&[u32]> = pairs.iter().map(|(ids, _)| *ids).collect();
        let mut batch = TokenBatch::pad(&ids);
        batch.token_type_ids = vec![0; batch.batch * batch.seq_len];
        for (row, (_, types)) in pairs.iter().enumerate() {
            let start = row * batch.seq_len;
            batch.token_type_ids[start..start + types.len()].copy_from_slice(types);
        }
        batch
    }

    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m > 0.0).count()
    }

    /// Rows `rows` of this batch, with the same padded length.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> TokenBatch {
        let span = rows.start * self.seq_len..rows.end * self.seq_len;
        let token_type_ids = if self.token_type_ids.is_empty() {
            Vec::new()
        } else {
            self.token_type_ids[span.clone()].to_vec()
        };
        TokenBatch {
            input_ids: self.input_ids[span.clone()].to_vec(),
            attention_mask: self.attention_mask[span].to_vec(),
            token_type_ids,
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
        assert!(batch.token_type_ids.is_empty());
    }

    #[test]
    fn pairs_keep_their_token_types_and_rows_slice_them() {
        let a = ([2u32, 7, 3, 8, 3], [0u32, 0, 0, 1, 1]);
        let b = ([2u32, 3, 9, 3], [0u32, 0, 1, 1]);
        let batch = TokenBatch::pad_pairs(&[(&a.0, &a.1), (&b.0, &b.1)]);
        assert_eq!(batch.token_type_ids, vec![0, 0, 0, 1, 1, 0, 0, 1, 1, 0]);
        assert_eq!(batch.rows(1..2).token_type_ids, vec![0, 0, 1, 1, 0]);
        assert_eq!(batch.rows(1..2).input_ids, vec![2, 3, 9, 3, 0]);
    }
}
