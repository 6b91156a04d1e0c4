//! A cross-encoder teacher in a round: it scores each query's positives and
//! the pool its negatives are drawn from, the round stores those scores
//! (for distillation and `mine stats`), and denoising (RocketQA) drops the
//! candidates it scores as likely positives before the draw.
//!
//! Only what the draw can pick is scored: the first `pool` survivors of
//! the filters in the sampling's own draw order ([`crate::select::pool`]),
//! so a teacher costs query × pool pairs, not query × top-k.

use crate::select::Candidate;
use cpack_core::{require, InvalidSetting};
use cpack_encode::CrossEncoder;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which candidates denoising drops, on the teacher's raw scores (logits).
/// Both rules may be set; a candidate either rule names goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Denoise {
    /// Drop candidates the teacher scores above this.
    pub above: Option<f32>,
    /// Drop candidates the teacher scores above the query's lowest-scored
    /// positive minus this (0: above the positive; negative: only those
    /// that beat it by more than |margin|).
    pub margin: Option<f32>,
}

impl Denoise {
    pub fn is_off(&self) -> bool {
        self.above.is_none() && self.margin.is_none()
    }

    /// Whether a candidate scored `score` goes, for a query whose positives'
    /// lowest teacher score is `positive` (`None`: no positive was scored,
    /// so only the absolute rule applies).
    pub fn drops(&self, score: f32, positive: Option<f32>) -> bool {
        let above = self.above.is_some_and(|a| score > a);
        let near = match (self.margin, positive) {
            (Some(m), Some(p)) => score > p - m,
            _ => false,
        };
        above || near
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for (key, value) in [
            ("denoise_above", self.above),
            ("denoise_margin", self.margin),
        ] {
            if let Some(v) = value {
                require(v.is_finite(), key, v, "is not a finite number")?;
            }
        }
        Ok(())
    }
}

/// What decides a round's teacher scores: part of the round's identity, so
/// a round scored by another teacher (or pool, or rule) is mined afresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherParams {
    /// Fingerprint of the cross-encoder ("imported" for scores read from a file).
    pub model_fingerprint: String,
    /// Tokens of a (query, passage) pair at most.
    pub max_len: usize,
    /// Candidates scored per query (the draw's first ones).
    pub pool: usize,
    pub denoise: Denoise,
}

impl TeacherParams {
    /// What [`crate::import`] records for scores a file brought.
    pub fn imported() -> Self {
        TeacherParams {
            model_fingerprint: "imported".into(),
            max_len: 0,
            pool: 0,
            denoise: Denoise::default(),
        }
    }
}

/// A round's teacher: how it scored, and what scoring cost (summed over
/// resumed runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherRound {
    pub params: TeacherParams,
    pub seconds: f64,
    pub pairs: u64,
}

/// One query's teacher scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherScores {
    /// Aligned with the record's positives.
    pub positives: Vec<f32>,
    /// Aligned with the record's negatives (NaN for padded ones, never scored).
    pub negatives: Vec<f32>,
    /// Candidates scored.
    pub pool: u32,
    /// Raw ranks of the candidates denoising dropped.
    pub denoised_ranks: Vec<u32>,
}

/// A teacher as a recipe names it: the model folder (or hub id), its
/// pool and its denoising rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherSpec {
    pub model: PathBuf,
    pub pool: usize,
    #[serde(default)]
    pub denoise: Denoise,
}

/// The cross-encoder a round is mined with, and how.
#[derive(Clone, Copy)]
pub struct Teacher<'a> {
    pub model: &'a CrossEncoder,
    pub pool: usize,
    pub denoise: Denoise,
}

impl<'a> Teacher<'a> {
    /// `model` mining as `spec` says.
    pub fn new(model: &'a CrossEncoder, spec: &TeacherSpec) -> Self {
        Teacher {
            model,
            pool: spec.pool,
            denoise: spec.denoise,
        }
    }

    /// Candidates a query's pool holds: at least the negatives drawn.
    pub fn pool_size(&self, negatives: usize) -> usize {
        self.pool.max(negatives)
    }

    pub fn params(&self, negatives: usize) -> TeacherParams {
        TeacherParams {
            model_fingerprint: self.model.fingerprint().to_string(),
            max_len: self.model.settings().max_len,
            pool: self.pool_size(negatives),
            denoise: self.denoise,
        }
    }
}

/// Which of a pool's candidates (scored `scores`, in draw order) `denoise`
/// drops, given the teacher's scores of the query's positives.
pub fn dropped(scores: &[f32], positives: &[f32], denoise: &Denoise) -> Vec<bool> {
    let lowest = positives.iter().copied().reduce(f32::min);
    scores.iter().map(|&s| denoise.drops(s, lowest)).collect()
}

/// The teacher scores of a query's chosen negatives, looked up by row in
/// its scored pool (padded negatives are not in it: NaN, until the miner
/// scores them apart).
pub fn scores_of(chosen: &[Candidate], pool: &[Candidate], scores: &[f32]) -> Vec<f32> {
    chosen
        .iter()
        .map(|c| {
            pool.iter()
                .position(|p| p.row == c.row)
                .map_or(f32::NAN, |i| scores[i])
        })
        .collect()
}

/// Whose scores a FlagEmbedding line's `pos_scores`/`neg_scores` are:
/// exports say so (`"scores_from"`), so that importing a round mined without
/// a teacher does not take the embedder's own scores for a teacher's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoresFrom {
    /// A cross-encoder's (FlagEmbedding's `add_reranker_score.py`, or a
    /// round with a teacher); what a line without the key means.
    #[default]
    Teacher,
    /// The embedder that mined the round (its inner products).
    Embedder,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denoising_drops_exactly_what_each_rule_says() {
        let scores = [3.0, 1.5, 0.9, -2.0];
        let positives = [1.0, 2.5];
        let absolute = Denoise {
            above: Some(1.0),
            margin: None,
        };
        assert_eq!(
            dropped(&scores, &positives, &absolute),
            [true, true, false, false]
        );
        // Lowest positive 1.0: above 1.0 − 0.2 goes.
        let margin = Denoise {
            above: None,
            margin: Some(0.2),
        };
        assert_eq!(
            dropped(&scores, &positives, &margin),
            [true, true, true, false]
        );
        // A negative margin asks the candidate to beat the positive by more.
        let beat = Denoise {
            above: None,
            margin: Some(-1.0),
        };
        assert_eq!(
            dropped(&scores, &positives, &beat),
            [true, false, false, false]
        );
        // Without a scored positive only the absolute rule can act.
        assert_eq!(dropped(&scores, &[], &margin), [false; 4]);
        let both = Denoise {
            above: Some(2.0),
            margin: Some(-0.4),
        };
        assert_eq!(
            dropped(&scores, &positives, &both),
            [true, true, false, false]
        );
        assert!(Denoise::default().is_off());
        assert_eq!(
            dropped(&scores, &positives, &Denoise::default()),
            [false; 4]
        );
    }
}
