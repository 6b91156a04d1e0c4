//! Parity with transformers for the second model family and kind: tiny
//! random-weight `BertForSequenceClassification` and
//! `XLMRobertaForSequenceClassification` folders made by
//! tests/fixtures/rerank/make_fixtures.py, whose `expected.json` holds
//! transformers' token ids, logits of (query, passage) pairs, and the base
//! encoder's pooled states of single texts. The cross-encoder must score
//! what transformers scores (within 1e-4) from the same token ids and types,
//! and the same folders as embedders must pool what transformers' encoder
//! gives, through candle (CPU kernels and portable ops) and ONNX Runtime.

use cpack_encode::candle_backend::CandleBackend;
use cpack_encode::onnx::{export_to, ExportOptions};
use cpack_encode::ort_backend::{find_library, OrtBackend, OrtOptions};
use cpack_encode::{
    ComputeDevice, CrossEncoder, Encoder, EncoderBackend, EncoderSettings, RerankSettings,
    TextKind, WeightPrecision,
};
use cpack_model::{ClassifierNames, Kernels, ModelDir, Pooling, TextTokenizer};
use std::path::PathBuf;

const FAMILIES: [(&str, ClassifierNames); 2] = [
    ("bert", ClassifierNames::BertPooler),
    ("xlm-roberta", ClassifierNames::RobertaHead),
];

#[derive(serde::Deserialize)]
struct Expected {
    max_length: usize,
    pairs: Vec<(String, String)>,
    pair_input_ids: Vec<Vec<u32>>,
    pair_token_type_ids: Option<Vec<Vec<u32>>>,
    logits: Vec<f32>,
    texts: Vec<String>,
    text_input_ids: Vec<Vec<u32>>,
    mean_pooled: Vec<Vec<f32>>,
    cls_pooled: Vec<Vec<f32>>,
}

fn fixture(name: &str) -> (ModelDir, Expected) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/rerank")
        .join(name);
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (ModelDir::open(&dir).unwrap(), expected)
}

fn pairs(expected: &Expected) -> Vec<(&str, &str)> {
    expected
        .pairs
        .iter()
        .map(|(q, p)| (q.as_str(), p.as_str()))
        .collect()
}

fn settings(expected: &Expected, batch_size: usize) -> RerankSettings {
    RerankSettings {
        max_len: expected.max_length,
        batch_size,
        batch_tokens: 0,
    }
}

fn worst_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pairs_tokenize_through_the_pair_template_as_transformers_does() {
    for (name, _) in FAMILIES {
        let (model, expected) = fixture(name);
        let tokenizer = TextTokenizer::load(&model.tokenizer, expected.max_length).unwrap();
        let tokens = tokenizer.encode_pairs(&pairs(&expected)).unwrap();
        let ids: Vec<Vec<u32>> = tokens.iter().map(|(ids, _)| ids.clone()).collect();
        assert_eq!(ids, expected.pair_input_ids, "{name}");
        if let Some(types) = &expected.pair_token_type_ids {
            let ours: Vec<Vec<u32>> = tokens.iter().map(|(_, t)| t.clone()).collect();
            assert_eq!(&ours, types, "{name}");
            assert!(
                types.iter().any(|t| t.contains(&1)),
                "{name}: the fixture has second segments"
            );
        }
        // Longest-first cut some pair to exactly the maximum length.
        assert!(ids.iter().any(|i| i.len() == expected.max_length), "{name}");
    }
}

#[test]
fn cross_encoders_score_what_transformers_scores() {
    for (name, names) in FAMILIES {
        let (model, expected) = fixture(name);
        let layout = model.classifier.expect("a classification head");
        assert_eq!((layout.names, layout.labels), (names, 1), "{name}");
        let one =
            CrossEncoder::load(&model, settings(&expected, 32), ComputeDevice::Cpu, 1).unwrap();
        let scores = one.score(&pairs(&expected), &mut |_, _| {}).unwrap();
        let worst = worst_difference(&scores, &expected.logits);
        assert!(
            worst < 1e-4,
            "{name}: worst logit difference {worst}: {scores:?} vs {:?}",
            expected.logits
        );
        // Small batches on two workers: the same bits (each batch is computed whole).
        let two =
            CrossEncoder::load(&model, settings(&expected, 3), ComputeDevice::Cpu, 2).unwrap();
        let mut done = 0;
        let again = two.score(&pairs(&expected), &mut |n, _| done += n).unwrap();
        assert_eq!(done, expected.pairs.len());
        let batched_alone =
            CrossEncoder::load(&model, settings(&expected, 3), ComputeDevice::Cpu, 1).unwrap();
        assert_eq!(
            again,
            batched_alone
                .score(&pairs(&expected), &mut |_, _| {})
                .unwrap(),
            "{name}"
        );
        assert!(worst_difference(&again, &expected.logits) < 1e-4, "{name}");
        // A token budget: short pairs many to a batch, long ones few.
        let budget = RerankSettings {
            batch_tokens: 2 * expected.max_length,
            ..settings(&expected, 32)
        };
        let budgeted = CrossEncoder::load(&model, budget, ComputeDevice::Cpu, 1).unwrap();
        let mut batches = 0;
        let scores = budgeted
            .score(&pairs(&expected), &mut |_, _| batches += 1)
            .unwrap();
        assert!(batches > 1, "{name}: the budget cut the pairs into batches");
        assert!(worst_difference(&scores, &expected.logits) < 1e-4, "{name}");
    }
}

#[test]
fn an_embedder_is_refused_as_a_reranker_and_lengths_past_the_positions_too() {
    let tmp = tempfile::tempdir().unwrap();
    cpack_model::test_model::write_tiny_model(tmp.path(), &["hello world"], 1).unwrap();
    let embedder = ModelDir::open(tmp.path()).unwrap();
    assert!(embedder.classifier.is_none());
    let settings = RerankSettings::declared_by(&embedder);
    let err = CrossEncoder::load(&embedder, settings, ComputeDevice::Cpu, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("is an embedder, not a cross-encoder"), "{err}");
    let (model, expected) = fixture("xlm-roberta");
    let held = model.config.max_tokens();
    assert_eq!(
        held,
        model.config.max_position_embeddings - 2,
        "past <pad> = 1"
    );
    let long = RerankSettings {
        max_len: held + 1,
        ..settings_of(&expected)
    };
    let err = CrossEncoder::load(&model, long, ComputeDevice::Cpu, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("rerank.max_len"), "{err}");
}

fn settings_of(expected: &Expected) -> RerankSettings {
    settings(expected, 32)
}

/// Makes the embedding backend under test for a model and its settings.
type BackendFactory<'a> = dyn Fn(&ModelDir, &EncoderSettings) -> Box<dyn EncoderBackend> + 'a;

/// Embeds the fixture's texts as passages with `pooling`, no normalisation,
/// and returns the worst element difference to transformers' pooled states.
fn embedder_difference(name: &str, pooling: Pooling, backend: &BackendFactory) -> f32 {
    let (model, expected) = fixture(name);
    let settings = EncoderSettings {
        pooling,
        normalize: false,
        query_max_len: expected.max_length,
        passage_max_len: expected.max_length,
        query_instruction: String::new(),
        batch_size: 4,
        batch_tokens: 0,
    };
    let encoder = Encoder::new(&model, settings.clone(), backend(&model, &settings)).unwrap();
    let texts: Vec<&str> = expected.texts.iter().map(String::as_str).collect();
    assert_eq!(
        encoder.tokenize(&texts, TextKind::Passage).unwrap(),
        expected.text_input_ids,
        "{name}"
    );
    let ours = encoder
        .encode(&texts, TextKind::Passage, &mut |_, _| {})
        .unwrap();
    let theirs: Vec<f32> = match pooling {
        Pooling::Mean => expected.mean_pooled.concat(),
        Pooling::Cls => expected.cls_pooled.concat(),
    };
    worst_difference(&ours, &theirs)
}

fn candle(kernels: Kernels) -> impl Fn(&ModelDir, &EncoderSettings) -> Box<dyn EncoderBackend> {
    move |model, s| {
        let backend = CandleBackend::load_with_kernels(
            model,
            s.pooling,
            s.normalize,
            ComputeDevice::Cpu,
            WeightPrecision::F32,
            kernels,
        )
        .unwrap();
        Box::new(backend)
    }
}

#[test]
fn both_families_embed_as_transformers_encodes_on_candle() {
    for (name, _) in FAMILIES {
        for pooling in [Pooling::Mean, Pooling::Cls] {
            for kernels in [Kernels::Cpu, Kernels::Portable] {
                let worst = embedder_difference(name, pooling, &candle(kernels));
                assert!(worst < 1e-4, "{name} {pooling} {kernels:?}: {worst}");
            }
        }
    }
}

#[test]
fn both_families_embed_as_transformers_encodes_through_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (name, _) in FAMILIES {
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let ort = |model: &ModelDir, s: &EncoderSettings| -> Box<dyn EncoderBackend> {
                let path = dir.path().join(format!("{name}-{pooling}.onnx"));
                let export = ExportOptions {
                    pooling: s.pooling,
                    normalize: s.normalize,
                    precision: WeightPrecision::F32,
                };
                export_to(model, export, &path).unwrap();
                let options = OrtOptions {
                    library: find_library(&[&root]).expect("run scripts/setup.sh first"),
                    sessions: 1,
                    threads: 1,
                    spinning: false,
                };
                Box::new(
                    OrtBackend::load(&path, model.hidden_size(), WeightPrecision::F32, &options)
                        .unwrap(),
                )
            };
            let worst = embedder_difference(name, pooling, &ort);
            assert!(worst < 1e-4, "{name} {pooling}: {worst}");
        }
    }
}
