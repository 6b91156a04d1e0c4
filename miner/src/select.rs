//! Turning one query's ranked candidates into its stored negatives: the
//! false-negative guards, the score filters, and sampling. Pure functions,
//! so every rule is tested directly.

#[cfg(test)]
use crate::params::{FilterPreset, SimansWeights};
use crate::params::{MiningParams, OnShort, Sampling};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A search hit: corpus row, 0-based raw rank, inner-product score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub row: usize,
    pub rank: u32,
    pub score: f32,
}

impl Candidate {
    /// Query `q`'s search hits as candidates, raw ranks from 0.
    pub fn from_hits(hits: &cpack_index::vector::Hits, q: usize) -> Vec<Candidate> {
        hits.of(q)
            .enumerate()
            .map(|(rank, (row, score))| Candidate {
                row,
                rank: rank as u32,
                score,
            })
            .collect()
    }
}

/// What a query's candidates are checked against.
pub struct QueryFacts<'a> {
    /// [`text_key`] of the query text.
    pub text: u64,
    pub positive_rows: &'a HashSet<usize>,
    /// [`text_key`]s of the positives' texts.
    pub positive_texts: HashSet<u64>,
    /// Lowest score among the positives, for the margin filters.
    pub lowest_positive_score: Option<f32>,
}

/// How many candidates each rule removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterCounts {
    pub skipped: u32,
    pub positives: u32,
    pub query_text: u32,
    pub duplicate_of_positive: u32,
    pub max_score: u32,
    pub margin: u32,
    pub relative_margin: u32,
}

impl FilterCounts {
    pub fn add(&mut self, other: &FilterCounts) {
        self.skipped += other.skipped;
        self.positives += other.positives;
        self.query_text += other.query_text;
        self.duplicate_of_positive += other.duplicate_of_positive;
        self.max_score += other.max_score;
        self.margin += other.margin;
        self.relative_margin += other.relative_margin;
    }
}

/// The outcome for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Chosen negatives in rank order; padded ones have `rank == u32::MAX`.
    pub chosen: Vec<Candidate>,
    /// Candidates left after the filters.
    pub survivors: u32,
    /// How many negatives short of the target the query came out (before padding).
    pub shortfall: u32,
    pub filtered: FilterCounts,
}

/// Rank marker of padded negatives (they were never retrieved).
pub const PADDED: u32 = u32::MAX;

/// A 64-bit hash of the text lower-cased with whitespace runs collapsed:
/// "same text" for the duplicate guards, computed once per passage instead
/// of comparing long strings for every candidate.
pub fn text_key(text: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            hasher.write_u8(b' ');
        }
        for c in word.chars().flat_map(char::to_lowercase) {
            hasher.write_u32(c as u32);
        }
    }
    hasher.finish()
}

/// SplitMix64, seeded per query so results do not depend on order or threads.
pub struct Rng(u64);

impl Rng {
    /// A generator for `query_id` under `seed` (FNV-1a of the id mixed in).
    pub fn for_query(seed: u64, query_id: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in query_id.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(seed ^ h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1), never 0 (53 random bits).
    pub fn unit_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Why a candidate cannot be a negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    Positive,
    QueryText,
    DuplicateOfPositive,
    MaxScore,
    Margin,
    RelativeMargin,
}

fn rejection(
    c: &Candidate,
    text_key_of: &dyn Fn(usize) -> u64,
    facts: &QueryFacts,
    params: &MiningParams,
) -> Option<Rejection> {
    if facts.positive_rows.contains(&c.row) {
        return Some(Rejection::Positive);
    }
    let text = text_key_of(c.row);
    if text == facts.text {
        return Some(Rejection::QueryText);
    }
    if facts.positive_texts.contains(&text) {
        return Some(Rejection::DuplicateOfPositive);
    }
    if params.max_score.is_some_and(|max| c.score > max) {
        return Some(Rejection::MaxScore);
    }
    if let Some(pos) = facts.lowest_positive_score {
        if params.margin.is_some_and(|m| c.score > pos - m) {
            return Some(Rejection::Margin);
        }
        // (1 − R)·pos for positive scores; pos − R·|pos| keeps the bound below pos when pos < 0.
        if params
            .relative_margin
            .is_some_and(|r| c.score > pos - r * pos.abs())
        {
            return Some(Rejection::RelativeMargin);
        }
    }
    None
}

impl FilterCounts {
    fn count(&mut self, why: Rejection) {
        match why {
            Rejection::Positive => self.positives += 1,
            Rejection::QueryText => self.query_text += 1,
            Rejection::DuplicateOfPositive => self.duplicate_of_positive += 1,
            Rejection::MaxScore => self.max_score += 1,
            Rejection::Margin => self.margin += 1,
            Rejection::RelativeMargin => self.relative_margin += 1,
        }
    }
}

/// Applies the guards and filters in order (raw-rank skip, positives, the
/// query's own text, copies of a positive, score filters, skip among
/// survivors), then samples `params.negatives`.
pub fn select(
    candidates: &[Candidate],
    text_key_of: &dyn Fn(usize) -> u64,
    facts: &QueryFacts,
    params: &MiningParams,
    corpus_rows: usize,
    rng: &mut Rng,
) -> Selection {
    let pool = pool(
        candidates,
        text_key_of,
        facts,
        params,
        params.negatives,
        rng,
    );
    choose(pool, &[], facts, params, corpus_rows, rng)
}

/// The candidates a query's negatives are drawn from: those that survive
/// the guards and filters, and the first `size` of them in the order the
/// sampling draws them (rank order for `Top`). A teacher scores this pool;
/// [`choose`] then takes the first `negatives` it does not drop, which for
/// a pool of exactly `negatives` and no drops is the sampling's own draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// In draw order.
    pub drawn: Vec<Candidate>,
    /// Candidates left after the filters.
    pub survivors: u32,
    pub filtered: FilterCounts,
}

/// The guards and filters, then the first `size` survivors in draw order.
pub fn pool(
    candidates: &[Candidate],
    text_key_of: &dyn Fn(usize) -> u64,
    facts: &QueryFacts,
    params: &MiningParams,
    size: usize,
    rng: &mut Rng,
) -> Pool {
    let mut filtered = FilterCounts::default();
    let mut survivors = Vec::with_capacity(candidates.len());
    for c in candidates {
        if !params.skip_after_filter && (c.rank as usize) < params.skip {
            filtered.skipped += 1;
            continue;
        }
        match rejection(c, text_key_of, facts, params) {
            Some(why) => filtered.count(why),
            None => survivors.push(*c),
        }
    }
    if params.skip_after_filter {
        let skipped = params.skip.min(survivors.len());
        filtered.skipped += skipped as u32;
        survivors.drain(..skipped);
    }
    let drawn = match params.sampling {
        Sampling::Top => survivors.iter().take(size).copied().collect(),
        Sampling::Random => draw_uniform(&survivors, size, rng),
        Sampling::Simans(w) => {
            // A query without a scored positive has nothing to centre the
            // weights on: its draw is uniform.
            let log_weights: Vec<f64> = survivors
                .iter()
                .map(|c| {
                    facts
                        .lowest_positive_score
                        .map_or(0.0, |pos| w.log_weight(c.score, pos))
                })
                .collect();
            draw_weighted(&survivors, &log_weights, size, rng)
        }
    };
    Pool {
        drawn,
        survivors: survivors.len() as u32,
        filtered,
    }
}

/// The query's negatives from its pool: the first `params.negatives` in
/// draw order whose entry in `dropped` is not set (a teacher's denoising;
/// missing entries keep), in rank order, then the shortage rule.
pub fn choose(
    pool: Pool,
    dropped: &[bool],
    facts: &QueryFacts,
    params: &MiningParams,
    corpus_rows: usize,
    rng: &mut Rng,
) -> Selection {
    let want = params.negatives;
    let kept = (pool.drawn.iter().enumerate())
        .filter(|(i, _)| !dropped.get(*i).copied().unwrap_or(false))
        .map(|(_, c)| *c);
    let mut chosen: Vec<Candidate> = kept.take(want).collect();
    chosen.sort_unstable_by_key(|c| c.rank);
    let shortfall = (want - chosen.len()) as u32;
    if shortfall > 0 {
        match params.on_short {
            OnShort::Keep => {}
            OnShort::Drop => chosen.clear(),
            OnShort::Pad => {
                // A candidate the teacher dropped must not come back as padding.
                let dropped_rows = (pool.drawn.iter().zip(dropped))
                    .filter(|(_, &gone)| gone)
                    .map(|(c, _)| c.row);
                pad(&mut chosen, want, dropped_rows, facts, corpus_rows, rng)
            }
        }
    }
    Selection {
        survivors: pool.survivors,
        chosen,
        shortfall,
        filtered: pool.filtered,
    }
}

/// `k` of `items` uniformly without replacement, in the order drawn.
fn draw_uniform(items: &[Candidate], k: usize, rng: &mut Rng) -> Vec<Candidate> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    let k = k.min(items.len());
    for i in 0..k {
        let j = i + rng.below(idx.len() - i);
        idx.swap(i, j);
    }
    idx[..k].iter().map(|&i| items[i]).collect()
}

/// `k` of `items` without replacement, each draw proportional to the
/// weights (given as logs) of those not yet drawn, in the order drawn.
/// Efraimidis–Spirakis keeps the `k` largest keys `ln(u)/w`; this compares
/// `ln(-ln u) - ln w` instead (smallest first), the same order computed
/// without ever forming `w`, so any finite log weight draws as it says.
fn draw_weighted(
    items: &[Candidate],
    log_weights: &[f64],
    k: usize,
    rng: &mut Rng,
) -> Vec<Candidate> {
    let mut keyed: Vec<(f64, usize)> = log_weights
        .iter()
        .enumerate()
        .map(|(i, &log_w)| ((-rng.unit_open().ln()).ln() - log_w, i))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.iter().take(k).map(|&(_, i)| items[i]).collect()
}

/// Fills `chosen` up to `want` with random passages that are neither
/// positives, nor already chosen, nor `excluded` (score unknown: NaN, rank
/// [`PADDED`]).
fn pad(
    chosen: &mut Vec<Candidate>,
    want: usize,
    excluded: impl Iterator<Item = usize>,
    facts: &QueryFacts,
    corpus_rows: usize,
    rng: &mut Rng,
) {
    let mut taken: HashSet<usize> = chosen.iter().map(|c| c.row).chain(excluded).collect();
    let available = corpus_rows.saturating_sub(facts.positive_rows.len() + taken.len());
    let (mut added, mut attempts) = (0, 0);
    while chosen.len() < want && added < available && attempts < 100 * want {
        attempts += 1;
        let row = rng.below(corpus_rows);
        if facts.positive_rows.contains(&row) || !taken.insert(row) {
            continue;
        }
        added += 1;
        chosen.push(Candidate {
            row,
            rank: PADDED,
            score: f32::NAN,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> MiningParams {
        MiningParams {
            split: "train".into(),
            topk: 10,
            skip: 2,
            skip_after_filter: false,
            negatives: 3,
            sampling: Sampling::Top,
            on_short: OnShort::Keep,
            seed: 1,
            max_score: None,
            margin: None,
            relative_margin: None,
        }
    }

    fn ranked(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                row: 100 + i,
                rank: i as u32,
                score: 1.0 - i as f32 * 0.1,
            })
            .collect()
    }

    /// Row 104 repeats the query (other case and spacing); 105 copies a positive.
    fn texts(row: usize) -> String {
        match row {
            104 => "the query ".into(),
            105 => "positive text".into(),
            _ => format!("passage {row}"),
        }
    }

    fn facts(positives: &HashSet<usize>, lowest: Option<f32>) -> QueryFacts<'_> {
        QueryFacts {
            text: text_key("The  query"),
            positive_rows: positives,
            positive_texts: [text_key("positive text")].into_iter().collect(),
            lowest_positive_score: lowest,
        }
    }

    fn run(p: &MiningParams, positives: &HashSet<usize>, lowest: Option<f32>) -> Selection {
        let facts = facts(positives, lowest);
        select(
            &ranked(10),
            &|row| text_key(&texts(row)),
            &facts,
            p,
            1000,
            &mut Rng::for_query(p.seed, "q"),
        )
    }

    #[test]
    fn guards_apply_in_order_on_raw_ranks() {
        let positives: HashSet<usize> = [101, 103].into_iter().collect();
        let s = run(&params(), &positives, None);
        // ranks 0,1 skipped; 103 positive; 104 = query text; 105 = copy of a positive.
        assert_eq!(s.filtered.skipped, 2);
        assert_eq!(
            s.filtered.positives, 1,
            "101 sits in the skipped ranks already"
        );
        assert_eq!(s.filtered.query_text, 1);
        assert_eq!(s.filtered.duplicate_of_positive, 1);
        assert_eq!(
            s.chosen.iter().map(|c| c.row).collect::<Vec<_>>(),
            [102, 106, 107]
        );
        assert_eq!(s.survivors, 5);
    }

    #[test]
    fn skip_after_filter_counts_survivors() {
        let positives: HashSet<usize> = [100].into_iter().collect();
        let p = MiningParams {
            skip_after_filter: true,
            ..params()
        };
        let s = run(&p, &positives, None);
        assert_eq!(
            s.chosen.iter().map(|c| c.row).collect::<Vec<_>>(),
            [103, 106, 107]
        );
        assert_eq!(s.filtered.skipped, 2);
    }

    #[test]
    fn score_filters_use_the_lowest_positive() {
        let none = HashSet::new();
        let p = MiningParams {
            skip: 0,
            max_score: Some(0.85),
            ..params()
        };
        let s = run(&p, &none, None);
        assert_eq!(s.filtered.max_score, 2); // scores 1.0, 0.9
        let p = MiningParams {
            skip: 0,
            margin: Some(0.1),
            ..params()
        };
        let s = run(&p, &none, Some(0.75));
        assert_eq!(s.filtered.margin, 4, "scores above 0.75 - 0.1 go");
        assert_eq!(s.chosen[0].row, 106, "104 and 105 fall to the text guards");
        let p = MiningParams {
            skip: 0,
            relative_margin: Some(0.5),
            ..params()
        };
        let s = run(&p, &none, Some(-0.2));
        // bound = -0.2 - 0.5*0.2 = -0.3: every candidate (scores 1.0 .. 0.1) is above it.
        assert_eq!(s.filtered.relative_margin, 8);
        assert_eq!(s.shortfall, 3);
    }

    #[test]
    fn random_sampling_is_seeded_and_in_rank_order() {
        let none = HashSet::new();
        let p = MiningParams {
            skip: 0,
            sampling: Sampling::Random,
            negatives: 4,
            ..params()
        };
        let a = run(&p, &none, None);
        let b = run(&p, &none, None);
        assert_eq!(a, b);
        assert_eq!(a.chosen.len(), 4);
        assert!(a.chosen.windows(2).all(|w| w[0].rank < w[1].rank));
        let other = run(
            &MiningParams {
                seed: 2,
                ..p.clone()
            },
            &none,
            None,
        );
        assert_ne!(a.chosen, other.chosen, "another seed draws other negatives");
    }

    #[test]
    fn simans_draws_follow_their_weights() {
        let w = SimansWeights { a: 8.0, b: -0.2 };
        let candidates = ranked(10);
        let positive = 0.9;
        let log_weights: Vec<f64> = candidates
            .iter()
            .map(|c| w.log_weight(c.score, positive))
            .collect();
        let weights: Vec<f64> = log_weights.iter().map(|l| l.exp()).collect();
        let total: f64 = weights.iter().sum();
        // One negative a draw: its frequency must match weight / total.
        let draws = 20_000;
        let mut counts = [0usize; 10];
        let mut rng = Rng::for_query(7, "q");
        for _ in 0..draws {
            let picked = draw_weighted(&candidates, &log_weights, 1, &mut rng);
            counts[picked[0].row - 100] += 1;
        }
        let mut chi2 = 0.0;
        for (i, &n) in counts.iter().enumerate() {
            let expected = draws as f64 * weights[i] / total;
            chi2 += (n as f64 - expected).powi(2) / expected;
        }
        // 9 degrees of freedom: P(χ² > 27.9) = 0.001.
        assert!(chi2 < 27.9, "χ² {chi2}, counts {counts:?}");
        // The weight peaks at score = positive + b = 0.7 (row 103).
        let most = counts.iter().enumerate().max_by_key(|&(_, n)| n).unwrap().0;
        assert_eq!(most, 3, "{counts:?}");
    }

    #[test]
    fn a_huge_simans_a_still_draws_the_peak_not_the_rank_order() {
        // exp(-a·d²) is zero for every candidate at this `a`: the draw must
        // still favour the one nearest the peak (positive + b = 0.7).
        let w = SimansWeights { a: 1e30, b: -0.2 };
        let candidates = ranked(10);
        let log_weights: Vec<f64> = candidates
            .iter()
            .map(|c| w.log_weight(c.score, 0.9))
            .collect();
        let mut rng = Rng::for_query(7, "q");
        for _ in 0..50 {
            let picked = draw_weighted(&candidates, &log_weights, 2, &mut rng);
            let rows: Vec<usize> = picked.iter().map(|c| c.row).collect();
            assert!(rows.contains(&103), "{rows:?}");
        }
    }

    #[test]
    fn simans_selection_is_seeded_without_repeats_and_never_a_positive() {
        let positives: HashSet<usize> = [102].into_iter().collect();
        let p = MiningParams {
            skip: 0,
            negatives: 4,
            sampling: Sampling::Simans(SimansWeights { a: 4.0, b: 0.0 }),
            ..params()
        };
        let a = run(&p, &positives, Some(0.8));
        assert_eq!(a, run(&p, &positives, Some(0.8)));
        assert_eq!(a.chosen.len(), 4);
        assert!(a.chosen.windows(2).all(|w| w[0].rank < w[1].rank));
        assert!(a.chosen.iter().all(|c| c.row != 102));
        // Without a positive score the draw is uniform, still seeded.
        let uniform = run(&p, &positives, None);
        assert_eq!(uniform.chosen.len(), 4);
    }

    #[test]
    fn filter_presets_drop_what_they_say() {
        let none = HashSet::new();
        let preset = |f: FilterPreset| {
            let (margin, relative_margin) = f.margins();
            MiningParams {
                skip: 0,
                margin,
                relative_margin,
                ..params()
            }
        };
        // PercPos: above 0.95 × 0.8 = 0.76 goes — scores 1.0, 0.9, 0.8.
        let s = run(&preset(FilterPreset::PercPos), &none, Some(0.8));
        assert_eq!(s.filtered.relative_margin, 3);
        assert!(s.chosen.iter().all(|c| c.score <= 0.76));
        // MarginPos: above 0.8 − 0.05 = 0.75 goes — the same three.
        let s = run(&preset(FilterPreset::MarginPos), &none, Some(0.8));
        assert_eq!(s.filtered.margin, 3);
        // At a positive of 0.22 they differ: above 0.209 against above
        // 0.17 (rows 104 and 105 fall to the text guards first).
        let perc = run(&preset(FilterPreset::PercPos), &none, Some(0.22));
        let margin = run(&preset(FilterPreset::MarginPos), &none, Some(0.22));
        assert_eq!(perc.filtered.relative_margin, 6, "1.0 .. 0.3");
        assert_eq!(margin.filtered.margin, 7, "1.0 .. 0.2");
    }

    #[test]
    fn shortages_keep_drop_or_pad() {
        let none = HashSet::new();
        let base = MiningParams {
            skip: 8,
            negatives: 5,
            ..params()
        };
        let keep = run(&base, &none, None);
        assert_eq!((keep.chosen.len(), keep.shortfall), (2, 3));
        let drop = run(
            &MiningParams {
                on_short: OnShort::Drop,
                ..base.clone()
            },
            &none,
            None,
        );
        assert!(drop.chosen.is_empty());
        let positives: HashSet<usize> = (0..50).collect();
        let pad = run(
            &MiningParams {
                on_short: OnShort::Pad,
                ..base
            },
            &positives,
            None,
        );
        assert_eq!(pad.chosen.len(), 5);
        assert!(pad.chosen[2..]
            .iter()
            .all(|c| c.rank == PADDED && !positives.contains(&c.row)));
    }

    /// The pool and its draw in two steps, as a teacher's round runs them.
    fn two_steps(p: &MiningParams, size: usize, dropped: &[bool]) -> (Pool, Selection) {
        let none = HashSet::new();
        let facts = facts(&none, Some(0.9));
        let mut rng = Rng::for_query(p.seed, "q");
        let keys = |row| text_key(&texts(row));
        let pool = pool(&ranked(10), &keys, &facts, p, size, &mut rng);
        let chosen = choose(pool.clone(), dropped, &facts, p, 1000, &mut rng);
        (pool, chosen)
    }

    #[test]
    fn a_larger_pool_without_drops_draws_what_select_draws() {
        let weights = SimansWeights { a: 4.0, b: 0.0 };
        for sampling in [Sampling::Top, Sampling::Random, Sampling::Simans(weights)] {
            let p = MiningParams {
                skip: 0,
                negatives: 3,
                sampling,
                ..params()
            };
            let direct = run(&p, &HashSet::new(), Some(0.9));
            let (pool, chosen) = two_steps(&p, 6, &[]);
            assert_eq!(pool.drawn.len(), 6);
            assert_eq!(chosen, direct, "{sampling}");
        }
    }

    #[test]
    fn dropped_candidates_give_way_to_the_next_drawn() {
        let p = MiningParams {
            skip: 0,
            negatives: 3,
            ..params()
        };
        // Top: the pool is rows 100..=103 then 106, 107 (104 and 105 fall to the text guards).
        let dropped = [true, false, true, false, false, false];
        let (pool, s) = two_steps(&p, 6, &dropped);
        let rows = |c: &[Candidate]| c.iter().map(|c| c.row).collect::<Vec<_>>();
        assert_eq!(rows(&pool.drawn), [100, 101, 102, 103, 106, 107]);
        assert_eq!(rows(&s.chosen), [101, 103, 106]);
        assert_eq!(s.shortfall, 0);
        // Drops that leave fewer than wanted make a shortage.
        let (_, s) = two_steps(&p, 4, &[true, true, true, false]);
        assert_eq!((rows(&s.chosen), s.shortfall), (vec![103], 2));
        // Random: the kept are the first of the draw order, in rank order.
        let random = MiningParams {
            sampling: Sampling::Random,
            ..p
        };
        let (pool, s) = two_steps(&random, 8, &[false, true, false, true]);
        let mut expected = vec![pool.drawn[0], pool.drawn[2], pool.drawn[4]];
        expected.sort_by_key(|c| c.rank);
        assert_eq!(s.chosen, expected);
    }

    #[test]
    fn padding_never_brings_back_a_dropped_candidate() {
        // Rows 0..100 are positives, so padding draws from the candidates'
        // rows 100..110 alone: 100..=102 are dropped, 103 is chosen.
        let positives: HashSet<usize> = (0..100).collect();
        let facts = facts(&positives, Some(0.9));
        for seed in 0..50 {
            let p = MiningParams {
                skip: 0,
                negatives: 3,
                on_short: OnShort::Pad,
                seed,
                ..params()
            };
            let mut rng = Rng::for_query(seed, "q");
            let keys = |row| text_key(&texts(row));
            let pool = pool(&ranked(10), &keys, &facts, &p, 4, &mut rng);
            let s = choose(pool, &[true, true, true, false], &facts, &p, 110, &mut rng);
            assert_eq!((s.chosen.len(), s.shortfall), (3, 2));
            assert!(s.chosen.iter().all(|c| c.row > 102), "{:?}", s.chosen);
        }
    }
}
