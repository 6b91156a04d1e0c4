//! The mining recipe: what a user sets about a round, in one type that is
//! `cpack mine`'s flags (feature `clap`), the `[mine]` table of `cpack.toml`,
//! and the mining keys of `[train]` (the rounds a training run mines). Its
//! [`Default`] is the one source of every default; [`MiningRecipe::params`]
//! turns it into the [`MiningParams`] a round records.

use crate::params::{FilterPreset, MiningParams, OnShort, SamplingKind, SimansWeights};
use crate::teacher::{Denoise, TeacherSpec};
use cpack_core::{require, InvalidSetting};
use serde::{Deserialize, Serialize};

/// How a mining round searches, filters and samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct MiningRecipe {
    /// Qrels split whose queries are mined (and, in training, trained on).
    #[cfg_attr(feature = "clap", arg(long, value_name = "SPLIT", default_value_t = MiningRecipe::default().split))]
    pub split: String,
    /// Passages retrieved per query (raw ranks).
    #[cfg_attr(feature = "clap", arg(long, value_name = "K", default_value_t = MiningRecipe::default().topk))]
    pub topk: usize,
    /// Drop the first N raw ranks, before any other filter (FlagEmbedding's
    /// range_for_sampling semantics: likely false negatives).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = MiningRecipe::default().skip))]
    pub skip: usize,
    /// Count --skip among the candidates that survive the filters
    /// (sentence-transformers' range_min) instead of raw ranks.
    #[cfg_attr(feature = "clap", arg(long))]
    pub skip_after_filter: bool,
    /// Negatives stored per query [default: 7 (FlagEmbedding's train_group_size
    /// 8 − 1) for `cpack mine`; in training, group size − 1].
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub negatives: Option<usize>,
    /// How negatives are drawn from the survivors: random (seeded), top, or
    /// simans (weighted towards scores near the positive's; see --simans-a).
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "HOW", default_value_t = MiningRecipe::default().sample))]
    pub sample: SamplingKind,
    /// SimANS's a in exp(−a·(s − s⁺ − b)²): how sharply the weight falls off
    /// away from s⁺ + b. Scores are cosines for normalised models: the
    /// paper's 0.5 (on unnormalised scores) then weighs nearly evenly, and
    /// values in the tens concentrate the draw.
    #[cfg_attr(feature = "clap", arg(long, value_name = "A", allow_negative_numbers = true, default_value_t = MiningRecipe::default().simans_a))]
    pub simans_a: f32,
    /// SimANS's b: where the weight peaks, relative to the positive's score.
    #[cfg_attr(feature = "clap", arg(long, value_name = "B", allow_negative_numbers = true, default_value_t = MiningRecipe::default().simans_b))]
    pub simans_b: f32,
    /// When fewer survive than --negatives: keep (store fewer), drop (store
    /// none) or pad (random passages, as FlagEmbedding).
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "WHAT", default_value_t = MiningRecipe::default().on_short))]
    pub on_short: OnShort,
    /// Drop candidates scoring above S (likely unlabelled positives).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "S", allow_negative_numbers = true)
    )]
    pub max_score: Option<f32>,
    /// Drop candidates scoring within M of the query's lowest positive.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "M", allow_negative_numbers = true)
    )]
    pub margin: Option<f32>,
    /// Drop candidates scoring above (1 − R) × the lowest positive's score (sign-aware).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "R", allow_negative_numbers = true)
    )]
    pub relative_margin: Option<f32>,
    /// A positive-aware filter by name (NV-Retriever): perc-pos drops
    /// candidates above 95 % of the positive's score (--relative-margin
    /// 0.05), margin-pos those above the positive's − 0.05 (--margin 0.05).
    /// The paper uses them instead of a rank skip: add --skip 0 for its recipe.
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "PRESET", conflicts_with_all = ["margin", "relative_margin"]))]
    pub filter: Option<FilterPreset>,
    /// A cross-encoder teacher (folder or hub id): it scores each query's
    /// positives and the candidates its negatives are drawn from, and the
    /// round keeps the scores (for `cpack train --distill`, `mine stats`,
    /// FlagEmbedding export). Pairs are cut as [rerank] says (max_len).
    #[cfg_attr(feature = "clap", arg(long, value_name = "RERANKER"))]
    pub teacher: Option<std::path::PathBuf>,
    /// Candidates the teacher scores per query: the first N the sampling
    /// draws (at least --negatives). Teacher time grows with it; denoising
    /// can only replace a dropped negative from within it [default: 16].
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub teacher_pool: Option<usize>,
    /// Denoise (RocketQA): drop candidates the teacher scores above the
    /// query's lowest positive (--denoise-margin 0) before the draw.
    ///
    /// It helps only with a teacher that ranks better than the embedder:
    /// check first that `cpack eval --reranker T --rerank-depth 20` scores
    /// above `cpack eval`, and watch `mine stats` for questions left short.
    #[cfg_attr(feature = "clap", arg(long))]
    pub denoise: bool,
    /// Denoise: drop candidates the teacher scores above S (its raw score, a logit).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "S", allow_negative_numbers = true)
    )]
    pub denoise_above: Option<f32>,
    /// Denoise: drop candidates the teacher scores above the query's
    /// lowest positive − M (negative: only those beating it by |M|).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "M", allow_negative_numbers = true)
    )]
    pub denoise_margin: Option<f32>,
}

impl Default for MiningRecipe {
    fn default() -> Self {
        MiningRecipe {
            split: "train".into(),
            topk: 200,
            skip: 10,
            skip_after_filter: false,
            negatives: None,
            sample: SamplingKind::Random,
            simans_a: SimansWeights::PAPER.a,
            simans_b: SimansWeights::PAPER.b,
            on_short: OnShort::Keep,
            max_score: None,
            margin: None,
            relative_margin: None,
            filter: None,
            teacher: None,
            teacher_pool: None,
            denoise: false,
            denoise_above: None,
            denoise_margin: None,
        }
    }
}

impl MiningRecipe {
    /// Negatives `cpack mine` stores per query unless told otherwise.
    pub const DEFAULT_NEGATIVES: usize = 7;

    /// Candidates a teacher scores per query unless set.
    pub const DEFAULT_TEACHER_POOL: usize = 16;

    /// The teacher with its pool and denoising rules, checked; `None`
    /// without a teacher, refused when they are set without one.
    pub fn teacher_spec(&self) -> Result<Option<TeacherSpec>, InvalidSetting> {
        let denoise = Denoise {
            above: self.denoise_above,
            margin: self.denoise_margin.or(self.denoise.then_some(0.0)),
        };
        denoise.validate()?;
        let Some(model) = &self.teacher else {
            let set = [
                ("teacher_pool", self.teacher_pool.is_some()),
                ("denoise", !denoise.is_off()),
            ];
            if let Some((key, _)) = set.into_iter().find(|(_, on)| *on) {
                return Err(InvalidSetting::new(
                    key,
                    "set",
                    "needs a teacher: set teacher (--teacher RERANKER)",
                ));
            }
            return Ok(None);
        };
        let pool = self.teacher_pool.unwrap_or(Self::DEFAULT_TEACHER_POOL);
        require(pool >= 1, "teacher_pool", pool, "must be at least 1")?;
        Ok(Some(TeacherSpec {
            model: model.clone(),
            pool,
            denoise,
        }))
    }

    /// The parameters a round records: `negatives` when the recipe names
    /// none, sampling `seed`. A filter preset stands for its margins, so it
    /// cannot come with margins of its own.
    pub fn params(&self, negatives: usize, seed: u64) -> Result<MiningParams, InvalidSetting> {
        let (margin, relative_margin) = match self.filter {
            None => (self.margin, self.relative_margin),
            Some(preset) if self.margin.is_none() && self.relative_margin.is_none() => {
                preset.margins()
            }
            Some(preset) => {
                return Err(InvalidSetting::new(
                    "filter",
                    preset,
                    "sets margin or relative_margin itself; drop the margin set beside it",
                ))
            }
        };
        // Checked whatever the sampling: a nonsense value is a mistake even
        // where it is not used yet.
        let weights = SimansWeights {
            a: self.simans_a,
            b: self.simans_b,
        };
        weights.validate()?;
        Ok(MiningParams {
            split: self.split.clone(),
            topk: self.topk,
            skip: self.skip,
            skip_after_filter: self.skip_after_filter,
            negatives: self.negatives.unwrap_or(negatives),
            sampling: self.sample.with_weights(weights),
            on_short: self.on_short,
            seed,
            max_score: self.max_score,
            margin,
            relative_margin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_stands_for_its_margins_and_refuses_company() {
        let preset = MiningRecipe {
            filter: Some(FilterPreset::PercPos),
            ..MiningRecipe::default()
        };
        let params = preset.params(7, 1).unwrap();
        assert_eq!((params.margin, params.relative_margin), (None, Some(0.05)));
        let both = MiningRecipe {
            margin: Some(0.1),
            ..preset
        };
        assert_eq!(both.params(7, 1).unwrap_err().key, "filter");
        let plain = MiningRecipe::default().params(7, 1).unwrap();
        assert_eq!((plain.negatives, plain.topk, plain.skip), (7, 200, 10));
    }

    #[test]
    fn teacher_rules_need_a_teacher_and_denoise_means_margin_zero() {
        let alone = MiningRecipe {
            denoise: true,
            ..MiningRecipe::default()
        };
        assert_eq!(alone.teacher_spec().unwrap_err().key, "denoise");
        assert_eq!(MiningRecipe::default().teacher_spec().unwrap(), None);
        let taught = MiningRecipe {
            teacher: Some("reranker".into()),
            ..alone
        };
        let spec = taught.teacher_spec().unwrap().unwrap();
        assert_eq!(spec.pool, MiningRecipe::DEFAULT_TEACHER_POOL);
        assert_eq!((spec.denoise.above, spec.denoise.margin), (None, Some(0.0)));
        let explicit = MiningRecipe {
            denoise_margin: Some(-0.5),
            denoise_above: Some(f32::NAN),
            ..taught
        };
        assert_eq!(explicit.teacher_spec().unwrap_err().key, "denoise_above");
    }
}
