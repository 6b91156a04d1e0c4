//! Mining parameters as a round records them, validated once, and the
//! choices they are made of.

use cpack_core::{require, InvalidSetting};
use serde::{Deserialize, Serialize};

/// How negatives are drawn from the candidates that survive the filters.
/// (Stored in round manifests: new variants go at the end.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Sampling {
    /// Uniformly at random (seeded per query), as FlagEmbedding's hn_mine.
    Random,
    /// The best-ranked survivors, as sentence-transformers' default.
    Top,
    /// SimANS (Zhou et al. 2022): at random without replacement, candidate
    /// `d` weighted by `exp(−a·(s(d) − s⁺ − b)²)`, `s⁺` the query's lowest
    /// positive score — the negatives scored close to the positive are the
    /// likeliest, the far easy ones and the suspiciously high ones unlikely.
    Simans(SimansWeights),
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sampling::Random => f.write_str("random"),
            Sampling::Top => f.write_str("top"),
            Sampling::Simans(w) => write!(f, "simans a={} b={}", w.a, w.b),
        }
    }
}

/// The choice of [`Sampling`] as a flag or `cpack.toml` value; SimANS's
/// weights come separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SamplingKind {
    /// Uniformly at random (seeded per query), as FlagEmbedding's hn_mine.
    #[default]
    Random,
    /// The best-ranked survivors.
    Top,
    /// SimANS: weighted towards candidates scored close to the positive.
    Simans,
}

impl SamplingKind {
    /// The sampling, with `weights` used by SimANS only.
    pub fn with_weights(self, weights: SimansWeights) -> Sampling {
        match self {
            SamplingKind::Random => Sampling::Random,
            SamplingKind::Top => Sampling::Top,
            SamplingKind::Simans => Sampling::Simans(weights),
        }
    }
}

/// SimANS's `a` (how sharply the weight falls off) and `b` (where it
/// peaks, relative to the positive's score).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimansWeights {
    pub a: f32,
    pub b: f32,
}

impl SimansWeights {
    /// The paper's values.
    pub const PAPER: SimansWeights = SimansWeights { a: 0.5, b: 0.0 };

    /// Refuses weights no draw can follow.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let (a, b) = (self.a, self.b);
        require(
            a.is_finite() && a >= 0.0,
            "simans_a",
            a,
            "must be a finite number ≥ 0",
        )?;
        require(b.is_finite(), "simans_b", b, "must be a finite number")
    }

    /// The log of the unnormalised weight of a candidate scoring `score`
    /// for a query whose positive scores `positive`. Logs, because the
    /// weights themselves underflow to zero for a large `a`, and a draw
    /// over all-zero weights would no longer be the one asked for.
    pub fn log_weight(&self, score: f32, positive: f32) -> f64 {
        let d = score as f64 - positive as f64 - self.b as f64;
        -(self.a as f64) * d * d
    }
}

impl Default for SimansWeights {
    fn default() -> Self {
        SimansWeights::PAPER
    }
}

/// Positive-aware filters as named presets (NV-Retriever, Moreira et al.
/// 2024), which set the score filters below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum FilterPreset {
    /// TopK-PercPos: drop candidates scoring above 95 % of the positive
    /// (`relative_margin` 0.05).
    PercPos,
    /// TopK-MarginPos: drop candidates scoring above the positive − 0.05
    /// (`margin` 0.05).
    MarginPos,
}

impl std::fmt::Display for FilterPreset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FilterPreset::PercPos => "perc-pos",
            FilterPreset::MarginPos => "margin-pos",
        })
    }
}

impl FilterPreset {
    /// The `(margin, relative_margin)` the preset stands for.
    pub fn margins(self) -> (Option<f32>, Option<f32>) {
        match self {
            FilterPreset::PercPos => (None, Some(0.05)),
            FilterPreset::MarginPos => (Some(0.05), None),
        }
    }
}

/// What to do when fewer than `negatives` candidates survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
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
    pub fn validated(
        mut self,
        corpus_rows: usize,
    ) -> Result<(Self, Option<String>), InvalidSetting> {
        require(
            self.negatives > 0,
            "negatives",
            self.negatives,
            "must be at least 1",
        )?;
        require(self.topk > 0, "topk", self.topk, "must be at least 1")?;
        if !self.skip_after_filter && self.skip >= self.topk {
            return Err(InvalidSetting::new("skip", self.skip, "leaves nothing of ")
                .setting("topk", self.topk)
                .text(": skip must be smaller than topk"));
        }
        for (key, value) in [
            ("max_score", self.max_score),
            ("margin", self.margin),
            ("relative_margin", self.relative_margin),
        ] {
            if let Some(v) = value {
                require(v.is_finite(), key, v, "is not a finite number")?;
            }
        }
        if let Sampling::Simans(w) = self.sampling {
            w.validate()?;
        }
        if let Some(r) = self.relative_margin {
            require(
                (0.0..1.0).contains(&r),
                "relative_margin",
                r,
                "must be in [0, 1)",
            )?;
        }
        let mut note = None;
        if self.topk > corpus_rows {
            note = Some(format!(
                "topk {} exceeds the corpus; searching all {corpus_rows} passages",
                self.topk
            ));
            self.topk = corpus_rows;
        }
        Ok((self, note))
    }
}
