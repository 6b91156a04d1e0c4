//! Parity with sentence-transformers: the real all-MiniLM-L6-v2 must give the
//! same token ids and (cosine ≥ 0.9999) the same embeddings as
//! ../shared/fixtures/minilm-reference/embeddings.jsonl — through every
//! backend: candle (its CPU kernels and the portable ops a GPU runs), and
//! ONNX Runtime on cpack's own ONNX export.

use cpack_encode::candle_backend::CandleBackend;
use cpack_encode::onnx::{export_to, ExportOptions};
use cpack_encode::ort_backend::{find_library, OrtBackend, OrtOptions};
use cpack_encode::ComputeDevice;
use cpack_encode::{Encoder, EncoderBackend, EncoderSettings, TextKind, WeightPrecision};
use cpack_model::{Kernels, ModelDir};
use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
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

/// Makes the backend under test for a model and its settings.
type BackendFactory<'a> = dyn Fn(&ModelDir, &EncoderSettings) -> Box<dyn EncoderBackend> + 'a;

/// The candle backend in `precision`, on the CPU kernels or the portable ops.
fn candle(
    precision: WeightPrecision,
    kernels: Kernels,
) -> impl Fn(&ModelDir, &EncoderSettings) -> Box<dyn EncoderBackend> {
    move |model, s| {
        let (pooling, cpu) = (s.pooling, ComputeDevice::Cpu);
        let backend =
            CandleBackend::load_with_kernels(model, pooling, s.normalize, cpu, precision, kernels)
                .unwrap();
        Box::new(backend)
    }
}

#[test]
fn candle_matches_sentence_transformers() {
    let worst = check_against_sentence_transformers(&candle(WeightPrecision::F32, Kernels::Cpu));
    assert!(worst >= 0.9999, "worst cosine {worst}");
}

/// The ops a GPU runs (candle's own), here on the CPU.
#[test]
fn candle_portable_path_matches_sentence_transformers() {
    let worst =
        check_against_sentence_transformers(&candle(WeightPrecision::F32, Kernels::Portable));
    assert!(worst >= 0.9999, "worst cosine {worst}");
}

/// bf16 weights and activations (what a GPU encodes with), on the CPU's
/// portable ops: close to f32, as the GPU path's target asks (≥ 0.999).
#[test]
fn candle_bf16_stays_close_to_sentence_transformers() {
    let worst =
        check_against_sentence_transformers(&candle(WeightPrecision::Bf16, Kernels::Portable));
    println!("bf16 worst cosine against sentence-transformers: {worst}");
    assert!((0.999..0.99999).contains(&worst), "worst cosine {worst}");
}

/// bf16 products on the CPU kernels (AMX or AVX-512 BF16 where the CPU has
/// them, else the rounded f32 kernel: the same numbers): within the bound PyTorch's
/// autocast keeps (≥ 0.9999), and not f32 in disguise.
#[test]
fn candle_bf16_products_on_the_cpu_stay_within_autocasts_bound() {
    let worst = check_against_sentence_transformers(&candle(WeightPrecision::Bf16, Kernels::Cpu));
    println!("bf16 products (CPU kernels) worst cosine against sentence-transformers: {worst}");
    assert!((0.9999..0.999999).contains(&worst), "worst cosine {worst}");
}

fn ort_backend(
    dir: &std::path::Path,
    precision: WeightPrecision,
) -> impl Fn(&ModelDir, &EncoderSettings) -> Box<dyn EncoderBackend> + '_ {
    move |model, s| {
        let path = dir.join(format!("minilm-{precision}.onnx"));
        let export = ExportOptions {
            pooling: s.pooling,
            normalize: s.normalize,
            precision,
        };
        export_to(model, export, &path).unwrap();
        let options = OrtOptions {
            library: find_library(&[&repo_root()]).expect("run scripts/setup.sh first"),
            sessions: 1,
            threads: 2,
            spinning: false,
        };
        Box::new(OrtBackend::load(&path, model.hidden_size(), precision, &options).unwrap())
    }
}

#[test]
fn ort_f32_matches_sentence_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let worst = check_against_sentence_transformers(&ort_backend(dir.path(), WeightPrecision::F32));
    assert!(worst >= 0.9999, "worst cosine {worst}");
}

/// int8 is an approximation: it must stay close, not identical.
#[test]
fn ort_int8_stays_close_to_sentence_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let worst =
        check_against_sentence_transformers(&ort_backend(dir.path(), WeightPrecision::Int8));
    println!("int8 worst cosine against sentence-transformers: {worst}");
    assert!((0.95..0.99999).contains(&worst), "worst cosine {worst}");
}

/// Checks token ids exactly and returns the worst embedding cosine over all 82 texts.
fn check_against_sentence_transformers(make_backend: &BackendFactory) -> f32 {
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
    let mut worst = f32::INFINITY;

    for max_len in [256, 128] {
        let settings = EncoderSettings {
            passage_max_len: max_len,
            ..EncoderSettings::declared_by(&model)
        };
        assert_eq!(settings.pooling, cpack_model::Pooling::Mean);
        assert!(settings.normalize);
        let backend = make_backend(&model, &settings);
        let encoder = Encoder::new(&model, settings, backend).unwrap();
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
            worst = worst.min(cos);
        }
    }
    worst
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}
