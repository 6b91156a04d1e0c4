//! BEIR-layout retrieval datasets: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.
//!
//! Loading validates everything a later stage would trip over (duplicate ids,
//! qrels naming unknown ids, malformed lines) and reports it as `file:line: problem`.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where the three parts of a dataset live.
#[derive(Debug, Clone)]
pub struct DatasetPaths {
    /// The BEIR folder.
    pub dir: PathBuf,
    pub corpus: PathBuf,
    pub queries: PathBuf,
    pub qrels_dir: PathBuf,
}

impl DatasetPaths {
    /// The standard BEIR file names inside `dir`.
    pub fn beir(dir: &Path) -> Self {
        DatasetPaths {
            dir: dir.to_path_buf(),
            corpus: dir.join("corpus.jsonl"),
            queries: dir.join("queries.jsonl"),
            qrels_dir: dir.join("qrels"),
        }
    }

    pub fn qrels(&self, split: &str) -> PathBuf {
        self.qrels_dir.join(format!("{split}.tsv"))
    }
}

/// One JSONL record: `{"id" | "_id": string or number, "title"?: string, "text": string}`.
struct Record {
    id: String,
    title: String,
    text: String,
}

/// The JSON type of `v`, for error messages.
pub(crate) fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Record {
    /// Parses one line, naming the field and what is wrong with it.
    fn parse(line: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not a JSON record: {e}"))?;
        let serde_json::Value::Object(fields) = value else {
            return Err(format!(
                "a record must be a JSON object, not {}",
                kind(&value)
            ));
        };
        let id = match fields.get("id").or_else(|| fields.get("_id")) {
            Some(serde_json::Value::String(s)) => s.clone(),
            // BEIR sets use strings; some exports use numbers.
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(format!(
                    "id must be a string or a number, not {}",
                    kind(other)
                ))
            }
            None => return Err("the record has no \"id\" (or \"_id\") field".into()),
        };
        let text = match fields.get("text") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("text must be a string, not {}", kind(other))),
            None => return Err("the record has no \"text\" field".into()),
        };
        let title = match fields.get("title") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("title must be a string, not {}", kind(other))),
        };
        Ok(Record { id, title, text })
    }
}

/// The non-empty lines of a text file's bytes with their 1-based numbers;
/// `path` names them in errors. A UTF-8 byte-order mark at the start is
/// skipped (editors add it); invalid UTF-8 is an error naming its line.
fn lines_of(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, String)>> {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = Vec::new();
    for (n, raw) in body.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| {
            bad_line(
                path,
                n + 1,
                format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
            )
        })?;
        if !line.trim().is_empty() {
            lines.push((n + 1, line.to_string()));
        }
    }
    Ok(lines)
}

/// Texts with unique ids, in file order.
#[derive(Debug, Default, Clone)]
pub struct TextTable {
    pub ids: Vec<String>,
    pub titles: Vec<String>,
    pub texts: Vec<String>,
    positions: HashMap<String, usize>,
}

impl TextTable {
    /// Reads a JSONL file of `{"id", "title"?, "text"}` records (`_id` accepted too).
    pub fn load_jsonl(path: &Path) -> Result<Self> {
        Self::parse_jsonl(path, &std::fs::read(path).map_err(Error::io("read", path))?)
    }

    /// [`TextTable::load_jsonl`] of bytes already read; `path` names them in errors.
    pub fn parse_jsonl(path: &Path, bytes: &[u8]) -> Result<Self> {
        let mut table = TextTable::default();
        for (line_no, line) in lines_of(path, bytes)? {
            let record = Record::parse(&line).map_err(|p| bad_line(path, line_no, p))?;
            let id = record.id;
            if table.positions.contains_key(&id) {
                return Err(bad_line(path, line_no, format!("duplicate id {id:?}")));
            }
            table.positions.insert(id.clone(), table.ids.len());
            table.ids.push(id);
            table.titles.push(record.title);
            table.texts.push(record.text);
        }
        Ok(table)
    }

    /// Builds a table from in-memory texts (used for ad-hoc inputs and tests).
    pub fn from_texts(ids: Vec<String>, texts: Vec<String>) -> Self {
        let positions = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        TextTable {
            titles: vec![String::new(); ids.len()],
            ids,
            texts,
            positions,
        }
    }

    /// One table of several tasks' tables, in order: every id gains its
    /// part's `id_prefix` (ids of different tasks may coincide) and every
    /// text its `text_prefix` (a task's query instruction, so a trainer
    /// tokenizing the merged queries sees what each task's encoder sees).
    pub fn merged(parts: &[MergedPart]) -> Self {
        let mut table = TextTable::default();
        for part in parts {
            for i in 0..part.table.len() {
                let id = format!("{}{}", part.id_prefix, part.table.ids[i]);
                table.positions.insert(id.clone(), table.ids.len());
                table.ids.push(id);
                table.titles.push(part.table.titles[i].clone());
                table
                    .texts
                    .push(format!("{}{}", part.text_prefix, part.table.texts[i]));
            }
        }
        table
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn position(&self, id: &str) -> Option<usize> {
        self.positions.get(id).copied()
    }

    /// The text a model sees for row `i`: BEIR's `title + " " + text` when a title exists.
    pub fn full_text(&self, i: usize) -> String {
        let (title, text) = (&self.titles[i], &self.texts[i]);
        if title.is_empty() {
            text.clone()
        } else {
            format!("{title} {text}")
        }
    }

    /// A content hash over ids and model-visible texts, so an index knows
    /// whether it still describes this corpus.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for i in 0..self.len() {
            hasher.update(self.ids[i].as_bytes());
            hasher.update([0]);
            hasher.update(self.full_text(i).as_bytes());
            hasher.update([0xff]);
        }
        hex::encode(&hasher.finalize()[..16])
    }
}

/// One task's table in [`TextTable::merged`].
pub struct MergedPart<'a> {
    pub table: &'a TextTable,
    pub id_prefix: &'a str,
    pub text_prefix: &'a str,
}

/// Relevance judgements of one split: query id → (corpus id, graded score).
#[derive(Debug, Default, Clone)]
pub struct Qrels {
    pub by_query: BTreeMap<String, Vec<(String, i32)>>,
}

impl Qrels {
    /// Reads a BEIR qrels TSV (`query-id corpus-id score` header), checking
    /// that every id names a query and a passage that exist.
    pub fn load_tsv(path: &Path, queries: &TextTable, corpus: &TextTable) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
        Self::parse_tsv(path, &bytes, queries, corpus)
    }

    /// [`Qrels::load_tsv`] of bytes already read; `path` names them in errors.
    pub fn parse_tsv(
        path: &Path,
        bytes: &[u8],
        queries: &TextTable,
        corpus: &TextTable,
    ) -> Result<Self> {
        let mut qrels = Qrels::default();
        for (line_no, line) in lines_of(path, bytes)? {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            if line_no == 1 && fields.first() == Some(&"query-id") {
                continue;
            }
            let [query_id, corpus_id, score] = fields[..] else {
                return Err(bad_line(
                    path,
                    line_no,
                    format!(
                        "expected 3 tab-separated fields (query-id, corpus-id, score), found {}",
                        fields.len()
                    ),
                ));
            };
            let score: i32 = score.parse().map_err(|_| {
                bad_line(path, line_no, format!("score {score:?} is not an integer"))
            })?;
            if queries.position(query_id).is_none() {
                return Err(bad_line(
                    path,
                    line_no,
                    format!("unknown query id {query_id:?}"),
                ));
            }
            if corpus.position(corpus_id).is_none() {
                return Err(bad_line(
                    path,
                    line_no,
                    format!("unknown corpus id {corpus_id:?}"),
                ));
            }
            qrels
                .by_query
                .entry(query_id.to_string())
                .or_default()
                .push((corpus_id.to_string(), score));
        }
        Ok(qrels)
    }

    /// Number of queries with at least one judgement.
    pub fn len(&self) -> usize {
        self.by_query.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_query.is_empty()
    }
}

/// A corpus plus its queries, loaded and validated.
#[derive(Debug)]
pub struct Dataset {
    pub paths: DatasetPaths,
    pub corpus: TextTable,
    pub queries: TextTable,
}

impl Dataset {
    pub fn load(paths: DatasetPaths) -> Result<Self> {
        let corpus = TextTable::load_jsonl(&paths.corpus)?;
        if corpus.is_empty() {
            return Err(Error::bad_file(
                &paths.corpus,
                "the corpus holds no passages".into(),
            ));
        }
        let queries = TextTable::load_jsonl(&paths.queries)?;
        Ok(Dataset {
            paths,
            corpus,
            queries,
        })
    }

    /// Loads only the corpus (index builds need no queries).
    pub fn load_corpus(paths: &DatasetPaths) -> Result<TextTable> {
        let corpus = TextTable::load_jsonl(&paths.corpus)?;
        if corpus.is_empty() {
            return Err(Error::bad_file(
                &paths.corpus,
                "the corpus holds no passages".into(),
            ));
        }
        Ok(corpus)
    }

    pub fn qrels(&self, split: &str) -> Result<Qrels> {
        let path = self.paths.qrels(split);
        if !path.exists() {
            return Err(Error::bad_file(
                &path,
                format!("no qrels for split {split:?}"),
            ));
        }
        Qrels::load_tsv(&path, &self.queries, &self.corpus)
    }
}

/// Judgements of every split in `dataset`'s qrels folder, sorted by split
/// name: a query's positives in any split are never its negatives.
pub fn all_qrels(dataset: &Dataset) -> Result<Vec<Qrels>> {
    let dir = &dataset.paths.qrels_dir;
    let mut splits: Vec<String> = std::fs::read_dir(dir)
        .map_err(Error::io("list", dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".tsv")
                .map(str::to_string)
        })
        .collect();
    splits.sort();
    splits.iter().map(|s| dataset.qrels(s)).collect()
}

pub(crate) fn bad_line(path: &Path, line: usize, problem: String) -> Error {
    Error::BadLine {
        path: path.to_path_buf(),
        line,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_tables_prefix_ids_and_texts_and_keep_titles() {
        let mut a = TextTable::from_texts(
            vec!["x".into(), "y".into()],
            vec!["one".into(), "two".into()],
        );
        a.titles[1] = "T".into();
        let b = TextTable::from_texts(vec!["x".into()], vec!["three".into()]);
        let merged = TextTable::merged(&[
            MergedPart {
                table: &a,
                id_prefix: "a/",
                text_prefix: "ask: ",
            },
            MergedPart {
                table: &b,
                id_prefix: "b/",
                text_prefix: "",
            },
        ]);
        assert_eq!(merged.ids, ["a/x", "a/y", "b/x"]);
        assert_eq!(merged.texts, ["ask: one", "ask: two", "three"]);
        assert_eq!(merged.full_text(1), "T ask: two");
        assert_eq!(merged.position("b/x"), Some(2));
        assert_eq!(merged.position("x"), None);
    }
    use std::fs;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn reads_ids_of_both_spellings_and_joins_titles() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            "{\"_id\": \"a\", \"title\": \"T\", \"text\": \"x\"}\n\n{\"id\": 7, \"text\": \"\"}\n",
        );
        let t = TextTable::load_jsonl(&p).unwrap();
        assert_eq!(t.ids, ["a", "7"]);
        assert_eq!(t.full_text(0), "T x");
        assert_eq!(t.full_text(1), "");
        assert_eq!(t.position("7"), Some(1));
    }

    #[test]
    fn reports_file_and_line_of_bad_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"b\"}\n",
        );
        let err = TextTable::load_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("c.jsonl:2:"), "{err}");
        assert!(err.contains("text"), "{err}");

        let p = write(
            dir.path(),
            "d.jsonl",
            "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"a\",\"text\":\"y\"}\n",
        );
        let err = TextTable::load_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("d.jsonl:2: duplicate id \"a\""), "{err}");
    }

    #[test]
    fn qrels_must_name_known_ids() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = TextTable::from_texts(vec!["d1".into()], vec!["x".into()]);
        let queries = TextTable::from_texts(vec!["q1".into()], vec!["y".into()]);
        let ok = write(
            dir.path(),
            "ok.tsv",
            "query-id\tcorpus-id\tscore\nq1\td1\t2\n",
        );
        let q = Qrels::load_tsv(&ok, &queries, &corpus).unwrap();
        assert_eq!(q.by_query["q1"], vec![("d1".to_string(), 2)]);

        let bad = write(
            dir.path(),
            "bad.tsv",
            "query-id\tcorpus-id\tscore\nq1\td9\t1\n",
        );
        let err = Qrels::load_tsv(&bad, &queries, &corpus)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.tsv:2: unknown corpus id \"d9\""), "{err}");

        let bad = write(dir.path(), "bad2.tsv", "q1 d1 1\n");
        let err = Qrels::load_tsv(&bad, &queries, &corpus)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad2.tsv:1: expected 3 tab-separated fields"),
            "{err}"
        );
    }

    #[test]
    fn fingerprint_follows_content() {
        let a = TextTable::from_texts(vec!["1".into()], vec!["x".into()]);
        let b = TextTable::from_texts(vec!["1".into()], vec!["y".into()]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
