//! The identity of an embedding: everything besides the text that decides
//! which vector it gets. Indexes record it; queries are only searched
//! against vectors of the same stamp.

use crate::encoder::{BackendKind, Encoder, WeightPrecision};
use crate::error::Result;
use cpack_model::{ModelDir, Pooling};
use serde::{Deserialize, Serialize};

/// Everything that decides which vector a text gets. An index may only be
/// searched with queries encoded under the same stamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingStamp {
    pub model_fingerprint: String,
    pub encoder_backend: BackendKind,
    /// Absent in manifests written before int8 encoders existed: those were f32.
    #[serde(default)]
    pub encoder_precision: WeightPrecision,
    pub dim: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    pub query_max_len: usize,
    pub passage_max_len: usize,
    pub query_instruction: String,
}

impl EmbeddingStamp {
    /// The stamp of vectors `encoder` makes with the weights of `model`.
    pub fn of(model: &ModelDir, encoder: &Encoder) -> Result<Self> {
        let s = encoder.settings();
        Ok(EmbeddingStamp {
            model_fingerprint: model.fingerprint()?,
            encoder_backend: encoder.backend_kind(),
            encoder_precision: encoder.precision(),
            dim: encoder.dim(),
            pooling: s.pooling,
            normalize: s.normalize,
            query_max_len: s.query_max_len,
            passage_max_len: s.passage_max_len,
            query_instruction: s.query_instruction.clone(),
        })
    }

    /// The first field in which `self` (the index) differs from `other` (the workspace).
    pub fn first_difference(
        &self,
        other: &EmbeddingStamp,
    ) -> Option<(&'static str, String, String)> {
        let field = |name: &'static str, value: fn(&EmbeddingStamp) -> String| {
            (name, value(self), value(other))
        };
        [
            field("model fingerprint", |s| s.model_fingerprint.clone()),
            field("dimension", |s| s.dim.to_string()),
            field("query instruction", |s| {
                format!("{:?}", s.query_instruction)
            }),
            field("pooling", |s| s.pooling.to_string()),
            field("normalize", |s| s.normalize.to_string()),
            field("passage max length", |s| s.passage_max_len.to_string()),
            field("query max length", |s| s.query_max_len.to_string()),
            field("encoder precision", |s| s.encoder_precision.to_string()),
            field("encoder backend", |s| s.encoder_backend.to_string()),
        ]
        .into_iter()
        .find(|(_, a, b)| a != b)
    }
}
