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
fn default_dropout() -> f64 {
    0.1
}

impl BertConfig {
    /// Why this config cannot be run by cpack's BERT, if it cannot.
    pub fn unsupported_reason(&self) -> Option<String> {
        let model_type = self.model_type.as_deref().unwrap_or("");
        let bert_arch = self
            .architectures
            .iter()
            .flatten()
            .any(|a| a.starts_with("Bert"));
        if model_type != "bert" && !bert_arch {
            return Some(format!(
                "unsupported architecture (model_type {model_type:?}, architectures {:?}); cpack runs BERT-family models",
                self.architectures.clone().unwrap_or_default()
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

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
