//! `cpack search`: one query against the live index, its top hits
//! optionally reranked by a cross-encoder.

use crate::cli::SearchArgs;
use crate::runtime::{open_encoder, query_encoder, workspace_reranker, Context};
use anyhow::{bail, Result};
use cpack_data::dataset::Dataset;
use cpack_encode::{CrossEncoder, TextKind};

pub fn run(ctx: &Context, args: SearchArgs) -> Result<()> {
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let config = ctx.config(&args.overrides)?.single_task("search")?.config;
    let encoder = open_encoder(&config)?;
    let corpus = Dataset::load_corpus(config.data()?)?;
    let mut index = config
        .index_dir()
        .open(&config.embedding_stamp(&encoder)?, &corpus)?;
    let encoder = query_encoder(&config, args.query_model.as_deref(), encoder)?;
    let (recipe, reranker) = workspace_reranker(&config, &args.rerank)?;
    let query = encoder.encode(&[args.query.as_str()], TextKind::Query, &mut |_, _| {})?;
    let depth = match reranker {
        Some(_) => args.k.max(recipe.depth()),
        None => args.k,
    };
    let hits = index
        .vectors
        .search(&query, depth.min(index.ids.len()), config.threads)?;
    let mut rows: Vec<Hit> = hits
        .of(0)
        .map(|(row, score)| Hit {
            row,
            score,
            rerank_score: None,
        })
        .collect();
    if let Some(reranker) = &reranker {
        let texts = |hit: &Hit| {
            let position = corpus.position(&index.ids[hit.row]);
            position.map(|p| corpus.full_text(p)).unwrap_or_default()
        };
        rows = rerank(reranker, &args.query, rows, recipe.depth(), texts)?;
    }
    rows.truncate(args.k);
    if args.json {
        let results: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(rank, hit)| {
                let id = &index.ids[hit.row];
                let pos = corpus.position(id);
                let mut result = serde_json::json!({
                    "rank": rank + 1,
                    "id": id,
                    "score": hit.score,
                    "title": pos.map(|p| corpus.titles[p].clone()),
                    "text": pos.map(|p| corpus.texts[p].clone()),
                });
                if reranker.is_some() {
                    result["rerank_score"] = hit.rerank_score.into();
                }
                result
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"query": args.query, "results": results})
            )?
        )?;
        return Ok(());
    }
    for (rank, hit) in rows.iter().enumerate() {
        let id = &index.ids[hit.row];
        let label = corpus
            .position(id)
            .map(|p| snippet(&corpus.titles[p], &corpus.texts[p]))
            .unwrap_or_else(|| "(not in the current corpus)".into());
        let rerank_score = match (&reranker, hit.rerank_score) {
            (None, _) => String::new(),
            (Some(_), Some(s)) => format!("{s:>8.4}  "),
            (Some(_), None) => format!("{:>8}  ", "-"),
        };
        outln!(
            "{:>3}  {rerank_score}{:.4}  {id}  {label}",
            rank + 1,
            hit.score
        )?;
    }
    Ok(())
}

/// One result: its index row, the embedder's score, and the reranker's if
/// it was reranked.
struct Hit {
    row: usize,
    score: f32,
    rerank_score: Option<f32>,
}

/// `hits` with the first `depth` in the reranker's order, the rest after them.
fn rerank(
    reranker: &CrossEncoder,
    query: &str,
    mut hits: Vec<Hit>,
    depth: usize,
    text: impl Fn(&Hit) -> String,
) -> Result<Vec<Hit>> {
    let rest = hits.split_off(depth.min(hits.len()));
    let texts: Vec<String> = hits.iter().map(text).collect();
    let candidates = vec![texts.iter().map(String::as_str).collect()];
    let order = reranker
        .rank(&[query], &candidates, &mut |_, _| {})?
        .remove(0);
    let mut slots: Vec<Option<Hit>> = hits.into_iter().map(Some).collect();
    let mut reranked: Vec<Hit> = order
        .into_iter()
        .filter_map(|(i, score)| {
            let mut hit = slots[i].take()?;
            hit.rerank_score = Some(score);
            Some(hit)
        })
        .collect();
    reranked.extend(rest);
    Ok(reranked)
}

/// Title, or the start of the text, cut to one terminal line.
fn snippet(title: &str, text: &str) -> String {
    let source = if title.is_empty() { text.trim() } else { title };
    let mut out: String = source
        .chars()
        .take(80)
        .collect::<String>()
        .replace(['\n', '\t'], " ");
    if source.chars().count() > 80 {
        out.push('…');
    }
    out
}
