//! Writes a BERT checkpoint as one self-contained ONNX file (opset 17).
//!
//! The graph takes `input_ids`, `attention_mask` and `token_type_ids`
//! (int64, dynamic batch and sequence axes) and returns `sentence_embedding`
//! (pooled, normalised if the model says so) and `token_embeddings` (last
//! hidden states), so it serves cpack's ORT backend and anyone deploying the
//! model (TEI, fastembed, onnxruntime in any language) alike. With
//! [`WeightPrecision::Int8`] every dense layer is stored as per-column int8
//! weights and run by ONNX Runtime's `DynamicQuantizeMatMul`.

mod bert;
mod graph;

pub use bert::{quantize_columns, SENTENCE_OUTPUT, TOKEN_OUTPUT};

use crate::encoder::WeightPrecision;
use crate::error::{Error, Result};
use candle_onnx::onnx::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use cpack_core::fsutil;
use cpack_model::{ModelDir, Pooling};
use prost::Message;
use std::path::{Path, PathBuf};

/// The default-domain opset the graph is written for (`LayerNormalization` needs 17).
pub const OPSET: i64 = 17;
/// ONNX IR version matching opset 17.
const IR_VERSION: i64 = 8;
/// Version of the graph cpack writes; part of cached exports' names, so a
/// cpack that writes a different graph never reuses an older export.
pub const GRAPH_VERSION: u32 = 2;
/// Protobuf's hard limit on one message; larger models would need external data.
const MAX_PROTO_BYTES: usize = 2 << 30;

/// What the exported graph computes besides the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    pub pooling: Pooling,
    pub normalize: bool,
    pub precision: WeightPrecision,
}

/// The serialized ONNX model for `model`.
pub fn export_bytes(model: &ModelDir, options: ExportOptions) -> Result<Vec<u8>> {
    let graph = bert::build(model, options.pooling, options.normalize, options.precision)?;
    let mut opset_import = vec![OperatorSetIdProto {
        domain: String::new(),
        version: OPSET,
    }];
    if options.precision == WeightPrecision::Int8 {
        opset_import.push(OperatorSetIdProto {
            domain: "com.microsoft".into(),
            version: 1,
        });
    }
    let metadata = [
        ("model_fingerprint", model.fingerprint()?),
        ("pooling", options.pooling.to_string()),
        ("normalize", options.normalize.to_string()),
        ("precision", options.precision.to_string()),
        ("cpack_graph_version", GRAPH_VERSION.to_string()),
    ];
    let proto = ModelProto {
        ir_version: IR_VERSION,
        opset_import,
        producer_name: "cpack".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.into(),
                value,
            })
            .collect(),
        ..Default::default()
    };
    let size = proto.encoded_len();
    if size >= MAX_PROTO_BYTES {
        return Err(Error::model(
            &model.weights,
            format!(
                "the ONNX graph would be {size} bytes, over protobuf's 2 GiB limit for one file"
            ),
        ));
    }
    Ok(proto.encode_to_vec())
}

/// Exports `model` to `out`, atomically: a reader sees no file or a whole one.
pub fn export_to(model: &ModelDir, options: ExportOptions, out: &Path) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
    }
    Ok(fsutil::atomic_write(out, &export_bytes(model, options)?)?)
}

/// The export of `model` under `cache_dir`, written on first use. The file
/// name carries the weights' fingerprint, so a new checkpoint never reuses an
/// old graph.
pub fn cached_export(
    model: &ModelDir,
    options: ExportOptions,
    cache_dir: &Path,
) -> Result<PathBuf> {
    let name = format!(
        "{}-{}{}-{}-v{GRAPH_VERSION}.onnx",
        model.fingerprint()?,
        options.pooling,
        if options.normalize { "-norm" } else { "" },
        options.precision
    );
    let path = cache_dir.join(name);
    if !path.exists() {
        export_to(model, options, &path)?;
    }
    Ok(path)
}
