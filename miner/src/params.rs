//! Mining parameters, validated once.

use serde::{Deserialize, Serialize};

/// How negatives are drawn from the candidates that survive the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sampling {
    /// Uniformly at random (seeded per query), as FlagEmbedding's hn_mine.
    Random,
    /// The best-ranked survivors, as sentence-transformers' default.
    Top,
}

/// What to do when fewer than `negatives` candidates survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnShort {
    /// Store what there is.
    Keep,
    /// Store nothing for that query.
    Drop,
    /// Fill up with random passages that are not positives (FlagEmbedding's behaviour).
    Pad,
}

/// Everything that decides which negatives a round stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiningParams {
    /// Qrels split whose queries are mined.
    pub split: String,
    /// Raw ranks searched per query.
    pub topk: usize,
    /// Ranks dropped as likely false negatives.
    pub skip: usize,
    /// Count `skip` among surviving candidates instead of raw ranks.
    pub skip_after_filter: bool,
    /// Negatives stored per query.
    pub negatives: usize,
    pub sampling: Sampling,
    pub on_short: OnShort,
    pub seed: u64,
    pub max_score: Option<f32>,
    pub margin: Option<f32>,
    pub relative_margin: Option<f32>,
}

impl MiningParams {
    /// Checks the parameters against a corpus of `corpus_rows` passages; returns
    /// them with `topk` clamped to the corpus, plus a note when it was.
    pub fn validated(mut self, corpus_rows: usize) -> Result<(Self, Option<String>), String> {
        if self.negatives == 0 {
            return Err("--negatives must be at least 1".into());
        }
        if self.topk == 0 {
            return Err("--topk must be at least 1".into());
        }
        if !self.skip_after_filter && self.skip >= self.topk {
            return Err(format!(
                "--skip {} leaves nothing of --topk {}: skip must be smaller than topk",
                self.skip, self.topk
            ));
        }
        for (flag, value) in [
            ("--max-score", self.max_score),
            ("--margin", self.margin),
            ("--relative-margin", self.relative_margin),
        ] {
            if let Some(v) = value.filter(|v| !v.is_finite()) {
                return Err(format!("{flag} {v} is not a finite number"));
            }
        }
        if let Some(r) = self.relative_margin {
            if !(0.0..1.0).contains(&r) {
                return Err(format!("--relative-margin {r} must be in [0, 1)"));
            }
        }
        let mut note = None;
        if self.topk > corpus_rows {
            note = Some(format!(
                "--topk {} exceeds the corpus; searching all {corpus_rows} passages",
                self.topk
            ));
            self.topk = corpus_rows;
        }
        Ok((self, note))
    }
}
