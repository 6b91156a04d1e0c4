//! Parity with sentence-transformers: the real all-MiniLM-L6-v2 must give the
//! same token ids and (cosine ≥ 0.9999) the same embeddings as
//! ../shared/fixtures/minilm-reference/embeddings.jsonl.

use cpack_index::candle_backend::CandleBackend;
use cpack_index::model::ModelDir;
use cpack_index::{Encoder, EncoderSettings, TextKind};
use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn required(path: PathBuf, hint: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {hint}", path.display());
    path
}

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    max_seq_length: usize,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[test]
fn candle_matches_sentence_transformers() {
    let fixture = required(
        repo_root().join("../shared/fixtures/minilm-reference/embeddings.jsonl"),
        "the shared fixtures must sit beside the checkout",
    );
    let model_dir = required(
        repo_root().join(".cache/models/all-MiniLM-L6-v2"),
        "run scripts/setup.sh first",
    );
    let model = ModelDir::open(&model_dir).unwrap();
    let refs: Vec<Reference> = std::fs::read_to_string(&fixture)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(refs.len(), 82);

    for max_len in [256, 128] {
        let settings = EncoderSettings {
            passage_max_len: max_len,
            ..EncoderSettings::declared_by(&model)
        };
        assert_eq!(settings.pooling, cpack_index::model::Pooling::Mean);
        assert!(settings.normalize);
        let backend = CandleBackend::load(&model, settings.pooling, settings.normalize).unwrap();
        let encoder = Encoder::new(&model, settings, Box::new(backend)).unwrap();
        let cases: Vec<&Reference> = refs
            .iter()
            .filter(|r| r.max_seq_length == max_len)
            .collect();
        assert!(!cases.is_empty());
        let texts: Vec<&str> = cases.iter().map(|r| r.text.as_str()).collect();
        let ids = encoder.tokenize(&texts, TextKind::Passage).unwrap();
        let vectors = encoder
            .encode(&texts, TextKind::Passage, &mut |_, _| {})
            .unwrap();
        let dim = encoder.dim();
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(
                ids[i], case.input_ids,
                "token ids differ for {:?} at max length {max_len}",
                case.text
            );
            let v = &vectors[i * dim..(i + 1) * dim];
            let cos: f32 = v
                .iter()
                .zip(&case.embedding)
                .map(|(a, b)| a * b)
                .sum::<f32>()
                / (norm(v) * norm(&case.embedding));
            assert!(
                cos >= 0.9999,
                "cosine {cos} for {:?} at max length {max_len}",
                case.text
            );
        }
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}
