//! What a round looks like: coverage, shortages, what the filters removed,
//! where the positives rank, and how much the negatives moved since the
//! previous round (the sign that a refresh is doing something).

use crate::select::FilterCounts;
use crate::store::QueryRecord;
use crate::teacher::TeacherScores;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundStats {
    pub round: u32,
    pub queries: usize,
    pub queries_with_negatives: usize,
    pub negatives_min: usize,
    pub negatives_mean: f64,
    /// Queries that came out short of the requested negatives.
    pub short_queries: usize,
    pub filtered: FilterCounts,
    /// Positives by raw rank in the top-k: rank 1, 2–10, 11–100, 101+, not retrieved.
    pub positive_ranks: [usize; 5],
    pub positive_score_mean: f64,
    pub negative_score_mean: f64,
    /// Score histograms over [-1, 1] in 20 bins of 0.1 (scores outside are clamped).
    pub positive_score_histogram: Vec<usize>,
    pub negative_score_histogram: Vec<usize>,
    /// Mean Jaccard overlap of each query's negatives with the previous round's.
    pub overlap_with_previous: Option<f64>,
    /// What the round's teacher said, when it has one.
    pub teacher: Option<TeacherStats>,
}

/// The teacher's view of a round: its scores (raw logits) of positives
/// and stored negatives, and what denoising dropped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TeacherStats {
    /// Queries with teacher scores.
    pub queries: usize,
    pub positive_scores: Spread,
    pub negative_scores: Spread,
    /// Stored negatives the teacher scores above their query's lowest
    /// positive: the likely false negatives left in.
    pub negatives_above_positive: usize,
    /// Candidates scored per query, on average.
    pub pool_mean: f64,
    /// Candidates denoising dropped.
    pub denoised: usize,
    /// Of those, by raw rank: 1–10, 11–20, 21–50, 51–100, 101+ — where
    /// the teacher still finds positives, so whether a rank skip is needed.
    pub denoised_ranks: [usize; 5],
}

/// Where a set of scores lies.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub mean: f64,
    pub min: f32,
    pub p25: f32,
    pub median: f32,
    pub p75: f32,
    pub max: f32,
}

impl Spread {
    /// The spread of the finite ones among `scores`.
    pub fn of(scores: impl Iterator<Item = f32>) -> Self {
        let mut sorted: Vec<f32> = scores.filter(|s| s.is_finite()).collect();
        if sorted.is_empty() {
            return Spread::default();
        }
        sorted.sort_by(f32::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Spread {
            count: sorted.len(),
            mean: mean(sorted.iter().map(|&s| s as f64).sum(), sorted.len()),
            min: sorted[0],
            p25: at(0.25),
            median: at(0.5),
            p75: at(0.75),
            max: sorted[sorted.len() - 1],
        }
    }
}

fn denoised_bucket(rank: u32) -> usize {
    match rank {
        0..=9 => 0,
        10..=19 => 1,
        20..=49 => 2,
        50..=99 => 3,
        _ => 4,
    }
}

fn teacher_stats(records: &[(String, QueryRecord)]) -> Option<TeacherStats> {
    let scored: Vec<&TeacherScores> = records
        .iter()
        .filter_map(|(_, r)| r.teacher.as_ref())
        .collect();
    if scored.is_empty() {
        return None;
    }
    let mut denoised_ranks = [0usize; 5];
    for rank in scored.iter().flat_map(|t| &t.denoised_ranks) {
        denoised_ranks[denoised_bucket(*rank)] += 1;
    }
    let above = |t: &TeacherScores| {
        let lowest = t.positives.iter().copied().reduce(f32::min);
        lowest.map_or(0, |p| t.negatives.iter().filter(|&&n| n > p).count())
    };
    Some(TeacherStats {
        queries: scored.len(),
        positive_scores: Spread::of(scored.iter().flat_map(|t| t.positives.iter().copied())),
        negative_scores: Spread::of(scored.iter().flat_map(|t| t.negatives.iter().copied())),
        negatives_above_positive: scored.iter().map(|t| above(t)).sum(),
        pool_mean: mean(scored.iter().map(|t| t.pool as f64).sum(), scored.len()),
        denoised: denoised_ranks.iter().sum(),
        denoised_ranks,
    })
}

fn rank_bucket(rank: u32) -> usize {
    match rank {
        0 => 0,
        1..=9 => 1,
        10..=99 => 2,
        u32::MAX => 4,
        _ => 3,
    }
}

/// Histogram bins over [-1, 1].
pub const BINS: usize = 20;

fn bin(score: f32) -> usize {
    (((score.clamp(-1.0, 1.0) + 1.0) / 2.0 * BINS as f32) as usize).min(BINS - 1)
}

fn mean(sum: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

pub fn round_stats(
    round: u32,
    records: &[(String, QueryRecord)],
    previous: Option<&[(String, QueryRecord)]>,
) -> RoundStats {
    let mut filtered = FilterCounts::default();
    let mut positive_ranks = [0usize; 5];
    let mut positive_histogram = vec![0usize; BINS];
    let mut negative_histogram = vec![0usize; BINS];
    let (mut pos_sum, mut pos_n, mut neg_sum, mut neg_n) = (0f64, 0usize, 0f64, 0usize);
    for (_, r) in records {
        filtered.add(&r.filtered);
        for p in &r.positives {
            positive_ranks[rank_bucket(p.rank)] += 1;
            pos_sum += p.score as f64;
            positive_histogram[bin(p.score)] += 1;
            pos_n += 1;
        }
        for n in r.negatives.iter().filter(|n| n.score.is_finite()) {
            neg_sum += n.score as f64;
            negative_histogram[bin(n.score)] += 1;
            neg_n += 1;
        }
    }
    let counts: Vec<usize> = records.iter().map(|(_, r)| r.negatives.len()).collect();
    RoundStats {
        round,
        queries: records.len(),
        queries_with_negatives: counts.iter().filter(|&&c| c > 0).count(),
        negatives_min: counts.iter().copied().min().unwrap_or(0),
        negatives_mean: mean(counts.iter().sum::<usize>() as f64, counts.len()),
        short_queries: records.iter().filter(|(_, r)| r.shortfall > 0).count(),
        filtered,
        positive_ranks,
        positive_score_mean: mean(pos_sum, pos_n),
        negative_score_mean: mean(neg_sum, neg_n),
        positive_score_histogram: positive_histogram,
        negative_score_histogram: negative_histogram,
        overlap_with_previous: previous.map(|prev| overlap(records, prev)),
        teacher: teacher_stats(records),
    }
}

/// Mean over shared queries of |A ∩ B| / |A ∪ B| of the negative ids.
pub fn overlap(a: &[(String, QueryRecord)], b: &[(String, QueryRecord)]) -> f64 {
    let earlier: HashMap<&str, HashSet<&str>> = b
        .iter()
        .map(|(q, r)| {
            (
                q.as_str(),
                r.negatives.iter().map(|n| n.id.as_str()).collect(),
            )
        })
        .collect();
    let mut sum = 0.0;
    let mut n = 0;
    for (q, r) in a {
        let Some(old) = earlier.get(q.as_str()) else {
            continue;
        };
        let new: HashSet<&str> = r.negatives.iter().map(|n| n.id.as_str()).collect();
        let union = new.union(old).count();
        if union > 0 {
            sum += new.intersection(old).count() as f64 / union as f64;
            n += 1;
        }
    }
    mean(sum, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ScoredDoc;

    fn record(negatives: &[(&str, f32)], positive: (u32, f32), shortfall: u32) -> QueryRecord {
        let doc = |id: &str, rank, score| ScoredDoc {
            id: id.into(),
            rank,
            score,
        };
        QueryRecord {
            negatives: negatives
                .iter()
                .enumerate()
                .map(|(i, (id, s))| doc(id, 10 + i as u32, *s))
                .collect(),
            positives: vec![doc("p", positive.0, positive.1)],
            survivors: negatives.len() as u32,
            shortfall,
            filtered: FilterCounts {
                skipped: 10,
                ..Default::default()
            },
            teacher: None,
        }
    }

    #[test]
    fn summarises_counts_ranks_scores_and_overlap() {
        let now = vec![
            (
                "q1".to_string(),
                record(&[("a", 0.5), ("b", 0.45)], (0, 0.9), 0),
            ),
            ("q2".to_string(), record(&[("c", -0.2)], (u32::MAX, 0.1), 1)),
        ];
        let before = vec![(
            "q1".to_string(),
            record(&[("a", 0.5), ("z", 0.4)], (3, 0.8), 0),
        )];
        let s = round_stats(2, &now, Some(&before));
        assert_eq!((s.queries, s.negatives_min, s.short_queries), (2, 1, 1));
        assert_eq!(s.negatives_mean, 1.5);
        assert_eq!(s.filtered.skipped, 20);
        assert_eq!(s.positive_ranks, [1, 0, 0, 0, 1]);
        assert_eq!(s.positive_score_histogram[bin(0.9)], 1);
        assert_eq!(s.negative_score_histogram.iter().sum::<usize>(), 3);
        assert_eq!(s.negative_score_histogram[bin(-0.2)], 1);
        // q1: {a, b} vs {a, z} share 1 of 3; q2 has no previous round.
        assert!((s.overlap_with_previous.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.teacher, None);
    }

    #[test]
    fn teacher_stats_count_suspects_and_drops_by_rank() {
        let scored = |positives: Vec<f32>, negatives: Vec<f32>, dropped: Vec<u32>| {
            let mut r = record(&[("a", 0.5), ("b", 0.4)], (0, 0.9), 0);
            r.teacher = Some(TeacherScores {
                positives,
                negatives,
                pool: 6,
                denoised_ranks: dropped,
            });
            r
        };
        let records = vec![
            (
                "q1".to_string(),
                scored(vec![2.0, 1.0], vec![1.5, -3.0], vec![3, 12]),
            ),
            (
                "q2".to_string(),
                scored(vec![4.0], vec![f32::NAN, 0.5], vec![150]),
            ),
            ("q3".to_string(), record(&[("c", 0.1)], (1, 0.5), 0)),
        ];
        let t = round_stats(1, &records, None).teacher.unwrap();
        assert_eq!(t.queries, 2);
        assert_eq!(
            t.negatives_above_positive, 1,
            "1.5 beats q1's lowest positive 1.0"
        );
        assert_eq!((t.denoised, t.denoised_ranks), (3, [1, 1, 0, 0, 1]));
        assert_eq!(t.negative_scores.count, 3, "the padded NaN is not a score");
        assert_eq!((t.positive_scores.min, t.positive_scores.max), (1.0, 4.0));
        assert_eq!(t.positive_scores.median, 2.0);
        assert_eq!(t.pool_mean, 6.0);
    }
}
