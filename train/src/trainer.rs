//! One training step and one epoch: tokenise a batch, embed queries and
//! passages with gradients, contrastive loss, backward, clip, AdamW.

use crate::data::{Batching, Group, TrainingSet};
use crate::error::StateError;
use crate::error::{Error, Result};
use crate::frozen::FrozenPassages;
use crate::loss::{contrastive_loss, distill_loss, DistillKind, GroupScores, LossKind};
use crate::model::TrainableEncoder;
use crate::optim::{AdamW, AdamWParams, Gradients, Schedule};
use crate::precision::TrainPrecision;
use crate::steps::{BatchRecord, StepRecord};
use candle_core::{Tensor, Var};
use cpack_core::Progress;
use cpack_core::{require, InvalidSetting};
use cpack_data::dataset::TextTable;
use cpack_encode::{PairTokenizer, TextKind, TokenBatch};
use cpack_model::Dropout;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// The recipe of the trainer: everything that decides how the weights move.
/// One type for `cpack train`'s flags (feature `clap`), the `[train]` keys
/// of `cpack.toml`, and the `train` field of a run's `run.json`; its
/// [`Default`] is the one source of each default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct TrainSettings {
    /// Queries per batch; every passage of the batch is a negative for the other queries.
    #[cfg_attr(feature = "clap", arg(long = "train-batch-size", value_name = "N", default_value_t = TrainSettings::default().batch_size))]
    pub batch_size: usize,
    /// Passages per query: 1 positive + N−1 hard negatives; 1 = in-batch negatives only.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainSettings::default().group_size))]
    pub group_size: usize,
    /// Softmax temperature: 0.02 as BGE; MiniLM-style models do better around 0.05.
    #[cfg_attr(feature = "clap", arg(long, value_name = "T", default_value_t = TrainSettings::default().temperature))]
    pub temperature: f64,
    /// infonce, or gte (adds query–query and passage–passage terms to the partition function).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = TrainSettings::default().loss))]
    pub loss: LossKind,
    /// Peak learning rate of AdamW.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainSettings::default().lr))]
    pub lr: f64,
    /// Decoupled weight decay (biases and LayerNorm excluded).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainSettings::default().weight_decay))]
    pub weight_decay: f64,
    /// Share of the steps spent warming the learning rate up linearly; then it decays linearly to 0.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainSettings::default().warmup_ratio))]
    pub warmup_ratio: f64,
    /// Batches whose gradients are summed into one optimizer step.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainSettings::default().grad_accum))]
    pub grad_accum: usize,
    /// Clip the global gradient norm to this; 0 disables.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainSettings::default().max_grad_norm))]
    pub max_grad_norm: f64,
    /// Dropout as the model config sets it; `--no-dropout` turns it off
    /// (deterministic forward passes).
    #[cfg_attr(feature = "clap", arg(long = "no-dropout", action = clap::ArgAction::SetFalse))]
    pub dropout: bool,
    /// Seed of the training draws (order, positives, negatives, dropout); the
    /// query subset and the mining keep the workspace's seed [default: cpack.toml's seed].
    #[cfg_attr(feature = "clap", arg(long, hide_default_value = true, default_value_t = TrainSettings::default().seed))]
    pub seed: u64,
    /// Gradient caching: run the model on N texts at a time, so the memory of
    /// a step no longer grows with the batch; the same gradients as the whole
    /// batch, at the cost of a second forward pass (0 = off).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainSettings::default().mini_batch))]
    pub mini_batch: usize,
    /// How batches are formed: clash-free (no passage that is one query's
    /// positive anywhere else in its batch), plain (shuffled order, as
    /// FlagEmbedding), or clustered (queries of one topic cluster together).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = TrainSettings::default().batching))]
    pub batching: Batching,
    /// Query-side training (ADORE): passages keep the base model's vectors
    /// from the workspace index, only the queries
    /// run through the model. Steps skip the passages' passes and a refresh
    /// is a query encode and a search: the index is never re-encoded.
    /// Checkpoints are then query encoders, to pair with the base model's index.
    #[cfg_attr(feature = "clap", arg(long))]
    pub freeze_passages: bool,
    /// Dynamic negatives (after Conan-embedding): a drawn negative that the
    /// model, in the step's own forward pass, scores more than MARGIN below
    /// the query's positive is not drawn again while the query has others in
    /// its stored pool; later epochs move on to the rest
    /// of the pool with no corpus re-encode. Rounds then store 4 × (group
    /// size − 1) negatives unless --negatives says otherwise.
    #[cfg_attr(feature = "clap", arg(long, value_name = "MARGIN"))]
    pub replace_easy: Option<f32>,
    /// Distil the teacher's scores stored in the rounds (mined with
    /// --teacher) into the embedder, added to InfoNCE: kl (KL divergence
    /// from the teacher's softmax over each query's group to the
    /// student's, FlagEmbedding's kl_div) or margin-mse (the positive's
    /// margin over each negative, sentence-transformers' MarginMSE).
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "KIND"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillKind>,
    /// Weight of the distillation term beside InfoNCE.
    #[cfg_attr(feature = "clap", arg(long, value_name = "W", default_value_t = TrainSettings::default().distill_weight))]
    #[serde(skip_serializing_if = "is_one")]
    pub distill_weight: f64,
    /// The teacher's scores are divided by this before its softmax (kl) or
    /// its margins (margin-mse); the student's are its InfoNCE logits
    /// (similarity / --temperature).
    #[cfg_attr(feature = "clap", arg(long, value_name = "T", default_value_t = TrainSettings::default().distill_temperature))]
    #[serde(skip_serializing_if = "is_one")]
    pub distill_temperature: f64,
    /// Precision of the forward and backward matrix products: f32, or bf16
    /// operands with f32 sums (PyTorch's CPU autocast recipe; faster on CPUs
    /// with AMX or AVX-512 BF16). Weights, optimizer state and loss stay f32.
    #[cfg_attr(feature = "clap", arg(long = "train-precision", value_enum, value_name = "PRECISION", default_value_t = TrainSettings::default().precision))]
    #[serde(skip_serializing_if = "TrainPrecision::is_f32")]
    pub precision: TrainPrecision,
}

/// The distillation settings' default: left out of `run.json` (whose
/// layout then stays what runs without distillation always wrote).
fn is_one(value: &f64) -> bool {
    *value == 1.0
}

impl Default for TrainSettings {
    /// FlagEmbedding's recipe for BGE (batch 32 × group 8, τ 0.02, lr 2e-5,
    /// 10 % warm-up), dropout on, no gradient caching.
    fn default() -> Self {
        TrainSettings {
            batch_size: 32,
            group_size: 8,
            temperature: 0.02,
            loss: LossKind::InfoNce,
            lr: 2e-5,
            weight_decay: 0.01,
            warmup_ratio: 0.1,
            grad_accum: 1,
            max_grad_norm: 1.0,
            dropout: true,
            seed: cpack_core::DEFAULT_SEED,
            mini_batch: 0,
            batching: Batching::ClashFree,
            freeze_passages: false,
            replace_easy: None,
            distill: None,
            distill_weight: 1.0,
            distill_temperature: 1.0,
            precision: TrainPrecision::F32,
        }
    }
}

impl TrainSettings {
    /// Refuses values no step can run with.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for (key, value) in [
            ("batch_size", self.batch_size),
            ("group_size", self.group_size),
            ("grad_accum", self.grad_accum),
        ] {
            require(value >= 1, key, value, "must be at least 1")?;
        }
        let positive = |v: f64| v > 0.0 && v.is_finite();
        let (t, lr) = (self.temperature, self.lr);
        require(positive(t), "temperature", t, "must be a positive number")?;
        require(positive(lr), "lr", lr, "must be a positive number")?;
        let (w, dt) = (self.distill_weight, self.distill_temperature);
        require(
            w >= 0.0 && w.is_finite(),
            "distill_weight",
            w,
            "must be a number ≥ 0",
        )?;
        require(
            positive(dt),
            "distill_temperature",
            dt,
            "must be a positive number",
        )?;
        if let Some(kind) = self.distill {
            let problem = "needs hard negatives to distil over: set group_size to 2 or more";
            require(self.group_size > 1, "distill", kind, problem)?;
        }
        if let Some(margin) = self.replace_easy {
            let usable = margin.is_finite() && margin >= 0.0;
            require(
                usable,
                "replace_easy",
                margin,
                "must be a margin of 0 or more",
            )?;
        }
        let at_least_zero = |v: f64| v >= 0.0 && v.is_finite();
        let decay = self.weight_decay;
        require(
            at_least_zero(decay),
            "weight_decay",
            decay,
            "must be a number ≥ 0",
        )?;
        let norm = self.max_grad_norm;
        require(
            at_least_zero(norm),
            "max_grad_norm",
            norm,
            "must be a number ≥ 0 (0 turns clipping off)",
        )?;
        let w = self.warmup_ratio;
        require(
            (0.0..1.0).contains(&w),
            "warmup_ratio",
            w,
            "must be in [0, 1)",
        )
    }

    /// Negatives a round stores per query for this recipe when the mining
    /// recipe names none (see [`crate::data::default_negatives`]).
    pub fn default_negatives(&self) -> usize {
        crate::data::default_negatives(self.group_size, self.replace_easy.is_some())
    }
}

/// How one epoch went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub mean_loss: f64,
    pub batches: usize,
    pub optimizer_steps: u64,
    pub tokens: u64,
    pub seconds: f64,
    /// Negatives retired during the epoch (`replace_easy`).
    #[serde(default)]
    pub retired: usize,
}

pub struct Trainer {
    encoder: TrainableEncoder,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    tokenizer: PairTokenizer,
    settings: TrainSettings,
    /// The passage vectors of query-side training (`freeze_passages`).
    frozen: Option<FrozenPassages>,
}

/// Loss, gradients (`None` when the loss is not finite) and group scores of one pass.
type PassOutcome = (f32, Option<Gradients>, Vec<Vec<f32>>);

/// Loss, gradients and the real tokens of one batch.
pub struct BatchPass {
    pub loss: f32,
    /// `None` when the loss is not finite (no backward is run).
    pub grads: Option<Gradients>,
    pub tokens: usize,
    /// With `replace_easy`: each query's scores for its own group, the
    /// positive's first (empty otherwise).
    pub scores: Vec<Vec<f32>>,
}

impl BatchPass {
    /// A pass whose loss is not finite: no gradients.
    pub fn failed(loss: f32) -> Self {
        BatchPass {
            loss,
            grads: None,
            tokens: 0,
            scores: Vec::new(),
        }
    }
}

/// What an epoch asks of a model under training, the embedder's
/// ([`Trainer`]) or a reranker's ([`crate::cross::CrossTrainer`]).
pub trait Learner {
    fn settings(&self) -> &TrainSettings;
    /// Optimizer steps taken so far.
    fn steps(&self) -> u64;
    /// Dropout for one forward pass, or `None` when the recipe turns it off.
    fn dropout(&self, seed: u64) -> Option<Dropout>;
    /// Forward and backward over one batch of groups.
    fn batch_pass(
        &self,
        batch: &[Group],
        texts: (&TextTable, &TextTable),
        dropout: Option<&Dropout>,
    ) -> Result<BatchPass>;
    /// Clips the summed gradients and takes one step at `lr`; returns the norm before clipping.
    fn apply(&mut self, grads: Gradients, lr: f64) -> Result<f64>;
}

/// Clips `grads` to `max_norm` (0: no clipping) and takes one AdamW step at
/// `lr`; returns the norm before clipping.
pub(crate) fn clip_and_step(
    optimizer: &mut AdamW,
    mut grads: Gradients,
    max_norm: f64,
    lr: f64,
) -> Result<f64> {
    let norm = if max_norm > 0.0 {
        grads.clip(max_norm)?
    } else {
        grads.norm()?
    };
    optimizer.step(&grads, lr)?;
    Ok(norm)
}

impl Trainer {
    pub fn new(
        encoder: TrainableEncoder,
        tokenizer: PairTokenizer,
        settings: TrainSettings,
    ) -> Result<Self> {
        settings.validate()?;
        let products = settings.precision.products_on(encoder.compute_device())?;
        let encoder = encoder.with_products(products);
        let vars = encoder.vars();
        let adamw = AdamWParams {
            weight_decay: settings.weight_decay,
            ..Default::default()
        };
        Ok(Trainer {
            optimizer: AdamW::new(vars.clone(), adamw)?,
            vars,
            encoder,
            tokenizer,
            settings,
            frozen: None,
        })
    }

    /// Trains the query side only, against these fixed passage vectors
    /// (what `freeze_passages` asks for).
    pub fn with_frozen_passages(mut self, frozen: FrozenPassages) -> Result<Self> {
        if frozen.dim() != self.encoder.dim() {
            return Err(Error::FrozenDimension {
                frozen: frozen.dim(),
                model: self.encoder.dim(),
            });
        }
        self.frozen = Some(frozen);
        Ok(self)
    }

    pub fn encoder(&self) -> &TrainableEncoder {
        &self.encoder
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    pub fn settings(&self) -> &TrainSettings {
        &self.settings
    }

    /// Continues from a checkpoint's optimizer state.
    pub fn restore(
        &mut self,
        moments: HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<(), StateError> {
        self.optimizer.restore(moments, steps)
    }

    /// Optimizer steps one epoch of `batches` batches takes.
    pub fn steps_per_epoch(&self, batches: usize) -> u64 {
        batches.div_ceil(self.settings.grad_accum) as u64
    }

    /// Forward and backward over one batch: `queries[i]`'s positive is
    /// `passages[i · group_size]`.
    ///
    /// With `mini_batch` set (and smaller than a side of the batch), the
    /// gradients are cached (Gao et al.'s GradCache, as sentence-transformers'
    /// Cached losses): every embedding is first computed without keeping its
    /// graph, the loss and its gradients with respect to the embeddings come
    /// from those, then each mini-batch is run again with its graph and
    /// back-propagated with its slice of those gradients. The weights get the
    /// whole batch's gradients while only one mini-batch's activations are
    /// alive at a time. Each mini-batch draws its own dropout masks, the same
    /// in both of its passes.
    pub fn pass(
        &self,
        queries: &[&str],
        passages: &[&str],
        dropout: Option<&Dropout>,
    ) -> Result<BatchPass> {
        self.pass_with(queries, passages, None, dropout)
    }

    /// [`Trainer::pass`] with a teacher's scores of the groups, which the
    /// loss distils when the recipe asks for it (`distill`).
    pub fn pass_with(
        &self,
        queries: &[&str],
        passages: &[&str],
        teacher: Option<&GroupScores>,
        dropout: Option<&Dropout>,
    ) -> Result<BatchPass> {
        let group_size = passages.len() / queries.len().max(1);
        let q_tokens = self.tokenizer.tokenize(queries, TextKind::Query)?;
        let p_tokens = self.tokenizer.tokenize(passages, TextKind::Passage)?;
        let tokens = real_tokens(&q_tokens) + real_tokens(&p_tokens);
        let mini = self.settings.mini_batch;
        let cached = mini > 0 && (mini < q_tokens.len() || mini < p_tokens.len());
        let (loss, grads, scores) = if cached {
            self.cached_pass(&q_tokens, &p_tokens, group_size, teacher, dropout)?
        } else {
            self.whole_pass(&q_tokens, &p_tokens, group_size, teacher, dropout)?
        };
        Ok(BatchPass {
            loss,
            grads,
            tokens,
            scores,
        })
    }

    /// [`Trainer::pass`] against fixed passage vectors `[passages, dim]`:
    /// only the queries run through the model (with their graph); the
    /// gradient reaches the weights through them alone.
    pub fn pass_frozen(
        &self,
        queries: &[&str],
        passages: &Tensor,
        teacher: Option<&GroupScores>,
        dropout: Option<&Dropout>,
    ) -> Result<BatchPass> {
        let group_size = passages.dim(0)? / queries.len().max(1);
        let q_tokens = self.tokenizer.tokenize(queries, TextKind::Query)?;
        let q = self.encoder.embed(&pad(&q_tokens), dropout)?;
        let loss = self.loss(&q, passages, group_size, teacher)?;
        let value = loss.to_scalar::<f32>()?;
        let grads = if value.is_finite() {
            let mut grads = Gradients::default();
            grads.accumulate(&self.vars, &loss.backward()?, 1.0)?;
            Some(grads)
        } else {
            None
        };
        Ok(BatchPass {
            loss: value,
            grads,
            tokens: real_tokens(&q_tokens),
            scores: self.scores_if_asked(&q, passages, group_size)?,
        })
    }

    /// One batch of the epoch: both sides through the model, or the queries
    /// against the frozen passage vectors.
    fn batch_pass(
        &self,
        batch: &[Group],
        texts: (&TextTable, &TextTable),
        dropout: Option<&Dropout>,
    ) -> Result<BatchPass> {
        let (corpus, queries) = texts;
        let query_texts: Vec<&str> = batch
            .iter()
            .map(|g| queries.texts[g.query_row].as_str())
            .collect();
        let rows = batch.iter().flat_map(|g| g.passages.iter().copied());
        let teacher = self.settings.distill.map(|_| GroupScores {
            scores: (batch.iter().flat_map(|g| &g.teacher))
                .map(|s| s.unwrap_or(f32::NAN))
                .collect(),
            group_size: self.settings.group_size,
        });
        let teacher = teacher.as_ref();
        match &self.frozen {
            Some(frozen) => {
                let passages = frozen.gather(&rows.collect::<Vec<_>>(), self.encoder.device())?;
                self.pass_frozen(&query_texts, &passages, teacher, dropout)
            }
            None => {
                let passage_texts: Vec<String> = rows.map(|row| corpus.full_text(row)).collect();
                let p: Vec<&str> = passage_texts.iter().map(String::as_str).collect();
                self.pass_with(&query_texts, &p, teacher, dropout)
            }
        }
    }

    /// Each query's scores for its own group (positive first), when
    /// `replace_easy` needs them.
    fn scores_if_asked(&self, q: &Tensor, p: &Tensor, group_size: usize) -> Result<Vec<Vec<f32>>> {
        if self.settings.replace_easy.is_none() {
            return Ok(Vec::new());
        }
        let (batch, dim) = q.dims2()?;
        let groups = p.detach().reshape((batch, group_size, dim))?;
        let queries = q.detach().unsqueeze(2)?.contiguous()?;
        Ok(groups.matmul(&queries)?.squeeze(2)?.to_vec2::<f32>()?)
    }

    /// The contrastive loss, plus the weighted distillation term when the
    /// recipe distils and the batch has teacher scores.
    fn loss(
        &self,
        q: &Tensor,
        p: &Tensor,
        group_size: usize,
        teacher: Option<&GroupScores>,
    ) -> Result<Tensor> {
        let s = &self.settings;
        let contrastive = contrastive_loss(s.loss, q, p, group_size, s.temperature)?;
        let (Some(kind), Some(teacher)) = (s.distill, teacher) else {
            return Ok(contrastive);
        };
        let distill = distill_loss(kind, q, p, teacher, s.temperature, s.distill_temperature)?;
        Ok((contrastive + (distill * s.distill_weight)?)?)
    }

    /// Each side of the batch as one forward pass with its graph.
    fn whole_pass(
        &self,
        q_tokens: &[Vec<u32>],
        p_tokens: &[Vec<u32>],
        group_size: usize,
        teacher: Option<&GroupScores>,
        dropout: Option<&Dropout>,
    ) -> Result<PassOutcome> {
        let q = self.encoder.embed(&pad(q_tokens), dropout)?;
        let p = self.encoder.embed(&pad(p_tokens), dropout)?;
        let loss = self.loss(&q, &p, group_size, teacher)?;
        let value = loss.to_scalar::<f32>()?;
        let scores = self.scores_if_asked(&q, &p, group_size)?;
        if !value.is_finite() {
            return Ok((value, None, scores));
        }
        let mut grads = Gradients::default();
        grads.accumulate(&self.vars, &loss.backward()?, 1.0)?;
        Ok((value, Some(grads), scores))
    }

    /// [`Trainer::pass`] with cached gradients, `mini_batch` texts at a time.
    fn cached_pass(
        &self,
        q_tokens: &[Vec<u32>],
        p_tokens: &[Vec<u32>],
        group_size: usize,
        teacher: Option<&GroupScores>,
        dropout: Option<&Dropout>,
    ) -> Result<PassOutcome> {
        let mini = self.settings.mini_batch;
        let sides = [q_tokens, p_tokens];
        // Mini-batch `c` of side `s` always draws the masks of fork 2c + s.
        let masks = |side: usize, chunk: usize| dropout.map(|d| d.fork((2 * chunk + side) as u64));
        let mut leaves = Vec::with_capacity(2);
        for (side, tokens) in sides.iter().enumerate() {
            let parts = tokens
                .chunks(mini)
                .enumerate()
                .map(|(c, chunk)| {
                    let embedded = self.encoder.embed(&pad(chunk), masks(side, c).as_ref())?;
                    Ok(embedded.detach())
                })
                .collect::<Result<Vec<_>>>()?;
            leaves.push(Var::from_tensor(&Tensor::cat(&parts, 0)?)?);
        }
        let (q, p) = (leaves[0].as_tensor(), leaves[1].as_tensor());
        let loss = self.loss(q, p, group_size, teacher)?;
        let value = loss.to_scalar::<f32>()?;
        let scores =
            self.scores_if_asked(leaves[0].as_tensor(), leaves[1].as_tensor(), group_size)?;
        if !value.is_finite() {
            return Ok((value, None, scores));
        }
        let embedding_grads = loss.backward()?;
        let mut grads = Gradients::default();
        for (side, tokens) in sides.iter().enumerate() {
            let upstream = embedding_grads
                .get(leaves[side].as_tensor())
                .ok_or(Error::DetachedLoss)?;
            for (c, chunk) in tokens.chunks(mini).enumerate() {
                let embedded = self.encoder.embed(&pad(chunk), masks(side, c).as_ref())?;
                let slice = upstream.narrow(0, c * mini, chunk.len())?;
                let surrogate = (embedded * slice)?.sum_all()?;
                grads.accumulate(&self.vars, &surrogate.backward()?, 1.0)?;
            }
        }
        Ok((value, Some(grads), scores))
    }

    /// Clips the summed gradients and takes one AdamW step at `lr`; returns the norm before clipping.
    pub fn apply(&mut self, grads: Gradients, lr: f64) -> Result<f64> {
        clip_and_step(&mut self.optimizer, grads, self.settings.max_grad_norm, lr)
    }

    /// Trains one epoch (1-based) on `set`'s batches for it, at the rates
    /// `schedule` gives this epoch's steps; `on_step` gets each step's record.
    pub fn train_epoch(
        &mut self,
        set: &mut TrainingSet,
        texts: (&TextTable, &TextTable),
        epoch: usize,
        schedule: &Schedule,
        progress: &dyn Progress,
        on_step: &mut dyn FnMut(StepRecord) -> Result<()>,
    ) -> Result<EpochStats> {
        run_epoch(self, set, texts, epoch, schedule, progress, on_step)
    }
}

impl Learner for Trainer {
    fn settings(&self) -> &TrainSettings {
        &self.settings
    }

    fn steps(&self) -> u64 {
        self.optimizer.steps()
    }

    fn dropout(&self, seed: u64) -> Option<Dropout> {
        self.encoder.dropout(self.settings.dropout, seed)
    }

    fn batch_pass(
        &self,
        batch: &[Group],
        texts: (&TextTable, &TextTable),
        dropout: Option<&Dropout>,
    ) -> Result<BatchPass> {
        Trainer::batch_pass(self, batch, texts, dropout)
    }

    fn apply(&mut self, grads: Gradients, lr: f64) -> Result<f64> {
        Trainer::apply(self, grads, lr)
    }
}

/// Trains `learner` one epoch (1-based) on `set`'s batches for it, at the
/// rates `schedule` gives this epoch's steps; `on_step` gets each step's record.
pub fn run_epoch(
    learner: &mut dyn Learner,
    set: &mut TrainingSet,
    texts: (&TextTable, &TextTable),
    epoch: usize,
    schedule: &Schedule,
    progress: &dyn Progress,
    on_step: &mut dyn FnMut(StepRecord) -> Result<()>,
) -> Result<EpochStats> {
    let corpus = texts.0;
    let s = learner.settings().clone();
    let batches = set.epoch_batches(s.group_size, s.batch_size, s.batching, s.seed, epoch);
    let epoch_steps = batches.len().div_ceil(s.grad_accum) as u64;
    let started = Instant::now();
    let mut stats = EpochStats::default();
    let mut loss_sum = 0f64;
    let mut pending = Gradients::default();
    let mut pending_batches = Vec::new();
    progress.stage(&format!("training epoch {epoch}"), batches.len() as u64);
    for (b, batch) in batches.iter().enumerate() {
        let step = learner.steps();
        let dropout = learner.dropout(s.seed ^ (step << 20) ^ b as u64);
        let pass = learner.batch_pass(batch, texts, dropout.as_ref())?;
        let Some(grads) = pass.grads else {
            return Err(Error::NonFiniteLoss {
                value: pass.loss,
                epoch,
                batch: b + 1,
                step,
                queries: batch
                    .iter()
                    .map(|g| set.examples[g.example].query_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if let Some(margin) = s.replace_easy {
            stats.retired += retire_easy(set, batch, &pass.scores, margin);
        }
        pending.merge(grads, 1.0 / s.grad_accum as f64)?;
        pending_batches.push(batch_record(set, corpus, batch, pass.loss));
        loss_sum += pass.loss as f64;
        stats.tokens += pass.tokens as u64;
        if pending_batches.len() == s.grad_accum || b + 1 == batches.len() {
            let lr = schedule.lr(epoch, stats.optimizer_steps, epoch_steps);
            let grad_norm = learner.apply(std::mem::take(&mut pending), lr)?;
            stats.optimizer_steps += 1;
            on_step(StepRecord {
                epoch,
                step: learner.steps(),
                lr,
                grad_norm,
                batches: std::mem::take(&mut pending_batches),
            })?;
        }
        progress.advance(1, pass.tokens as u64);
        progress.detail(&format!("loss {:.4}", loss_sum / (b + 1) as f64));
    }
    stats.batches = batches.len();
    stats.mean_loss = loss_sum / batches.len().max(1) as f64;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Retires every negative of `batch` scored more than `margin` below its
/// query's positive; returns how many.
fn retire_easy(set: &mut TrainingSet, batch: &[Group], scores: &[Vec<f32>], margin: f32) -> usize {
    let mut retired = 0;
    for (group, scores) in batch.iter().zip(scores) {
        for (&row, &score) in group.passages.iter().zip(scores).skip(1) {
            if scores[0] - score > margin && set.retire(group.example, row) {
                retired += 1;
            }
        }
    }
    retired
}

/// Token ids padded into one batch.
fn pad(tokens: &[Vec<u32>]) -> TokenBatch {
    TokenBatch::pad(&tokens.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

fn real_tokens(tokens: &[Vec<u32>]) -> usize {
    tokens.iter().map(Vec::len).sum()
}

/// What a batch trained on, by id, for the step log.
fn batch_record(set: &TrainingSet, corpus: &TextTable, batch: &[Group], loss: f32) -> BatchRecord {
    BatchRecord {
        queries: batch
            .iter()
            .map(|g| set.examples[g.example].query_id.clone())
            .collect(),
        passages: batch
            .iter()
            .flat_map(|g| g.passages.iter().map(|&row| corpus.ids[row].clone()))
            .collect(),
        loss,
    }
}
