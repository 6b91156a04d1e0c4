//! `cpack mine` through the real binary: the guards hold, exports are valid
//! FlagEmbedding JSONL, results are deterministic, and `kill -9` resumes.

use crate::common::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A cmrc2018 workspace with a tiny model and a built index.
fn cmrc_workspace(tmp: &Path, name: &str) -> PathBuf {
    let data = shared("data/cmrc2018");
    let model = tmp.join("model");
    if !model.exists() {
        tiny_model_for(&data, &model);
    }
    let ws = tmp.join(name);
    init_workspace(&ws, &data, &model, &["--query-instruction", "bge-zh"]);
    ok(&ws, &["index", "build"]);
    ws
}

/// query id → positive corpus ids, over every qrels split.
fn positives() -> HashMap<String, HashSet<String>> {
    let mut map: HashMap<String, HashSet<String>> = HashMap::new();
    for split in ["train", "test"] {
        let text =
            std::fs::read_to_string(shared("data/cmrc2018/qrels").join(format!("{split}.tsv")))
                .unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            map.entry(f[0].to_string())
                .or_default()
                .insert(f[1].to_string());
        }
    }
    map
}

fn lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(json).collect()
}

#[test]
fn negatives_avoid_positives_and_skipped_ranks_and_export_as_flag_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = cmrc_workspace(tmp.path(), "ws");
    let mined = json(&ok(&ws, &["mine", "--topk", "50", "--skip", "5", "--json"]));
    assert_eq!(mined["status"], "mined");
    assert_eq!(mined["round"], 1);
    let train_queries = positives()
        .keys()
        .filter(|q| q.starts_with("train-"))
        .count();
    assert_eq!(mined["queries"], train_queries);

    let positives = positives();
    let ids = lines(&ok(&ws, &["mine", "export", "--format", "ids"]));
    assert_eq!(ids.len(), train_queries);
    for row in &ids {
        let qid = row["query_id"].as_str().unwrap();
        let negs: Vec<&str> = row["neg"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(negs.len(), 7, "{row}");
        assert_eq!(
            negs.iter().collect::<HashSet<_>>().len(),
            7,
            "duplicates in {row}"
        );
        for neg in &negs {
            assert!(
                !positives[qid].contains(*neg),
                "{qid}: positive {neg} stored as a negative"
            );
        }
        for rank in row["neg_ranks"].as_array().unwrap() {
            let rank = rank.as_u64().unwrap();
            assert!(
                (5..50).contains(&rank),
                "{qid}: raw rank {rank} outside [skip, topk)"
            );
        }
        let pos: HashSet<&str> = row["pos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            pos,
            positives[qid]
                .iter()
                .map(String::as_str)
                .collect::<HashSet<_>>()
        );
    }

    let corpus: HashMap<String, String> =
        std::fs::read_to_string(shared("data/cmrc2018/corpus.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v = json(l);
                let (title, body) = (v["title"].as_str().unwrap(), v["text"].as_str().unwrap());
                let text = if title.is_empty() {
                    body.to_string()
                } else {
                    format!("{title} {body}")
                };
                (v["id"].as_str().unwrap().to_string(), text)
            })
            .collect();
    let flag = lines(&ok(&ws, &["mine", "export", "--format", "flag-embedding"]));
    assert_eq!(flag.len(), ids.len());
    for (row, id_row) in flag.iter().zip(&ids) {
        let keys: HashSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "query",
                "pos",
                "neg",
                "pos_scores",
                "neg_scores",
                "scores_from",
                "prompt"
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(row["prompt"], "为这个句子生成表示以用于检索相关文章：");
        assert!(
            row["query"]
                .as_str()
                .is_some_and(|q| !q.starts_with("为这个句子")),
            "the query is stored without its prompt"
        );
        let neg_texts: Vec<&str> = id_row["neg"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| corpus[id.as_str().unwrap()].as_str())
            .collect();
        assert_eq!(
            row["neg"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>(),
            neg_texts
        );
        assert_eq!(row["neg_scores"].as_array().unwrap().len(), 7);
        assert_eq!(
            row["pos_scores"].as_array().unwrap().len(),
            row["pos"].as_array().unwrap().len()
        );
    }

    let triplets = lines(&ok(&ws, &["mine", "export", "--format", "triplets"]));
    let pairs: usize = flag
        .iter()
        .map(|r| r["pos"].as_array().unwrap().len() * 7)
        .sum();
    assert_eq!(triplets.len(), pairs);

    // FlagEmbedding JSONL goes back in as a new round that exports identically.
    let exported = ws.join("round1.jsonl");
    ok(
        &ws,
        &["mine", "export", "--output", exported.to_str().unwrap()],
    );
    let imported = ok(&ws, &["mine", "import", exported.to_str().unwrap()]);
    assert!(imported.contains("as round 2"), "{imported}");
    // The lines carry the embedder's scores and say so: they come back as
    // the negatives' scores, not as a teacher's.
    assert!(flag.iter().all(|r| r["scores_from"] == "embedder"));
    let stats = json(&ok(&ws, &["mine", "stats", "--round", "2", "--json"]));
    assert!(stats["manifest"]["teacher"].is_null(), "{stats}");
    // Same lines; the order may differ where two query ids share one text.
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let (round2, round1) = (
        sorted(ok(&ws, &["mine", "export", "--round", "2"])),
        sorted(std::fs::read_to_string(&exported).unwrap()),
    );
    assert_eq!(round2.len(), round1.len());
    let differing = round2.iter().zip(&round1).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing, 0,
        "{differing} exported lines differ after import"
    );
    std::fs::write(
        &exported,
        "{\"query\": \"nobody asked this\", \"pos\": [], \"neg\": []}\n",
    )
    .unwrap();
    let err = fails(&ws, &["mine", "import", exported.to_str().unwrap()]);
    assert!(
        err.contains("round1.jsonl:1: query \"nobody asked this\" is not in queries.jsonl"),
        "{err}"
    );

    let stats = json(&ok(&ws, &["mine", "stats", "--json", "--round", "1"]));
    assert_eq!(stats["stats"]["negatives_min"], 7);
    assert_eq!(stats["stats"]["filtered"]["skipped"], train_queries * 5);
    assert_eq!(stats["manifest"]["params"]["topk"], 50);
}

#[test]
fn same_seed_same_negatives_whatever_batch_size_threads_or_overlap() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = cmrc_workspace(tmp.path(), "ws");
    let mine = |extra: &[&str]| {
        ok(
            &ws,
            &[&["mine", "--topk", "40", "--seed", "7"], extra].concat(),
        )
    };
    mine(&["--batch-size", "32", "--threads", "2"]);
    let again = json(&mine(&["--json"]));
    assert_eq!(again["status"], "up-to-date");
    mine(&["--batch-size", "5", "--threads", "1", "--force"]);
    ok(&ws, &["mine", "--topk", "40", "--seed", "8", "--force"]);
    mine(&["--no-overlap", "--threads", "2", "--force"]);
    let export = |round: &str| {
        ok(
            &ws,
            &["mine", "export", "--format", "ids", "--round", round],
        )
    };
    assert_eq!(
        export("1"),
        export("2"),
        "batch size or threads changed the negatives"
    );
    assert_eq!(
        export("1"),
        export("4"),
        "mining stage by stage changed the negatives"
    );
    assert_ne!(
        export("1"),
        export("3"),
        "another seed must sample other negatives"
    );
    let stats = json(&ok(&ws, &["mine", "stats", "--json", "--round", "3"]));
    let overlap = stats["stats"]["overlap_with_previous"].as_f64().unwrap();
    assert!(overlap < 1.0 && overlap > 0.0, "{overlap}");
    ok(&ws, &["mine", "--gc", "--keep", "1"]);
    let err = fails(&ws, &["mine", "export", "--round", "1"]);
    assert!(err.contains("no round 1"), "{err}");
}

#[test]
fn killed_mining_resumes_to_the_same_export() {
    killed_mining_resumes(&[]);
}

#[test]
fn killed_teacher_mining_resumes_with_every_scored_pair_counted() {
    let teacher = repo_root().join("tests/fixtures/rerank/bert");
    let (clean, resumed) = killed_mining_resumes(&[
        "--teacher",
        teacher.to_str().unwrap(),
        "--teacher-pool",
        "8",
    ]);
    // Chunks and the round's running totals are stored together, so the
    // killed run's chunks are counted once, neither lost nor doubled.
    assert!(clean["teacher"]["pairs"].as_u64().unwrap() > 0);
    assert_eq!(resumed["teacher"]["pairs"], clean["teacher"]["pairs"]);
}

/// Mines the test split one query per chunk (every query a resumable
/// checkpoint, and a run long enough to be killed) cleanly, and again killed
/// with SIGKILL and resumed; the two exports must be equal. Returns both
/// runs' `--json` reports.
fn killed_mining_resumes(extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        &[
            "mine",
            "--split",
            "test",
            "--topk",
            "30",
            "--chunk-queries",
            "1",
        ],
        extra,
    ]
    .concat();
    let clean = cmrc_workspace(tmp.path(), "clean");
    let clean_report = json(&ok(&clean, &[&args[..], &["--json"]].concat()));
    let expected = ok(&clean, &["mine", "export", "--format", "ids"]);

    // Machines differ in speed: try later kills first, earlier ones if the run outpaced us.
    for (attempt, delay_ms) in [2000u64, 1200, 800, 500, 300].into_iter().enumerate() {
        let killed = cmrc_workspace(tmp.path(), &format!("killed-{attempt}"));
        let mut child = cpack(&killed).args(&args).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let finished_early = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if finished_early {
            continue;
        }
        let err = fails(&killed, &["mine", "export"]);
        assert!(
            err.contains("unfinished") || err.contains("no complete"),
            "{err}"
        );
        let resumed = json(&ok(&killed, &[&args[..], &["--json"]].concat()));
        assert_eq!(resumed["status"], "mined");
        if resumed["resumed"] == true {
            assert_eq!(
                ok(&killed, &["mine", "export", "--format", "ids"]),
                expected,
                "a resumed round differs from a clean one"
            );
            return (clean_report, resumed);
        }
    }
    panic!("no attempt killed the mining run while it was under way");
}

#[test]
fn bad_mining_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = cmrc_workspace(tmp.path(), "ws");
    let err = fails(&ws, &["mine", "--topk", "10", "--skip", "10"]);
    assert!(err.contains("skip must be smaller than topk"), "{err}");
    let err = fails(&ws, &["mine", "--negatives", "0"]);
    assert!(err.contains("--negatives"), "{err}");
    let err = fails(&ws, &["mine", "--split", "nosuch"]);
    assert!(err.contains("nosuch.tsv"), "{err}");
    let err = fails(&ws, &["mine", "export"]);
    assert!(err.contains("cpack mine"), "{err}");
    // topk beyond the corpus is clamped, with a note.
    let out = cpack(&ws)
        .args(["mine", "--topk", "5000", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds the corpus"));
}

#[test]
fn simans_and_filter_presets_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = cmrc_workspace(tmp.path(), "ws");
    // A preset and the filter it sets are one choice: clap refuses both (usage error, 2).
    let out = cpack(&ws)
        .args(["mine", "--filter", "perc-pos", "--margin", "0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let err = fails(&ws, &["mine", "--sample", "simans", "--simans-a", "-1"]);
    assert!(err.contains("--simans-a"), "{err}");

    let simans = [
        "mine",
        "--topk",
        "50",
        "--skip",
        "0",
        "--sample",
        "simans",
        "--simans-a",
        "20",
    ];
    let mined = json(&ok(&ws, &[&simans[..], &["--json"]].concat()));
    assert_eq!(mined["negatives_min"], 7, "{mined}");
    let positives = positives();
    for row in lines(&ok(&ws, &["mine", "export", "--format", "ids"])) {
        let qid = row["query_id"].as_str().unwrap();
        for neg in row["neg"].as_array().unwrap() {
            assert!(!positives[qid].contains(neg.as_str().unwrap()), "{row}");
        }
    }
    let again = json(&ok(&ws, &[&simans[..], &["--force", "--json"]].concat()));
    assert_eq!(
        ok(
            &ws,
            &[
                "mine",
                "export",
                "--format",
                "ids",
                "--round",
                &again["round"].to_string()
            ]
        ),
        ok(
            &ws,
            &[
                "mine",
                "export",
                "--format",
                "ids",
                "--round",
                &mined["round"].to_string()
            ]
        ),
        "same seed, same SimANS draw"
    );

    // The preset is the relative margin it names: it filters, and a round
    // with it is a new round.
    let filtered = json(&ok(
        &ws,
        &["mine", "--topk", "50", "--filter", "perc-pos", "--json"],
    ));
    assert_eq!(filtered["status"], "mined");
    let stats = json(&ok(&ws, &["mine", "stats", "--json"]));
    let params = &stats["manifest"]["params"];
    assert!((params["relative_margin"].as_f64().unwrap() - 0.05).abs() < 1e-6);
    assert!(params["margin"].is_null());
    assert!(
        stats["stats"]["filtered"]["relative_margin"]
            .as_u64()
            .unwrap()
            > 0
    );
}
