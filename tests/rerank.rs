//! Rerankers through the real binary: `cpack rerank` scores pairs files with
//! the cross-encoder fixtures (tests/fixtures/rerank, made with
//! transformers, whose logits they must reproduce), and `cpack search` /
//! `cpack eval` rerank the embedder's top hits.

use crate::common::{echo_workspace, fails, json, ok, repo_root};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/rerank").join(name)
}

fn expected(name: &str) -> serde_json::Value {
    json(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap())
}

/// The fixture's pairs as a pairs file: pairs two by two in `pos` lists
/// (the last alone, as a string under `text`), with a `neg` field to keep.
fn write_pairs(dir: &Path, expected: &serde_json::Value) -> (PathBuf, PathBuf) {
    let pairs = expected["pairs"].as_array().unwrap();
    let mut lists = String::new();
    for chunk in pairs.chunks(2) {
        let pos: Vec<&serde_json::Value> = chunk.iter().map(|p| &p[1]).collect();
        // Pairs of a line share its query: only lines whose pairs do are listed.
        if chunk.iter().all(|p| p[0] == chunk[0][0]) {
            lists += &format!(
                "{}\n",
                serde_json::json!({"query": chunk[0][0], "pos": pos, "neg": ["kept"]})
            );
        } else {
            for p in chunk {
                lists += &format!(
                    "{}\n",
                    serde_json::json!({"query": p[0], "pos": [p[1]], "neg": ["kept"]})
                );
            }
        }
    }
    let singles: String = pairs
        .iter()
        .map(|p| format!("{}\n", serde_json::json!({"q": p[0], "text": p[1]})))
        .collect();
    let (a, b) = (dir.join("lists.jsonl"), dir.join("singles.jsonl"));
    std::fs::write(&a, lists).unwrap();
    std::fs::write(&b, singles).unwrap();
    (a, b)
}

/// Score of each (query, passage) the fixture lists, as transformers computed it.
fn logit_of(expected: &serde_json::Value, query: &str, passage: &str) -> f64 {
    let pairs = expected["pairs"].as_array().unwrap();
    let i = pairs
        .iter()
        .position(|p| p[0] == query && p[1] == passage)
        .unwrap();
    expected["logits"][i].as_f64().unwrap()
}

#[test]
fn rerank_writes_each_line_with_the_scores_transformers_computes() {
    for name in ["bert", "xlm-roberta"] {
        let tmp = tempfile::tempdir().unwrap();
        let expected = expected(name);
        let (lists, singles) = write_pairs(tmp.path(), &expected);
        let model = fixture(name);
        let max_len = expected["max_length"].to_string();
        let flags = [
            "--reranker",
            model.to_str().unwrap(),
            "--rerank-max-len",
            &max_len,
        ];
        let out = tmp.path().join("scored.jsonl");
        let args = [
            &[
                "rerank",
                lists.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--json",
            ][..],
            &flags,
        ]
        .concat();
        let summary = json(&ok(tmp.path(), &args));
        assert_eq!(
            summary["pairs"],
            expected["pairs"].as_array().unwrap().len()
        );
        let mut scored = 0;
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            let value = json(line);
            assert_eq!(
                value["neg"],
                serde_json::json!(["kept"]),
                "other fields stay"
            );
            let q = value["query"].as_str().unwrap();
            let scores = value["pos_scores"].as_array().unwrap();
            for (p, s) in value["pos"].as_array().unwrap().iter().zip(scores) {
                let want = logit_of(&expected, q, p.as_str().unwrap());
                assert!(
                    (s.as_f64().unwrap() - want).abs() < 1e-4,
                    "{name}: {s} vs {want}"
                );
                scored += 1;
            }
        }
        assert_eq!(scored, expected["pairs"].as_array().unwrap().len());
        // A string field gets one number beside it; stdout is the default output.
        let args = [
            &[
                "rerank",
                singles.to_str().unwrap(),
                "--query-field",
                "q",
                "--passage-field",
                "text",
                "-q",
            ][..],
            &flags,
        ]
        .concat();
        for line in ok(tmp.path(), &args).lines() {
            let value = json(line);
            let want = logit_of(
                &expected,
                value["q"].as_str().unwrap(),
                value["text"].as_str().unwrap(),
            );
            assert!(
                (value["text_score"].as_f64().unwrap() - want).abs() < 1e-4,
                "{name}"
            );
        }
    }
}

#[test]
fn rerank_refuses_an_embedder_no_model_and_a_bad_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"query\": \"a\", \"pos\": [\"b\"]}\n{\"query\": \"a\"}\n",
    )
    .unwrap();
    let p = pairs.to_str().unwrap();
    let err = fails(&ws, &["rerank", p]);
    assert!(
        err.contains("no reranker named") && err.contains("--reranker"),
        "{err}"
    );
    let embedder = ws.join("../model");
    let err = fails(
        &ws,
        &["rerank", p, "--reranker", embedder.to_str().unwrap()],
    );
    assert!(err.contains("is an embedder, not a cross-encoder"), "{err}");
    let reranker = fixture("bert");
    let with_reranker = |extra: &[&str]| {
        let args = [
            &["rerank", p, "--reranker", reranker.to_str().unwrap()][..],
            extra,
        ]
        .concat();
        fails(&ws, &args)
    };
    let err = with_reranker(&["-o", "out.jsonl"]);
    assert!(
        err.contains("pairs.jsonl:2") && err.contains("no \"pos\" field"),
        "{err}"
    );
    assert!(!ws.join("out.jsonl").exists(), "no half-written output");
    let err = with_reranker(&["--rerank-max-len", "4000"]);
    assert!(err.contains("--rerank-max-len 4000 is outside"), "{err}");
}

#[test]
fn search_and_eval_rerank_the_top_hits_and_leave_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, passages) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build", "-q"]);
    let reranker = fixture("bert");
    let r = reranker.to_str().unwrap();
    let query = passages[0].as_str();
    let plain = json(&ok(&ws, &["search", query, "-k", "8", "--json"]));
    let reranked = json(&ok(
        &ws,
        &[
            "search",
            query,
            "-k",
            "8",
            "--json",
            "--reranker",
            r,
            "--rerank-depth",
            "5",
        ],
    ));
    let ids = |v: &serde_json::Value, range: std::ops::Range<usize>| -> Vec<String> {
        let results = v["results"].as_array().unwrap();
        let mut ids: Vec<String> = results[range]
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&plain, 0..5),
        ids(&reranked, 0..5),
        "the same five hits, reordered"
    );
    let results = reranked["results"].as_array().unwrap();
    let below = |v: &[serde_json::Value]| -> Vec<(serde_json::Value, serde_json::Value)> {
        v[5..]
            .iter()
            .map(|h| (h["id"].clone(), h["score"].clone()))
            .collect()
    };
    assert_eq!(
        below(results),
        below(plain["results"].as_array().unwrap()),
        "below the depth nothing moves"
    );
    let scores: Vec<f64> = results[..5]
        .iter()
        .map(|h| h["rerank_score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(results[5]["rerank_score"].is_null());
    // `cpack rerank` scores the same pairs the same.
    let pairs = tmp.path().join("pairs.jsonl");
    let texts: Vec<&str> = results[..5]
        .iter()
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    std::fs::write(
        &pairs,
        serde_json::json!({"query": query, "pos": texts}).to_string(),
    )
    .unwrap();
    let line = json(&ok(
        &ws,
        &["rerank", pairs.to_str().unwrap(), "--reranker", r, "-q"],
    ));
    for (a, b) in line["pos_scores"].as_array().unwrap().iter().zip(&scores) {
        assert!((a.as_f64().unwrap() - b).abs() < 1e-5, "{a} vs {b}");
    }

    // The reranker from cpack.toml, no flag; eval's Recall@10 cannot move
    // when only the top 5 are reordered.
    let toml = std::fs::read_to_string(ws.join("cpack.toml")).unwrap();
    let with_reranker = format!("[rerank]\nmodel = \"{r}\"\ndepth = 5\n");
    assert!(toml.contains("[rerank]\n"), "cpack init writes the table");
    std::fs::write(
        ws.join("cpack.toml"),
        toml.replace("[rerank]\n", &with_reranker),
    )
    .unwrap();
    let base = json(&ok(&ws, &["eval", "--json"]));
    let after = json(&ok(&ws, &["eval", "--json", "--rerank-depth", "5"]));
    let flagged = json(&ok(
        &ws,
        &["eval", "--json", "--reranker", r, "--rerank-depth", "5"],
    ));
    assert_eq!(after["metrics"], flagged["metrics"]);
    assert_eq!(after["reranker"]["depth"], 5);
    assert!(
        base["reranker"].is_object(),
        "cpack.toml's [rerank] applies to plain eval too"
    );
    assert_eq!(
        after["metrics"]["recall_at_10"],
        base["metrics"]["recall_at_10"]
    );
    let top = json(&ok(&ws, &["search", query, "-k", "1", "--json"]));
    assert!(top["results"][0]["rerank_score"].is_number());
}

#[test]
fn serve_reranks_as_the_cli_scores_and_refuses_bad_requests() {
    use crate::serve::Server;
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, passages) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build", "-q"]);
    let reranker = fixture("bert");
    let r = reranker.to_str().unwrap();
    let query = passages[1].as_str();
    let texts: Vec<&str> = passages.iter().take(6).map(String::as_str).collect();

    // Without a reranker, /rerank and a reranked search are refused.
    let plain = Server::start(&ws, &[]);
    let (code, err) = plain.refused(
        "/rerank",
        &serde_json::json!({"query": query, "texts": texts}).to_string(),
    );
    assert!(code == 422 && err.contains("--reranker"), "{code} {err}");
    let (code, _) = plain.refused(
        "/search",
        &serde_json::json!({"query": query, "rerank": true}).to_string(),
    );
    assert_eq!(code, 422);
    assert!(plain.get("/info")["reranker"].is_null());
    drop(plain);

    let server = Server::start(&ws, &["--reranker", r, "--rerank-depth", "4"]);
    let info = server.get("/info");
    assert_eq!(info["reranker"]["depth"], 4);
    // The CLI's logits of the same pairs.
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        serde_json::json!({"query": query, "pos": texts}).to_string(),
    )
    .unwrap();
    let line = json(&ok(
        &ws,
        &["rerank", pairs.to_str().unwrap(), "--reranker", r, "-q"],
    ));
    let logits: Vec<f64> = line["pos_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    let raw = server.post("/rerank", &serde_json::json!({"query": query, "texts": texts, "raw_scores": true, "return_text": true}));
    let raw = raw.as_array().unwrap();
    assert_eq!(raw.len(), texts.len());
    let mut previous = f64::INFINITY;
    for entry in raw {
        let (i, score) = (
            entry["index"].as_u64().unwrap() as usize,
            entry["score"].as_f64().unwrap(),
        );
        assert!((score - logits[i]).abs() < 1e-5, "{score} vs {}", logits[i]);
        assert_eq!(entry["text"], texts[i]);
        assert!(score <= previous, "best first");
        previous = score;
    }
    let squashed = server.post(
        "/rerank",
        &serde_json::json!({"query": query, "texts": texts}),
    );
    for entry in squashed.as_array().unwrap() {
        let i = entry["index"].as_u64().unwrap() as usize;
        let sigmoid = 1.0 / (1.0 + (-logits[i]).exp());
        assert!((entry["score"].as_f64().unwrap() - sigmoid).abs() < 1e-5);
        assert!(entry.get("text").is_none());
    }
    // A reranked search answers what `cpack search --reranker` prints.
    let served = server.post(
        "/search",
        &serde_json::json!({"query": query, "k": 6, "rerank": true}),
    );
    let cli = json(&ok(
        &ws,
        &[
            "search",
            query,
            "-k",
            "6",
            "--json",
            "--reranker",
            r,
            "--rerank-depth",
            "4",
        ],
    ));
    let ids = |hits: &serde_json::Value| -> Vec<String> {
        hits.as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&served["hits"]), ids(&cli["results"]));
    for (a, b) in served["hits"]
        .as_array()
        .unwrap()
        .iter()
        .zip(cli["results"].as_array().unwrap())
    {
        match (a.get("rerank_score"), b["rerank_score"].as_f64()) {
            (Some(x), Some(y)) => assert!((x.as_f64().unwrap() - y).abs() < 1e-5),
            (None, None) => {}
            other => panic!("reranked on one side only: {other:?}"),
        }
    }
    let unranked = server.post("/search", &serde_json::json!({"query": query, "k": 6}));
    assert!(unranked["hits"][0].get("rerank_score").is_none());
    // Bad requests get a 4xx naming the problem.
    for (body, needle) in [
        (
            serde_json::json!({"query": query, "texts": []}),
            "texts is empty",
        ),
        (
            serde_json::json!({"query": query, "texts": texts, "truncate": false}),
            "truncate",
        ),
        (serde_json::json!({"query": query}), "texts"),
        (
            serde_json::json!({"query": query, "texts": [1, 2]}),
            "texts",
        ),
        (
            serde_json::json!({"query": query, "texts": texts, "colour": "red"}),
            "colour",
        ),
    ] {
        let (code, err) = server.refused("/rerank", &body.to_string());
        assert!(
            (400..500).contains(&code) && err.contains(needle),
            "{body}: {code} {err}"
        );
    }
    let many: Vec<String> = (0..300).map(|i| format!("text {i}")).collect();
    let (code, _) = server.refused(
        "/rerank",
        &serde_json::json!({"query": query, "texts": many}).to_string(),
    );
    assert_eq!(code, 413);
}

/// `cpack rerank train` flags for the echo workspace: its test split is
/// the only one, so it trains and evaluates there (plumbing, not quality).
const TRAIN: [&str; 16] = [
    "rerank",
    "train",
    "--split",
    "test",
    "--epochs",
    "2",
    "--group-size",
    "3",
    "--train-batch-size",
    "4",
    "--max-len",
    "32",
    "--lr",
    "1e-3",
    "--rerank-depth",
    "5",
];

#[test]
fn a_reranker_trains_from_an_embedder_resumes_to_the_same_weights_and_reranks() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, passages) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build", "-q"]);
    ok(
        &ws,
        &[
            "mine", "--split", "test", "--topk", "6", "--skip", "0", "-q",
        ],
    );
    let report = json(&ok(
        &ws,
        &[&TRAIN[..], &["--run", "whole", "--json", "-q"]].concat(),
    ));
    let epochs = report["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    for epoch in epochs {
        assert!(epoch["mean_loss"].as_f64().unwrap().is_finite());
        let eval = &epoch["eval"];
        assert_eq!(eval["depth"], 5);
        // Reranking the top 5 reorders within them: Recall@10 cannot move.
        assert_eq!(
            eval["retrieval"]["recall_at_10"],
            eval["reranked"]["recall_at_10"]
        );
    }
    let last = PathBuf::from(epochs[1]["checkpoint"].as_str().unwrap());
    let config = json(&std::fs::read_to_string(last.join("config.json")).unwrap());
    assert_eq!(
        config["architectures"],
        serde_json::json!(["BertForSequenceClassification"])
    );
    assert!(
        !last.join("modules.json").exists(),
        "a reranker, not a sentence-transformers embedder"
    );
    // The checkpoint reranks wherever a reranker is asked for.
    let ckpt = last.to_str().unwrap();
    let hits = json(&ok(
        &ws,
        &[
            "search",
            &passages[2],
            "-k",
            "3",
            "--json",
            "--reranker",
            ckpt,
        ],
    ));
    assert!(hits["results"][0]["rerank_score"].is_number());

    // Settings no step can run with are refused before a run folder exists.
    for bad in [["--max-len", "0"], ["--max-len", "100000"], ["--lr", "nan"]] {
        let args = [
            &["rerank", "train", "--split", "test", "--run", "bad"][..],
            &bad,
        ]
        .concat();
        let err = fails(&ws, &args);
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
        assert!(
            !ws.join(".cpack/rerankers/bad").exists(),
            "{bad:?} left a run folder"
        );
    }
    // A run cut after its first checkpoint resumes to the same weights.
    ok(&ws, &[&TRAIN[..], &["--run", "cut", "-q"]].concat());
    let cut = ws.join(".cpack/rerankers/cut");
    std::fs::remove_dir_all(cut.join("epoch-2")).unwrap();
    let err = fails(&ws, &[&TRAIN[..], &["--run", "cut"]].concat());
    assert!(
        err.contains("already exists") && err.contains("--resume"),
        "{err}"
    );
    let err = fails(
        &ws,
        &[&TRAIN[..], &["--run", "cut", "--resume", "--seed", "99"]].concat(),
    );
    assert!(err.contains("other settings"), "{err}");
    let resumed = json(&ok(
        &ws,
        &[&TRAIN[..], &["--run", "cut", "--resume", "--json", "-q"]].concat(),
    ));
    assert_eq!(resumed["epochs"].as_array().unwrap().len(), 2);
    let weights = |dir: &Path| std::fs::read(dir.join("epoch-2/model.safetensors")).unwrap();
    assert!(
        weights(&cut) == weights(&ws.join(".cpack/rerankers/whole")),
        "resumed weights differ"
    );

    // `mine --gc` keeps the round a reranker run resumes on.
    ok(
        &ws,
        &[
            "mine", "--split", "test", "--topk", "6", "--skip", "1", "-q",
        ],
    );
    let out = ok(&ws, &["mine", "--gc", "--keep", "1"]);
    assert!(
        out.contains("removed 0 round(s)") && out.contains("[1]"),
        "{out}"
    );
}
