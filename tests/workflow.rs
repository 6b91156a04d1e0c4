//! The main workflow through the real binary: init → index build → search → eval.

use crate::common::*;

#[test]
fn echo_queries_find_their_own_passage() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, passages) = echo_workspace(tmp.path());

    let built = json(&ok(&ws, &["index", "build", "--json"]));
    assert_eq!(built["status"], "built");
    assert_eq!(built["rows"], 8);
    let again = json(&ok(&ws, &["index", "build", "--json"]));
    assert_eq!(again["status"], "up-to-date");

    let eval = json(&ok(&ws, &["eval", "--split", "test", "--json"]));
    assert_eq!(eval["metrics"]["queries"], 8);
    assert_eq!(eval["metrics"]["ndcg_at_10"], 1.0, "{eval}");
    assert_eq!(eval["metrics"]["mrr_at_10"], 1.0);

    let found = json(&ok(&ws, &["search", "--json", "-k", "3", &passages[4]]));
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["id"], "p4");
    assert_eq!(results[0]["text"], passages[4].as_str());
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!((scores[0] - 1.0).abs() < 1e-4, "{scores:?}");
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    let plain = ok(&ws, &["search", "-k", "2", &passages[0]]);
    assert!(plain.lines().next().unwrap().contains("p0"), "{plain}");
}

#[test]
fn chinese_dataset_with_instruction_and_faiss_factories() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shared("data/cmrc2018");
    let model = tiny_model_for(&data, &tmp.path().join("model"));
    let ws = tmp.path().join("ws");
    init_workspace(&ws, &data, &model, &["--query-instruction", "bge-zh"]);
    let toml = std::fs::read_to_string(ws.join("cpack.toml")).unwrap();
    assert!(
        toml.contains("query_instruction = \"为这个句子生成表示以用于检索相关文章：\""),
        "{toml}"
    );

    let flat = json(&ok(&ws, &["index", "build", "--json"]));
    assert_eq!(flat["rows"], 1104);
    let flat_eval = json(&ok(&ws, &["eval", "--json"]));
    let queries = std::fs::read_to_string(data.join("qrels/test.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(flat_eval["metrics"]["queries"], queries);
    let ndcg = flat_eval["metrics"]["ndcg_at_10"].as_f64().unwrap();
    assert!(ndcg > 0.0 && ndcg <= 1.0, "{flat_eval}");

    // The exact Rust backend must rank as FAISS Flat does, up to float
    // summation order deciding near-ties around rank 100.
    let exact = json(&ok(
        &ws,
        &["index", "build", "--json", "--backend", "exact"],
    ));
    assert_eq!(exact["index"], "exact");
    let exact_eval = json(&ok(&ws, &["eval", "--json"]));
    for metric in ["ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100"] {
        let (a, b) = (
            &exact_eval["metrics"][metric],
            &flat_eval["metrics"][metric],
        );
        assert!(
            (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-3,
            "{metric}: exact {a} vs faiss {b}"
        );
    }

    let info = json(&ok(&ws, &["index", "info", "--json"]));
    assert_eq!(
        info["plan"]["stamp"]["query_instruction"],
        "为这个句子生成表示以用于检索相关文章："
    );
    assert_eq!(info["plan"]["rows"], 1104);

    // An approximate index over the same embeddings, stored as f16.
    let hnsw = json(&ok(
        &ws,
        &[
            "index",
            "build",
            "--json",
            "--factory",
            "HNSW32",
            "--precision",
            "f16",
        ],
    ));
    assert_eq!(hnsw["index"], "faiss HNSW32");
    let hnsw_eval = json(&ok(&ws, &["eval", "--json"]));
    let recall = hnsw_eval["metrics"]["recall_at_100"].as_f64().unwrap();
    let flat_recall = flat_eval["metrics"]["recall_at_100"].as_f64().unwrap();
    assert!(
        (recall - flat_recall).abs() < 0.05,
        "HNSW {recall} vs flat {flat_recall}"
    );
}

#[test]
fn hub_ids_resolve_through_the_hugging_face_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let passages = echo_dataset(&data);
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    // The layout huggingface_hub writes: refs/main names the snapshot.
    let repo = tmp.path().join("hf/hub/models--tiny-org--tiny-bert");
    tiny_model(&repo.join("snapshots/0123abcd"), &refs);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();

    let with_cache = |args: &[&str]| {
        let out = cpack(&ws)
            .env("HF_HOME", tmp.path().join("hf"))
            .env("HF_HUB_OFFLINE", "1")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok_init, _, err) = with_cache(&[
        "init",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "tiny-org/tiny-bert",
    ]);
    assert!(ok_init, "{err}");
    assert!(std::fs::read_to_string(ws.join("cpack.toml"))
        .unwrap()
        .contains("path = \"tiny-org/tiny-bert\""));
    let (built, out, err) = with_cache(&["index", "build", "--json"]);
    assert!(built, "{err}");
    assert_eq!(json(&out)["rows"], 8);

    let (found, _, err) = with_cache(&["search", "--model", "tiny-org/missing-model", "x"]);
    assert!(!found);
    assert!(
        err.contains("tiny-org/missing-model") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

#[test]
fn a_token_budget_changes_the_batches_not_the_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, passages) = echo_workspace(tmp.path());
    let top = |query: &str| -> Vec<(String, f64)> {
        let found = json(&ok(&ws, &["search", "--json", "-k", "5", query]));
        found["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    ok(&ws, &["index", "build", "--batch-size", "64"]);
    let by_rows: Vec<_> = passages.iter().take(5).map(|p| top(p)).collect();
    // A budget of 24 padded tokens makes batches of one to a few passages.
    ok(
        &ws,
        &[
            "index",
            "build",
            "--batch-size",
            "64",
            "--batch-tokens",
            "24",
            "--force",
        ],
    );
    let by_tokens: Vec<_> = passages.iter().take(5).map(|p| top(p)).collect();
    for (a, b) in by_rows.iter().zip(&by_tokens) {
        let ids = |hits: &[(String, f64)]| hits.iter().map(|h| h.0.clone()).collect::<Vec<_>>();
        assert_eq!(ids(a), ids(b));
        for (x, y) in a.iter().zip(b) {
            assert!((x.1 - y.1).abs() < 1e-5, "{} vs {}", x.1, y.1);
        }
    }
}

#[test]
fn bf16_vectors_never_share_an_index_with_f32_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, passages) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build", "--encoder-precision", "bf16"]);
    let info = json(&ok(&ws, &["index", "info", "--json"]));
    assert_eq!(info["plan"]["stamp"]["encoder_precision"], "bf16");
    let found = json(&ok(
        &ws,
        &[
            "search",
            "--json",
            "-k",
            "1",
            "--encoder-precision",
            "bf16",
            &passages[2],
        ],
    ));
    assert_eq!(found["results"][0]["id"], "p2");
    let err = fails(&ws, &["search", &passages[2]]);
    assert!(err.contains("encoder precision"), "{err}");
}
