//! `cpack filter`: the pairs of a pairs file that score at or above a
//! threshold under the model, streamed and resumable (`cpack_data::filter`).

use crate::cli::FilterArgs;
use crate::config::expand_instruction;
use crate::pairs_file::{open_input, score_pairs_file, Scored};
use crate::runtime::{open_encoder, Context};
use anyhow::{bail, Result};
use cpack_core::OutputTarget;
use cpack_data::filter::{FilterSettings, LineOutput};
use cpack_encode::{EmbeddingStamp, Encoder, TextKind};

pub fn run(ctx: &Context, args: FilterArgs) -> Result<()> {
    let target = OutputTarget::resolve(&args.output)?;
    if args.json && target == OutputTarget::Stdout {
        bail!("--json prints the summary on standard output, which --output - already takes; name an output file");
    }
    let mut config = ctx.config(&args.overrides)?;
    if let Some(instruction) = &args.query_instruction {
        config.encoder.query_instruction = expand_instruction(instruction).to_string();
    }
    let input = open_input(&args.input)?;
    let encoder = open_encoder(&config)?;
    let fields = args.fields.fields();
    let settings = FilterSettings {
        output: LineOutput::KeepAtLeast(args.min_score),
        fields,
        scorer: serde_json::to_string(&EmbeddingStamp::of(&config.model, &encoder)?)?,
    };
    let mut score = |queries: &[&str], passages: &[&str]| cosines(&encoder, queries, passages);
    let scored = score_pairs_file(ctx, input, &target, &settings, args.chunk_pairs, &mut score)?;
    let summary = Summary {
        scored,
        min_score: args.min_score,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary.json())?)?;
    } else if !ctx.progress.is_quiet() {
        errln!("{}", summary.text());
    }
    Ok(())
}

/// The cosine of each query-side text's embedding with its passage's.
fn cosines(encoder: &Encoder, queries: &[&str], passages: &[&str]) -> Result<Vec<f32>> {
    let q = encoder.encode(queries, TextKind::Query, &mut |_, _| {})?;
    let p = encoder.encode(passages, TextKind::Passage, &mut |_, _| {})?;
    let dim = encoder.dim();
    Ok(q.chunks_exact(dim)
        .zip(p.chunks_exact(dim))
        .map(|(a, b)| cosine(a, b))
        .collect())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms > 0.0 {
        dot / norms
    } else {
        0.0
    }
}

struct Summary<'a> {
    scored: Scored<'a>,
    min_score: f32,
}

impl Summary<'_> {
    fn json(&self) -> serde_json::Value {
        let t = &self.scored.outcome.tally;
        let bins: Vec<serde_json::Value> = t
            .histogram
            .bins()
            .filter(|&(_, _, n)| n > 0)
            .map(|(from, to, n)| serde_json::json!({"from": from, "to": to, "count": n}))
            .collect();
        let mut json = self.scored.json();
        json.extend([
            ("min_score".to_string(), self.min_score.into()),
            ("lines_kept".to_string(), t.lines_kept.into()),
            ("kept".to_string(), t.kept.into()),
            ("share_kept".to_string(), t.share_kept().into()),
            ("histogram".to_string(), bins.into()),
        ]);
        json.into()
    }

    fn text(&self) -> String {
        let t = &self.scored.outcome.tally;
        let mut text = String::new();
        let bins: Vec<(f64, f64, u64)> = t.histogram.bins().collect();
        let first = bins.iter().position(|&(_, _, n)| n > 0);
        let last = bins.iter().rposition(|&(_, _, n)| n > 0);
        let most = bins.iter().map(|&(_, _, n)| n).max().unwrap_or(0).max(1);
        if let (Some(first), Some(last)) = (first, last) {
            text += "scores (cosine):\n";
            for &(from, to, n) in &bins[first..=last] {
                let bar = "█".repeat((40 * n).div_ceil(most) as usize);
                let mark = if to <= f64::from(self.min_score) {
                    ' '
                } else {
                    '+'
                };
                text += &format!("  {from:>5.2} … {to:>5.2} {mark} {bar} {n}\n");
            }
        } else {
            text += "the input holds no pairs\n";
        }
        text += &format!(
            "kept {} of {} pairs ({:.1} %) at --min-score {} ('+' bins hold kept pairs); {} of {} lines written to {}; {:.0} pairs/s{}",
            t.kept,
            t.pairs,
            100.0 * t.share_kept(),
            self.min_score,
            t.lines_kept,
            t.lines,
            self.scored.destination(),
            self.scored.rate(),
            self.scored.resumed()
        );
        text
    }
}
