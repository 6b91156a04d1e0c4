//! `cpack eval`: retrieval metrics of the live index on a qrels split.

use crate::cli::EvalArgs;
use crate::runtime::{open_encoder, query_encoder, Context};
use anyhow::{bail, Result};
use cpack_data::dataset::Dataset;

pub fn run(ctx: &Context, args: EvalArgs) -> Result<()> {
    let config = ctx.config(&args.overrides)?;
    let dataset = Dataset::load(config.data()?.clone())?;
    let qrels = dataset.qrels(&args.split)?;
    if qrels.is_empty() {
        bail!(
            "{} has no judgements",
            dataset.paths.qrels(&args.split).display()
        );
    }
    let encoder = open_encoder(&config)?;
    let stamp = config.embedding_stamp(&encoder)?;
    let mut index = config.index_dir().open(&stamp, &dataset.corpus)?;
    let encoder = query_encoder(&config, args.query_model.as_deref(), encoder)?;

    let evaluation = cpack_index::evaluate::evaluate_index(
        &encoder,
        &mut index,
        &dataset.queries,
        &qrels,
        &ctx.progress,
    )?;
    let (m, encode_seconds, search_seconds) = (
        evaluation.metrics,
        evaluation.encode_seconds,
        evaluation.search_seconds,
    );
    ctx.progress.finish();
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "split": args.split,
                "metrics": m,
                "index_generation": index.generation,
                "model_fingerprint": stamp.model_fingerprint,
                "query_model": args.query_model,
                "index": index.manifest.plan.index.to_string(),
                "query_encode_seconds": encode_seconds,
                "search_seconds": search_seconds,
            }))?
        )?;
    } else {
        outln!(
            "split {} · {} queries · index {} ({})",
            args.split,
            m.queries,
            index.generation,
            index.manifest.plan.index
        )?;
        outln!("model fingerprint {}", stamp.model_fingerprint)?;
        if let Some(model) = &args.query_model {
            outln!("queries encoded by {}", model.display())?;
        }
        outln!("nDCG@10    {:.4}", m.ndcg_at_10)?;
        outln!("MRR@10     {:.4}", m.mrr_at_10)?;
        outln!("Recall@10  {:.4}", m.recall_at_10)?;
        outln!("Recall@100 {:.4}", m.recall_at_100)?;
    }
    Ok(())
}
