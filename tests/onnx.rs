//! The ONNX side through the real binary: `cpack export --onnx` writes files
//! that Python's onnxruntime runs to sentence-transformers' numbers, the
//! `ort` encoder backend agrees with candle (also on a trained checkpoint,
//! whose refresh encodes through ORT), and indexes never mix backends or
//! precisions.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn worst_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| cosine(x, y))
        .fold(f32::INFINITY, f32::min)
}

/// `python3` with the onnxruntime + numpy that scripts/setup.sh unpacks.
fn python_with_onnxruntime() -> Option<Command> {
    let site = repo_root().join(".cache/python");
    let mut probe = Command::new("python3");
    probe
        .env("PYTHONPATH", &site)
        .args(["-c", "import onnxruntime, numpy"]);
    if !probe.output().is_ok_and(|o| o.status.success()) {
        return None;
    }
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", site);
    Some(python)
}

/// Runs an exported MiniLM on the fixture's own token ids in Python's
/// onnxruntime and returns the worst cosine to sentence-transformers.
const PYTHON_CHECK: &str = r#"
import json, sys
import numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
worst = 1.0
for line in open(sys.argv[2]):
    case = json.loads(line)
    ids = np.array([case["input_ids"]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    got = session.run(["sentence_embedding"], feeds)[0][0]
    want = np.array(case["embedding"], dtype=np.float32)
    worst = min(worst, float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want))))
print(worst)
"#;

#[test]
fn exported_minilm_runs_in_python_onnxruntime_as_sentence_transformers() {
    let Some(mut python) = python_with_onnxruntime() else {
        eprintln!("SKIPPED: no python3 with onnxruntime (scripts/setup.sh unpacks one into .cache/python)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("minilm.onnx");
    let model = minilm();
    let printed = ok(
        tmp.path(),
        &[
            "export",
            "--onnx",
            model.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert!(printed.contains("opset 17"), "{printed}");
    let fixture = shared("fixtures/minilm-reference/embeddings.jsonl");
    let result = python
        .args(["-c", PYTHON_CHECK])
        .arg(&out)
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "python onnxruntime failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let worst: f32 = String::from_utf8_lossy(&result.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(worst >= 0.9999, "worst cosine {worst}");
}

/// An echo-dataset workspace with a tiny model.
fn echo(tmp: &Path) -> (PathBuf, Vec<String>) {
    let (ws, _, passages) = echo_workspace(tmp);
    (ws, passages)
}

#[test]
fn ort_backend_agrees_with_candle_and_indexes_never_mix_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, passages) = echo(tmp.path());
    let candle = embed(&ws, &passages, &[]);
    let ort = embed(&ws, &passages, &["--encoder", "ort"]);
    let int8 = embed(
        &ws,
        &passages,
        &["--encoder", "ort", "--encoder-precision", "int8"],
    );
    assert!(worst_cosine(&candle, &ort) >= 0.9999);
    assert_ne!(ort, int8, "int8 must compute differently");
    assert!(worst_cosine(&ort, &int8) >= 0.95);
    // The export is cached by the weights' fingerprint, one file per precision.
    let cached = std::fs::read_dir(ws.join(".cpack/onnx")).unwrap().count();
    assert_eq!(cached, 2);

    ok(&ws, &["index", "build", "--encoder", "ort"]);
    let info = json(&ok(&ws, &["index", "info", "--json"]));
    assert_eq!(info["plan"]["stamp"]["encoder_backend"], "ort");
    assert_eq!(info["plan"]["stamp"]["encoder_precision"], "f32");
    let hits = json(&ok(
        &ws,
        &["search", &passages[2], "--json", "--encoder", "ort"],
    ));
    assert_eq!(hits["results"][0]["id"], "p2", "{hits}");

    // Searching it with candle or int8 vectors is refused, naming the field.
    let err = fails(&ws, &["search", &passages[2]]);
    assert!(err.contains("encoder backend"), "{err}");
    let err = fails(
        &ws,
        &[
            "search",
            &passages[2],
            "--encoder",
            "ort",
            "--encoder-precision",
            "int8",
        ],
    );
    assert!(err.contains("encoder precision"), "{err}");
}

#[test]
fn bad_encoder_settings_fail_with_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, passages) = echo(tmp.path());
    let err = fails(
        &ws,
        &["search", &passages[0], "--encoder-precision", "int8"],
    );
    assert!(err.contains("needs the ort backend"), "{err}");
    let err = fails_with(&ws, &["search", &passages[0], "--encoder", "tensorrt"], 2);
    assert!(
        err.contains("'tensorrt'") && err.contains("possible values: candle, ort"),
        "{err}"
    );
    let toml = std::fs::read_to_string(ws.join("cpack.toml"))
        .unwrap()
        .replace(
            "backend = \"candle\"",
            "backend = \"ort\"\nort_library = \"/nonexistent/libonnxruntime.so\"",
        );
    std::fs::write(ws.join("cpack.toml"), toml).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    assert!(!ws.join(".cpack/index/CURRENT").exists());
    let err = fails(
        tmp.path(),
        &["export", "--onnx", "/nonexistent-model", "x.onnx"],
    );
    assert!(err.contains("/nonexistent-model"), "{err}");
    assert!(!tmp.path().join("x.onnx").exists());
}
