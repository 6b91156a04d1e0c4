//! The cross-encoder (reranker): (query, passage) pairs in, one relevance
//! logit each. The pair goes through the tokenizer's own pair template and
//! truncation, the encoder reads it with its token types, and the
//! checkpoint's classification head scores the `[CLS]` state — what
//! `AutoModelForSequenceClassification` and sentence-transformers'
//! `CrossEncoder` compute, batched like [`crate::Encoder`]'s texts.

use crate::batching::{in_runs, run_batches, Batches};
use crate::candle_backend::TOKENS_PER_RUN;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cpack_core::{require, InvalidSetting};
use cpack_model::{
    BertModel, ClassifierHead, ComputeDevice, Mode, ModelDir, TextTokenizer, TokenBatch,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[rerank]`: which cross-encoder reranks, and how. One type for the flags
/// (feature `clap`) and the `cpack.toml` table; unset settings mean what
/// the model declares, or the defaults here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct RerankRecipe {
    /// Reranker: a cross-encoder folder or Hugging Face hub id
    /// (BAAI/bge-reranker-base, cross-encoder/ms-marco-MiniLM-L6-v2)
    /// [cpack.toml: rerank.model].
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "rerank.model",
            long = "rerank",
            visible_alias = "reranker",
            value_name = "MODEL"
        )
    )]
    pub model: Option<PathBuf>,
    /// Hits of the embedder the reranker rescores, best first; the rest keep
    /// their order below them [rerank.depth; default: 100].
    #[cfg_attr(
        feature = "clap",
        arg(id = "rerank.depth", long = "rerank-depth", value_name = "N")
    )]
    pub depth: Option<usize>,
    /// Tokens of a (query, passage) pair at most, special tokens included;
    /// the longer side is cut first [rerank.max_len; default: the model's, at most 512].
    #[cfg_attr(
        feature = "clap",
        arg(id = "rerank.max_len", long = "rerank-max-len", value_name = "N")
    )]
    pub max_len: Option<usize>,
    /// Pairs per forward pass [rerank.batch_size; default: 32].
    #[cfg_attr(
        feature = "clap",
        arg(id = "rerank.batch_size", long = "rerank-batch-size", value_name = "N")
    )]
    pub batch_size: Option<usize>,
    /// Padded tokens per forward pass at most, 0 = pairs only: short pairs
    /// then come many to a batch, long ones few (on a GPU, e.g. 65536 with
    /// --rerank-batch-size 1024) [rerank.batch_tokens; default: 0].
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "rerank.batch_tokens",
            long = "rerank-batch-tokens",
            value_name = "N"
        )
    )]
    pub batch_tokens: Option<usize>,
}

impl RerankRecipe {
    /// Hits reranked unless set: the "retrieve, then rerank the top 100" of RAG stacks.
    pub const DEFAULT_DEPTH: usize = 100;

    pub fn depth(&self) -> usize {
        self.depth.unwrap_or(Self::DEFAULT_DEPTH)
    }

    /// The settings `model` scores pairs with: the recipe's, else its own.
    pub fn settings(&self, model: &ModelDir) -> RerankSettings {
        let declared = RerankSettings::declared_by(model);
        RerankSettings {
            max_len: self.max_len.unwrap_or(declared.max_len),
            batch_size: self.batch_size.unwrap_or(declared.batch_size),
            batch_tokens: self.batch_tokens.unwrap_or(declared.batch_tokens),
        }
    }
}

/// What decides a pair's score besides the weights, and how pairs are batched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankSettings {
    /// Tokens of a pair at most, special tokens included; the longer side
    /// is cut first.
    pub max_len: usize,
    pub batch_size: usize,
    /// Padded tokens per batch at most (0 = rows only).
    #[serde(default)]
    pub batch_tokens: usize,
}

impl RerankSettings {
    /// Pairs per batch unless set.
    pub const DEFAULT_BATCH_SIZE: usize = 32;

    /// The model's own maximum length (`sentence_bert_config.json`'s, else
    /// what its position table holds, at most 512).
    pub fn declared_by(model: &ModelDir) -> Self {
        let held = model.config.max_tokens();
        RerankSettings {
            max_len: model.declared_max_len.unwrap_or(512).min(held),
            batch_size: Self::DEFAULT_BATCH_SIZE,
            batch_tokens: 0,
        }
    }
}

/// A sequence-classification model ready to score pairs, on one device in f32.
pub struct CrossEncoder {
    /// The model's fingerprint: what a score file or cache records.
    fingerprint: String,
    model: BertModel,
    head: ClassifierHead,
    tokenizer: TextTokenizer,
    settings: RerankSettings,
    device: Device,
    compute: ComputeDevice,
    workers: usize,
}

impl CrossEncoder {
    /// Loads `model`, which must hold a classification head, onto `compute`.
    pub fn load(
        model: &ModelDir,
        settings: RerankSettings,
        compute: ComputeDevice,
        workers: usize,
    ) -> Result<Self> {
        let Some(layout) = model.classifier else {
            return Err(Error::model(
                &model.dir,
                "is an embedder, not a cross-encoder: its weights hold no sequence-classification \
                 head (classifier.*); rerank with a reranker such as \
                 cross-encoder/ms-marco-MiniLM-L6-v2 or BAAI/bge-reranker-base"
                    .into(),
            ));
        };
        let held = model.config.max_tokens();
        let problem =
            format!("is outside 2..={held} (the longest input the model's position table holds)");
        require(
            (2..=held).contains(&settings.max_len),
            "rerank.max_len",
            settings.max_len,
            &problem,
        )?;
        if settings.batch_size == 0 {
            return Err(InvalidSetting::new("rerank.batch_size", 0, "must be at least 1").into());
        }
        let device = compute.candle()?;
        // SAFETY: the weights file is mapped read-only; cpack never writes to
        // a model folder it is reading from.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&model.weights], DType::F32, &device)? };
        let encoder_vb = if model.weight_prefix.is_empty() {
            vb.clone()
        } else {
            vb.pp(&model.weight_prefix)
        };
        let mismatch = |e: candle_core::Error| {
            Error::model(
                &model.weights,
                format!("weights do not match config.json: {e}"),
            )
        };
        let bert = BertModel::load(encoder_vb, &model.config).map_err(mismatch)?;
        let head = ClassifierHead::load(&vb, &layout, &model.weight_prefix, model.hidden_size())
            .map_err(mismatch)?;
        Ok(CrossEncoder {
            fingerprint: model.fingerprint()?,
            model: bert,
            head,
            tokenizer: TextTokenizer::load(&model.tokenizer, settings.max_len)?,
            settings,
            device,
            compute,
            workers: workers.max(1),
        })
    }

    pub fn settings(&self) -> &RerankSettings {
        &self.settings
    }

    /// The fingerprint of the model folder it was loaded from.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn device(&self) -> ComputeDevice {
        self.compute
    }

    /// The first label's logit of each `(query, passage)` pair, in order
    /// (the relevance score: FlagEmbedding's `compute_score`, sentence-transformers'
    /// `CrossEncoder.predict` before its sigmoid). `on_batch(pairs_done,
    /// tokens_done)` reports progress.
    pub fn score(
        &self,
        pairs: &[(&str, &str)],
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        let tokens = self.tokenizer.encode_pairs(pairs)?;
        let lengths: Vec<usize> = tokens.iter().map(|(ids, _)| ids.len()).collect();
        let batches = Batches::by_length(
            &lengths,
            self.settings.batch_size,
            self.settings.batch_tokens,
        );
        let tokens_per_run = if self.compute.is_cpu() {
            TOKENS_PER_RUN
        } else {
            usize::MAX
        };
        let work = |rows: &[usize]| -> Result<(Vec<f32>, usize)> {
            let pairs: Vec<(&[u32], &[u32])> = rows
                .iter()
                .map(|&i| (tokens[i].0.as_slice(), tokens[i].1.as_slice()))
                .collect();
            let batch = TokenBatch::pad_pairs(&pairs);
            let scores = in_runs(tokens_per_run, 1, &batch, &|b| self.logits(b))?;
            Ok((scores, batch.real_tokens()))
        };
        let mut out = vec![0f32; pairs.len()];
        run_batches(
            self.workers,
            &batches.rows(),
            &work,
            &mut |rows, scores, real_tokens| {
                for (&row, &score) in rows.iter().zip(scores) {
                    out[row] = score;
                }
                on_batch(rows.len(), real_tokens);
            },
        )?;
        Ok(out)
    }

    /// Each query's score with each of its candidates, in the candidates'
    /// order. All pairs are batched together, so short ones of different
    /// queries share batches.
    pub fn score_lists(
        &self,
        queries: &[&str],
        candidates: &[Vec<&str>],
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let pairs: Vec<(&str, &str)> = queries
            .iter()
            .zip(candidates)
            .flat_map(|(&q, list)| list.iter().map(move |&p| (q, p)))
            .collect();
        let mut scores = self.score(&pairs, on_batch)?.into_iter();
        Ok(candidates
            .iter()
            .map(|list| scores.by_ref().take(list.len()).collect())
            .collect())
    }

    /// Each query's candidates ordered by their score with it, best first
    /// (ties keep the candidates' order): `(candidate index, score)`.
    pub fn rank(
        &self,
        queries: &[&str],
        candidates: &[Vec<&str>],
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let lists = self.score_lists(queries, candidates, on_batch)?;
        Ok(lists
            .into_iter()
            .map(|scores| {
                let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked
            })
            .collect())
    }

    /// The first label's logit of each row of `batch`.
    fn logits(&self, batch: &TokenBatch) -> Result<Vec<f32>> {
        let shape = (batch.batch, batch.seq_len);
        let ids = Tensor::from_slice(&batch.input_ids, shape, &self.device)?;
        let types = Tensor::from_slice(&batch.token_type_ids, shape, &self.device)?;
        let mask = Tensor::from_slice(&batch.attention_mask, shape, &self.device)?;
        let hidden = self
            .model
            .forward_segments(&ids, &types, &mask, Mode::Inference)?;
        let logits = self.head.forward(&hidden)?;
        Ok(logits.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?)
    }
}
