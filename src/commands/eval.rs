//! `cpack eval`: retrieval metrics of the live index on a qrels split.

use super::{load_config, open_encoder, Context};
use crate::cli::EvalArgs;
use anyhow::{bail, Result};
use cpack_index::dataset::Dataset;
use cpack_index::metrics;
use cpack_index::{Progress, TextKind};
use std::collections::HashMap;

/// Depth of the ranking each query gets (Recall@100 needs 100).
const DEPTH: usize = 100;

pub fn run(ctx: &Context, args: EvalArgs) -> Result<()> {
    let config = load_config(ctx, &args.overrides)?;
    let dataset = Dataset::load(config.data()?.clone())?;
    let qrels = dataset.qrels(&args.split)?;
    if qrels.is_empty() {
        bail!(
            "{} has no judgements",
            dataset.paths.qrels(&args.split).display()
        );
    }
    let encoder = open_encoder(&config)?;
    let stamp = config.embedding_stamp(encoder.backend_name())?;
    let mut index = config.index_dir().open(&stamp)?;

    let query_ids: Vec<&String> = qrels.by_query.keys().collect();
    let texts: Vec<&str> = query_ids
        .iter()
        .map(|id| {
            dataset.queries.texts[dataset.queries.position(id).expect("qrels validated")].as_str()
        })
        .collect();
    ctx.bars.stage("encoding queries", texts.len() as u64);
    let started = std::time::Instant::now();
    let vectors = encoder.encode(&texts, TextKind::Query, &mut |n, t| {
        ctx.bars.advance(n as u64, t as u64)
    })?;
    let encode_seconds = started.elapsed().as_secs_f64();
    ctx.bars.stage("searching", 0);
    let started = std::time::Instant::now();
    let hits = index.vectors.search(&vectors, DEPTH.min(index.ids.len()))?;
    let search_seconds = started.elapsed().as_secs_f64();
    ctx.bars.stage("scoring", 0);

    let runs = query_ids.iter().enumerate().map(|(q, id)| {
        let ranking: Vec<&str> = hits.of(q).map(|(row, _)| index.ids[row].as_str()).collect();
        let relevance: HashMap<&str, i32> = qrels.by_query[*id]
            .iter()
            .map(|(d, s)| (d.as_str(), *s))
            .collect();
        (ranking, relevance)
    });
    let m = metrics::evaluate(runs);
    ctx.bars.finish();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "split": args.split,
                "metrics": m,
                "index_generation": index.generation,
                "model_fingerprint": stamp.model_fingerprint,
                "index": index.manifest.plan.index.to_string(),
                "query_encode_seconds": encode_seconds,
                "search_seconds": search_seconds,
            }))?
        );
    } else {
        println!(
            "split {} · {} queries · index {} ({})",
            args.split, m.queries, index.generation, index.manifest.plan.index
        );
        println!("model fingerprint {}", stamp.model_fingerprint);
        println!("nDCG@10    {:.4}", m.ndcg_at_10);
        println!("MRR@10     {:.4}", m.mrr_at_10);
        println!("Recall@10  {:.4}", m.recall_at_10);
        println!("Recall@100 {:.4}", m.recall_at_100);
    }
    Ok(())
}
