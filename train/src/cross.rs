//! Training a reranker: the cross-encoder over a `VarMap` (every weight a
//! variable), FlagEmbedding's reranker loss, and the trainer that runs it
//! through the same epochs, optimizer, schedule and clipping as the
//! embedder's ([`crate::trainer::run_epoch`]).
//!
//! Each query of a batch brings its group — the positive first, then
//! `group_size − 1` mined negatives — as (query, passage) pairs through the
//! tokenizer's pair template; the loss is the cross-entropy of each group's
//! logits with the positive as the target. A model without a head (an
//! embedder checkpoint such as all-MiniLM-L6-v2) gets a new one drawn from
//! the seed as transformers draws it: weights normal with σ =
//! `initializer_range`, biases zero; a head the weights hold is loaded.

use crate::data::Group;
use crate::error::{Error, Result};
use crate::optim::{AdamW, AdamWParams, Gradients};
use crate::trainer::{BatchPass, Learner, TrainSettings};
use candle_core::{DType, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use cpack_data::dataset::TextTable;
use cpack_encode::{ComputeDevice, TokenBatch};
use cpack_model::{BertModel, ClassifierHead, ClassifierLayout, Dropout, ModelDir, TextTokenizer};

pub struct TrainableCrossEncoder {
    varmap: VarMap,
    bert: BertModel,
    head: ClassifierHead,
    layout: ClassifierLayout,
    /// Head tensors the base weights lacked, drawn from the seed.
    drawn: Vec<String>,
    /// `hidden_dropout_prob`, `attention_probs_dropout_prob` from config.json.
    dropout: (f32, f32),
}

impl TrainableCrossEncoder {
    /// Loads every weight of `model` into f32 variables on `device`, and its
    /// classification head — or a new one drawn from `seed`.
    pub fn load(model: &ModelDir, device: ComputeDevice, seed: u64) -> Result<Self> {
        let bad = |e: candle_core::Error| Error::Checkpoint {
            path: model.weights.clone(),
            problem: format!("weights do not match config.json: {e}"),
        };
        let family = model.config.family().ok_or_else(|| Error::Checkpoint {
            path: model.dir.join("config.json"),
            problem: "not a BERT or XLM-RoBERTa model".into(),
        })?;
        let mut varmap = VarMap::new();
        let root = VarBuilder::from_varmap(&varmap, DType::F32, &device.candle()?);
        let prefix = &model.weight_prefix;
        let encoder_vb = if prefix.is_empty() {
            root.clone()
        } else {
            root.pp(prefix)
        };
        let bert = BertModel::load(encoder_vb, &model.config).map_err(bad)?;
        // Only the encoder's variables exist yet: all of them are in the file.
        varmap.load(&model.weights).map_err(bad)?;
        let layout = model
            .classifier
            .unwrap_or(ClassifierLayout::new_for(family));
        let hidden = model.config.hidden_size;
        let head = ClassifierHead::load(&root, &layout, prefix, hidden).map_err(bad)?;
        let drawn = fill_head(&mut varmap, model, &layout, seed).map_err(bad)?;
        Ok(TrainableCrossEncoder {
            varmap,
            bert,
            head,
            layout,
            drawn,
            dropout: (
                model.config.hidden_dropout_prob as f32,
                model.config.attention_probs_dropout_prob as f32,
            ),
        })
    }

    /// Trainable variables by tensor name, sorted (one fixed order for the
    /// optimizer and checkpoints).
    pub fn vars(&self) -> Vec<(String, Var)> {
        crate::model::sorted_vars(&self.varmap)
    }

    pub fn layout(&self) -> ClassifierLayout {
        self.layout
    }

    /// Head tensors drawn from the seed rather than loaded.
    pub fn drawn(&self) -> &[String] {
        &self.drawn
    }

    /// Dropout for one forward pass, as the model config sets it; `None` when disabled.
    pub fn dropout(&self, enabled: bool, seed: u64) -> Option<Dropout> {
        crate::model::config_dropout(self.dropout, enabled, seed)
    }

    /// The first label's logit of each pair of `batch`, `[rows]`, with gradients.
    pub fn logits(&self, batch: &TokenBatch, dropout: Option<&Dropout>) -> Result<Tensor> {
        let shape = (batch.batch, batch.seq_len);
        let device = self.bert.device();
        let ids = Tensor::from_slice(&batch.input_ids, shape, device)?;
        let types = Tensor::from_slice(&batch.token_type_ids, shape, device)?;
        let mask = Tensor::from_slice(&batch.attention_mask, shape, device)?;
        let hidden = self
            .bert
            .forward_train_segments(&ids, &types, &mask, dropout)?;
        let logits = self.head.forward_train(&hidden, dropout)?;
        Ok(logits.narrow(1, 0, 1)?.flatten_all()?)
    }
}

/// Sets each head tensor from the weights file when it holds it, else
/// draws it from `seed`; returns the names drawn.
fn fill_head(
    varmap: &mut VarMap,
    model: &ModelDir,
    layout: &ClassifierLayout,
    seed: u64,
) -> candle_core::Result<Vec<String>> {
    // SAFETY: read-only map of a weights file cpack does not modify.
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(&model.weights)? };
    let device = candle_core::Device::Cpu;
    let sigma = model.config.initializer_range;
    let mut drawn = Vec::new();
    for (layer, layer_name) in layout.layer_names(&model.weight_prefix).iter().enumerate() {
        for part in ["weight", "bias"] {
            let name = format!("{layer_name}.{part}");
            let shape = varmap.data().lock().expect("varmap lock")[&name]
                .dims()
                .to_vec();
            let value = match file.load(&name, &device) {
                Ok(tensor) => tensor.to_dtype(DType::F32)?,
                Err(_) => {
                    drawn.push(name.clone());
                    let count = shape.iter().product();
                    let values = match part {
                        "weight" => seeded_normal(count, sigma, seed ^ (layer as u64 + 1)),
                        _ => vec![0f32; count],
                    };
                    Tensor::from_vec(values, shape, &device)?
                }
            };
            varmap.set_one(&name, value)?;
        }
    }
    Ok(drawn)
}

/// `count` draws of N(0, σ²), a pure function of `seed` (SplitMix64
/// uniforms through Box–Muller): the same head on every machine.
fn seeded_normal(count: usize, sigma: f64, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 bits in (0, 1]: never 0, so its logarithm is finite.
        ((z >> 11) + 1) as f64 / (1u64 << 53) as f64
    };
    (0..count)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            let normal = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            (normal * sigma) as f32
        })
        .collect()
}

/// FlagEmbedding's reranker loss: each group's logits (`group` consecutive
/// entries, the positive first) through a softmax, the positive's negative
/// log-likelihood, averaged over the groups.
pub fn group_loss(logits: &Tensor, group: usize) -> Result<Tensor> {
    let rows = logits.dim(0)? / group.max(1);
    let grouped = logits.reshape((rows, group))?;
    let log_probs = candle_nn::ops::log_softmax(&grouped, D::Minus1)?;
    Ok(log_probs.narrow(1, 0, 1)?.mean_all()?.neg()?)
}

/// The reranker under training: its model, optimizer and pair tokenizer.
pub struct CrossTrainer {
    model: TrainableCrossEncoder,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    tokenizer: TextTokenizer,
    settings: TrainSettings,
}

impl CrossTrainer {
    /// `tokenizer` cuts each pair to the training length (longest side first).
    pub fn new(
        model: TrainableCrossEncoder,
        tokenizer: TextTokenizer,
        settings: TrainSettings,
    ) -> Result<Self> {
        settings.validate()?;
        let vars = model.vars();
        let adamw = AdamWParams {
            weight_decay: settings.weight_decay,
            ..Default::default()
        };
        Ok(CrossTrainer {
            optimizer: AdamW::new(vars.clone(), adamw)?,
            vars,
            model,
            tokenizer,
            settings,
        })
    }

    pub fn model(&self) -> &TrainableCrossEncoder {
        &self.model
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// Continues from a checkpoint's optimizer state.
    pub fn restore(
        &mut self,
        moments: std::collections::HashMap<String, Tensor>,
        steps: u64,
    ) -> std::result::Result<(), crate::error::StateError> {
        self.optimizer.restore(moments, steps)
    }

    /// Loss and gradients of `pairs` (groups of `group` consecutive pairs,
    /// the positive first). With `mini_batch` pairs set, whole groups go
    /// through the model a few at a time, each chunk's loss weighted by its
    /// share of the groups: the loss is a mean of per-group terms, so the
    /// summed gradients are the whole batch's.
    pub fn pass(
        &self,
        pairs: &[(&str, &str)],
        group: usize,
        dropout: Option<&Dropout>,
    ) -> Result<BatchPass> {
        let tokens = self.tokenizer.encode_pairs(pairs)?;
        let groups = tokens.len() / group.max(1);
        let per_chunk = match self.settings.mini_batch {
            0 => groups,
            mini => (mini / group).max(1),
        };
        let mut loss = 0f32;
        let mut grads = Gradients::default();
        for (c, chunk) in tokens.chunks(per_chunk * group).enumerate() {
            let pairs: Vec<(&[u32], &[u32])> = chunk
                .iter()
                .map(|(i, t)| (i.as_slice(), t.as_slice()))
                .collect();
            let masks = dropout.map(|d| d.fork(c as u64));
            let logits = self
                .model
                .logits(&TokenBatch::pad_pairs(&pairs), masks.as_ref())?;
            let share = (chunk.len() / group) as f64 / groups as f64;
            let chunk_loss = (group_loss(&logits, group)? * share)?;
            let value = chunk_loss.to_scalar::<f32>()?;
            loss += value;
            if !value.is_finite() {
                return Ok(BatchPass::failed(loss));
            }
            grads.accumulate(&self.vars, &chunk_loss.backward()?, 1.0)?;
        }
        Ok(BatchPass {
            loss,
            grads: Some(grads),
            tokens: tokens.iter().map(|(i, _)| i.len()).sum(),
            scores: Vec::new(),
        })
    }
}

impl Learner for CrossTrainer {
    fn settings(&self) -> &TrainSettings {
        &self.settings
    }

    fn steps(&self) -> u64 {
        self.optimizer.steps()
    }

    fn dropout(&self, seed: u64) -> Option<Dropout> {
        self.model.dropout(self.settings.dropout, seed)
    }

    fn batch_pass(
        &self,
        batch: &[Group],
        (corpus, queries): (&TextTable, &TextTable),
        dropout: Option<&Dropout>,
    ) -> Result<BatchPass> {
        let passages: Vec<Vec<String>> = batch
            .iter()
            .map(|g| {
                g.passages
                    .iter()
                    .map(|&row| corpus.full_text(row))
                    .collect()
            })
            .collect();
        let pairs: Vec<(&str, &str)> = batch
            .iter()
            .zip(&passages)
            .flat_map(|(g, list)| {
                let query = queries.texts[g.query_row].as_str();
                list.iter().map(move |p| (query, p.as_str()))
            })
            .collect();
        self.pass(&pairs, batch[0].passages.len(), dropout)
    }

    fn apply(&mut self, grads: Gradients, lr: f64) -> Result<f64> {
        crate::trainer::clip_and_step(&mut self.optimizer, grads, self.settings.max_grad_norm, lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpack_encode::{CrossEncoder, RerankSettings};

    fn tiny(dir: &std::path::Path) -> ModelDir {
        let texts = [
            "term life insurance pays",
            "renters insurance covers",
            "an annuity pays income",
        ];
        cpack_model::test_model::write_tiny_model(dir, &texts, 5).unwrap();
        ModelDir::open(dir).unwrap()
    }

    fn settings(mini_batch: usize) -> TrainSettings {
        TrainSettings {
            lr: 1e-3,
            warmup_ratio: 0.0,
            dropout: false,
            mini_batch,
            ..TrainSettings::default()
        }
    }

    const PAIRS: [(&str, &str); 6] = [
        ("term life", "term life insurance pays"),
        ("term life", "renters insurance covers"),
        ("term life", "an annuity pays income"),
        ("renters", "renters insurance covers"),
        ("renters", "an annuity pays income"),
        ("renters", "term life insurance pays"),
    ];

    #[test]
    fn the_group_loss_is_the_positives_negative_log_likelihood() {
        let logits =
            Tensor::new(&[2f32, 0., 1., 0.5, 0.5, -1.], &candle_core::Device::Cpu).unwrap();
        let loss = group_loss(&logits, 3).unwrap().to_scalar::<f32>().unwrap();
        let nll = |l: [f32; 3]| -(l[0].exp() / l.iter().map(|x| x.exp()).sum::<f32>()).ln();
        let want = (nll([2., 0., 1.]) + nll([0.5, 0.5, -1.])) / 2.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
    }

    #[test]
    fn a_new_head_is_drawn_from_the_seed_and_a_held_one_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny(dir.path());
        let load = |seed| TrainableCrossEncoder::load(&model, ComputeDevice::Cpu, seed).unwrap();
        let (a, b, c) = (load(1), load(1), load(2));
        assert_eq!(
            a.drawn().len(),
            4,
            "pooler and classifier, weights and biases"
        );
        let values = |m: &TrainableCrossEncoder| -> Vec<f32> {
            let vars = m.vars();
            let (_, var) = vars.iter().find(|(n, _)| n == "classifier.weight").unwrap();
            var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(values(&a), values(&b));
        assert_ne!(values(&a), values(&c));
        let sd = (values(&a).iter().map(|v| v * v).sum::<f32>() / values(&a).len() as f32).sqrt();
        assert!(
            (0.005..0.05).contains(&sd),
            "σ near initializer_range 0.02: {sd}"
        );

        // A cross-encoder's own head is loaded, and the training forward
        // scores what inference scores.
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rerank/bert");
        let model = ModelDir::open(&fixture).unwrap();
        let trainable = TrainableCrossEncoder::load(&model, ComputeDevice::Cpu, 1).unwrap();
        assert!(trainable.drawn().is_empty());
        let tokenizer = TextTokenizer::load(&model.tokenizer, 24).unwrap();
        let pairs = [(
            "what does term life insurance cover",
            "a deductible is what you pay",
        )];
        let tokens = tokenizer.encode_pairs(&pairs).unwrap();
        let batch = TokenBatch::pad_pairs(&[(&tokens[0].0, &tokens[0].1)]);
        let trained: Vec<f32> = trainable.logits(&batch, None).unwrap().to_vec1().unwrap();
        let settings = RerankSettings {
            max_len: 24,
            batch_size: 8,
            batch_tokens: 0,
        };
        let inference = CrossEncoder::load(&model, settings, ComputeDevice::Cpu, 1).unwrap();
        let scored = inference.score(&pairs, &mut |_, _| {}).unwrap();
        assert!(
            (trained[0] - scored[0]).abs() < 1e-5,
            "{trained:?} vs {scored:?}"
        );
    }

    fn trainer(model: &ModelDir, mini_batch: usize) -> CrossTrainer {
        let cross = TrainableCrossEncoder::load(model, ComputeDevice::Cpu, 3).unwrap();
        let tokenizer = TextTokenizer::load(&model.tokenizer, 16).unwrap();
        CrossTrainer::new(cross, tokenizer, settings(mini_batch)).unwrap()
    }

    #[test]
    fn mini_batches_give_the_whole_batchs_loss_and_gradients() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny(dir.path());
        let (whole, chunked) = (trainer(&model, 0), trainer(&model, 3));
        let a = whole.pass(&PAIRS, 3, None).unwrap();
        let b = chunked.pass(&PAIRS, 3, None).unwrap();
        assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
        let (ga, gb) = (a.grads.unwrap(), b.grads.unwrap());
        for ((name, va), (_, vb)) in whole.vars.iter().zip(&chunked.vars) {
            let x: Vec<f32> = ga
                .get(va)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let y: Vec<f32> = gb
                .get(vb)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let worst = x
                .iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{name}: {worst}");
        }
    }

    #[test]
    fn steps_raise_the_positives_above_their_negatives() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny(dir.path());
        let mut trainer = trainer(&model, 0);
        let first = trainer.pass(&PAIRS, 3, None).unwrap().loss;
        for _ in 0..40 {
            let pass = trainer.pass(&PAIRS, 3, None).unwrap();
            trainer.apply(pass.grads.unwrap(), 3e-3).unwrap();
        }
        let last = trainer.pass(&PAIRS, 3, None).unwrap().loss;
        assert!(last < 0.3 * first, "loss {first} → {last}");
    }
}
