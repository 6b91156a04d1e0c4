//! Helpers shared by the end-to-end tests: run the real `cpack` binary in
//! temporary workspaces, with tiny generated models or the real MiniLM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under ../shared, which must exist (the tests never skip silently).
pub fn shared(rel: &str) -> PathBuf {
    let path = repo_root().join("../shared").join(rel);
    assert!(
        path.exists(),
        "{} is missing: ../shared must sit beside the checkout",
        path.display()
    );
    path
}

/// The real all-MiniLM-L6-v2 folder unpacked by scripts/setup.sh.
pub fn minilm() -> PathBuf {
    let path = repo_root().join(".cache/models/all-MiniLM-L6-v2");
    assert!(
        path.join("model.safetensors").exists(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    path
}

pub fn cpack(workspace: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cpack"));
    cmd.current_dir(workspace)
        .env_remove("CPACK_WORKSPACE")
        .env("RAYON_NUM_THREADS", "2");
    cmd
}

/// Runs `cpack args…` in `workspace`, asserting success; returns stdout.
/// `cpack mine export --format ids` of the newest round, into `output`.
pub fn export_ids(workspace: &Path, output: &Path) {
    let output = output.to_str().unwrap();
    ok(
        workspace,
        &["mine", "export", "--format", "ids", "--output", output],
    );
}

pub fn ok(workspace: &Path, args: &[&str]) -> String {
    let out = cpack(workspace).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cpack {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cpack args…`, asserting failure without a panic; returns stderr.
pub fn fails(workspace: &Path, args: &[&str]) -> String {
    fails_with(workspace, args, 1)
}

/// As [`fails`], with exit status `code` (2: a usage error clap refused).
pub fn fails_with(workspace: &Path, args: &[&str], code: i32) -> String {
    let out: Output = cpack(workspace).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "cpack {args:?} should have failed; stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(code), "cpack {args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "cpack {args:?} panicked: {stderr}"
    );
    let errors = stderr.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(
        errors, 1,
        "cpack {args:?}: one error line expected: {stderr}"
    );

    stderr
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A small BEIR dataset whose queries repeat passages word for word, so a
/// correct pipeline must rank each query's own passage first.
pub fn echo_dataset(dir: &Path) -> Vec<String> {
    let passages = [
        "term life insurance pays a death benefit",
        "renters insurance covers your belongings",
        "medicare part b covers doctor visits",
        "an annuity pays income for life",
        "car insurance follows the car",
        "disability insurance replaces lost income",
        "为这个句子生成表示",
        "保险公司支付赔偿金",
    ];
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let mut corpus = String::new();
    let mut queries = String::new();
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    for (i, p) in passages.iter().enumerate() {
        corpus += &format!(
            "{}\n",
            serde_json::json!({"id": format!("p{i}"), "title": "", "text": p})
        );
        queries += &format!(
            "{}\n",
            serde_json::json!({"id": format!("q{i}"), "text": p})
        );
        qrels += &format!("q{i}\tp{i}\t1\n");
    }
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
    passages.iter().map(|s| s.to_string()).collect()
}

/// Writes a tiny random BERT whose vocabulary covers `texts`.
pub fn tiny_model(dir: &Path, texts: &[&str]) -> PathBuf {
    cpack_model::test_model::write_tiny_model(dir, texts, 11).unwrap();
    dir.to_path_buf()
}

/// Every text of a BEIR dataset (corpus and queries), for tiny-model vocabularies.
pub fn dataset_texts(dir: &Path) -> Vec<String> {
    ["corpus.jsonl", "queries.jsonl"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    format!(
                        "{} {}",
                        v["title"].as_str().unwrap_or(""),
                        v["text"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs `cpack init` in a new workspace folder `ws`, with extra flags.
pub fn init_workspace(ws: &Path, data: &Path, model: &Path, extra: &[&str]) {
    std::fs::create_dir_all(ws).unwrap();
    let mut args = vec![
        "init",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(ws, &args);
}

/// A workspace over [`echo_dataset`] with a tiny model: (workspace, dataset dir, passages).
pub fn echo_workspace(tmp: &Path) -> (PathBuf, PathBuf, Vec<String>) {
    let data = tmp.join("data");
    let passages = echo_dataset(&data);
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let model = tiny_model(&tmp.join("model"), &refs);
    let ws = tmp.join("ws");
    init_workspace(&ws, &data, &model, &[]);
    (ws, data, passages)
}

/// A tiny model whose vocabulary covers a BEIR dataset.
pub fn tiny_model_for(dataset: &Path, dir: &Path) -> PathBuf {
    let texts = dataset_texts(dataset);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    tiny_model(dir, &refs)
}

/// `cpack train` on the echo workspace's test split: 2 epochs refreshed
/// incrementally, no evaluation (so the run's index ends one checkpoint
/// behind), small groups and batches.
pub const ECHO_INCREMENTAL_RUN: [&str; 17] = [
    "train",
    "--split",
    "test",
    "--eval-split",
    "none",
    "--epochs",
    "2",
    "--refresh",
    "incremental",
    "--topk",
    "6",
    "--skip",
    "0",
    "--group-size",
    "3",
    "--train-batch-size",
    "4",
];

/// The embeddings `cpack embed` writes for `texts`, one vector per text.
pub fn embed(ws: &Path, texts: &[String], extra: &[&str]) -> Vec<Vec<f32>> {
    let input = ws.join("texts.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = ws.join("embedded.jsonl");
    let mut args = vec![
        "embed",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(ws, &args);
    std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| {
            json(l)["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// The cosine of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}
