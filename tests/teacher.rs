//! A cross-encoder teacher in the loop, through the real binary: `cpack
//! mine --teacher` stores scores that a fresh `cpack rerank` of the same
//! pairs reproduces, denoising drops exactly what its rule names (and the
//! draw takes the next candidates instead), and `cpack train --distill`
//! trains on them, reports the teacher's time and resumes to the same weights.

use crate::common::{echo_workspace, fails, json, ok, repo_root};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn teacher() -> PathBuf {
    repo_root().join("tests/fixtures/rerank/bert")
}

/// Mining the echo workspace's test split: every passage a candidate, no
/// skip, the best-ranked survivors drawn (so the draw order is the rank order).
fn mine(ws: &Path, extra: &[&str]) -> serde_json::Value {
    let t = teacher();
    let base = [
        "mine",
        "--split",
        "test",
        "--topk",
        "8",
        "--skip",
        "0",
        "--sample",
        "top",
        "--teacher",
        t.to_str().unwrap(),
        "--json",
        "-q",
    ];
    json(&ok(ws, &[&base[..], extra].concat()))
}

/// One query's line of `mine export --format ids`.
struct Line {
    negatives: Vec<String>,
    /// Raw ranks; `None` for padded negatives.
    ranks: Vec<Option<u64>>,
    scores: Vec<f64>,
    positive_score: f64,
}

fn export_ids(ws: &Path, round: u32) -> BTreeMap<String, Line> {
    let round = round.to_string();
    let out = ok(
        ws,
        &["mine", "export", "--format", "ids", "--round", &round, "-q"],
    );
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    out.lines()
        .map(|l| {
            let v = json(l);
            let line = Line {
                negatives: (v["neg"].as_array().unwrap().iter())
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect(),
                ranks: (v["neg_ranks"].as_array().unwrap().iter())
                    .map(serde_json::Value::as_u64)
                    .collect(),
                scores: floats(&v["teacher_neg_scores"]),
                positive_score: floats(&v["teacher_pos_scores"])[0],
            };
            (v["query_id"].as_str().unwrap().to_string(), line)
        })
        .collect()
}

/// Each query's expected negatives after dropping what `drops` names from
/// the full round: the first `n` kept, in rank order.
fn kept(
    full: &BTreeMap<String, Line>,
    n: usize,
    drops: impl Fn(f64, f64) -> bool,
) -> Vec<Vec<String>> {
    full.values()
        .map(|l| {
            let pairs = l.negatives.iter().zip(&l.scores);
            pairs
                .filter(|(_, &s)| !drops(s, l.positive_score))
                .map(|(id, _)| id.clone())
                .take(n)
                .collect()
        })
        .collect()
}

#[test]
fn stored_teacher_scores_are_a_fresh_rerank_and_denoising_drops_what_it_says() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build", "-q"]);
    // Round 1: the whole pool of 7 stored, in rank order, with its scores.
    let first = mine(&ws, &["--negatives", "7", "--teacher-pool", "7"]);
    assert_eq!(first["round"], 1);
    let full = export_ids(&ws, 1);
    assert_eq!(full.len(), 8);
    assert!(full
        .values()
        .all(|l| l.negatives.len() == 7 && l.scores.len() == 7));

    // The scores FlagEmbedding's export carries are what `cpack rerank` gives the same pairs.
    let exported = tmp.path().join("round.jsonl");
    ok(
        &ws,
        &["mine", "export", "-o", exported.to_str().unwrap(), "-q"],
    );
    let t = teacher();
    for field in ["pos", "neg"] {
        let out = tmp.path().join(format!("{field}.jsonl"));
        ok(
            &ws,
            &[
                "rerank",
                exported.to_str().unwrap(),
                "--reranker",
                t.to_str().unwrap(),
                "--passage-field",
                field,
                "-o",
                out.to_str().unwrap(),
                "-q",
            ],
        );
        let stored = std::fs::read_to_string(&exported).unwrap();
        let fresh = std::fs::read_to_string(&out).unwrap();
        let key = format!("{field}_scores");
        let mut compared = 0;
        for (a, b) in stored.lines().zip(fresh.lines()) {
            let (a, b) = (json(a), json(b));
            for (x, y) in a[&key]
                .as_array()
                .unwrap()
                .iter()
                .zip(b[&key].as_array().unwrap())
            {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!((x - y).abs() < 1e-5, "{field}: stored {x}, fresh {y}");
                compared += 1;
            }
        }
        assert_eq!(compared, if field == "pos" { 8 } else { 56 });
    }

    // FlagEmbedding's scores come back in as the teacher's (round 2).
    ok(
        &ws,
        &[
            "mine",
            "import",
            exported.to_str().unwrap(),
            "--split",
            "test",
            "-q",
        ],
    );
    let imported = export_ids(&ws, 2);
    for (query, line) in &full {
        let back = &imported[query];
        assert_eq!(back.negatives, line.negatives);
        for (a, b) in back.scores.iter().zip(&line.scores) {
            assert!((a - b).abs() < 1e-6, "{query}: {a} vs {b}");
        }
    }

    // Round 3: drop what scores above the median; the draw takes the next.
    let mut all: Vec<f64> = full.values().flat_map(|l| l.scores.clone()).collect();
    all.sort_by(f64::total_cmp);
    let threshold = (all[all.len() / 2 - 1] + all[all.len() / 2]) / 2.0;
    let above = threshold.to_string();
    let second = mine(
        &ws,
        &[
            "--negatives",
            "3",
            "--teacher-pool",
            "7",
            "--denoise-above",
            &above,
        ],
    );
    assert_eq!(second["round"], 3);
    let denoised = export_ids(&ws, 3);
    let got: Vec<Vec<String>> = denoised.values().map(|l| l.negatives.clone()).collect();
    assert_eq!(got, kept(&full, 3, |s, _| s > threshold));
    let stats = json(&ok(&ws, &["mine", "stats", "--round", "3", "--json"]));
    let dropped = all.iter().filter(|&&s| s > threshold).count();
    assert_eq!(stats["stats"]["teacher"]["denoised"], dropped);
    assert_eq!(stats["manifest"]["teacher"]["params"]["pool"], 7);

    // Round 4: --denoise drops what the teacher scores above the query's positive.
    mine(
        &ws,
        &["--negatives", "3", "--teacher-pool", "7", "--denoise"],
    );
    let got: Vec<Vec<String>> = export_ids(&ws, 4)
        .values()
        .map(|l| l.negatives.clone())
        .collect();
    assert_eq!(got, kept(&full, 3, |s, positive| s > positive));
    let text = ok(&ws, &["mine", "stats", "--round", "4"]);
    assert!(text.contains("teacher"), "{text}");

    // Round 5: denoising leaves queries short and padding fills them with
    // passages outside the pool; the teacher scores those too, as round 1 did.
    let low = (all[all.len() / 4 - 1] + all[all.len() / 4]) / 2.0;
    let low = low.to_string();
    let flags = [
        "--negatives",
        "3",
        "--teacher-pool",
        "3",
        "--on-short",
        "pad",
    ];
    mine(&ws, &[&flags[..], &["--denoise-above", &low]].concat());
    let mut padded = 0;
    for (query, line) in export_ids(&ws, 5) {
        let whole = &full[&query];
        assert_eq!(line.negatives.len(), 3, "{query}");
        for ((id, score), rank) in line.negatives.iter().zip(&line.scores).zip(&line.ranks) {
            let at = whole.negatives.iter().position(|n| n == id).unwrap();
            assert!((score - whole.scores[at]).abs() < 1e-5, "{query} {id}");
            padded += usize::from(rank.is_none());
        }
    }
    assert!(padded > 0, "no query was padded");

    // The rules need a teacher, and a teacher must be a cross-encoder.
    let err = fails(&ws, &["mine", "--denoise"]);
    assert!(err.contains("--teacher"), "{err}");
    let embedder = ws.join("../model");
    let err = fails(
        &ws,
        &[
            "mine",
            "--split",
            "test",
            "--teacher",
            embedder.to_str().unwrap(),
        ],
    );
    assert!(err.contains("not a cross-encoder"), "{err}");
}

/// `cpack train` on the echo workspace's test split, distilling the teacher.
fn train(ws: &Path, run: &str, extra: &[&str]) -> serde_json::Value {
    let t = teacher();
    let base = [
        "train",
        "--json",
        "--split",
        "test",
        "--eval-split",
        "none",
        "--epochs",
        "2",
        "--topk",
        "8",
        "--skip",
        "0",
        "--group-size",
        "3",
        "--train-batch-size",
        "4",
        "--lr",
        "1e-3",
        "--teacher",
        t.to_str().unwrap(),
        "--run",
        run,
    ];
    json(&ok(ws, &[&base[..], extra].concat()))
}

#[test]
fn distillation_trains_reports_the_teacher_and_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let taught = train(
        &ws,
        "kl",
        &["--distill", "kl", "--distill-temperature", "2"],
    );
    let epochs = taught["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    for e in epochs {
        assert!(e["teacher_seconds"].as_f64().unwrap() > 0.0, "{e}");
    }
    let plain = train(&ws, "plain", &[]);
    let loss = |r: &serde_json::Value| r["epochs"][0]["mean_loss"].as_f64().unwrap();
    assert!(
        (loss(&taught) - loss(&plain)).abs() > 1e-4,
        "the distillation term must change the loss: {} vs {}",
        loss(&taught),
        loss(&plain)
    );
    // Epoch 2 trained again from epoch 1's checkpoint reaches the same weights.
    let epoch_2 = ws.join(".cpack/runs/kl/epoch-2");
    let weights = || std::fs::read(epoch_2.join("model.safetensors")).unwrap();
    let first = weights();
    std::fs::remove_dir_all(&epoch_2).unwrap();
    ok(&ws, &["train", "--run", "kl", "--resume", "-q"]);
    assert!(
        weights() == first,
        "epoch 2 resumed from epoch 1 trained differently"
    );

    // MarginMSE under gradient caching runs through the same loop.
    let cached = train(
        &ws,
        "mse",
        &["--distill", "margin-mse", "--mini-batch", "2"],
    );
    assert!(loss(&cached).is_finite());

    // With --max-queries a teacher's run mines (and scores) only those queries.
    let subset = train(&ws, "subset", &["--distill", "kl", "--max-queries", "5"]);
    assert_eq!(subset["train_queries"], 5);
    let round = subset["epochs"][0]["round"].to_string();
    let stats = json(&ok(&ws, &["mine", "stats", "--round", &round, "--json"]));
    assert_eq!(stats["manifest"]["queries"]["count"], 5);
    assert_eq!(stats["stats"]["queries"], 5);
    // Each query: its positive and a pool of 7 (every other passage; the default pool is 16).
    assert_eq!(stats["manifest"]["teacher"]["pairs"], 5 * 8);
    // A limit above the split's queries is every query: a plain round.
    let every = train(&ws, "every", &["--distill", "kl", "--max-queries", "100"]);
    let round = every["epochs"][0]["round"].to_string();
    let stats = json(&ok(&ws, &["mine", "stats", "--round", &round, "--json"]));
    assert!(stats["manifest"]["queries"].is_null(), "{stats}");
    assert_eq!(stats["stats"]["queries"], 8);

    // A round without a teacher's scores has nothing to distil.
    let plain_round = json(&ok(
        &ws,
        &[
            "mine", "--split", "test", "--topk", "8", "--skip", "0", "--force", "--json", "-q",
        ],
    ))["round"]
        .to_string();
    let err = fails(
        &ws,
        &[
            "train",
            "--split",
            "test",
            "--eval-split",
            "none",
            "--group-size",
            "3",
            "--distill",
            "kl",
            "--negatives-from",
            &plain_round,
            "--refresh-every",
            "0",
        ],
    );
    assert!(
        err.contains("has none") && err.contains("--teacher"),
        "{err}"
    );

    let err = fails(&ws, &["train", "--split", "test", "--distill", "kl"]);
    assert!(
        err.contains("--distill") && err.contains("--teacher"),
        "{err}"
    );
}
