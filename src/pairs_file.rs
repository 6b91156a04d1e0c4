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

/// Scores the pairs that `input` (its file, size and name) holds into
/// `target` as `settings` say — into a file resumably, else as a stream —
/// and returns the outcome and the seconds it took.
pub fn score_pairs_file(
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
pub fn open_input(path: &Path) -> Result<(File, Option<u64>)> {
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
