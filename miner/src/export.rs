//! Writing a round out in the formats trainers read.

use crate::error::{Error, Result};
use crate::store::{QueryRecord, RoundManifest};
use crate::teacher::ScoresFrom;
use cpack_data::dataset::TextTable;
use serde_json::json;

/// Output formats of `cpack mine export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ExportFormat {
    /// FlagEmbedding's JSONL: query, pos, neg, pos_scores, neg_scores, prompt.
    /// The scores are the teacher's when the round has one (what
    /// FlagEmbedding distils from), the embedder's otherwise.
    FlagEmbedding,
    /// One (query, positive, negative) row per positive × negative.
    Triplets,
    /// Ids, ranks and scores only.
    Ids,
}

/// Renders `records` as JSONL lines.
pub fn export(
    records: &[(String, QueryRecord)],
    manifest: &RoundManifest,
    corpus: &TextTable,
    queries: &TextTable,
    format: ExportFormat,
) -> Result<String> {
    let text_of = |id: &str| -> Result<String> {
        corpus
            .position(id)
            .map(|p| corpus.full_text(p))
            .ok_or_else(|| Error::Vanished {
                kind: "passage",
                id: id.to_string(),
            })
    };
    let query_of = |id: &str| -> Result<&str> {
        queries
            .position(id)
            .map(|p| queries.texts[p].as_str())
            .ok_or_else(|| Error::Vanished {
                kind: "query",
                id: id.to_string(),
            })
    };
    let mut out = String::new();
    for (qid, record) in records.iter().filter(|(_, r)| !r.negatives.is_empty()) {
        let pos: Vec<String> = record
            .positives
            .iter()
            .map(|p| text_of(&p.id))
            .collect::<Result<_>>()?;
        let neg: Vec<String> = record
            .negatives
            .iter()
            .map(|n| text_of(&n.id))
            .collect::<Result<_>>()?;
        let query = query_of(qid)?;
        let (pos_scores, neg_scores, scores_from) = match &record.teacher {
            Some(t) => (
                t.positives.clone(),
                t.negatives.clone(),
                ScoresFrom::Teacher,
            ),
            None => (
                record.positives.iter().map(|p| p.score).collect(),
                record.negatives.iter().map(|n| n.score).collect(),
                ScoresFrom::Embedder,
            ),
        };
        let finite_all = |v: &[f32]| v.iter().map(|&s| finite(s)).collect::<Vec<_>>();
        let lines: Vec<serde_json::Value> = match format {
            ExportFormat::FlagEmbedding => vec![json!({
                "query": query,
                "pos": pos,
                "neg": neg,
                "pos_scores": finite_all(&pos_scores),
                "neg_scores": finite_all(&neg_scores),
                "scores_from": scores_from,
                "prompt": manifest.query_instruction,
            })],
            ExportFormat::Triplets => pos
                .iter()
                .flat_map(|p| {
                    neg.iter()
                        .map(move |n| json!({"query": query, "positive": p, "negative": n}))
                })
                .collect(),
            ExportFormat::Ids => {
                let mut line = json!({
                    "query_id": qid,
                    "pos": record.positives.iter().map(|p| &p.id).collect::<Vec<_>>(),
                    "neg": record.negatives.iter().map(|n| &n.id).collect::<Vec<_>>(),
                    "neg_ranks": record.negatives.iter().map(|n| (n.rank != u32::MAX).then_some(n.rank)).collect::<Vec<_>>(),
                    "neg_scores": record.negatives.iter().map(|n| finite(n.score)).collect::<Vec<_>>(),
                });
                if let Some(t) = &record.teacher {
                    line["teacher_pos_scores"] = json!(finite_all(&t.positives));
                    line["teacher_neg_scores"] = json!(finite_all(&t.negatives));
                }
                vec![line]
            }
        };
        for line in lines {
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
    Ok(out)
}

/// Padded negatives have no score (NaN), which JSON cannot hold: null.
fn finite(score: f32) -> Option<f32> {
    score.is_finite().then_some(score)
}
