//! Scoring the pairs of a pairs file, line by line: keeping the pairs that
//! score at or above a threshold (C-MTP's filter: the cosine of the two
//! sides under an embedding model), or writing every line with its pairs'
//! scores added (a reranker's scores, as FlagEmbedding's distillation data
//! carries them) — [`LineOutput`].
//!
//! The input is streamed in chunks of pairs, so memory stays constant
//! whatever its size. Into a file, the kept lines go to a partial file
//! beside it, synced chunk by chunk, with a small state file that records
//! how far the input was read (bytes and checksum), how far the partial
//! file was written (bytes and checksum) and the tally so far; a run killed
//! at any moment resumes from the last chunk it recorded, after verifying
//! both files. The output appears whole, by rename, only at the end.
//! Into a stream (standard output, a FIFO) lines are written as they are
//! kept and nothing can be resumed.
//!
//! Scores come from the caller (the binary encodes with the model), so
//! this module knows only pairs, thresholds and files.

use crate::error::{Error, Result};
use crate::pairs::{PairFields, PairLine, PairReader, ReadPosition};
use cpack_core::fsutil::{self, FileSum};
use cpack_core::Progress;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};

/// What each scored line becomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineOutput {
    /// The filter: the line keeping only its pairs that score at or above
    /// this, and no line when none does.
    KeepAtLeast(f32),
    /// Every line, with its pairs' scores added ([`PairLine::with_scores`]).
    AddScores,
}

impl LineOutput {
    /// What the progress line says is going on.
    fn stage(&self) -> &'static str {
        match self {
            LineOutput::KeepAtLeast(_) => "filtering pairs",
            LineOutput::AddScores => "scoring pairs",
        }
    }
}

/// What decides the lines written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterSettings {
    pub output: LineOutput,
    pub fields: PairFields,
    /// Everything else that decides a score (the model and how it encodes):
    /// a resumed filter must score with the same.
    pub scorer: String,
}

impl FilterSettings {
    /// C-MTP's threshold (under Text2Vec-Chinese).
    pub const DEFAULT_MIN_SCORE: f32 = 0.43;

    /// Pairs scored between two resumable checkpoints when the caller has
    /// no reason to choose: large enough to batch well, small enough that
    /// a killed run loses little.
    pub const DEFAULT_CHUNK_PAIRS: usize = 4096;
}

/// Scores counted in bins of [`Histogram::WIDTH`] over [-1, 1]; scores
/// outside (a model that does not normalise) count in the end bins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    pub counts: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; Self::BINS],
        }
    }
}

impl Histogram {
    pub const WIDTH: f32 = 0.05;
    const BINS: usize = 40;

    pub fn add(&mut self, score: f32) {
        let bin = ((score + 1.0) / Self::WIDTH).floor();
        let bin = if bin.is_nan() { 0.0 } else { bin };
        self.counts[(bin.max(0.0) as usize).min(Self::BINS - 1)] += 1;
    }

    /// `(lower edge, upper edge, count)` of every bin, the edges rounded
    /// to the bins' two decimals.
    pub fn bins(&self) -> impl Iterator<Item = (f64, f64, u64)> + '_ {
        let edge = |i: usize| {
            let x = ((-1.0 + i as f64 * f64::from(Self::WIDTH)) * 100.0).round() / 100.0;
            x + 0.0 // no -0.0
        };
        self.counts
            .iter()
            .enumerate()
            .map(move |(i, &n)| (edge(i), edge(i + 1), n))
    }
}

/// What a filter did, over every run that made the output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Lines holding pairs, and those written (kept at least one pair).
    pub lines: u64,
    pub lines_kept: u64,
    pub pairs: u64,
    pub kept: u64,
    pub histogram: Histogram,
}

impl Tally {
    /// The share of pairs kept, 0 when there were none.
    pub fn share_kept(&self) -> f64 {
        if self.pairs == 0 {
            0.0
        } else {
            self.kept as f64 / self.pairs as f64
        }
    }
}

/// The outcome of [`filter_into_file`] or [`filter_into_stream`].
#[derive(Debug, Clone)]
pub struct FilterOutcome {
    pub tally: Tally,
    /// Pairs that an earlier, interrupted run had already scored.
    pub resumed_pairs: u64,
}

/// Scores `queries[i]` against `passages[i]` for every i.
pub type Scorer<'a, E> = dyn FnMut(&[&str], &[&str]) -> std::result::Result<Vec<f32>, E> + 'a;

/// Filters the pairs `input` reads into a stream, writing each kept line
/// as its chunk is scored.
pub fn filter_into_stream<R: BufRead, E: From<Error>>(
    mut input: PairReader<R>,
    output: &mut dyn Write,
    settings: &FilterSettings,
    chunk_pairs: usize,
    progress: &dyn Progress,
    score: &mut Scorer<'_, E>,
) -> std::result::Result<FilterOutcome, E> {
    let mut tally = Tally::default();
    progress.stage(settings.output.stage(), 0);
    while let Some(chunk) = read_chunk(&mut input, chunk_pairs)? {
        let kept = score_chunk(&chunk, settings, &mut tally, score)?;
        write_lines(output, &kept).map_err(Error::io("write", Path::new("the output")))?;
        report(progress, &chunk, &tally, settings.output);
    }
    output
        .flush()
        .map_err(Error::io("write", Path::new("the output")))?;
    Ok(FilterOutcome {
        tally,
        resumed_pairs: 0,
    })
}

/// Filters the pairs `input` reads into the file `output`, resuming an
/// interrupted run with the same settings over the same input.
/// `input_bytes` is the input's size (for progress), `None` for a pipe,
/// which cannot be read again: such a filter starts over every time.
pub fn filter_into_file<R: BufRead + Seek, E: From<Error>>(
    mut input: PairReader<R>,
    input_bytes: Option<u64>,
    output: &Path,
    settings: &FilterSettings,
    chunk_pairs: usize,
    progress: &dyn Progress,
    score: &mut Scorer<'_, E>,
) -> std::result::Result<FilterOutcome, E> {
    let resumable = input_bytes.is_some();
    let mut partial = PartialOutput::open(output, settings, &mut input, resumable, progress)?;
    let resumed_pairs = partial.state.tally.pairs;
    let stage = format!("{} (bytes of input)", settings.output.stage());
    progress.stage(&stage, input_bytes.unwrap_or(0));
    progress.advance(partial.state.read.sum.bytes, 0);
    while let Some(chunk) = read_chunk(&mut input, chunk_pairs)? {
        let mut tally = partial.state.tally.clone();
        let kept = score_chunk(&chunk, settings, &mut tally, score)?;
        partial.append(&kept, input.position(), tally)?;
        report(progress, &chunk, &partial.state.tally, settings.output);
    }
    let tally = partial.finish()?;
    Ok(FilterOutcome {
        tally,
        resumed_pairs,
    })
}

/// Lines read in one go: at least one, and at most `chunk_pairs` pairs
/// unless a single line holds more.
struct Chunk {
    lines: Vec<PairLine>,
    /// Input bytes the chunk spans, for progress.
    bytes: u64,
}

fn read_chunk<R: BufRead>(input: &mut PairReader<R>, chunk_pairs: usize) -> Result<Option<Chunk>> {
    let start = input.position().sum.bytes;
    let mut lines = Vec::new();
    let mut pairs = 0;
    while pairs < chunk_pairs.max(1) {
        let Some(line) = input.next_line()? else {
            break;
        };
        pairs += line.passages.len();
        lines.push(line);
    }
    let bytes = input.position().sum.bytes - start;
    Ok((!lines.is_empty()).then_some(Chunk { lines, bytes }))
}

/// Scores a chunk, counts it into `tally` and returns the lines to write.
fn score_chunk<E: From<Error>>(
    chunk: &Chunk,
    settings: &FilterSettings,
    tally: &mut Tally,
    score: &mut Scorer<'_, E>,
) -> std::result::Result<Vec<String>, E> {
    let mut queries = Vec::new();
    let mut passages = Vec::new();
    for line in &chunk.lines {
        for passage in &line.passages {
            queries.push(line.query.as_str());
            passages.push(passage.as_str());
        }
    }
    let scores = score(&queries, &passages)?;
    assert_eq!(scores.len(), queries.len(), "one score per pair");
    let mut scores = scores.into_iter();
    let mut kept_lines = Vec::new();
    for line in &chunk.lines {
        let line_scores: Vec<f32> = scores.by_ref().take(line.passages.len()).collect();
        let keep: Vec<bool> = line_scores
            .iter()
            .map(|&s| {
                tally.histogram.add(s);
                match settings.output {
                    LineOutput::KeepAtLeast(min_score) => s >= min_score,
                    LineOutput::AddScores => true,
                }
            })
            .collect();
        tally.lines += 1;
        tally.pairs += keep.len() as u64;
        tally.kept += keep.iter().filter(|&&k| k).count() as u64;
        let written = match settings.output {
            LineOutput::KeepAtLeast(_) => line.kept(&keep, &settings.fields),
            LineOutput::AddScores => Some(line.with_scores(&line_scores, &settings.fields)),
        };
        if let Some(text) = written {
            tally.lines_kept += 1;
            kept_lines.push(text);
        }
    }
    Ok(kept_lines)
}

fn report(progress: &dyn Progress, chunk: &Chunk, tally: &Tally, output: LineOutput) {
    progress.advance(chunk.bytes, 0);
    progress.detail(&match output {
        LineOutput::KeepAtLeast(_) => {
            format!(
                "{} pairs, {:.1} % kept",
                tally.pairs,
                100.0 * tally.share_kept()
            )
        }
        LineOutput::AddScores => format!("{} pairs", tally.pairs),
    });
}

fn write_lines(output: &mut dyn Write, lines: &[String]) -> std::io::Result<()> {
    for line in lines {
        output.write_all(line.as_bytes())?;
        output.write_all(b"\n")?;
    }
    Ok(())
}

/// Format of the state file; a state of another version is started over.
const STATE_VERSION: u32 = 2;

/// Where an interrupted filter stood, after its last synced chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FilterState {
    version: u32,
    settings: FilterSettings,
    /// The input consumed so far.
    read: ReadPosition,
    /// The partial output as synced.
    written: FileSum,
    tally: Tally,
}

/// The output being assembled beside its final path.
struct PartialOutput {
    output: PathBuf,
    partial: PathBuf,
    state_path: PathBuf,
    file: File,
    hasher: crc32fast::Hasher,
    state: FilterState,
}

impl PartialOutput {
    /// Opens the partial output of an earlier run when its state, the input
    /// and the partial file all agree; otherwise starts a new one.
    fn open<R: BufRead + Seek>(
        output: &Path,
        settings: &FilterSettings,
        input: &mut PairReader<R>,
        resumable: bool,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let dir = match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = dir.join(format!(".{name}.cpack-filter"));
        let state_path = dir.join(format!(".{name}.cpack-filter.json"));
        if resumable {
            if let Some(resumed) =
                Self::resume(output, &partial, &state_path, settings, input, progress)?
            {
                return Ok(resumed);
            }
        }
        let file = File::create(&partial).map_err(Error::io("create", &partial))?;
        let state = FilterState {
            version: STATE_VERSION,
            settings: settings.clone(),
            read: input.position(),
            written: FileSum { bytes: 0, crc32: 0 },
            tally: Tally::default(),
        };
        fsutil::write_json_atomic(&state_path, &state)?;
        Ok(PartialOutput {
            output: output.to_path_buf(),
            partial,
            state_path,
            file,
            hasher: crc32fast::Hasher::new(),
            state,
        })
    }

    fn resume<R: BufRead + Seek>(
        output: &Path,
        partial: &Path,
        state_path: &Path,
        settings: &FilterSettings,
        input: &mut PairReader<R>,
        progress: &dyn Progress,
    ) -> Result<Option<Self>> {
        let Ok(state) = fsutil::read_json::<FilterState>(state_path) else {
            return Ok(None);
        };
        let opened = if state.version != STATE_VERSION {
            Err("it was written by another version")
        } else if state.settings != *settings {
            Err("its settings differ")
        } else {
            match Self::reopen(partial, &state) {
                Err(()) => Err("its partial output is damaged"),
                // Last: a reader that is not resumed stays at the start.
                Ok(_) if !input.resume_at(&state.read)? => Err("the input changed since"),
                Ok(opened) => Ok(opened),
            }
        };
        match opened {
            Ok((file, hasher)) => {
                progress.note(&format!(
                    "resuming the filter into {} after {} pairs (line {} of the input)",
                    output.display(),
                    state.tally.pairs,
                    state.read.line
                ));
                Ok(Some(PartialOutput {
                    output: output.to_path_buf(),
                    partial: partial.to_path_buf(),
                    state_path: state_path.to_path_buf(),
                    file,
                    hasher,
                    state,
                }))
            }
            Err(why) => {
                progress.note(&format!(
                    "an interrupted filter into {} was found, but {why}: starting over",
                    output.display()
                ));
                Ok(None)
            }
        }
    }

    /// The partial file cut back to what the state recorded, if its first
    /// bytes are the ones recorded.
    fn reopen(
        partial: &Path,
        state: &FilterState,
    ) -> std::result::Result<(File, crc32fast::Hasher), ()> {
        use std::io::Read;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(partial)
            .map_err(drop)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut left = state.written.bytes;
        while left > 0 {
            let want = buffer.len().min(left as usize);
            let n = file.read(&mut buffer[..want]).map_err(drop)?;
            if n == 0 {
                return Err(());
            }
            hasher.update(&buffer[..n]);
            left -= n as u64;
        }
        if hasher.clone().finalize() != state.written.crc32 {
            return Err(());
        }
        file.set_len(state.written.bytes).map_err(drop)?;
        file.seek(std::io::SeekFrom::End(0)).map_err(drop)?;
        Ok((file, hasher))
    }

    /// Appends a chunk's kept lines, syncs them, then records the new state.
    fn append(&mut self, lines: &[String], read: ReadPosition, tally: Tally) -> Result<()> {
        let mut bytes = Vec::new();
        write_lines(&mut bytes, lines).expect("writing to memory cannot fail");
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(Error::io("write", &self.partial))?;
        self.hasher.update(&bytes);
        self.state.read = read;
        self.state.written = FileSum {
            bytes: self.state.written.bytes + bytes.len() as u64,
            crc32: self.hasher.clone().finalize(),
        };
        self.state.tally = tally;
        fsutil::write_json_atomic(&self.state_path, &self.state)?;
        Ok(())
    }

    /// Moves the partial file into place (keeping the permissions of a
    /// file it replaces) and removes the state.
    fn finish(self) -> Result<Tally> {
        if let Ok(meta) = fs::metadata(&self.output) {
            fs::set_permissions(&self.partial, meta.permissions())
                .map_err(Error::io("set permissions of", &self.partial))?;
        }
        self.file
            .sync_all()
            .map_err(Error::io("sync", &self.partial))?;
        fs::rename(&self.partial, &self.output)
            .map_err(Error::io("rename into place", &self.output))?;
        let dir = self.state_path.parent().unwrap_or(Path::new("."));
        fsutil::sync_dir(dir)?;
        fs::remove_file(&self.state_path).map_err(Error::io("remove", &self.state_path))?;
        Ok(self.state.tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    /// A stand-in for a model: the score is a pure function of the pair.
    fn score(q: &str, p: &str) -> f32 {
        let shared = q.chars().filter(|c| p.contains(*c)).count() as f32;
        (shared / q.chars().count().max(1) as f32) * 2.0 - 1.0
    }

    fn settings(min_score: f32) -> FilterSettings {
        FilterSettings {
            output: LineOutput::KeepAtLeast(min_score),
            fields: PairFields::default(),
            scorer: "overlap".into(),
        }
    }

    fn write_input(dir: &Path, lines: usize) -> PathBuf {
        let mut text = String::new();
        for i in 0..lines {
            text += &format!(
                "{{\"query\":\"q{i} abc\",\"pos\":[\"{i} ab\",\"xyz\"],\"neg\":[\"n\"]}}\n"
            );
        }
        let path = dir.join("pairs.jsonl");
        fs::write(&path, text).unwrap();
        path
    }

    fn reader(path: &Path) -> PairReader<BufReader<File>> {
        PairReader::new(
            BufReader::new(File::open(path).unwrap()),
            path,
            PairFields::default(),
        )
    }

    /// Runs the filter into `output`, failing after `chunks` chunks when given.
    fn run(
        input: &Path,
        output: &Path,
        settings: &FilterSettings,
        fail_after: Option<usize>,
    ) -> std::result::Result<FilterOutcome, String> {
        let mut calls = 0;
        let mut scorer = |q: &[&str], p: &[&str]| -> std::result::Result<Vec<f32>, String> {
            calls += 1;
            if fail_after.is_some_and(|n| calls > n) {
                return Err("interrupted".into());
            }
            Ok(q.iter().zip(p).map(|(q, p)| score(q, p)).collect())
        };
        let size = fs::metadata(input).unwrap().len();
        filter_into_file(
            reader(input),
            Some(size),
            output,
            settings,
            7,
            &cpack_core::Silent,
            &mut scorer,
        )
    }

    impl From<Error> for String {
        fn from(e: Error) -> String {
            e.to_string()
        }
    }

    #[test]
    fn keeps_exactly_the_pairs_at_or_above_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(dir.path(), 30);
        let output = dir.path().join("kept.jsonl");
        let threshold = score("q1 abc", "1 ab");
        let outcome = run(&input, &output, &settings(threshold), None).unwrap();
        let text = fs::read_to_string(&output).unwrap();
        let mut expected = 0;
        for line in fs::read_to_string(&input).unwrap().lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let q = value["query"].as_str().unwrap();
            let kept: Vec<&str> = value["pos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .filter(|p| score(q, p) >= threshold)
                .collect();
            expected += kept.len() as u64;
            let found = text.lines().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["query"] == q && v["pos"] == serde_json::json!(kept)
            });
            assert_eq!(found, !kept.is_empty(), "{line}");
        }
        assert_eq!(outcome.tally.kept, expected);
        assert_eq!(outcome.tally.pairs, 60);
        assert!(expected > 0 && expected < 60);
        assert_eq!(outcome.tally.histogram.counts.iter().sum::<u64>(), 60);
        assert!(!dir.path().join(".kept.jsonl.cpack-filter.json").exists());
    }

    #[test]
    fn adding_scores_writes_every_line_with_its_pairs_scores() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(dir.path(), 12);
        let output = dir.path().join("scored.jsonl");
        let settings = FilterSettings {
            output: LineOutput::AddScores,
            ..settings(0.0)
        };
        let outcome = run(&input, &output, &settings, None).unwrap();
        assert_eq!((outcome.tally.lines_kept, outcome.tally.kept), (12, 24));
        let written = fs::read_to_string(&output).unwrap();
        let original = fs::read_to_string(&input).unwrap();
        assert_eq!(written.lines().count(), 12);
        for (line, source) in written.lines().zip(original.lines()) {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            let q = value["query"].as_str().unwrap().to_string();
            let scores = value["pos_scores"].as_array().unwrap().clone();
            let passages = value["pos"].as_array().unwrap().clone();
            assert_eq!(scores.len(), passages.len());
            for (s, p) in scores.iter().zip(&passages) {
                assert_eq!(s.as_f64().unwrap() as f32, score(&q, p.as_str().unwrap()));
            }
            value.as_object_mut().unwrap().remove("pos_scores");
            assert_eq!(
                value,
                serde_json::from_str::<serde_json::Value>(source).unwrap()
            );
        }
    }

    #[test]
    fn an_interrupted_filter_resumes_to_the_same_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(dir.path(), 40);
        let whole = dir.path().join("whole.jsonl");
        let resumed = dir.path().join("resumed.jsonl");
        let settings = settings(0.0);
        let full = run(&input, &whole, &settings, None).unwrap();

        assert_eq!(
            run(&input, &resumed, &settings, Some(3)).unwrap_err(),
            "interrupted"
        );
        assert!(!resumed.exists(), "nothing appears before the end");
        // A torn append after the last recorded chunk is cut off on resume.
        let partial = dir.path().join(".resumed.jsonl.cpack-filter");
        OpenOptions::new()
            .append(true)
            .open(&partial)
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let outcome = run(&input, &resumed, &settings, None).unwrap();
        assert!(outcome.resumed_pairs > 0);
        assert_eq!(fs::read(&resumed).unwrap(), fs::read(&whole).unwrap());
        assert_eq!(outcome.tally, full.tally);
    }

    #[test]
    fn a_changed_input_or_damaged_partial_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(dir.path(), 40);
        let output = dir.path().join("out.jsonl");
        let settings = settings(0.0);
        run(&input, &output, &settings, Some(2)).unwrap_err();
        let partial = dir.path().join(".out.jsonl.cpack-filter");
        let mut bytes = fs::read(&partial).unwrap();
        bytes[0] ^= 1;
        fs::write(&partial, &bytes).unwrap();
        let outcome = run(&input, &output, &settings, None).unwrap();
        assert_eq!(outcome.resumed_pairs, 0);

        run(&input, &output, &settings, Some(2)).unwrap_err();
        let text = fs::read_to_string(&input).unwrap().replacen("q0", "Q0", 1);
        fs::write(&input, text).unwrap();
        let outcome = run(&input, &output, &settings, None).unwrap();
        assert_eq!(outcome.resumed_pairs, 0);
        assert!(fs::read_to_string(&output).unwrap().contains("Q0 abc"));

        run(&input, &output, &settings, Some(2)).unwrap_err();
        let outcome = run(
            &input,
            &output,
            &FilterSettings {
                output: LineOutput::KeepAtLeast(0.5),
                ..settings
            },
            None,
        )
        .unwrap();
        assert_eq!(outcome.resumed_pairs, 0);
    }

    #[test]
    fn histogram_bins_clamp_to_the_ends() {
        let mut h = Histogram::default();
        for s in [-3.0, -1.0, 0.0, 0.049, 0.06, 1.0, 7.0] {
            h.add(s);
        }
        let bins: Vec<(f64, f64, u64)> = h.bins().filter(|&(_, _, n)| n > 0).collect();
        assert_eq!(bins.len(), 4);
        assert_eq!(bins[0], (-1.0, -0.95, 2));
        assert_eq!(bins[1], (0.0, 0.05, 2));
        assert_eq!(h.counts[20], 2);
        assert_eq!(h.counts[21], 1);
        assert_eq!(h.counts[39], 2);
    }
}
