//! `cpack rerank`: every pair of a pairs file scored by a cross-encoder and
//! written back into its line (`cpack_data::filter` adding scores), streamed
//! and, into a file, resumable.

use crate::cli::RerankScoreArgs;
use crate::pairs_file::{open_input, score_pairs_file};
use crate::runtime::{open_reranker, Context};
use anyhow::{bail, Result};
use cpack_core::OutputTarget;
use cpack_data::filter::{FilterSettings, LineOutput};
use cpack_encode::CrossEncoder;

pub fn run(ctx: &Context, args: RerankScoreArgs) -> Result<()> {
    let target = OutputTarget::resolve(&args.output)?;
    if args.json && target == OutputTarget::Stdout {
        bail!("--json prints the summary on standard output, which --output - already takes; name an output file");
    }
    let recipe = crate::config::rerank_recipe(&ctx.workspace, &args.rerank)?;
    let Some(path) = &args.input else {
        bail!("name a pairs file to score, or `cpack rerank train`");
    };
    let input = open_input(path)?;
    let threads = crate::process::configure(args.threads);
    let reranker = open_reranker(&ctx.workspace, &recipe, args.device, threads)?;
    let settings = FilterSettings {
        output: LineOutput::AddScores,
        fields: args.fields.fields(),
        scorer: scorer_stamp(&reranker)?,
    };
    let mut score = |queries: &[&str], passages: &[&str]| -> Result<Vec<f32>> {
        let pairs: Vec<(&str, &str)> = queries
            .iter()
            .copied()
            .zip(passages.iter().copied())
            .collect();
        Ok(reranker.score(&pairs, &mut |_, _| {})?)
    };
    let scored = score_pairs_file(ctx, input, &target, &settings, args.chunk_pairs, &mut score)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&scored.json())?)?;
    } else if !ctx.progress.is_quiet() {
        let t = &scored.outcome.tally;
        errln!(
            "scored {} pairs of {} lines into {}; {:.1} pairs/s{}",
            t.pairs,
            t.lines,
            scored.destination(),
            scored.rate(),
            scored.resumed()
        );
    }
    Ok(())
}

/// What decides a score besides the pair: the model and how it reads pairs.
/// A resumed run must score with the same.
fn scorer_stamp(reranker: &CrossEncoder) -> Result<String> {
    Ok(serde_json::json!({
        "reranker": reranker.fingerprint(),
        "max_len": reranker.settings().max_len,
    })
    .to_string())
}
