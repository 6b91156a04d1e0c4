//! Bringing negatives mined elsewhere: FlagEmbedding JSONL (texts, not ids)
//! becomes a complete round, matched to the dataset by exact text.

use crate::error::{Error, Result};
use crate::params::{MiningParams, OnShort, Sampling};
use crate::select::{FilterCounts, PADDED};
use crate::store::{MiningTimings, NegativeStore, QueryRecord, RoundManifest, ScoredDoc};
use crate::teacher::{ScoresFrom, TeacherParams, TeacherRound, TeacherScores};
use cpack_data::dataset::TextTable;
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

#[derive(Deserialize)]
struct FlagLine {
    query: String,
    pos: Vec<String>,
    neg: Vec<String>,
    #[serde(default)]
    pos_scores: Option<Vec<Option<f32>>>,
    #[serde(default)]
    neg_scores: Option<Vec<Option<f32>>>,
    #[serde(default)]
    prompt: Option<String>,
    /// Whose scores `pos_scores`/`neg_scores` are; absent: a teacher's.
    #[serde(default)]
    scores_from: ScoresFrom,
}

/// Maps exact texts to ids (first occurrence wins for duplicated texts).
fn by_text(table: &TextTable, full: bool) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for i in (0..table.len()).rev() {
        let text = if full {
            table.full_text(i)
        } else {
            table.texts[i].clone()
        };
        map.insert(text, i);
    }
    map
}

/// Finds the dataset's ids for the texts of FlagEmbedding records.
struct Matcher<'a> {
    corpus: &'a TextTable,
    queries: &'a TextTable,
    /// Passages by `title + " " + text`, then by text alone.
    passages: HashMap<String, usize>,
    passages_plain: HashMap<String, usize>,
    /// Several queries can share one text: successive lines take successive ids.
    query_rows: HashMap<&'a str, VecDeque<usize>>,
}

impl<'a> Matcher<'a> {
    fn new(corpus: &'a TextTable, queries: &'a TextTable) -> Self {
        let mut query_rows: HashMap<&str, VecDeque<usize>> = HashMap::new();
        for (i, t) in queries.texts.iter().enumerate() {
            query_rows.entry(t.as_str()).or_default().push_back(i);
        }
        Matcher {
            corpus,
            queries,
            passages: by_text(corpus, true),
            passages_plain: by_text(corpus, false),
            query_rows,
        }
    }

    /// The next unused id of the query with this text.
    fn query(&mut self, text: &str) -> std::result::Result<String, String> {
        match self.query_rows.get_mut(text).map(VecDeque::pop_front) {
            Some(Some(q)) => Ok(self.queries.ids[q].clone()),
            Some(None) => Err(format!(
                "query {:?} appears more often than in queries.jsonl",
                short(text)
            )),
            None => Err(format!("query {:?} is not in queries.jsonl", short(text))),
        }
    }

    /// The passages of `texts`, with their scores where given.
    fn passages(
        &self,
        texts: &[String],
        scores: &Option<Vec<Option<f32>>>,
    ) -> std::result::Result<Vec<ScoredDoc>, String> {
        let score = |i: usize| scores.as_ref().and_then(|s| s.get(i).copied().flatten());
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let row = self.passages.get(t).or_else(|| self.passages_plain.get(t));
                let row =
                    row.ok_or_else(|| format!("passage {:?} is not in corpus.jsonl", short(t)))?;
                Ok(ScoredDoc {
                    id: self.corpus.ids[*row].clone(),
                    rank: PADDED,
                    score: score(i).unwrap_or(f32::NAN),
                })
            })
            .collect()
    }

    /// One JSONL line as a query id and its record.
    fn record(
        &mut self,
        line: &str,
    ) -> std::result::Result<(String, QueryRecord, Option<String>, usize), String> {
        let row: FlagLine =
            serde_json::from_str(line).map_err(|e| format!("not a FlagEmbedding record: {e}"))?;
        let id = self.query(&row.query)?;
        let positives = self.passages(&row.pos, &row.pos_scores)?;
        let listed = self.passages(&row.neg, &row.neg_scores)?;
        let (negatives, filtered, repeats) = distinct_negatives(listed, &positives);
        // FlagEmbedding's scores are a teacher's (its add_reranker_score.py
        // writes them for distillation): kept as such when every passage has
        // one, unless the line says an embedder's (cpack's export of a round
        // without a teacher).
        let scored = |docs: &[ScoredDoc]| docs.iter().all(|d| d.score.is_finite());
        let given = row.pos_scores.is_some()
            && row.neg_scores.is_some()
            && row.scores_from == ScoresFrom::Teacher;
        let teacher = (given && scored(&positives) && scored(&negatives)).then(|| TeacherScores {
            positives: positives.iter().map(|d| d.score).collect(),
            negatives: negatives.iter().map(|d| d.score).collect(),
            pool: negatives.len() as u32,
            denoised_ranks: Vec::new(),
        });
        let record = QueryRecord {
            teacher,
            survivors: negatives.len() as u32,
            negatives,
            positives,
            // Set once the round's widest list is known.
            shortfall: 0,
            filtered,
        };
        Ok((id, record, row.prompt, repeats))
    }
}

/// The negatives of a line without repeats and without the query's own
/// positives (counted as the miner counts them); also the repeats dropped.
fn distinct_negatives(
    listed: Vec<ScoredDoc>,
    positives: &[ScoredDoc],
) -> (Vec<ScoredDoc>, FilterCounts, usize) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut filtered = FilterCounts::default();
    let mut repeats = 0;
    let mut kept = Vec::with_capacity(listed.len());
    for doc in listed {
        if positives.iter().any(|p| p.id == doc.id) {
            filtered.positives += 1;
        } else if !seen.insert(doc.id.clone()) {
            repeats += 1;
        } else {
            kept.push(doc);
        }
    }
    (kept, filtered, repeats)
}

/// What an import kept and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub manifest: RoundManifest,
    /// Negatives dropped for being one of the line's own positives.
    pub positives_dropped: usize,
    /// Negatives dropped for repeating one already listed for the query.
    pub repeats_dropped: usize,
    /// Queries left with fewer negatives than the widest line (none at all
    /// included): the round's short queries.
    pub short_queries: usize,
}

/// Reads `path` and stores it as the next round of split `split` (the
/// split whose qrels judge its queries, so a run can train on it).
pub fn import_flag_embedding(
    store: &NegativeStore,
    path: &Path,
    corpus: &TextTable,
    queries: &TextTable,
    split: &str,
) -> Result<Imported> {
    let text = std::fs::read_to_string(path).map_err(cpack_core::Error::io("read", path))?;
    let mut matcher = Matcher::new(corpus, queries);
    let mut records: Vec<(String, QueryRecord)> = Vec::new();
    let mut prompt = String::new();
    let mut repeats_dropped = 0;
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    for (n, line) in lines {
        let (id, record, line_prompt, repeats) =
            matcher.record(line).map_err(|problem| Error::BadLine {
                path: path.to_path_buf(),
                line: n + 1,
                problem,
            })?;
        prompt = line_prompt.unwrap_or(prompt);
        repeats_dropped += repeats;
        records.push((id, record));
    }
    if records.is_empty() {
        return Err(Error::NothingToImport {
            path: path.to_path_buf(),
        });
    }
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let widest = records.iter().map(|(_, r)| r.negatives.len()).max();
    let widest = widest.unwrap_or(0);
    for (_, record) in &mut records {
        record.shortfall = (widest - record.negatives.len()) as u32;
    }
    let manifest = imported_round(store.next_round()?, split, corpus, prompt, &records);
    // Numbered first (an unfinished round holds the number), then stored
    // whole with its records.
    store.put_manifest(&manifest)?;
    let manifest = RoundManifest {
        complete: true,
        ..manifest
    };
    store.put_chunk(&manifest, 0, &records)?;
    Ok(Imported {
        manifest,
        positives_dropped: records
            .iter()
            .map(|(_, r)| r.filtered.positives as usize)
            .sum(),
        repeats_dropped,
        short_queries: records.iter().filter(|(_, r)| r.shortfall > 0).count(),
    })
}

/// The manifest of round `round` imported for `split`, not complete yet.
fn imported_round(
    round: u32,
    split: &str,
    corpus: &TextTable,
    prompt: String,
    records: &[(String, QueryRecord)],
) -> RoundManifest {
    let most = records.iter().map(|(_, r)| r.negatives.len()).max();
    RoundManifest {
        round,
        params: MiningParams {
            split: split.to_string(),
            topk: 0,
            skip: 0,
            skip_after_filter: false,
            negatives: most.unwrap_or(0),
            sampling: Sampling::Top,
            on_short: OnShort::Keep,
            seed: 0,
            max_score: None,
            margin: None,
            relative_margin: None,
        },
        model_fingerprint: String::new(),
        corpus_fingerprint: corpus.fingerprint(),
        query_instruction: prompt,
        index_generation: "imported".into(),
        chunk_queries: records.len().max(1),
        total_queries: records.len(),
        complete: false,
        created_unix: 0,
        seconds: 0.0,
        timings: MiningTimings::default(),
        query_model_fingerprint: None,
        index_embeddings: None,
        queries: None,
        teacher: records
            .iter()
            .any(|(_, r)| r.teacher.is_some())
            .then(|| TeacherRound {
                params: TeacherParams::imported(),
                seconds: 0.0,
                pairs: 0,
            }),
    }
}

fn short(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}
