//! `cpack search`: one query against the live index.

use crate::cli::SearchArgs;
use crate::runtime::{open_encoder, query_encoder, Context};
use anyhow::{bail, Result};
use cpack_data::dataset::Dataset;
use cpack_encode::TextKind;

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
    let query = encoder.encode(&[args.query.as_str()], TextKind::Query, &mut |_, _| {})?;
    let hits = index
        .vectors
        .search(&query, args.k.min(index.ids.len()), config.threads)?;
    let rows: Vec<(usize, f32)> = hits.of(0).collect();
    if args.json {
        let results: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(rank, &(row, score))| {
                let id = &index.ids[row];
                let pos = corpus.position(id);
                serde_json::json!({
                    "rank": rank + 1,
                    "id": id,
                    "score": score,
                    "title": pos.map(|p| corpus.titles[p].clone()),
                    "text": pos.map(|p| corpus.texts[p].clone()),
                })
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
    for (rank, &(row, score)) in rows.iter().enumerate() {
        let id = &index.ids[row];
        let label = corpus
            .position(id)
            .map(|p| snippet(&corpus.titles[p], &corpus.texts[p]))
            .unwrap_or_else(|| "(not in the current corpus)".into());
        outln!("{:>3}  {score:.4}  {id}  {label}", rank + 1)?;
    }
    Ok(())
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
