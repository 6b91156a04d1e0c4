//! `cpack eval`: retrieval metrics of the live index on a qrels split.

use crate::cli::EvalArgs;
use crate::config::{Config, TaskConfig};
use crate::runtime::{open_encoder, query_encoder, workspace_reranker, Context};
use anyhow::{bail, Result};
use cpack_core::Progress as _;
use cpack_data::dataset::Dataset;
use cpack_data::metrics::RetrievalMetrics;
use cpack_index::evaluate::Rerank;

/// Evaluates each task the command works on; with several, their mean too.
pub fn run(ctx: &Context, args: EvalArgs) -> Result<()> {
    let config = ctx.config(&args.overrides)?;
    let tasks = config.task_configs()?;
    let mut results = serde_json::Map::new();
    let mut metrics = Vec::new();
    let judged = |t: &&TaskConfig| t.section.as_ref().is_none_or(|s| s.pairs.is_none());
    for task in tasks.iter().filter(|t| !judged(t)) {
        let note = "a pairs task has no judged split; not evaluated";
        ctx.progress.note(&format!("task {}: {note}", task.name));
    }
    let tasks: Vec<&TaskConfig> = tasks.iter().filter(judged).collect();
    if tasks.is_empty() {
        bail!("no task of this workspace has judgements to evaluate");
    }
    for task in &tasks {
        let (json, m) = eval_one(ctx, &task.config, &args)?;
        match task.name.as_str() {
            "" if args.json => outln!("{}", serde_json::to_string_pretty(&json)?)?,
            "" => {}
            name => drop(results.insert(name.to_string(), json)),
        }
        metrics.push(m);
    }
    if tasks.len() == 1 && tasks[0].name.is_empty() {
        return Ok(());
    }
    let mean =
        |f: fn(&RetrievalMetrics) -> f64| metrics.iter().map(f).sum::<f64>() / metrics.len() as f64;
    let means = [
        ("ndcg_at_10", mean(|m| m.ndcg_at_10)),
        ("mrr_at_10", mean(|m| m.mrr_at_10)),
        ("recall_at_10", mean(|m| m.recall_at_10)),
        ("recall_at_100", mean(|m| m.recall_at_100)),
    ];
    if args.json {
        let mean: serde_json::Map<String, serde_json::Value> = means
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let doc = serde_json::json!({"split": args.split, "tasks": results, "mean": mean});
        outln!("{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    outln!(
        "{:<24} {:>8} {:>8} {:>10} {:>11}",
        "task",
        "nDCG@10",
        "MRR@10",
        "Recall@10",
        "Recall@100"
    )?;
    for (task, m) in tasks.iter().zip(&metrics) {
        outln!(
            "{:<24} {:>8.4} {:>8.4} {:>10.4} {:>11.4}",
            task.name,
            m.ndcg_at_10,
            m.mrr_at_10,
            m.recall_at_10,
            m.recall_at_100
        )?;
    }
    let [n, m, r10, r100] = means.map(|(_, v)| v);
    outln!("{:<24} {n:>8.4} {m:>8.4} {r10:>10.4} {r100:>11.4}", "mean")?;
    Ok(())
}

/// One task's evaluation: the JSON a lone dataset prints, and its metrics;
/// the text of a lone dataset is printed here.
fn eval_one(
    ctx: &Context,
    config: &Config,
    args: &EvalArgs,
) -> Result<(serde_json::Value, RetrievalMetrics)> {
    let dataset = Dataset::load(config.data()?.clone())?;
    let qrels = dataset.qrels(&args.split)?;
    if qrels.is_empty() {
        bail!(
            "{} has no judgements",
            dataset.paths.qrels(&args.split).display()
        );
    }
    let encoder = open_encoder(config)?;
    let stamp = config.embedding_stamp(&encoder)?;
    let mut index = config.index_dir().open(&stamp, &dataset.corpus)?;
    let encoder = query_encoder(config, args.query_model.as_deref(), encoder)?;
    let (recipe, reranker) = workspace_reranker(config, &args.rerank)?;
    let rerank = reranker.as_ref().map(|model| Rerank {
        model,
        corpus: &dataset.corpus,
        depth: recipe.depth(),
    });
    let evaluation = cpack_index::evaluate::evaluate_index(
        &encoder,
        &mut index,
        &dataset.queries,
        &qrels,
        rerank.as_ref(),
        &ctx.progress,
    )?;
    let m = evaluation.metrics;
    ctx.progress.finish();
    let json = serde_json::json!({
        "split": args.split,
        "metrics": m,
        "index_generation": index.generation,
        "model_fingerprint": stamp.model_fingerprint,
        "query_model": args.query_model,
        "index": index.manifest.plan.index.to_string(),
        "query_encode_seconds": evaluation.encode_seconds,
        "search_seconds": evaluation.search_seconds,
        "reranker": rerank.as_ref().map(|r| serde_json::json!({
            "model": recipe.model,
            "fingerprint": r.model.fingerprint(),
            "depth": r.depth,
            "seconds": evaluation.rerank_seconds,
        })),
    });
    if !args.json && config.tasks.is_empty() {
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
        if let (Some(r), Some(model)) = (&rerank, &recipe.model) {
            outln!(
                "top {} hits reranked by {} in {:.1} s",
                r.depth,
                model.display(),
                evaluation.rerank_seconds
            )?;
        }
        outln!("nDCG@10    {:.4}", m.ndcg_at_10)?;
        outln!("MRR@10     {:.4}", m.mrr_at_10)?;
        outln!("Recall@10  {:.4}", m.recall_at_10)?;
        outln!("Recall@100 {:.4}", m.recall_at_100)?;
    }
    Ok((json, m))
}
