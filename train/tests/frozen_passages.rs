//! Query-side training (`freeze_passages`): against fixed passage vectors,
//! a pass gives the loss of the whole batch and exactly the queries' share
//! of its gradient — the whole gradient is that share plus the passages'
//! share, computed here with the query embeddings held fixed instead.

use crate::common::{tiny_model, trainer, PASSAGES, QUERIES};
use candle_core::Tensor;
use cpack_encode::{EncoderSettings, PairTokenizer, TextKind, TokenBatch};
use cpack_model::{Kernels, ModelDir};
use cpack_train::loss::contrastive_loss;
use cpack_train::optim::Gradients;
use cpack_train::{LossKind, Trainer};

/// Embeddings of `texts` under the trainer's weights, with their graph.
fn embed(trainer: &Trainer, model: &std::path::Path, texts: &[&str], kind: TextKind) -> Tensor {
    let model = ModelDir::open(model).unwrap();
    let settings = EncoderSettings {
        query_max_len: 16,
        passage_max_len: 24,
        ..EncoderSettings::declared_by(&model)
    };
    let tokens = PairTokenizer::load(&model, &settings)
        .unwrap()
        .tokenize(texts, kind)
        .unwrap();
    let rows: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    trainer
        .encoder()
        .embed(&TokenBatch::pad(&rows), None)
        .unwrap()
}

/// Sum of squares, accumulated in f64.
fn squared(t: &Tensor) -> f64 {
    let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values.iter().map(|&v| (v as f64) * (v as f64)).sum()
}

#[test]
fn a_frozen_pass_is_the_query_side_of_the_whole_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(tmp.path());
    let t = trainer(tmp.path(), Kernels::Cpu, LossKind::InfoNce, 0);
    let group = PASSAGES.len() / QUERIES.len();
    let vars = t.encoder().vars();

    let whole = t.pass(&QUERIES, &PASSAGES, None).unwrap();
    let passages = embed(&t, tmp.path(), &PASSAGES, TextKind::Passage).detach();
    let frozen = t.pass_frozen(&QUERIES, &passages, None, None).unwrap();
    assert!(
        (frozen.loss - whole.loss).abs() <= 1e-5 * whole.loss.abs(),
        "the same batch, the same loss: {} vs {}",
        frozen.loss,
        whole.loss
    );
    let query_tokens = frozen.tokens;
    assert!(query_tokens < whole.tokens, "only the queries ran");

    // The passages' share: the same loss with the query embeddings fixed.
    let queries = embed(&t, tmp.path(), &QUERIES, TextKind::Query).detach();
    let passages = embed(&t, tmp.path(), &PASSAGES, TextKind::Passage);
    let loss = contrastive_loss(LossKind::InfoNce, &queries, &passages, group, 0.05).unwrap();
    let mut passage_side = Gradients::default();
    passage_side
        .accumulate(&vars, &loss.backward().unwrap(), 1.0)
        .unwrap();

    let (whole, frozen) = (whole.grads.unwrap(), frozen.grads.unwrap());
    let (mut difference, mut total) = (0f64, 0f64);
    let (mut query_share, mut passage_share) = (0f64, 0f64);
    for (name, var) in &vars {
        let Some(w) = whole.get(var) else { continue };
        let zero = || w.zeros_like().unwrap();
        let q = frozen.get(var).cloned().unwrap_or_else(zero);
        let p = passage_side.get(var).cloned().unwrap_or_else(zero);
        let d = squared(&(w - (&q + &p).unwrap()).unwrap());
        assert!(d.is_finite(), "{name}");
        difference += d;
        total += squared(w);
        query_share += squared(&q);
        passage_share += squared(&p);
    }
    let relative = (difference / total).sqrt();
    assert!(
        relative < 1e-4,
        "whole ≠ query share + passage share: {relative:e}"
    );
    // Both shares matter, so a frozen pass that also moved the passages,
    // or moved nothing, would break the sum above.
    let (q, p) = ((query_share / total).sqrt(), (passage_share / total).sqrt());
    assert!(q > 0.01 && p > 0.01, "query share {q}, passage share {p}");
}
