//! `cpack rerank`: every pair of a pairs file scored by a cross-encoder and
//! written back into its line (`cpack_data::filter` adding scores), streamed
//! and, into a file, resumable.

use crate::cli::RerankArgs;
use crate::pairs_file::{open_input, score_pairs_file};
use crate::runtime::{open_reranker, Context};
use anyhow::{bail, Result};
use cpack_core::OutputTarget;
use cpack_data::filter::{FilterOutcome, FilterSettings, LineOutput};
use cpack_encode::CrossEncoder;
use std::path::Path;

pub fn run(ctx: &Context, args: RerankArgs) -> Result<()> {
    let target = OutputTarget::resolve(&args.output)?;
    if args.json && target == OutputTarget::Stdout {
        bail!("--json prints the summary on standard output, which --output - already takes; name an output file");
    }
    let recipe = crate::config::rerank_recipe(&ctx.workspace, &args.rerank)?;
    let (input, input_bytes) = open_input(&args.input)?;
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
    let (outcome, seconds) = score_pairs_file(
        ctx,
        (input, input_bytes, &args.input),
        &target,
        &settings,
        args.chunk_pairs,
        &mut score,
    )?;
    let summary = Summary {
        input: &args.input,
        output: target.path(),
        outcome: &outcome,
        seconds,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary.json())?)?;
    } else if !ctx.progress.is_quiet() {
        errln!("{}", summary.text());
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

struct Summary<'a> {
    input: &'a Path,
    output: Option<&'a Path>,
    outcome: &'a FilterOutcome,
    seconds: f64,
}

impl Summary<'_> {
    /// Pairs scored by this call, per second.
    fn rate(&self) -> f64 {
        let scored = self.outcome.tally.pairs - self.outcome.resumed_pairs;
        scored as f64 / self.seconds.max(1e-9)
    }

    fn json(&self) -> serde_json::Value {
        let t = &self.outcome.tally;
        serde_json::json!({
            "input": self.input,
            "output": self.output.map_or("-".into(), |p| p.display().to_string()),
            "lines": t.lines,
            "pairs": t.pairs,
            "resumed_pairs": self.outcome.resumed_pairs,
            "seconds": self.seconds,
            "pairs_per_second": self.rate(),
        })
    }

    fn text(&self) -> String {
        let t = &self.outcome.tally;
        let mut text = format!(
            "scored {} pairs of {} lines into {}; {:.1} pairs/s",
            t.pairs,
            t.lines,
            self.output
                .map_or("standard output".into(), |p| p.display().to_string()),
            self.rate()
        );
        if self.outcome.resumed_pairs > 0 {
            text += &format!(
                " (this call: the last {} pairs)",
                t.pairs - self.outcome.resumed_pairs
            );
        }
        text
    }
}
