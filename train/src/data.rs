//! Training examples from a mining round, and the batches of one epoch.
//!
//! Each example is a query, its positives (from the training split) and the
//! round's negatives for it. Every epoch draws, per query, one positive at
//! random and `group_size − 1` negatives (FlagEmbedding's `train_group_size`),
//! shuffles the queries and packs them into batches ([`Batching`]): by
//! default so that no text that is a positive of one member appears anywhere
//! else (otherwise a passage would be both the target and a negative of the
//! same softmax), or in plain shuffled order as FlagEmbedding and
//! sentence-transformers do.
//! Everything is a pure function of (seed, epoch) and the negatives retired
//! so far, so a resumed run sees exactly the batches the killed one would
//! have.
//!
//! Retired negatives (`--replace-easy`, after Conan-embedding's dynamic hard
//! negatives): a negative the live model already scores well below the
//! query's positive is not drawn again while the query has enough others in
//! its stored pool, so later epochs move on to the rest of the pool without
//! any corpus re-encode.

use cpack_data::dataset::{Qrels, TextTable};
use cpack_miner::select::{text_key, Rng};
use cpack_miner::store::QueryRecord;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Negatives a round stores per drawn negative when easy ones are replaced
/// (`--replace-easy` without `--negatives`): the pool later epochs draw from.
pub const POOL_PER_DRAWN_NEGATIVE: usize = 4;

/// Negatives a run's rounds store per query by default.
pub fn default_negatives(group_size: usize, replace_easy: bool) -> usize {
    let drawn = group_size.saturating_sub(1).max(1);
    if replace_easy {
        drawn * POOL_PER_DRAWN_NEGATIVE
    } else {
        drawn
    }
}

/// How an epoch's shuffled groups become batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Batching {
    /// Fill batches in order, deferring a group that clashes with the batch
    /// (a positive of one member among another's passages, or a repeated query).
    #[default]
    ClashFree,
    /// Consecutive groups of the shuffled order, clashes and all (FlagEmbedding's way).
    Plain,
    /// Clash-free batches filled one topic cluster of the queries at a time
    /// (k-means over the current model's query embeddings, one cluster per
    /// batch's worth of queries, as TAS-Balanced), so in-batch negatives
    /// are topical too.
    Clustered,
}

/// How the batches of several tasks follow one another in an epoch (each
/// batch holds one task's queries, so its in-batch negatives share a corpus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum TaskOrder {
    /// All tasks' batches in one seeded shuffle: each task is drawn in
    /// proportion to its share of the epoch (its queries times its weight).
    #[default]
    Proportional,
    /// One batch of each task in turn; a task whose batches run out drops out.
    RoundRobin,
}

impl TaskOrder {
    pub fn is_proportional(&self) -> bool {
        *self == TaskOrder::Proportional
    }
}

/// One task's part of a training set of several.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskShare {
    /// Visits of each of the task's queries per epoch: 1 visits each once,
    /// 0.5 a seeded half, 2 each twice.
    pub weight: f64,
}

/// One task's set in [`TrainingSet::merge`].
pub struct MergePart {
    pub set: TrainingSet,
    /// What the task's query ids are prefixed with in the merged set.
    pub id_prefix: String,
    /// Rows of the task's query table (where the next task's begin).
    pub queries: usize,
    pub share: TaskShare,
}

/// One training query with everything it can draw from (rows of the corpus).
#[derive(Debug, Clone)]
pub struct Example {
    pub query_id: String,
    /// The task the query belongs to (index into [`TrainingSet::tasks`]; 0 alone).
    pub task: usize,
    pub query_row: usize,
    /// Positives of the training split: the targets.
    pub positives: Vec<usize>,
    /// Every judged positive of the query (any split): never a negative in its batch.
    pub all_positive_keys: Vec<u64>,
    pub negatives: Vec<usize>,
    /// The round's teacher scores of the query's passages, by corpus row.
    pub teacher: Vec<(usize, f32)>,
}

impl Example {
    /// The teacher's score of the passage at `row`, if it scored it.
    fn teacher_score(&self, row: usize) -> Option<f32> {
        let found = self.teacher.iter().find(|(r, _)| *r == row);
        found.map(|&(_, score)| score).filter(|s| s.is_finite())
    }
}

/// The teacher's scores of a round's record, by corpus row.
fn teacher_rows(corpus: &TextTable, record: &QueryRecord) -> Vec<(usize, f32)> {
    let Some(t) = &record.teacher else {
        return Vec::new();
    };
    let docs = record.positives.iter().zip(&t.positives);
    let docs = docs.chain(record.negatives.iter().zip(&t.negatives));
    docs.filter_map(|(doc, &score)| Some((corpus.position(&doc.id)?, score)))
        .collect()
}

/// What a query was left out for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub no_positive: usize,
    pub not_in_round: usize,
}

/// How well a round's stored negatives fill the groups of a training set:
/// what the groups of short queries are made of is counted, never silent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeSupply {
    /// Training queries.
    pub queries: usize,
    /// Queries without a stored negative: their groups are filled with
    /// random passages that are not their positives.
    pub without: usize,
    /// Queries with some, fewer than a group needs: theirs are repeated
    /// (as FlagEmbedding does).
    pub short: usize,
}

impl NegativeSupply {
    /// No query has a negative: training on this round would train on
    /// random passages alone.
    pub fn is_empty(&self) -> bool {
        self.queries > 0 && self.without == self.queries
    }

    /// What round `round`'s short groups (drawing `wanted` negatives) are
    /// made of, when any is short.
    pub fn describe(&self, round: u32, wanted: usize) -> Option<String> {
        let (queries, without, short) = (self.queries, self.without, self.short);
        let mut parts = Vec::new();
        if without > 0 {
            parts.push(format!(
                "{without} of {queries} queries have no negative (random passages fill their groups)"
            ));
        }
        if short > 0 {
            parts.push(format!(
                "{short} of {queries} have fewer than the {wanted} negatives a group draws (theirs are repeated)"
            ));
        }
        (!parts.is_empty()).then(|| format!("round {round}: {}", parts.join("; ")))
    }
}

/// The examples of a training run; passages are corpus rows, text keys cached.
pub struct TrainingSet {
    pub examples: Vec<Example>,
    /// `text_key` of every corpus row.
    pub passage_keys: Vec<u64>,
    pub query_keys: HashMap<usize, u64>,
    pub skipped: Skipped,
    /// Topic cluster of each example, for [`Batching::Clustered`].
    pub clusters: Option<Vec<u32>>,
    /// Negatives each example no longer draws (corpus rows), by example.
    retired: HashMap<usize, HashSet<usize>>,
    /// The tasks of a merged set ([`TrainingSet::merge`]); empty for one dataset.
    pub tasks: Vec<TaskShare>,
    /// Each task's corpus rows in a merged set.
    task_rows: Vec<std::ops::Range<usize>>,
    pub task_order: TaskOrder,
}

impl TrainingSet {
    /// Examples for the queries of `split_qrels`, in query-id order, taking
    /// negatives from `records` (a mining round; `None` = in-batch negatives
    /// only). `limit` keeps the first N queries of a seeded shuffle.
    pub fn build(
        corpus: &TextTable,
        queries: &TextTable,
        split_qrels: &Qrels,
        records: Option<&[(String, QueryRecord)]>,
        limit: Option<usize>,
        seed: u64,
    ) -> Self {
        let by_id: Option<HashMap<&str, &QueryRecord>> =
            records.map(|r| r.iter().map(|(id, rec)| (id.as_str(), rec)).collect());
        let passage_keys: Vec<u64> = (0..corpus.len())
            .map(|i| text_key(&corpus.full_text(i)))
            .collect();
        let mut skipped = Skipped::default();
        let mut examples = Vec::new();
        for (query_id, judged) in &split_qrels.by_query {
            let positives: Vec<usize> = judged
                .iter()
                .filter(|(_, score)| *score > 0)
                .filter_map(|(doc, _)| corpus.position(doc))
                .collect();
            if positives.is_empty() {
                skipped.no_positive += 1;
                continue;
            }
            let (negatives, mut all_positive_keys, teacher) = match &by_id {
                None => (Vec::new(), Vec::new(), Vec::new()),
                Some(by_id) => match by_id.get(query_id.as_str()) {
                    None => {
                        skipped.not_in_round += 1;
                        continue;
                    }
                    Some(rec) => (
                        rec.negatives
                            .iter()
                            .filter_map(|d| corpus.position(&d.id))
                            .collect(),
                        rec.positives
                            .iter()
                            .filter_map(|d| corpus.position(&d.id))
                            .map(|row| passage_keys[row])
                            .collect(),
                        teacher_rows(corpus, rec),
                    ),
                },
            };
            all_positive_keys.extend(positives.iter().map(|&row| passage_keys[row]));
            examples.push(Example {
                query_id: query_id.clone(),
                task: 0,
                query_row: queries
                    .position(query_id)
                    .expect("qrels validated against queries"),
                positives,
                all_positive_keys,
                negatives,
                teacher,
            });
        }
        if let Some(limit) = limit {
            if limit < examples.len() {
                let mut rng = Rng::for_query(seed, "training-subset");
                shuffle(&mut examples, &mut rng);
                examples.truncate(limit);
                examples.sort_by(|a, b| a.query_id.cmp(&b.query_id));
            }
        }
        let query_keys = examples
            .iter()
            .map(|e| (e.query_row, text_key(&queries.texts[e.query_row])))
            .collect();
        TrainingSet {
            examples,
            passage_keys,
            query_keys,
            skipped,
            clusters: None,
            retired: HashMap::new(),
            tasks: Vec::new(),
            task_rows: Vec::new(),
            task_order: TaskOrder::default(),
        }
    }

    /// One set of several tasks' sets, each built over its own tables:
    /// rows move by the sizes of the tables before it (as
    /// [`TextTable::merged`] lays them out), query ids gain the part's
    /// prefix, and every example remembers its task.
    pub fn merge(parts: Vec<MergePart>, task_order: TaskOrder) -> Self {
        let mut merged = TrainingSet {
            examples: Vec::new(),
            passage_keys: Vec::new(),
            query_keys: HashMap::new(),
            skipped: Skipped::default(),
            clusters: None,
            retired: HashMap::new(),
            tasks: Vec::new(),
            task_rows: Vec::new(),
            task_order,
        };
        let mut query_offset = 0;
        for (task, part) in parts.into_iter().enumerate() {
            let passage_offset = merged.passage_keys.len();
            let set = part.set;
            merged.skipped.no_positive += set.skipped.no_positive;
            merged.skipped.not_in_round += set.skipped.not_in_round;
            merged.passage_keys.extend(set.passage_keys);
            let keys = set.query_keys.into_iter();
            merged
                .query_keys
                .extend(keys.map(|(row, key)| (row + query_offset, key)));
            merged.examples.extend(set.examples.into_iter().map(|e| {
                let shift =
                    |rows: Vec<usize>| rows.into_iter().map(|r| r + passage_offset).collect();
                Example {
                    query_id: format!("{}{}", part.id_prefix, e.query_id),
                    task,
                    query_row: e.query_row + query_offset,
                    positives: shift(e.positives),
                    all_positive_keys: e.all_positive_keys,
                    negatives: shift(e.negatives),
                    teacher: (e.teacher.into_iter())
                        .map(|(row, score)| (row + passage_offset, score))
                        .collect(),
                }
            }));
            merged.tasks.push(part.share);
            merged
                .task_rows
                .push(passage_offset..merged.passage_keys.len());
            query_offset += part.queries;
        }
        merged
    }

    /// Batches an epoch of full batches takes: the span the learning-rate
    /// schedule is laid over.
    pub fn nominal_batches(&self, batch_size: usize) -> usize {
        (0..self.task_count())
            .map(|t| self.visits(t).div_ceil(batch_size.max(1)))
            .sum()
    }

    fn task_count(&self) -> usize {
        self.tasks.len().max(1)
    }

    /// The examples of task `t`, in example order.
    fn members(&self, t: usize) -> Vec<usize> {
        (0..self.examples.len())
            .filter(|&i| self.examples[i].task == t)
            .collect()
    }

    /// Groups task `t` trains per epoch: its queries times its weight.
    fn visits(&self, t: usize) -> usize {
        let queries = self.examples.iter().filter(|e| e.task == t).count();
        match self.tasks.get(t) {
            Some(share) => (queries as f64 * share.weight).round() as usize,
            None => queries,
        }
    }

    /// Example `example` stops drawing negative `row` (while it has
    /// others); false if it already had.
    pub fn retire(&mut self, example: usize, row: usize) -> bool {
        self.retired.entry(example).or_default().insert(row)
    }

    /// Retired negatives, as passage ids by query id (for checkpoints).
    pub fn retired_ids(&self, corpus: &TextTable) -> BTreeMap<String, Vec<String>> {
        self.retired
            .iter()
            .map(|(&i, rows)| {
                let mut ids: Vec<String> = rows.iter().map(|&r| corpus.ids[r].clone()).collect();
                ids.sort();
                (self.examples[i].query_id.clone(), ids)
            })
            .collect()
    }

    /// Retires again what [`TrainingSet::retired_ids`] recorded; ids this
    /// set does not know are ignored (they can only come from another round).
    pub fn restore_retired(&mut self, retired: &BTreeMap<String, Vec<String>>, corpus: &TextTable) {
        let example_of: HashMap<&str, usize> = self
            .examples
            .iter()
            .enumerate()
            .map(|(i, e)| (e.query_id.as_str(), i))
            .collect();
        let pairs: Vec<(usize, usize)> = retired
            .iter()
            .filter_map(|(query_id, ids)| Some((*example_of.get(query_id.as_str())?, ids)))
            .flat_map(|(i, ids)| {
                ids.iter()
                    .filter_map(|id| corpus.position(id))
                    .map(move |row| (i, row))
            })
            .collect();
        for (i, row) in pairs {
            self.retire(i, row);
        }
    }

    /// Retired negatives over all examples.
    pub fn retired_count(&self) -> usize {
        self.retired.values().map(HashSet::len).sum()
    }

    /// The negatives example `i` draws `wanted` of: all of its stored ones,
    /// or with some retired, the others — topped up with retired ones, in
    /// stored order, when fewer than `wanted` remain.
    fn drawable(&self, i: usize, wanted: usize) -> Vec<usize> {
        let negatives = &self.examples[i].negatives;
        let Some(retired) = self.retired.get(&i) else {
            return negatives.clone();
        };
        let (live, used): (Vec<usize>, Vec<usize>) =
            negatives.iter().partition(|row| !retired.contains(row));
        if live.len() >= wanted {
            return live;
        }
        let short = wanted - live.len();
        live.into_iter()
            .chain(used.into_iter().take(short))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Examples with a teacher's scores (for distillation).
    pub fn taught(&self) -> usize {
        self.examples
            .iter()
            .filter(|e| !e.teacher.is_empty())
            .count()
    }

    /// How the stored negatives fill groups that draw `wanted` each.
    pub fn negative_supply(&self, wanted: usize) -> NegativeSupply {
        let stored = |e: &Example| e.negatives.len();
        NegativeSupply {
            queries: self.examples.len(),
            without: self.examples.iter().filter(|e| stored(e) == 0).count(),
            short: self
                .examples
                .iter()
                .filter(|e| (1..wanted).contains(&stored(e)))
                .count(),
        }
    }

    /// The text of each example's query, in example order.
    pub fn query_texts<'q>(&self, queries: &'q TextTable) -> Vec<&'q str> {
        self.examples
            .iter()
            .map(|e| queries.texts[e.query_row].as_str())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The batches of `epoch` (1-based), each a list of groups of one task.
    pub fn epoch_batches(
        &self,
        group_size: usize,
        batch_size: usize,
        batching: Batching,
        seed: u64,
        epoch: usize,
    ) -> Vec<Vec<Group>> {
        let epoch_seed = seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        let per_task: Vec<Vec<Vec<Group>>> = (0..self.task_count())
            .map(|t| {
                let groups = self.task_groups(t, group_size, batching, epoch_seed);
                match batching {
                    Batching::ClashFree | Batching::Clustered => self.pack(groups, batch_size),
                    Batching::Plain => groups
                        .chunks(batch_size.max(1))
                        .map(<[Group]>::to_vec)
                        .collect(),
                }
            })
            .collect();
        interleave(per_task, self.task_order, epoch_seed)
    }

    /// Task `t`'s groups of an epoch, in order: its examples shuffled (and
    /// with clusters, cluster by cluster), as many passes as its weight asks;
    /// a pass after the first draws its own order and groups.
    fn task_groups(
        &self,
        t: usize,
        group_size: usize,
        batching: Batching,
        epoch_seed: u64,
    ) -> Vec<Group> {
        let members = self.members(t);
        let visits = self.visits(t);
        let mut groups = Vec::with_capacity(visits);
        for pass in 0..visits.div_ceil(members.len().max(1)) {
            // Pass 0 of the only task draws as a single dataset always has.
            let pass_seed = epoch_seed ^ (pass as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let label = match t {
                0 => "epoch-order".to_string(),
                t => format!("epoch-order-{t}"),
            };
            let mut order = members.clone();
            shuffle(&mut order, &mut Rng::for_query(pass_seed, &label));
            if let (Batching::Clustered, Some(clusters)) = (batching, &self.clusters) {
                // Clusters in a shuffled order, each cluster's queries in the
                // shuffled order above.
                let count = clusters.iter().max().map_or(0, |&c| c as usize + 1);
                let mut rank: Vec<usize> = (0..count).collect();
                shuffle(&mut rank, &mut Rng::for_query(pass_seed, "cluster-order"));
                order.sort_by_key(|&i| rank[clusters[i] as usize]);
            }
            let wanted = visits - groups.len();
            groups.extend(
                order
                    .into_iter()
                    .take(wanted)
                    .map(|i| self.draw_group(i, group_size, pass_seed)),
            );
        }
        groups
    }

    /// One positive and `group_size − 1` negatives for example `i`. Short
    /// negative lists are repeated before sampling (as FlagEmbedding does);
    /// a query with none gets random passages that are not its positives.
    fn draw_group(&self, i: usize, group_size: usize, epoch_seed: u64) -> Group {
        let ex = &self.examples[i];
        let mut rng = Rng::for_query(epoch_seed, &ex.query_id);
        let mut passages = vec![ex.positives[rng.below(ex.positives.len())]];
        let wanted = group_size - 1;
        let negatives = self.drawable(i, wanted);
        if wanted > 0 && !negatives.is_empty() {
            let mut pool: Vec<usize> = negatives
                .iter()
                .copied()
                .cycle()
                .take(wanted.max(negatives.len()))
                .collect();
            shuffle(&mut pool, &mut rng);
            passages.extend(pool.into_iter().take(wanted));
        }
        // A corpus made only of this query's positives would never yield a
        // negative: after enough tries, take whatever comes. Random fill
        // comes from the query's own task's corpus.
        let rows = (self.task_rows.get(ex.task).cloned()).unwrap_or(0..self.passage_keys.len());
        let mut tries = 0;
        while passages.len() < group_size {
            let row = rows.start + rng.below(rows.len());
            tries += 1;
            if tries > 64 * group_size || !ex.all_positive_keys.contains(&self.passage_keys[row]) {
                passages.push(row);
            }
        }
        Group {
            example: i,
            query_row: ex.query_row,
            teacher: passages.iter().map(|&row| ex.teacher_score(row)).collect(),
            passages,
        }
    }

    /// Fills batches in order, deferring a group that clashes with the batch
    /// being filled to the next one.
    fn pack(&self, groups: Vec<Group>, batch_size: usize) -> Vec<Vec<Group>> {
        let mut pending: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
        let mut batches = Vec::new();
        let mut first_pending = 0;
        while first_pending < pending.len() {
            let mut batch = BatchTexts::default();
            let mut members = Vec::new();
            for slot in pending[first_pending..].iter_mut() {
                if members.len() == batch_size {
                    break;
                }
                let Some(group) = slot.as_ref() else { continue };
                if batch.admits(self, group) {
                    batch.add(self, group);
                    members.push(slot.take().expect("checked above"));
                }
            }
            while first_pending < pending.len() && pending[first_pending].is_none() {
                first_pending += 1;
            }
            batches.push(members);
        }
        batches
    }
}

/// The texts of a batch under construction, as text keys.
#[derive(Default)]
struct BatchTexts {
    queries: HashSet<u64>,
    passages: HashSet<u64>,
    positives: HashSet<u64>,
}

impl BatchTexts {
    fn admits(&self, set: &TrainingSet, group: &Group) -> bool {
        let ex = &set.examples[group.example];
        let query = set.query_keys[&group.query_row];
        let keys: Vec<u64> = group
            .passages
            .iter()
            .map(|&r| set.passage_keys[r])
            .collect();
        !self.queries.contains(&query)
            && !ex
                .all_positive_keys
                .iter()
                .any(|k| self.passages.contains(k))
            && !keys.iter().any(|k| self.positives.contains(k))
    }

    fn add(&mut self, set: &TrainingSet, group: &Group) {
        let ex = &set.examples[group.example];
        self.queries.insert(set.query_keys[&group.query_row]);
        self.passages
            .extend(group.passages.iter().map(|&r| set.passage_keys[r]));
        self.positives.extend(ex.all_positive_keys.iter().copied());
    }
}

/// A query with its positive (first) and hard negatives, as corpus rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub example: usize,
    pub query_row: usize,
    pub passages: Vec<usize>,
    /// The round's teacher score of each passage, where it has one.
    pub teacher: Vec<Option<f32>>,
}

/// The tasks' batch lists as one epoch, in `order`; each task's batches
/// keep their own order.
fn interleave(
    per_task: Vec<Vec<Vec<Group>>>,
    order: TaskOrder,
    epoch_seed: u64,
) -> Vec<Vec<Group>> {
    let mut labels: Vec<usize> = match order {
        TaskOrder::Proportional => {
            let mut labels: Vec<usize> = (per_task.iter().enumerate())
                .flat_map(|(t, batches)| std::iter::repeat_n(t, batches.len()))
                .collect();
            shuffle(&mut labels, &mut Rng::for_query(epoch_seed, "task-order"));
            labels
        }
        TaskOrder::RoundRobin => {
            let lengths: Vec<usize> = per_task.iter().map(Vec::len).collect();
            let longest = lengths.iter().copied().max().unwrap_or(0);
            let lengths = &lengths;
            (0..longest)
                .flat_map(|round| (0..lengths.len()).filter(move |&t| round < lengths[t]))
                .collect()
        }
    };
    let mut queues: Vec<std::vec::IntoIter<Vec<Group>>> =
        per_task.into_iter().map(Vec::into_iter).collect();
    labels
        .drain(..)
        .map(|t| queues[t].next().expect("one label per batch"))
        .collect()
}

fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpack_miner::store::ScoredDoc;

    fn table(prefix: &str, texts: &[&str]) -> TextTable {
        TextTable::from_texts(
            (0..texts.len()).map(|i| format!("{prefix}{i}")).collect(),
            texts.iter().map(|t| t.to_string()).collect(),
        )
    }

    fn doc(id: &str) -> ScoredDoc {
        ScoredDoc {
            id: id.into(),
            rank: 0,
            score: 0.0,
        }
    }

    /// Six queries; query i's positive is passage i. Query 0's negatives
    /// include passage 1, which is query 1's positive.
    fn fixture() -> (TextTable, TextTable, Qrels, Vec<(String, QueryRecord)>) {
        let corpus = table("d", &["p0", "p1", "p2", "p3", "p4", "p5", "n6", "n7", "n8"]);
        let queries = table("q", &["q0", "q1", "q2", "q3", "q4", "q5"]);
        let mut qrels = Qrels::default();
        let mut records = Vec::new();
        for i in 0..6 {
            qrels
                .by_query
                .insert(format!("q{i}"), vec![(format!("d{i}"), 1)]);
            let negatives = if i == 0 {
                vec![doc("d1"), doc("n6")]
            } else {
                vec![doc("n6"), doc("n7"), doc("n8")]
            };
            records.push((
                format!("q{i}"),
                QueryRecord {
                    negatives,
                    positives: vec![doc(&format!("d{i}"))],
                    survivors: 3,
                    shortfall: 0,
                    filtered: Default::default(),
                    teacher: None,
                },
            ));
        }
        (corpus, queries, qrels, records)
    }

    #[test]
    fn groups_have_the_positive_first_and_the_asked_size() {
        let (corpus, queries, qrels, records) = fixture();
        let set = TrainingSet::build(&corpus, &queries, &qrels, Some(&records), None, 7);
        assert_eq!(set.len(), 6);
        let batches = set.epoch_batches(4, 3, Batching::ClashFree, 7, 1);
        let groups: Vec<&Group> = batches.iter().flatten().collect();
        assert_eq!(groups.len(), 6, "every query is trained once per epoch");
        for g in groups {
            assert_eq!(g.passages.len(), 4);
            assert_eq!(g.passages[0], set.examples[g.example].positives[0]);
            assert!(!g.passages[1..].contains(&g.passages[0]));
        }
    }

    #[test]
    fn a_positive_never_shares_a_batch_with_a_copy_elsewhere() {
        let (corpus, queries, qrels, records) = fixture();
        let set = TrainingSet::build(&corpus, &queries, &qrels, Some(&records), None, 7);
        for epoch in 1..20 {
            for batch in set.epoch_batches(3, 6, Batching::ClashFree, 7, epoch) {
                let has_q0 = batch
                    .iter()
                    .any(|g| g.query_row == 0 && g.passages.contains(&1));
                let has_q1 = batch.iter().any(|g| g.query_row == 1);
                assert!(
                    !(has_q0 && has_q1),
                    "epoch {epoch}: d1 is q1's target and q0's negative"
                );
            }
        }
    }

    #[test]
    fn epochs_are_reproducible_and_differ_from_each_other() {
        let (corpus, queries, qrels, records) = fixture();
        let set = TrainingSet::build(&corpus, &queries, &qrels, Some(&records), None, 7);
        assert_eq!(
            set.epoch_batches(3, 2, Batching::ClashFree, 7, 1),
            set.epoch_batches(3, 2, Batching::ClashFree, 7, 1)
        );
        let orders: HashSet<Vec<usize>> = (1..6)
            .map(|e| {
                set.epoch_batches(3, 2, Batching::ClashFree, 7, e)
                    .iter()
                    .flatten()
                    .map(|g| g.example)
                    .collect()
            })
            .collect();
        assert!(orders.len() > 1, "the order must change between epochs");
    }

    #[test]
    fn in_batch_only_and_subsets() {
        let (corpus, queries, qrels, _) = fixture();
        let set = TrainingSet::build(&corpus, &queries, &qrels, None, Some(4), 7);
        assert_eq!(set.len(), 4);
        let batches = set.epoch_batches(1, 4, Batching::ClashFree, 7, 1);
        assert!(batches.iter().flatten().all(|g| g.passages.len() == 1));
    }

    #[test]
    fn clustered_batches_take_one_cluster_at_a_time() {
        let (corpus, queries, qrels, records) = fixture();
        let mut set = TrainingSet::build(&corpus, &queries, &qrels, Some(&records), None, 7);
        set.clusters = Some((0..set.len() as u32).map(|i| i % 2).collect());
        let clusters = set.clusters.clone().unwrap();
        let mut first_clusters = std::collections::HashSet::new();
        for epoch in 1..10 {
            let batches = set.epoch_batches(1, 3, Batching::Clustered, 7, epoch);
            for batch in &batches {
                let of_batch: std::collections::HashSet<u32> =
                    batch.iter().map(|g| clusters[g.example]).collect();
                assert_eq!(of_batch.len(), 1, "epoch {epoch}: {batches:?}");
            }
            first_clusters.insert(clusters[batches[0][0].example]);
            let mut seen: Vec<usize> = batches.iter().flatten().map(|g| g.example).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..set.len()).collect::<Vec<_>>());
        }
        assert_eq!(
            first_clusters.len(),
            2,
            "the cluster order changes between epochs"
        );
    }

    #[test]
    fn plain_batches_keep_the_shuffled_order_and_the_same_draws() {
        let (corpus, queries, qrels, records) = fixture();
        let set = TrainingSet::build(&corpus, &queries, &qrels, Some(&records), None, 7);
        for epoch in 1..10 {
            let plain = set.epoch_batches(3, 4, Batching::Plain, 7, epoch);
            let sizes: Vec<usize> = plain.iter().map(Vec::len).collect();
            assert_eq!(sizes, [4, 2], "consecutive full batches");
            let clash_free = set.epoch_batches(3, 4, Batching::ClashFree, 7, epoch);
            let mut a: Vec<Group> = plain.into_iter().flatten().collect();
            let mut b: Vec<Group> = clash_free.into_iter().flatten().collect();
            a.sort_by_key(|g| g.example);
            b.sort_by_key(|g| g.example);
            assert_eq!(
                a, b,
                "the two batchings differ only in how groups are packed"
            );
        }
    }

    /// One query, positive d0, six stored negatives d1..d6, groups of 3.
    fn pool_fixture() -> (TextTable, TrainingSet) {
        pool_fixture_scored(None)
    }

    /// [`pool_fixture`] with the round's teacher scores.
    fn pool_fixture_scored(
        teacher: Option<cpack_miner::teacher::TeacherScores>,
    ) -> (TextTable, TrainingSet) {
        let corpus = table("d", &["p0", "n1", "n2", "n3", "n4", "n5", "n6", "x7"]);
        let queries = table("q", &["q0"]);
        let mut qrels = Qrels::default();
        qrels.by_query.insert("q0".into(), vec![("d0".into(), 1)]);
        let record = QueryRecord {
            negatives: (1..=6).map(|i| doc(&format!("d{i}"))).collect(),
            positives: vec![doc("d0")],
            survivors: 6,
            shortfall: 0,
            filtered: Default::default(),
            teacher,
        };
        let records = vec![("q0".to_string(), record)];
        let set = TrainingSet::build(&corpus, &queries, &qrels, Some(&records), None, 7);
        (corpus, set)
    }

    #[test]
    fn groups_carry_the_teacher_scores_of_their_passages() {
        let (_, plain) = pool_fixture();
        // Row r scores 10·r; the teacher never scored d3 (padded: NaN).
        let (_, taught) = pool_fixture_scored(Some(cpack_miner::teacher::TeacherScores {
            positives: vec![0.5],
            negatives: vec![10.0, 20.0, f32::NAN, 40.0, 50.0, 60.0],
            pool: 6,
            denoised_ranks: Vec::new(),
        }));
        for epoch in 1..=4 {
            let groups = taught.epoch_batches(3, 1, Batching::Plain, 1, epoch);
            let untaught = plain.epoch_batches(3, 1, Batching::Plain, 1, epoch);
            let (group, same) = (&groups[0][0], &untaught[0][0]);
            assert_eq!(
                group.passages, same.passages,
                "scores never change the draw"
            );
            assert!(same.teacher.iter().all(Option::is_none));
            for (&row, &score) in group.passages.iter().zip(&group.teacher) {
                let expected = match row {
                    0 => Some(0.5),
                    3 => None,
                    r => Some(10.0 * r as f32),
                };
                assert_eq!(score, expected, "row {row}");
            }
        }
    }

    fn drawn(set: &TrainingSet, epoch: usize) -> Vec<usize> {
        let batches = set.epoch_batches(3, 1, Batching::ClashFree, 7, epoch);
        batches[0][0].passages.clone()
    }

    #[test]
    fn retired_negatives_are_not_drawn_while_others_remain_and_positives_never_are() {
        let (corpus, mut set) = pool_fixture();
        let untouched: Vec<Vec<usize>> = (1..=4).map(|e| drawn(&set, e)).collect();
        for row in [1, 2, 3, 4] {
            set.retire(0, row);
        }
        for epoch in 1..=20 {
            let group = drawn(&set, epoch);
            assert_eq!(group[0], 0, "the positive first");
            let mut negatives = group[1..].to_vec();
            negatives.sort_unstable();
            assert_eq!(
                negatives,
                [5, 6],
                "only the two live negatives, epoch {epoch}"
            );
        }
        // Fewer live than drawn: the rest comes from the retired, never a positive.
        set.retire(0, 5);
        for epoch in 1..=20 {
            let group = drawn(&set, epoch);
            assert!(group[1..].contains(&6), "the live one is always drawn");
            assert!(!group[1..].contains(&0), "a positive is never a negative");
            assert!(group[1..].iter().all(|r| (1..=6).contains(r)), "{group:?}");
        }
        // Recorded by id and restored into a fresh set: the same draws.
        let ids = set.retired_ids(&corpus);
        assert_eq!(ids["q0"], ["d1", "d2", "d3", "d4", "d5"]);
        let (_, mut restored) = pool_fixture();
        assert_eq!(
            drawn(&restored, 1),
            untouched[0],
            "nothing retired: as before"
        );
        restored.restore_retired(&ids, &corpus);
        assert_eq!(restored.retired_count(), 5);
        for epoch in 1..=4 {
            assert_eq!(drawn(&restored, epoch), drawn(&set, epoch));
        }
        assert!(untouched.iter().any(|g| g[1..].iter().any(|r| *r <= 4)));
    }

    /// Two copies of the fixture as tasks `a` (weight 1) and `b` (`weight_b`).
    fn two_tasks(weight_b: f64, order: TaskOrder) -> TrainingSet {
        let (corpus, queries, qrels, records) = fixture();
        let part = |prefix: &str, weight: f64| MergePart {
            set: TrainingSet::build(&corpus, &queries, &qrels, Some(&records), None, 7),
            id_prefix: prefix.to_string(),
            queries: queries.len(),
            share: TaskShare { weight },
        };
        TrainingSet::merge(vec![part("a/", 1.0), part("b/", weight_b)], order)
    }

    #[test]
    fn merged_tasks_keep_their_rows_and_batches_never_mix_them() {
        let set = two_tasks(1.0, TaskOrder::Proportional);
        assert_eq!(set.len(), 12);
        let b0 = &set.examples[6];
        assert_eq!(
            (b0.query_id.as_str(), b0.task, b0.query_row),
            ("b/q0", 1, 6)
        );
        assert_eq!(b0.positives, [9], "task b's passages follow task a's nine");
        let (corpus, queries, qrels, records) = fixture();
        let alone = TrainingSet::build(&corpus, &queries, &qrels, Some(&records), None, 7);
        let shifted: Vec<usize> = alone.examples[0].negatives.iter().map(|r| r + 9).collect();
        assert_eq!(b0.negatives, shifted);
        for batching in [Batching::ClashFree, Batching::Plain] {
            for epoch in 1..10 {
                let batches = set.epoch_batches(3, 4, batching, 7, epoch);
                assert_eq!(batches.iter().flatten().count(), 12);
                for batch in &batches {
                    let task = set.examples[batch[0].example].task;
                    for group in batch {
                        assert_eq!(set.examples[group.example].task, task);
                        let rows = task * 9..task * 9 + 9;
                        assert!(group.passages.iter().all(|r| rows.contains(r)), "{group:?}");
                    }
                }
            }
        }
        assert_eq!(set.nominal_batches(4), 4);
    }

    #[test]
    fn round_robin_alternates_tasks_and_weights_set_their_visits() {
        let set = two_tasks(1.0, TaskOrder::RoundRobin);
        let tasks: Vec<usize> = (set.epoch_batches(1, 3, Batching::Plain, 7, 1).iter())
            .map(|b| set.examples[b[0].example].task)
            .collect();
        assert_eq!(tasks, [0, 1, 0, 1]);
        for (weight, visits) in [(0.5, 3), (2.0, 12), (1.5, 9)] {
            let set = two_tasks(weight, TaskOrder::Proportional);
            for epoch in 1..5 {
                let batches = set.epoch_batches(1, 3, Batching::ClashFree, 7, epoch);
                let of_b: Vec<usize> = (batches.iter().flatten())
                    .filter(|g| set.examples[g.example].task == 1)
                    .map(|g| g.example)
                    .collect();
                assert_eq!(of_b.len(), visits, "weight {weight}");
                let distinct: HashSet<usize> = of_b.iter().copied().collect();
                assert_eq!(
                    distinct.len(),
                    visits.min(6),
                    "every query once before any twice"
                );
                for batch in &batches {
                    let queries: HashSet<usize> = batch.iter().map(|g| g.example).collect();
                    assert_eq!(queries.len(), batch.len(), "a query twice in one batch");
                }
            }
            assert_eq!(set.nominal_batches(3), 2 + visits.div_ceil(3));
        }
    }
}
