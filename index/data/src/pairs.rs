//! Pairs files: JSONL with a query-side text and its passages on each
//! line — FlagEmbedding's training format (`{"query": …, "pos": […]}`;
//! any `"neg"` is ignored), or any two fields named by the caller
//! (`title` / `text`, `anchor` / `positive`, `sentence1` / `sentence2`).
//! They feed the pair stage of training and `cpack filter`.
//!
//! [`PairReader`] streams such a file line by line in constant memory and
//! keeps a running checksum of the bytes it has consumed, so a job over a
//! large file can record where it stopped and verify, when it resumes,
//! that the file it continues is the one it started on.

use crate::dataset::{bad_line, kind};
use crate::error::{Error, Result};
use cpack_core::fsutil::FileSum;
use serde_json::{Map, Value};
use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Which fields of a line hold the two sides of its pairs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairFields {
    /// A string: the query, or the title.
    pub query: String,
    /// A string, or a list of strings: one pair per string.
    pub passage: String,
}

impl Default for PairFields {
    /// FlagEmbedding's: `query` and `pos`.
    fn default() -> Self {
        PairFields {
            query: "query".into(),
            passage: "pos".into(),
        }
    }
}

/// One line of a pairs file: its query and passages, and the line itself
/// so that a filter can write it back unchanged.
#[derive(Debug, Clone)]
pub struct PairLine {
    /// 1-based line number, for messages.
    pub number: usize,
    /// The line as read, without its line ending.
    pub text: String,
    pub object: Map<String, Value>,
    pub query: String,
    pub passages: Vec<String>,
    /// Whether the passage field is a list (else a single string).
    pub passage_list: bool,
}

impl PairLine {
    /// Parses a line's JSON and picks its two sides.
    fn parse(number: usize, text: String, fields: &PairFields) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(&text).map_err(|e| format!("not a JSON object: {e}"))?;
        let Value::Object(object) = value else {
            return Err(format!(
                "a line must be a JSON object, not {}",
                kind(&value)
            ));
        };
        let query = match object.get(&fields.query) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "\"{}\" must be a string, not {}",
                    fields.query,
                    kind(other)
                ))
            }
            None => return Err(missing(&fields.query, &object)),
        };
        let (passages, passage_list) = match object.get(&fields.passage) {
            Some(Value::String(s)) => (vec![s.clone()], false),
            Some(Value::Array(items)) => (strings(&fields.passage, items)?, true),
            Some(other) => {
                return Err(format!(
                    "\"{}\" must be a string or a list of strings, not {}",
                    fields.passage,
                    kind(other)
                ))
            }
            None => return Err(missing(&fields.passage, &object)),
        };
        Ok(PairLine {
            number,
            text,
            object,
            query,
            passages,
            passage_list,
        })
    }

    /// The line keeping only the passages `keep` says to, or `None` when it
    /// keeps none. A line that keeps all of them is its original text.
    pub fn kept(&self, keep: &[bool], fields: &PairFields) -> Option<String> {
        let kept: Vec<&String> = self
            .passages
            .iter()
            .zip(keep)
            .filter_map(|(p, &k)| k.then_some(p))
            .collect();
        if kept.is_empty() {
            return None;
        }
        if kept.len() == self.passages.len() {
            return Some(self.text.clone());
        }
        let mut object = self.object.clone();
        object.insert(
            fields.passage.clone(),
            Value::Array(kept.into_iter().cloned().map(Value::String).collect()),
        );
        Some(Value::Object(object).to_string())
    }
}

impl PairLine {
    /// The line with its pairs' scores added beside the passage field:
    /// `<field>_scores`, a list in the passages' order, when the field holds
    /// a list (FlagEmbedding's `pos_scores` / `neg_scores`), else
    /// `<field>_score`, a number. Other fields stay as they were.
    pub fn with_scores(&self, scores: &[f32], fields: &PairFields) -> String {
        let number = |s: &f32| -> Value {
            // The shortest decimal that reads back as this f32.
            let shortest: f64 = s.to_string().parse().unwrap_or(f64::NAN);
            serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
        };
        let mut object = self.object.clone();
        if self.passage_list {
            let list = scores.iter().map(number).collect();
            object.insert(format!("{}_scores", fields.passage), Value::Array(list));
        } else {
            let score = scores.first().map_or(Value::Null, number);
            object.insert(format!("{}_score", fields.passage), score);
        }
        Value::Object(object).to_string()
    }
}

fn strings(field: &str, items: &[Value]) -> Result<Vec<String>, String> {
    if items.is_empty() {
        return Err(format!(
            "\"{field}\" is an empty list: a line needs a passage"
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "\"{field}\"[{i}] must be a string, not {}",
                kind(other)
            )),
        })
        .collect()
}

fn missing(field: &str, object: &Map<String, Value>) -> String {
    let found: Vec<&str> = object.keys().map(String::as_str).collect();
    format!(
        "no \"{field}\" field (the line has {}); name the fields with --query-field / --passage-field",
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        }
    )
}

/// Reads a pairs file line by line. Blank lines are skipped; anything
/// else that is not a pair is an error naming the file and line.
pub struct PairReader<R> {
    input: R,
    path: PathBuf,
    fields: PairFields,
    line: usize,
    consumed: u64,
    hasher: crc32fast::Hasher,
    buffer: Vec<u8>,
}

impl<R: BufRead> PairReader<R> {
    /// A reader from the start of `input`; `path` names it in errors.
    pub fn new(input: R, path: &Path, fields: PairFields) -> Self {
        PairReader {
            input,
            path: path.to_path_buf(),
            fields,
            line: 0,
            consumed: 0,
            hasher: crc32fast::Hasher::new(),
            buffer: Vec::new(),
        }
    }

    /// The bytes consumed so far and their checksum: where to resume.
    pub fn position(&self) -> ReadPosition {
        ReadPosition {
            line: self.line,
            sum: FileSum {
                bytes: self.consumed,
                crc32: self.hasher.clone().finalize(),
            },
        }
    }

    /// The next line holding pairs, or `None` at the end of the input.
    pub fn next_line(&mut self) -> Result<Option<PairLine>> {
        loop {
            self.buffer.clear();
            let n = self
                .input
                .read_until(b'\n', &mut self.buffer)
                .map_err(Error::io("read", &self.path))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.consumed += n as u64;
            self.hasher.update(&self.buffer);
            let mut raw = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
            raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if self.line == 1 {
                raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
            }
            let text = std::str::from_utf8(raw).map_err(|e| {
                self.bad(format!(
                    "not valid UTF-8 (byte {} of the line)",
                    e.valid_up_to() + 1
                ))
            })?;
            if text.trim().is_empty() {
                continue;
            }
            let text = text.to_string();
            return PairLine::parse(self.line, text, &self.fields)
                .map(Some)
                .map_err(|problem| self.bad(problem));
        }
    }

    fn bad(&self, problem: String) -> Error {
        bad_line(&self.path, self.line, problem)
    }
}

impl<R: BufRead + Seek> PairReader<R> {
    /// A reader that continues at `position`, after checking that the
    /// input's first bytes are still the ones consumed before. `Ok(false)`
    /// means they are not (the file changed) and nothing was moved.
    pub fn resume_at(&mut self, position: &ReadPosition) -> Result<bool> {
        let io = |e| Error::io("read", &self.path)(e);
        self.input.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut left = position.sum.bytes;
        while left > 0 {
            let chunk = self.input.fill_buf().map_err(io)?;
            if chunk.is_empty() {
                break;
            }
            let take = chunk.len().min(left as usize);
            hasher.update(&chunk[..take]);
            self.input.consume(take);
            left -= take as u64;
        }
        if left > 0 || hasher.clone().finalize() != position.sum.crc32 {
            self.input.seek(SeekFrom::Start(0)).map_err(io)?;
            return Ok(false);
        }
        self.line = position.line;
        self.consumed = position.sum.bytes;
        self.hasher = hasher;
        Ok(true)
    }
}

/// How far a reader got: lines, and the bytes with their checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadPosition {
    pub line: usize,
    pub sum: FileSum,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn reader(text: &str) -> PairReader<Cursor<Vec<u8>>> {
        PairReader::new(
            Cursor::new(text.as_bytes().to_vec()),
            Path::new("pairs.jsonl"),
            PairFields::default(),
        )
    }

    fn all(text: &str) -> Result<Vec<PairLine>> {
        let mut r = reader(text);
        let mut lines = Vec::new();
        while let Some(line) = r.next_line()? {
            lines.push(line);
        }
        Ok(lines)
    }

    #[test]
    fn reads_strings_and_lists_and_skips_blank_lines() {
        let lines = all(
            "{\"query\":\"q1\",\"pos\":\"p1\"}\n\n{\"query\":\"q2\",\"pos\":[\"a\",\"b\"],\"neg\":[\"n\"]}\r\n",
        )
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].passages, vec!["p1"]);
        assert!(!lines[0].passage_list);
        assert_eq!(lines[1].number, 3);
        assert_eq!(lines[1].passages, vec!["a", "b"]);
        assert!(lines[1].passage_list);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            (
                "{\"query\":\"q\"}\n",
                "no \"pos\" field (the line has query)",
            ),
            (
                "{\"query\":1,\"pos\":\"p\"}\n",
                "\"query\" must be a string, not a number",
            ),
            ("{\"query\":\"q\",\"pos\":[]}\n", "empty list"),
            (
                "{\"query\":\"q\",\"pos\":[\"a\",2]}\n",
                "\"pos\"[1] must be a string",
            ),
            ("[1]\n", "must be a JSON object, not a list"),
            ("{\"query\":\n", "not a JSON object"),
        ];
        for (text, expected) in cases {
            let message = all(&format!("{{\"query\":\"ok\",\"pos\":\"ok\"}}\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(message.starts_with("pairs.jsonl:2: "), "{message}");
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
    }

    #[test]
    fn kept_lines_are_verbatim_or_narrowed() {
        let fields = PairFields::default();
        let line = &all("{\"query\":\"q\", \"pos\":[\"a\",\"b\"]}\n").unwrap()[0];
        assert_eq!(line.kept(&[true, true], &fields).unwrap(), line.text);
        assert_eq!(line.kept(&[false, false], &fields), None);
        let narrowed: Value =
            serde_json::from_str(&line.kept(&[false, true], &fields).unwrap()).unwrap();
        assert_eq!(narrowed["pos"], serde_json::json!(["b"]));
        assert_eq!(narrowed["query"], "q");
    }

    #[test]
    fn resumes_only_over_the_same_bytes() {
        let text = "{\"query\":\"q1\",\"pos\":\"p1\"}\n{\"query\":\"q2\",\"pos\":\"p2\"}\n";
        let mut first = reader(text);
        first.next_line().unwrap();
        let position = first.position();
        assert_eq!(position.line, 1);

        let mut again = reader(text);
        assert!(again.resume_at(&position).unwrap());
        assert_eq!(again.next_line().unwrap().unwrap().query, "q2");
        // The checksum continues across the resume as if read in one go.
        let mut whole = reader(text);
        while whole.next_line().unwrap().is_some() {}
        assert_eq!(again.position(), whole.position());

        let mut changed = reader(&text.replace("q1", "Q1"));
        assert!(!changed.resume_at(&position).unwrap());
        assert_eq!(changed.next_line().unwrap().unwrap().query, "Q1");
    }
}

/// A pairs file as training reads it: where it is, which fields hold the
/// two sides, and its size and checksum when it was first read (a run
/// resumed later must train on the same bytes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairsSource {
    pub path: PathBuf,
    pub fields: PairFields,
    pub sum: FileSum,
}

impl PairsSource {
    /// Reads `path` through once for its checksum; the path is recorded
    /// absolute, so a run resumed from another directory finds it.
    pub fn of(path: &Path, fields: PairFields) -> Result<Self> {
        Ok(PairsSource {
            path: std::fs::canonicalize(path).map_err(Error::io("open", path))?,
            fields,
            sum: FileSum::of(path)?,
        })
    }

    /// A folder name that differs whenever the bytes or the fields do.
    pub fn view_name(&self) -> String {
        let mut fields = crc32fast::Hasher::new();
        fields.update(self.fields.query.as_bytes());
        fields.update(&[0]);
        fields.update(self.fields.passage.as_bytes());
        format!(
            "{:08x}-{}-{:08x}",
            self.sum.crc32,
            self.sum.bytes,
            fields.finalize()
        )
    }

    /// The BEIR view of this pairs file in `dir`: reused when `dir` holds
    /// one made from the same bytes, else written (whole or not at all).
    /// The file must still have the bytes it had when first read.
    pub fn view(&self, dir: &Path) -> Result<PairsView> {
        let recorded = dir.join(PairsView::FILE);
        if let Ok(view) = cpack_core::fsutil::read_json::<PairsView>(&recorded) {
            if view.source == *self {
                return Ok(view);
            }
        }
        write_view(self, dir)
    }
}

/// What [`PairsSource::view`] made: a BEIR dataset with every distinct
/// query-side text a query, every distinct passage a corpus passage and
/// every pair a judgement of split [`PairsView::SPLIT`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairsView {
    pub source: PairsSource,
    pub pairs: usize,
    pub queries: usize,
    pub passages: usize,
}

impl PairsView {
    /// The split the pairs are judgements of: training's default split.
    pub const SPLIT: &'static str = "train";
    const FILE: &'static str = "view.json";
}

fn write_view(source: &PairsSource, dir: &Path) -> Result<PairsView> {
    use std::collections::HashMap;
    use std::io::Write;
    let file = std::fs::File::open(&source.path).map_err(Error::io("open", &source.path))?;
    let mut reader = PairReader::new(
        std::io::BufReader::new(file),
        &source.path,
        source.fields.clone(),
    );
    let mut queries: HashMap<String, usize> = HashMap::new();
    let mut passages: HashMap<String, usize> = HashMap::new();
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    let mut judged = std::collections::HashSet::new();
    let mut pairs = 0;
    while let Some(line) = reader.next_line()? {
        let next = queries.len();
        let q = *queries.entry(line.query).or_insert(next);
        for passage in line.passages {
            let next = passages.len();
            let p = *passages.entry(passage).or_insert(next);
            pairs += 1;
            if judged.insert((q, p)) {
                qrels += &format!("q{q}\tp{p}\t1\n");
            }
        }
    }
    if reader.position().sum != source.sum {
        let problem = "changed since training on it began (its size or checksum differs); \
                       restore it, or start a new run";
        return Err(Error::bad_file(&source.path, problem.into()));
    }
    if pairs == 0 {
        return Err(Error::bad_file(&source.path, "holds no pairs".into()));
    }
    let table = |texts: HashMap<String, usize>, prefix: char| {
        let mut rows: Vec<(usize, String)> = texts.into_iter().map(|(t, i)| (i, t)).collect();
        rows.sort_unstable_by_key(|(i, _)| *i);
        let mut out = Vec::new();
        for (i, text) in rows {
            let record = serde_json::json!({"_id": format!("{prefix}{i}"), "text": text});
            writeln!(out, "{record}").expect("writing to memory cannot fail");
        }
        out
    };
    let view = PairsView {
        source: source.clone(),
        pairs,
        queries: queries.len(),
        passages: passages.len(),
    };
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(partial.join("qrels")).map_err(Error::io("create", &partial))?;
    let write =
        |name: &str, bytes: &[u8]| cpack_core::fsutil::atomic_write(&partial.join(name), bytes);
    write("queries.jsonl", &table(queries, 'q'))?;
    write("corpus.jsonl", &table(passages, 'p'))?;
    write(&format!("qrels/{}.tsv", PairsView::SPLIT), qrels.as_bytes())?;
    cpack_core::fsutil::write_json_atomic(&partial.join(PairsView::FILE), &view)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(Error::io("remove", dir))?;
    }
    std::fs::rename(&partial, dir).map_err(Error::io("rename into place", dir))?;
    if let Some(parent) = dir.parent() {
        cpack_core::fsutil::sync_dir(parent)?;
    }
    Ok(view)
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn a_view_holds_each_text_once_and_refuses_changed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = dir.path().join("pairs.jsonl");
        std::fs::write(
            &pairs,
            "{\"query\":\"a\",\"pos\":[\"x\",\"y\"]}\n{\"query\":\"b\",\"pos\":\"x\"}\n{\"query\":\"a\",\"pos\":\"x\"}\n",
        )
        .unwrap();
        let source = PairsSource::of(&pairs, PairFields::default()).unwrap();
        let view_dir = dir.path().join(source.view_name());
        let view = source.view(&view_dir).unwrap();
        assert_eq!((view.pairs, view.queries, view.passages), (4, 2, 2));
        let dataset = crate::Dataset::load(crate::DatasetPaths::beir(&view_dir)).unwrap();
        let qrels = dataset.qrels(PairsView::SPLIT).unwrap();
        // The repeated (a, x) pair is judged once.
        assert_eq!(qrels.by_query["q0"].len(), 2);
        assert_eq!(qrels.by_query["q1"], vec![("p0".to_string(), 1)]);
        assert_eq!(
            source.view(&view_dir).unwrap(),
            view,
            "made once, then reused"
        );

        std::fs::write(&pairs, "{\"query\":\"c\",\"pos\":\"z\"}\n").unwrap();
        std::fs::remove_dir_all(&view_dir).unwrap();
        let err = source.view(&view_dir).unwrap_err().to_string();
        assert!(err.contains("changed since training on it began"), "{err}");
        assert!(!view_dir.exists(), "nothing is left half made");
    }
}
