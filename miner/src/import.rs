//! Bringing negatives mined elsewhere: FlagEmbedding JSONL (texts, not ids)
//! becomes a complete round, matched to the dataset by exact text.

use crate::error::{Error, Result};
use crate::params::{MiningParams, OnShort, Sampling};
use crate::select::{FilterCounts, PADDED};
use crate::store::{MiningTimings, NegativeStore, QueryRecord, RoundManifest, ScoredDoc};
use cpack_data::dataset::TextTable;
use serde::Deserialize;
use std::collections::HashMap;
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

/// Reads `path` and stores it as the next round; returns its manifest.
pub fn import_flag_embedding(
    store: &NegativeStore,
    path: &Path,
    corpus: &TextTable,
    queries: &TextTable,
) -> Result<RoundManifest> {
    let text = std::fs::read_to_string(path).map_err(cpack_core::Error::io("read", path))?;
    let passage_ids = by_text(corpus, true);
    // Several queries can share one text: successive lines take successive ids.
    let mut query_ids: HashMap<&str, std::collections::VecDeque<usize>> = HashMap::new();
    for (i, t) in queries.texts.iter().enumerate() {
        query_ids.entry(t.as_str()).or_default().push_back(i);
    }
    let passage_ids_plain = by_text(corpus, false);
    let find_passage = |t: &str| {
        passage_ids
            .get(t)
            .or_else(|| passage_ids_plain.get(t))
            .copied()
    };
    let mut records: Vec<(String, QueryRecord)> = Vec::new();
    let mut prompt = String::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = |problem: String| Error::BadLine {
            path: path.to_path_buf(),
            line: n + 1,
            problem,
        };
        let row: FlagLine = serde_json::from_str(line)
            .map_err(|e| at(format!("not a FlagEmbedding record: {e}")))?;
        let qid = match query_ids
            .get_mut(row.query.as_str())
            .map(|ids| ids.pop_front())
        {
            Some(Some(q)) => queries.ids[q].clone(),
            Some(None) => {
                let problem = format!(
                    "query {:?} appears more often than in queries.jsonl",
                    short(&row.query)
                );
                return Err(at(problem));
            }
            None => {
                return Err(at(format!(
                    "query {:?} is not in queries.jsonl",
                    short(&row.query)
                )))
            }
        };
        let docs =
            |texts: &[String], scores: &Option<Vec<Option<f32>>>| -> Result<Vec<ScoredDoc>> {
                texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| match find_passage(t) {
                        Some(p) => Ok(ScoredDoc {
                            id: corpus.ids[p].clone(),
                            rank: PADDED,
                            score: scores
                                .as_ref()
                                .and_then(|s| s.get(i).copied().flatten())
                                .unwrap_or(f32::NAN),
                        }),
                        None => Err(at(format!("passage {:?} is not in corpus.jsonl", short(t)))),
                    })
                    .collect()
            };
        let positives = docs(&row.pos, &row.pos_scores)?;
        let negatives = docs(&row.neg, &row.neg_scores)?;
        if let Some(p) = row.prompt {
            prompt = p;
        }
        records.push((
            qid,
            QueryRecord {
                survivors: negatives.len() as u32,
                negatives,
                positives,
                shortfall: 0,
                filtered: FilterCounts::default(),
            },
        ));
    }
    if records.is_empty() {
        return Err(Error::NothingToImport {
            path: path.to_path_buf(),
        });
    }
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let round = store.next_round()?;
    let manifest = RoundManifest {
        round,
        params: MiningParams {
            split: format!("import:{}", path.display()),
            topk: 0,
            skip: 0,
            skip_after_filter: false,
            negatives: records
                .iter()
                .map(|(_, r)| r.negatives.len())
                .max()
                .unwrap_or(0),
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
    };
    store.put_manifest(&manifest)?;
    store.put_chunk(round, 0, &records)?;
    let manifest = RoundManifest {
        complete: true,
        ..manifest
    };
    store.put_manifest(&manifest)?;
    Ok(manifest)
}

fn short(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}
