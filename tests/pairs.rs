//! Pairs files through the real binary: `cpack filter` (a tiny model scores
//! pairs files the test writes; the scores are checked against `cpack
//! embed`'s vectors) and the pair stage, `cpack train --pairs`.

use crate::common::{cosine, cpack, fails, fails_with, json, ok, tiny_model};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const WORDS: [&str; 12] = [
    "claim",
    "policy",
    "premium",
    "rider",
    "term",
    "whole",
    "life",
    "auto",
    "home",
    "renters",
    "deductible",
    "annuity",
];

/// A pairs file of `n` lines: every third has a list of two passages and
/// a "neg" field that must survive unchanged.
fn write_pairs(dir: &Path, n: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let w = |k: usize| WORDS[(i * 7 + k * 5) % WORDS.len()];
        let query = format!("what {} {} {}", w(0), w(1), i % 5);
        let line = if i % 3 == 0 {
            serde_json::json!({"query": query, "pos": [format!("{} {}", w(0), w(2)), format!("{} {} {}", w(3), w(4), w(1))], "neg": ["n"], "id": i})
        } else {
            serde_json::json!({"query": query, "pos": format!("{} {} {}", w(1), w(5), w(0)), "id": i})
        };
        text += &format!("{line}\n");
    }
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn model(dir: &Path) -> PathBuf {
    let mut vocabulary: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    vocabulary.extend(["what", "n", "0 1 2 3 4"].map(String::from));
    let refs: Vec<&str> = vocabulary.iter().map(String::as_str).collect();
    tiny_model(&dir.join("model"), &refs)
}

/// `cpack embed`'s vector of each text, as a query or a passage.
fn embed_as(dir: &Path, model: &Path, texts: &[String], query: bool) -> Vec<Vec<f32>> {
    let mut extra = vec!["--model", model.to_str().unwrap()];
    if query {
        extra.push("--query");
    }
    crate::common::embed(dir, texts, &extra)
}

/// The passages of a pairs line: its `pos` string, or each of its list.
fn passages_of(line: &serde_json::Value) -> Vec<String> {
    match &line["pos"] {
        serde_json::Value::String(s) => vec![s.clone()],
        list => list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
    }
}

/// (line id, passage) → score, computed from `cpack embed`.
fn expected_scores(dir: &Path, model: &Path, pairs: &Path) -> BTreeMap<(u64, String), f32> {
    let mut keys = Vec::new();
    let (mut queries, mut passages) = (Vec::new(), Vec::new());
    for line in std::fs::read_to_string(pairs).unwrap().lines() {
        let v = json(line);
        let pos = passages_of(&v);
        for p in pos {
            keys.push((v["id"].as_u64().unwrap(), p.clone()));
            queries.push(v["query"].as_str().unwrap().to_string());
            passages.push(p);
        }
    }
    let q = embed_as(dir, model, &queries, true);
    let p = embed_as(dir, model, &passages, false);
    keys.into_iter()
        .zip(q.iter().zip(&p).map(|(a, b)| cosine(a, b)))
        .collect()
}

/// A threshold in the widest gap between two scores near the median, so
/// that rounding differences between batchings cannot move a pair across.
fn threshold_between(scores: &[f32]) -> f32 {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f32::total_cmp);
    let middle = sorted.len() / 4..3 * sorted.len() / 4;
    let (i, gap) = middle
        .map(|i| (i, sorted[i + 1] - sorted[i]))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(gap > 1e-3, "the tiny model's scores are too close to split");
    (sorted[i] + sorted[i + 1]) / 2.0
}

#[test]
fn keeps_exactly_the_pairs_at_or_above_the_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = model(dir);
    let pairs = write_pairs(dir, 40);
    let scores = expected_scores(dir, &model, &pairs);
    let values: Vec<f32> = scores.values().copied().collect();
    let threshold = threshold_between(&values);
    let expected: Vec<&(u64, String)> = scores
        .iter()
        .filter(|(_, &s)| s >= threshold)
        .map(|(k, _)| k)
        .collect();

    let out = dir.join("kept.jsonl");
    let summary = json(&ok(
        dir,
        &[
            "filter",
            pairs.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--min-score",
            &threshold.to_string(),
            "--model",
            model.to_str().unwrap(),
            "--chunk-pairs",
            "9",
            "--json",
        ],
    ));
    let originals: BTreeMap<u64, String> = std::fs::read_to_string(&pairs)
        .unwrap()
        .lines()
        .map(|l| (json(l)["id"].as_u64().unwrap(), l.to_string()))
        .collect();
    let mut kept = Vec::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v = json(line);
        let id = v["id"].as_u64().unwrap();
        let original = json(&originals[&id]);
        let passages = passages_of(&v);
        if v["pos"] == original["pos"] {
            assert_eq!(
                line, originals[&id],
                "a line kept whole is written as it was"
            );
        }
        assert_eq!(v["neg"], original["neg"], "other fields survive");
        kept.extend(passages.into_iter().map(|p| (id, p)));
    }
    kept.sort();
    let kept_refs: Vec<&(u64, String)> = kept.iter().collect();
    assert_eq!(
        kept_refs, expected,
        "kept pairs differ from those at or above {threshold}"
    );
    assert_eq!(summary["pairs"], scores.len());
    assert_eq!(summary["kept"], expected.len());
    let binned: u64 = summary["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(binned, scores.len() as u64);
    assert!(
        !dir.join(".kept.jsonl.cpack-filter.json").exists(),
        "the state is removed at the end"
    );
}

#[test]
fn a_filter_killed_mid_run_resumes_to_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = model(dir);
    let pairs = write_pairs(dir, 3000);
    let whole = dir.join("whole.jsonl");
    let resumed = dir.join("resumed.jsonl");
    let args = |out: &Path| {
        vec![
            "filter".to_string(),
            pairs.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--min-score".into(),
            "0.2".into(),
            "--model".into(),
            model.display().to_string(),
            "--chunk-pairs".into(),
            "16".into(),
        ]
    };
    ok(
        dir,
        &args(&whole).iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let mut child = cpack(dir)
        .args(args(&resumed))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = dir.join(".resumed.jsonl.cpack-filter.json");
    let started = Instant::now();
    loop {
        let scored = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["tally"]["pairs"].as_u64())
            .unwrap_or(0);
        if scored >= 64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the filter never recorded a chunk"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!resumed.exists(), "the kill left the output to be made");

    let out = cpack(dir).args(args(&resumed)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming the filter"), "{stderr}");
    assert_eq!(
        std::fs::read(&resumed).unwrap(),
        std::fs::read(&whole).unwrap()
    );
}

#[test]
fn streams_fields_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = model(dir);
    let m = model.to_str().unwrap();
    let pairs = dir.join("titles.jsonl");
    std::fs::write(&pairs, "{\"title\":\"claim policy\",\"text\":\"claim policy\"}\n{\"title\":\"auto\",\"text\":\"annuity rider\"}\n").unwrap();

    // Other field names, stdin in, stdout out; -1 keeps everything.
    let out = cpack(dir)
        .args([
            "filter",
            "-",
            "-o",
            "-",
            "--min-score",
            "-1",
            "--query-field",
            "title",
            "--passage-field",
            "text",
            "--model",
            m,
        ])
        .stdin(std::fs::File::open(&pairs).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, std::fs::read(&pairs).unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept 2 of 2 pairs"));

    let p = pairs.to_str().unwrap();
    let missing = fails(dir, &["filter", p, "-o", "x.jsonl", "--model", m]);
    assert!(
        missing.contains("titles.jsonl:1: no \"query\" field (the line has text, title)"),
        "{missing}"
    );
    assert!(!dir.join("x.jsonl").exists());

    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"query\":\"a\",\"pos\":\"b\"}\n\n{\"query\":\"a\",\"pos\":7}\n",
    )
    .unwrap();
    let err = fails(
        dir,
        &[
            "filter",
            bad.to_str().unwrap(),
            "-o",
            "y.jsonl",
            "--model",
            m,
        ],
    );
    assert!(
        err.contains("bad.jsonl:3: \"pos\" must be a string or a list of strings, not a number"),
        "{err}"
    );

    for score in ["1.5", "nan", "-2"] {
        let err = fails_with(
            dir,
            &[
                "filter",
                p,
                "-o",
                "z.jsonl",
                "--min-score",
                score,
                "--model",
                m,
            ],
            2,
        );
        assert!(err.contains("--min-score"), "{err}");
    }
    let err = fails(dir, &["filter", p, "-o", "-", "--json", "--model", m]);
    assert!(err.contains("--json"), "{err}");
    let err = fails(
        dir,
        &[
            "filter",
            dir.to_str().unwrap(),
            "-o",
            "z.jsonl",
            "--model",
            m,
        ],
    );
    assert!(err.contains("is a directory"), "{err}");
    let err = fails(
        dir,
        &["filter", p, "-o", dir.to_str().unwrap(), "--model", m],
    );
    assert!(err.contains("is a directory"), "{err}");
}

/// cmrc2018's training (question, paragraph) pairs as a pairs file, and a
/// workspace on cmrc2018 with a tiny model for it.
fn pair_stage_workspace(tmp: &Path) -> (PathBuf, PathBuf) {
    let data = crate::common::shared("data/cmrc2018");
    let texts = |file: &str| -> BTreeMap<String, String> {
        std::fs::read_to_string(data.join(file))
            .unwrap()
            .lines()
            .map(|l| {
                let v = json(l);
                let id = v["_id"].as_str().or(v["id"].as_str()).unwrap().to_string();
                (id, v["text"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let (queries, corpus) = (texts("queries.jsonl"), texts("corpus.jsonl"));
    let mut lines = String::new();
    for row in std::fs::read_to_string(data.join("qrels/train.tsv"))
        .unwrap()
        .lines()
        .skip(1)
    {
        let fields: Vec<&str> = row.split('\t').collect();
        lines += &format!(
            "{}\n",
            serde_json::json!({"query": queries[fields[0]], "pos": corpus[fields[1]]})
        );
    }
    let pairs = tmp.join("pairs.jsonl");
    std::fs::write(&pairs, lines).unwrap();
    let model = crate::common::tiny_model_for(&data, &tmp.join("model"));
    let ws = tmp.join("ws");
    crate::common::init_workspace(&ws, &data, &model, &["--query-instruction", "bge-zh"]);
    (ws, pairs)
}

const PAIR_RUN: [&str; 16] = [
    "train",
    "--pairs",
    "../pairs.jsonl",
    "--run",
    "p",
    "--epochs",
    "3",
    "--max-queries",
    "48",
    "--train-batch-size",
    "16",
    "--passage-max-len",
    "48",
    "--query-max-len",
    "24",
    "--quiet",
];

#[test]
fn the_pair_stage_trains_in_batch_and_a_killed_run_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, pairs) = pair_stage_workspace(tmp.path());
    let whole = json(&ok(&ws, &[&PAIR_RUN[..], &["--json"]].concat()));
    let epochs = whole["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for epoch in epochs {
        assert!(epoch["mean_loss"].as_f64().unwrap().is_finite());
        assert!(epoch["round"].is_null(), "the pair stage mines nothing");
    }
    assert_eq!(whole["spec"]["train"]["group_size"], 1);
    let recorded = whole["spec"]["pairs"]["path"].as_str().unwrap();
    assert_eq!(
        Path::new(recorded),
        pairs.canonicalize().unwrap(),
        "recorded whole, for a resume from anywhere"
    );
    assert!(
        !ws.join(".cpack/index").exists(),
        "no corpus is encoded for in-batch training"
    );

    let weights = |run: &str| {
        std::fs::read(ws.join(format!(".cpack/runs/{run}/epoch-3/model.safetensors"))).unwrap()
    };
    let killed_args: Vec<&str> = PAIR_RUN
        .iter()
        .map(|a| if *a == "p" { "k" } else { a })
        .collect();
    let mut child = cpack(&ws)
        .args(&killed_args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let first = ws.join(".cpack/runs/k/epoch-1/trainer_state.json");
    let started = Instant::now();
    while !first.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(started.elapsed() < Duration::from_secs(600));
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !ws.join(".cpack/runs/k/epoch-3").exists(),
        "killed too late to test anything"
    );
    // The resume names no --pairs: the run's own file is read again.
    ok(
        &ws,
        &[
            "train", "--resume", "--run", "k", "--epochs", "3", "--quiet",
        ],
    );
    assert!(
        weights("p") == weights("k"),
        "resumed weights differ from an uninterrupted run"
    );

    // A pairs file changed under a run is refused by name when the view must be made again.
    std::fs::remove_dir_all(ws.join(".cpack/pairs")).unwrap();
    let mut text = std::fs::read_to_string(&pairs).unwrap();
    text.push_str("{\"query\":\"新\",\"pos\":\"新\"}\n");
    std::fs::write(&pairs, text).unwrap();
    let err = fails(
        &ws,
        &[
            "train", "--resume", "--run", "k", "--epochs", "4", "--quiet",
        ],
    );
    assert!(
        err.contains("pairs.jsonl") && err.contains("changed since training on it began"),
        "{err}"
    );

    assert_eq!(
        whole["spec"]["encoder"]["query_instruction"],
        "为这个句子生成表示以用于检索相关文章："
    );
    let symmetric = json(&ok(
        &ws,
        &[
            "train",
            "--pairs",
            "../pairs.jsonl",
            "--run",
            "s",
            "--symmetric",
            "--loss",
            "gte",
            "--max-queries",
            "32",
            "--passage-max-len",
            "48",
            "--train-batch-size",
            "16",
            "--quiet",
            "--json",
        ],
    ));
    let encoder = &symmetric["spec"]["encoder"];
    assert_eq!(
        encoder["query_instruction"], "",
        "symmetric pairs carry no instruction"
    );
    assert_eq!(
        encoder["query_max_len"], 48,
        "symmetric sides share the passage length"
    );
    assert!(symmetric["epochs"][0]["mean_loss"]
        .as_f64()
        .unwrap()
        .is_finite());
    let err = fails_with(&ws, &["train", "--symmetric", "--run", "t"], 2);
    assert!(err.contains("--pairs"), "{err}");

    let err = fails(
        &ws,
        &[
            "train",
            "--pairs",
            "../pairs.jsonl",
            "--run",
            "g",
            "--group-size",
            "3",
        ],
    );
    assert!(
        err.contains("--pairs trains on in-batch negatives only"),
        "{err}"
    );
}
