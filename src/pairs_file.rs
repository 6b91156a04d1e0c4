//! Scoring a pairs file line by line into a file or a stream, as
//! `cpack filter` (keeping the pairs above a cosine) and `cpack rerank`
//! (adding a cross-encoder's scores) both do: the input opened (stdin
//! included), the output chosen, the library's resumable pass run.

use crate::runtime::Context;
use anyhow::{bail, Context as _, Result};
use cpack_core::OutputTarget;
use cpack_data::filter::{self, FilterOutcome, FilterSettings, Scorer};
use cpack_data::pairs::PairReader;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

/// A pairs file opened for scoring.
pub struct Input<'a> {
    file: File,
    /// Its size when it is a regular file; a pipe has none and cannot be resumed.
    bytes: Option<u64>,
    path: &'a Path,
}

/// What a command says about the file it scored.
pub struct Scored<'a> {
    pub input: &'a Path,
    pub output: Option<&'a Path>,
    pub outcome: FilterOutcome,
    pub seconds: f64,
}

impl Scored<'_> {
    /// Pairs scored by this call, per second.
    pub fn rate(&self) -> f64 {
        let scored = self.outcome.tally.pairs - self.outcome.resumed_pairs;
        scored as f64 / self.seconds.max(1e-9)
    }

    /// The summary's fields both commands print, for `--json`.
    pub fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let t = &self.outcome.tally;
        let value = serde_json::json!({
            "input": self.input,
            "output": self.output.map_or("-".into(), |p| p.display().to_string()),
            "lines": t.lines,
            "pairs": t.pairs,
            "resumed_pairs": self.outcome.resumed_pairs,
            "seconds": self.seconds,
            "pairs_per_second": self.rate(),
        });
        let serde_json::Value::Object(map) = value else {
            unreachable!("a JSON object literal")
        };
        map
    }

    /// Where the lines went, in words.
    pub fn destination(&self) -> String {
        (self.output).map_or("standard output".into(), |p| p.display().to_string())
    }

    /// What this call scored, when it resumed an interrupted one.
    pub fn resumed(&self) -> String {
        let t = &self.outcome.tally;
        match self.outcome.resumed_pairs {
            0 => String::new(),
            done => format!(" (this call: the last {} pairs)", t.pairs - done),
        }
    }
}

/// Scores the pairs of `input` into `target` as `settings` say — into a
/// file resumably, else as a stream.
pub fn score_pairs_file<'a>(
    ctx: &Context,
    input: Input<'a>,
    target: &'a OutputTarget,
    settings: &FilterSettings,
    chunk_pairs: usize,
    score: &mut Scorer<'_, anyhow::Error>,
) -> Result<Scored<'a>> {
    let (name, input_bytes) = (input.path, input.bytes);
    let reader = PairReader::new(BufReader::new(input.file), name, settings.fields.clone());
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
    Ok(Scored {
        input: name,
        output: target.path(),
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Opens a pairs file (`-`: standard input) and notes its size when it is a
/// regular file (stdin included when it is one).
pub fn open_input(path: &Path) -> Result<Input<'_>> {
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
    Ok(Input {
        file,
        bytes: meta.is_file().then_some(meta.len()),
        path,
    })
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
