//! `config.json` of a Hugging Face BERT-family model.

use serde::{Deserialize, Serialize};

/// The subset of Hugging Face's `BertConfig` the encoder needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// The padding token; (XLM-)RoBERTa's positions start just past it.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// σ of the normal draws that initialise new weights (a new head).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
}

/// The two encoder families cpack runs: one forward pass, two ways of
/// numbering positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT, MiniLM, BGE (English and Chinese), GTE: positions from 0.
    Bert,
    /// RoBERTa and XLM-RoBERTa (bge-m3, bge-reranker, multilingual-e5):
    /// positions from the padding index + 1, one token type.
    Roberta,
}

/// Feed-forward activations used by BERT checkpoints.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU, Hugging Face's `"gelu"`.
    Gelu,
    /// Tanh-approximated GELU.
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    Relu,
}

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_dropout() -> f64 {
    0.1
}

impl BertConfig {
    /// Why this config cannot be run by cpack's BERT, if it cannot.
    pub fn unsupported_reason(&self) -> Option<String> {
        let Some(family) = self.family() else {
            return Some(format!(
                "unsupported architecture (model_type {:?}, architectures {:?}); cpack runs BERT and (XLM-)RoBERTa models",
                self.model_type.as_deref().unwrap_or(""),
                self.architectures.clone().unwrap_or_default()
            ));
        };
        if family == Family::Roberta && self.max_position_embeddings <= self.position_offset() {
            return Some(format!(
                "max_position_embeddings {} leaves no position past the padding index {}",
                self.max_position_embeddings,
                self.position_offset() - 1
            ));
        }
        if let Some(kind) = self.position_embedding_type.as_deref() {
            if kind != "absolute" {
                return Some(format!("unsupported position_embedding_type {kind:?}"));
            }
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Some(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        None
    }

    /// The family `model_type` (else the architecture's name) declares.
    pub fn family(&self) -> Option<Family> {
        let by_type = match self.model_type.as_deref() {
            Some("bert") => Some(Family::Bert),
            Some("roberta" | "xlm-roberta") => Some(Family::Roberta),
            _ => None,
        };
        let by_architecture = || {
            let names = self.architectures.iter().flatten();
            names.map(String::as_str).find_map(|name| {
                if name.starts_with("Bert") {
                    Some(Family::Bert)
                } else if name.starts_with("XLMRoberta") || name.starts_with("Roberta") {
                    Some(Family::Roberta)
                } else {
                    None
                }
            })
        };
        by_type.or_else(by_architecture)
    }

    /// Row of the position table the first token reads: RoBERTa numbers
    /// positions from the padding index + 1 (as `create_position_ids_from_input_ids`
    /// does for right-padded input), BERT from 0.
    pub fn position_offset(&self) -> usize {
        match self.family() {
            Some(Family::Roberta) => self.pad_token_id.unwrap_or(1) as usize + 1,
            _ => 0,
        }
    }

    /// The longest input, special tokens included, the position table holds.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }

    /// Whether the token type of each token matters: a table of one type
    /// (RoBERTa) makes every token type 0, as its tokenizer does.
    pub fn segmented(&self) -> bool {
        self.type_vocab_size > 1
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
