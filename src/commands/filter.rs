//! `cpack filter`: the pairs of a pairs file that score at or above a
//! threshold under the model, streamed and resumable (`cpack_data::filter`).

use crate::cli::FilterArgs;
use crate::config::expand_instruction;
use crate::runtime::{open_encoder, Context};
use anyhow::{bail, Context as _, Result};
use cpack_core::OutputTarget;
use cpack_data::filter::{self, FilterOutcome, FilterSettings, LineOutput, Scorer};
use cpack_data::pairs::PairReader;
use cpack_encode::{EmbeddingStamp, Encoder, TextKind};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

pub fn run(ctx: &Context, args: FilterArgs) -> Result<()> {
    let target = OutputTarget::resolve(&args.output)?;
    if args.json && target == OutputTarget::Stdout {
        bail!("--json prints the summary on standard output, which --output - already takes; name an output file");
    }
    let mut config = ctx.config(&args.overrides)?;
    if let Some(instruction) = &args.query_instruction {
        config.encoder.query_instruction = expand_instruction(instruction).to_string();
    }
    let (input, input_bytes) = open_input(&args.input)?;
    let encoder = open_encoder(&config)?;
    let fields = args.fields.fields();
    let settings = FilterSettings {
        output: LineOutput::KeepAtLeast(args.min_score),
        fields,
        scorer: serde_json::to_string(&EmbeddingStamp::of(&config.model, &encoder)?)?,
    };
    let mut score = |queries: &[&str], passages: &[&str]| cosines(&encoder, queries, passages);
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
        min_score: args.min_score,
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

/// Scores the pairs that `input` (its file, size and name) holds into
/// `target` as `settings` say — into a file resumably, else as a stream —
/// and returns the outcome and the seconds it took.
pub(super) fn score_pairs_file(
    ctx: &Context,
    (input, input_bytes, name): (File, Option<u64>, &Path),
    target: &OutputTarget,
    settings: &FilterSettings,
    chunk_pairs: usize,
    score: &mut Scorer<'_, anyhow::Error>,
) -> Result<(FilterOutcome, f64)> {
    let reader = PairReader::new(BufReader::new(input), name, settings.fields.clone());
    let started = Instant::now();
    let outcome = match target {
        OutputTarget::Replace(path) => filter::filter_into_file(
            reader,
            input_bytes,
            path,
            settings,
            chunk_pairs,
            &ctx.progress,
            score,
        )?,
        OutputTarget::Stdout | OutputTarget::Through(_) => {
            let mut out = BufWriter::new(open_stream(target)?);
            filter::filter_into_stream(
                reader,
                &mut out,
                settings,
                chunk_pairs,
                &ctx.progress,
                score,
            )?
        }
    };
    ctx.progress.finish();
    Ok((outcome, started.elapsed().as_secs_f64()))
}

/// The input and its size when it is a regular file (stdin included when
/// it is one); a pipe has no size and cannot be resumed.
pub(super) fn open_input(path: &Path) -> Result<(File, Option<u64>)> {
    let file = if path.as_os_str() == "-" {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot read standard input")?;
        File::from(fd)
    } else {
        File::open(path).with_context(|| format!("cannot open {}", path.display()))?
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    if meta.is_dir() {
        bail!(
            "{} is a directory; name a pairs file (JSONL)",
            path.display()
        );
    }
    Ok((file, meta.is_file().then_some(meta.len())))
}

/// Standard output, or a FIFO or device opened for writing in place.
fn open_stream(target: &OutputTarget) -> Result<Box<dyn Write>> {
    let OutputTarget::Through(path) = target else {
        return Ok(Box::new(std::io::stdout().lock()));
    };
    let is_file = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    let file = OpenOptions::new()
        .write(true)
        .truncate(is_file)
        .open(path)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    Ok(Box::new(file))
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
    input: &'a Path,
    output: Option<&'a Path>,
    min_score: f32,
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
        let bins: Vec<serde_json::Value> = t
            .histogram
            .bins()
            .filter(|&(_, _, n)| n > 0)
            .map(|(from, to, n)| serde_json::json!({"from": from, "to": to, "count": n}))
            .collect();
        serde_json::json!({
            "input": self.input,
            "output": self.output.map_or("-".into(), |p| p.display().to_string()),
            "min_score": self.min_score,
            "lines": t.lines,
            "lines_kept": t.lines_kept,
            "pairs": t.pairs,
            "kept": t.kept,
            "share_kept": t.share_kept(),
            "resumed_pairs": self.outcome.resumed_pairs,
            "seconds": self.seconds,
            "pairs_per_second": self.rate(),
            "histogram": bins,
        })
    }

    fn text(&self) -> String {
        let t = &self.outcome.tally;
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
            "kept {} of {} pairs ({:.1} %) at --min-score {} ('+' bins hold kept pairs); {} of {} lines written to {}; {:.0} pairs/s",
            t.kept,
            t.pairs,
            100.0 * t.share_kept(),
            self.min_score,
            t.lines_kept,
            t.lines,
            self.output.map_or("standard output".into(), |p| p.display().to_string()),
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
