//! `cpack embed` with the real all-MiniLM-L6-v2 reproduces sentence-transformers:
//! identical token ids (checked in the index crate) and cosine ≥ 0.9999 for all 82 texts.

use crate::common::*;

#[test]
fn embed_matches_sentence_transformers_at_both_lengths() {
    let fixture = shared("fixtures/minilm-reference/embeddings.jsonl");
    let model = minilm();
    let tmp = tempfile::tempdir().unwrap();
    let refs: Vec<serde_json::Value> = std::fs::read_to_string(&fixture)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut checked = 0;
    for max_len in [256, 128] {
        let cases: Vec<&serde_json::Value> = refs
            .iter()
            .filter(|r| r["max_seq_length"] == max_len)
            .collect();
        let input = tmp.path().join(format!("in-{max_len}.jsonl"));
        let lines: Vec<String> = cases
            .iter()
            .map(|r| serde_json::json!({"text": r["text"], "tag": checked}).to_string())
            .collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let output = tmp.path().join(format!("out-{max_len}.jsonl"));
        ok(
            tmp.path(),
            &[
                "embed",
                "--model",
                model.to_str().unwrap(),
                "--passage-max-len",
                &max_len.to_string(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
            ],
        );
        let got: Vec<serde_json::Value> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got.len(), cases.len());
        for (case, out) in cases.iter().zip(&got) {
            assert_eq!(out["text"], case["text"]);
            assert_eq!(out["tag"], checked, "other fields pass through");
            let a: Vec<f64> = case["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let b: Vec<f64> = out["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let cos = dot
                / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
                    * b.iter().map(|x| x * x).sum::<f64>().sqrt());
            assert!(
                cos >= 0.9999,
                "cosine {cos} for {} at max length {max_len}",
                case["text"]
            );
        }
        checked += cases.len();
    }
    assert_eq!(checked, 82);
}

#[test]
fn embed_reports_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"fine\"}\n{\"txt\": \"oops\"}\n").unwrap();
    let model = minilm();
    let err = fails(
        tmp.path(),
        &[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
    );
    assert!(err.contains("in.jsonl:2: missing \"text\" field"), "{err}");
}
