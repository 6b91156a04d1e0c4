//! No silent fallbacks: what a run or an import cannot do as asked is
//! refused with one error, or done and counted where the user reads
//! (stderr notes, `report.json`, `mine stats`).

use crate::common::*;
use std::collections::HashMap;
use std::path::Path;

const SMALL_RUN: [&str; 6] = [
    "--split",
    "test",
    "--eval-split",
    "none",
    "--train-batch-size",
    "4",
];

fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train"];
    args.extend_from_slice(&SMALL_RUN);
    args.extend_from_slice(extra);
    args
}

fn stderr_of(ws: &Path, args: &[&str]) -> String {
    let out = cpack(ws).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "cpack {args:?}: {stderr}");
    stderr
}

#[test]
fn a_round_without_any_negative_is_refused_not_filled_with_random_passages() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    // Each echo query's top passage is its own positive: top-1 leaves nothing.
    let err = fails(&ws, &train_args(&["--topk", "1", "--skip", "0"]));
    assert!(
        err.contains("has no negatives for any of its 8 training queries"),
        "{err}"
    );
}

#[test]
fn short_groups_are_counted_in_the_notes_and_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    // Top 3 minus the positive: 2 stored, 4 drawn per group.
    let args = train_args(&["--topk", "3", "--skip", "0", "--group-size", "5"]);
    let stderr = stderr_of(&ws, &args);
    assert!(
        stderr.contains("8 of 8 have fewer than the 4 negatives a group draws"),
        "{stderr}"
    );
    let report = json(&ok(&ws, &["report", "--json"]));
    let supply = &report["negative_supply"]["1"];
    assert_eq!(supply["queries"], 8, "{report}");
    assert_eq!(supply["short"], 8, "{report}");
    assert_eq!(supply["without"], 0, "{report}");
    let table = ok(&ws, &["report"]);
    assert!(table.contains("round 1: 8 of 8 have fewer"), "{table}");
}

#[test]
fn max_queries_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let err = fails(&ws, &train_args(&["--max-queries", "0"]));
    assert!(
        err.contains("--max-queries") && err.contains("at least 1"),
        "{err}"
    );
    assert!(!ws.join(".cpack/runs/run-001/epoch-1").exists());
}

/// `mine export --format ids` of round `round`: negatives by query id.
fn negatives_of(ws: &Path, round: u32) -> HashMap<String, Vec<String>> {
    let round = round.to_string();
    let text = ok(
        ws,
        &["mine", "export", "--format", "ids", "--round", &round],
    );
    text.lines()
        .map(|l| {
            let v = json(l);
            let neg = v["neg"].as_array().unwrap();
            let ids = neg.iter().map(|n| n.as_str().unwrap().to_string());
            (v["query_id"].as_str().unwrap().to_string(), ids.collect())
        })
        .collect()
}

#[test]
fn a_huge_simans_a_draws_what_its_weights_say_not_the_rank_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    let pool = ["--split", "test", "--topk", "6", "--skip", "0"];
    let mine = |extra: &[&str]| {
        let mut args = vec!["mine"];
        args.extend_from_slice(&pool);
        args.extend_from_slice(extra);
        ok(&ws, &args);
    };
    mine(&["--sample", "top", "--negatives", "6"]);
    // The weights peak at the positive's score − 5, below every cosine: the
    // draw of one must be each query's lowest-scored candidate, although
    // exp(−a·d²) is zero for all of them.
    mine(&[
        "--sample",
        "simans",
        "--simans-a",
        "1e30",
        "--simans-b",
        "-5",
        "--negatives",
        "1",
    ]);
    let whole = negatives_of(&ws, 1);
    let drawn = negatives_of(&ws, 2);
    assert_eq!(drawn.len(), whole.len());
    for (query, negatives) in &drawn {
        let lowest = whole[query].last().unwrap();
        assert_eq!(negatives, &vec![lowest.clone()], "query {query}");
    }
}

#[test]
fn a_round_of_another_corpus_version_is_refused_for_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, data, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    ok(
        &ws,
        &["mine", "--split", "test", "--topk", "6", "--skip", "0"],
    );
    // Passage p7 (and the query judging it) are deleted afterwards.
    let keep = |file: &str, gone: &str| {
        let path = data.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.contains(gone))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(path, kept).unwrap();
    };
    keep("corpus.jsonl", "\"p7\"");
    keep("queries.jsonl", "\"q7\"");
    keep("qrels/test.tsv", "q7\t");
    ok(&ws, &["index", "build"]);
    let err = fails(&ws, &train_args(&["--negatives-from", "1"]));
    assert!(
        err.contains("round 1 was mined on another version of the corpus"),
        "{err}"
    );
}

#[test]
fn an_import_drops_own_positives_and_repeats_counts_the_short_and_can_be_trained_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, passages) = echo_workspace(tmp.path());
    let line = |q: usize, pos: usize, neg: &[usize]| {
        let texts = |rows: &[usize]| {
            rows.iter()
                .map(|&r| passages[r].clone())
                .collect::<Vec<_>>()
        };
        format!(
            "{}\n",
            serde_json::json!({"query": passages[q], "pos": texts(&[pos]), "neg": texts(neg)})
        )
    };
    let mut file = String::new();
    file += &line(0, 0, &[]); // no negatives
    file += &line(1, 1, &[1, 2, 3]); // its own positive listed
    file += &line(2, 2, &[5, 5, 5, 5, 5, 4]); // one negative five times
    file += &line(3, 3, &[4, 5]);
    let input = tmp.path().join("mined.jsonl");
    std::fs::write(&input, file).unwrap();
    let out = cpack(&ws)
        .args(["mine", "import", input.to_str().unwrap(), "--split", "test"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 negatives that are their query's own positive were dropped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("4 repeated negatives were dropped"),
        "{stderr}"
    );
    let stats = ok(&ws, &["mine", "stats"]);
    assert!(stats.contains("1 queries short"), "{stats}");
    let stored = negatives_of(&ws, 1);
    assert_eq!(stored["q1"], ["p2", "p3"]);
    assert_eq!(stored["q2"], ["p5", "p4"]);
    // The round names the split, so a run on that split can train on it.
    ok(
        &ws,
        &train_args(&["--negatives-from", "1", "--group-size", "3"]),
    );
}

#[test]
fn an_error_quotes_at_most_a_line_of_a_huge_value() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, passages) = echo_workspace(tmp.path());
    let huge = "x".repeat(5_000_000);
    let line = serde_json::json!({"query": passages[0], "pos": huge, "neg": []});
    let input = tmp.path().join("bad.jsonl");
    std::fs::write(&input, format!("{line}\n")).unwrap();
    let err = fails(
        &ws,
        &["mine", "import", input.to_str().unwrap(), "--split", "test"],
    );
    assert!(
        err.contains("bad.jsonl:1: not a FlagEmbedding record"),
        "{err}"
    );
    assert!(err.len() < 4_000, "a {}-byte error", err.len());
}

#[test]
fn every_numeric_setting_refuses_nan_infinities_and_nonsense() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    for (flag, value) in [
        ("--weight-decay", "nan"),
        ("--max-grad-norm", "-1"),
        ("--temperature", "inf"),
        ("--lr", "0"),
        ("--warmup-ratio", "1"),
        ("--simans-a", "nan"),
        ("--max-score", "inf"),
        ("--epochs", "0"),
    ] {
        let given = format!("{flag}={value}");
        let err = fails(&ws, &train_args(&[&given]));
        assert!(err.contains(flag), "{given}: {err}");
    }
    for args in [
        ["--progress-every", "inf", "report"],
        ["serve", "--read-timeout", "0"],
        ["serve", "--max-connections", "0"],
    ] {
        let err = fails_with(&ws, &args, 2);
        assert!(
            err.contains(args[0]) || err.contains(args[1]),
            "{args:?}: {err}"
        );
    }
}
