//! The BERT encoder as an ONNX graph: embeddings, layers, pooling and
//! normalisation, computing what [`crate::model::BertModel`] plus
//! [`crate::candle_backend::pool`] compute.

use super::graph::{Attr, Dim, GraphBuilder};
use crate::encoder::WeightPrecision;
use crate::error::{Error, Result};
use crate::model::{Activation, BertConfig, ModelDir, Pooling};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_onnx::onnx::tensor_proto::DataType;

/// Name of the graph output holding pooled (and normalised) embeddings.
pub const SENTENCE_OUTPUT: &str = "sentence_embedding";
/// Name of the graph output holding the last hidden states, as optimum names it.
pub const TOKEN_OUTPUT: &str = "token_embeddings";

/// Reads the checkpoint's tensors as f32, under the model's weight prefix.
struct Weights<'a> {
    vb: VarBuilder<'a>,
    model: &'a ModelDir,
}

impl Weights<'_> {
    fn get(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>> {
        let tensor = self.vb.get(dims, name).map_err(|e| Error::Model {
            path: self.model.weights.clone(),
            problem: format!("tensor {name}: {e}"),
        })?;
        Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
    }

    /// A `[out, in]` PyTorch linear weight, transposed to `[in, out]` for `MatMul`.
    fn linear_weight(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Vec<f32>> {
        let w = self.get(name, &[out_dim, in_dim])?;
        let t = Tensor::from_vec(w, (out_dim, in_dim), &Device::Cpu)?;
        Ok(t.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Layer-norm scale and shift, under either of the names BERT checkpoints use.
    fn layer_norm(&self, prefix: &str, dim: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (w, b) = if self.vb.contains_tensor(&format!("{prefix}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok((
            self.get(&format!("{prefix}.{w}"), &[dim])?,
            self.get(&format!("{prefix}.{b}"), &[dim])?,
        ))
    }
}

/// Per-column symmetric int8: `w[i][j] ≈ q[i][j] * scale[j]`.
pub fn quantize_columns(w: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut scale = vec![0f32; cols];
    for row in w.chunks_exact(cols) {
        for (s, v) in scale.iter_mut().zip(row) {
            *s = s.max(v.abs());
        }
    }
    for s in &mut scale {
        *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
    }
    let mut q = Vec::with_capacity(rows * cols);
    for row in w.chunks_exact(cols) {
        q.extend(
            row.iter()
                .zip(&scale)
                .map(|(v, s)| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scale)
}

/// Builds the graph node by node.
struct BertGraph<'a> {
    b: GraphBuilder,
    weights: Weights<'a>,
    cfg: &'a BertConfig,
    precision: WeightPrecision,
}

impl BertGraph<'_> {
    /// `x · Wᵀ + bias` for the PyTorch linear layer at `prefix`.
    fn dense(&mut self, x: &str, prefix: &str, in_dim: usize, out_dim: usize) -> Result<String> {
        let w = self
            .weights
            .linear_weight(&format!("{prefix}.weight"), out_dim, in_dim)?;
        let bias = self.weights.get(&format!("{prefix}.bias"), &[out_dim])?;
        let bias = self.b.f32_tensor(&format!("{prefix}.bias"), &[out_dim], &bias);
        Ok(match self.precision {
            WeightPrecision::F32 => {
                let w = self
                    .b
                    .f32_tensor(&format!("{prefix}.weight_t"), &[in_dim, out_dim], &w);
                let product = self.b.node("MatMul", &[x, &w], &[]);
                self.b.node("Add", &[&product, &bias], &[])
            }
            WeightPrecision::Int8 => {
                let (q, scale) = quantize_columns(&w, in_dim, out_dim);
                let q = self
                    .b
                    .i8_tensor(&format!("{prefix}.weight_q"), &[in_dim, out_dim], &q);
                let scale = self
                    .b
                    .f32_tensor(&format!("{prefix}.weight_scale"), &[out_dim], &scale);
                let zero = self.b.i8_tensor(
                    &format!("{prefix}.weight_zero"),
                    &[out_dim],
                    &vec![0; out_dim],
                );
                // Activations are quantised per batch at run time; weights per column here.
                self.b.node_in(
                    "com.microsoft",
                    "DynamicQuantizeMatMul",
                    &[x, &q, &scale, &zero, &bias],
                    &[],
                )
            }
        })
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> Result<String> {
        let h = self.cfg.hidden_size;
        let (gamma, beta) = self.weights.layer_norm(prefix, h)?;
        let gamma = self.b.f32_tensor(&format!("{prefix}.weight"), &[h], &gamma);
        let beta = self.b.f32_tensor(&format!("{prefix}.bias"), &[h], &beta);
        Ok(self.b.node(
            "LayerNormalization",
            &[x, &gamma, &beta],
            &[
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(self.cfg.layer_norm_eps as f32)),
            ],
        ))
    }

    /// Word + position + token-type embeddings, layer-normalised: `[batch, seq, hidden]`.
    fn embeddings(&mut self, ids: &str, token_types: &str) -> Result<String> {
        let cfg = self.cfg;
        let h = cfg.hidden_size;
        let table = |g: &mut Self, name: &str, rows: usize| -> Result<String> {
            let data = g.weights.get(&format!("embeddings.{name}"), &[rows, h])?;
            Ok(g.b.f32_tensor(&format!("embeddings.{name}"), &[rows, h], &data))
        };
        let words = table(self, "word_embeddings.weight", cfg.vocab_size)?;
        let positions = table(
            self,
            "position_embeddings.weight",
            cfg.max_position_embeddings,
        )?;
        let types = table(self, "token_type_embeddings.weight", cfg.type_vocab_size)?;

        let word = self.b.node("Gather", &[&words, ids], &[]);
        let seq_len = self
            .b
            .node("Shape", &[ids], &[("start", Attr::Int(1)), ("end", Attr::Int(2))]);
        let zero = self.b.i64_tensor("zero_1d", &[1], &[0]);
        let position = self
            .b
            .node("Slice", &[&positions, &zero, &seq_len, &zero], &[]);
        let token_type = self.b.node("Gather", &[&types, token_types], &[]);
        let sum = self.b.node("Add", &[&word, &position], &[]);
        let sum = self.b.node("Add", &[&sum, &token_type], &[]);
        self.layer_norm(&sum, "embeddings.LayerNorm")
    }

    /// `[batch, seq, hidden]` → `[batch, heads, seq, head_dim]`, or with
    /// `keys_transposed`, `[batch, heads, head_dim, seq]`.
    fn split_heads(&mut self, x: &str, shape: &str, keys_transposed: bool) -> String {
        let split = self.b.node("Reshape", &[x, shape], &[]);
        let perm = if keys_transposed {
            vec![0, 2, 3, 1]
        } else {
            vec![0, 2, 1, 3]
        };
        self.b.node("Transpose", &[&split], &[("perm", Attr::Ints(perm))])
    }

    fn attention(&mut self, x: &str, key_bias: &str, prefix: &str) -> Result<String> {
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads as i64;
        let head_dim = self.cfg.head_dim();
        let q = self.dense(x, &format!("{prefix}.self.query"), h, h)?;
        let k = self.dense(x, &format!("{prefix}.self.key"), h, h)?;
        let v = self.dense(x, &format!("{prefix}.self.value"), h, h)?;
        let head_shape = self.b.i64_tensor(
            &format!("{prefix}.head_shape"),
            &[4],
            &[0, 0, heads, head_dim as i64],
        );
        let scale = self.b.scalar(
            &format!("{prefix}.scale"),
            1.0 / (head_dim as f32).sqrt(),
        );
        let q = self.b.node("Mul", &[&q, &scale], &[]);
        let q = self.split_heads(&q, &head_shape, false);
        let k = self.split_heads(&k, &head_shape, true);
        let v = self.split_heads(&v, &head_shape, false);
        let scores = self.b.node("MatMul", &[&q, &k], &[]);
        let scores = self.b.node("Add", &[&scores, key_bias], &[]);
        let probs = self.b.node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
        let context = self.b.node("MatMul", &[&probs, &v], &[]);
        let context = self
            .b
            .node("Transpose", &[&context], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        let merged_shape = self
            .b
            .i64_tensor(&format!("{prefix}.merged_shape"), &[3], &[0, 0, h as i64]);
        let context = self.b.node("Reshape", &[&context, &merged_shape], &[]);
        self.dense(&context, &format!("{prefix}.output.dense"), h, h)
    }

    fn activation(&mut self, x: &str, prefix: &str) -> String {
        match self.cfg.hidden_act {
            // 0.5·x·(1 + erf(x/√2)); ORT fuses this pattern into one Gelu kernel.
            Activation::Gelu => {
                let inv_sqrt2 = self.b.scalar(&format!("{prefix}.inv_sqrt2"), 0.5f32.sqrt());
                let one = self.b.scalar(&format!("{prefix}.one"), 1.0);
                let half = self.b.scalar(&format!("{prefix}.half"), 0.5);
                let scaled = self.b.node("Mul", &[x, &inv_sqrt2], &[]);
                let erf = self.b.node("Erf", &[&scaled], &[]);
                let erf1 = self.b.node("Add", &[&erf, &one], &[]);
                let gated = self.b.node("Mul", &[x, &erf1], &[]);
                self.b.node("Mul", &[&gated, &half], &[])
            }
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
            Activation::GeluNew => {
                let c = self.b.scalar(
                    &format!("{prefix}.sqrt_2_over_pi"),
                    (2.0 / std::f32::consts::PI).sqrt(),
                );
                let k = self.b.scalar(&format!("{prefix}.cubic"), 0.044715);
                let three = self.b.scalar(&format!("{prefix}.three"), 3.0);
                let one = self.b.scalar(&format!("{prefix}.one"), 1.0);
                let half = self.b.scalar(&format!("{prefix}.half"), 0.5);
                let cube = self.b.node("Pow", &[x, &three], &[]);
                let cube = self.b.node("Mul", &[&cube, &k], &[]);
                let inner = self.b.node("Add", &[x, &cube], &[]);
                let inner = self.b.node("Mul", &[&inner, &c], &[]);
                let tanh = self.b.node("Tanh", &[&inner], &[]);
                let tanh1 = self.b.node("Add", &[&tanh, &one], &[]);
                let gated = self.b.node("Mul", &[x, &tanh1], &[]);
                self.b.node("Mul", &[&gated, &half], &[])
            }
            Activation::Relu => self.b.node("Relu", &[x], &[]),
        }
    }

    fn layer(&mut self, x: &str, key_bias: &str, index: usize) -> Result<String> {
        let prefix = format!("encoder.layer.{index}");
        let (h, i) = (self.cfg.hidden_size, self.cfg.intermediate_size);
        let attended = self.attention(x, key_bias, &format!("{prefix}.attention"))?;
        let residual = self.b.node("Add", &[&attended, x], &[]);
        let attended = self.layer_norm(&residual, &format!("{prefix}.attention.output.LayerNorm"))?;
        let inner = self.dense(&attended, &format!("{prefix}.intermediate.dense"), h, i)?;
        let inner = self.activation(&inner, &prefix);
        let out = self.dense(&inner, &format!("{prefix}.output.dense"), i, h)?;
        let residual = self.b.node("Add", &[&out, &attended], &[]);
        self.layer_norm(&residual, &format!("{prefix}.output.LayerNorm"))
    }

    /// `[batch, seq]` float mask → additive `[batch, 1, 1, seq]` key bias, as the candle model.
    fn key_bias(&mut self, mask: &str) -> String {
        let one = self.b.scalar("mask.one", 1.0);
        let big = self.b.scalar("mask.big", 1e9);
        let off = self.b.node("Sub", &[mask, &one], &[]);
        let bias = self.b.node("Mul", &[&off, &big], &[]);
        let axes = self.b.i64_tensor("mask.axes", &[2], &[1, 2]);
        self.b.node("Unsqueeze", &[&bias, &axes], &[])
    }

    fn pool(&mut self, hidden: &str, mask: &str, pooling: Pooling, normalize: bool) -> String {
        let pooled = match pooling {
            Pooling::Cls => {
                let first = self.b.i64_tensor("pool.first", &[], &[0]);
                self.b.node("Gather", &[hidden, &first], &[("axis", Attr::Int(1))])
            }
            Pooling::Mean => {
                let axis2 = self.b.i64_tensor("pool.axis2", &[1], &[2]);
                let axis1 = self.b.i64_tensor("pool.axis1", &[1], &[1]);
                let floor = self.b.scalar("pool.min_count", 1e-9);
                let mask3 = self.b.node("Unsqueeze", &[mask, &axis2], &[]);
                let masked = self.b.node("Mul", &[hidden, &mask3], &[]);
                let summed = self.b.node("ReduceSum", &[&masked, &axis1], &[("keepdims", Attr::Int(0))]);
                let count = self.b.node("ReduceSum", &[mask, &axis1], &[("keepdims", Attr::Int(1))]);
                let count = self.b.node("Max", &[&count, &floor], &[]);
                self.b.node("Div", &[&summed, &count], &[])
            }
        };
        if !normalize {
            return pooled;
        }
        // torch.nn.functional.normalize: x / max(‖x‖, 1e-12).
        let floor = self.b.scalar("norm.min", 1e-12);
        let norm = self.b.node(
            "ReduceL2",
            &[&pooled],
            &[("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))],
        );
        let norm = self.b.node("Max", &[&norm, &floor], &[]);
        self.b.node("Div", &[&pooled, &norm], &[])
    }
}

/// The whole encoder graph for `model`, weights inlined.
pub fn build(
    model: &ModelDir,
    pooling: Pooling,
    normalize: bool,
    precision: WeightPrecision,
) -> Result<candle_onnx::onnx::GraphProto> {
    // SAFETY: read-only map of a model file cpack does not write while exporting.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[&model.weights], DType::F32, &Device::Cpu)?
    };
    let vb = if model.weight_prefix.is_empty() {
        vb
    } else {
        vb.pp(&model.weight_prefix)
    };
    let mut g = BertGraph {
        b: GraphBuilder::default(),
        weights: Weights { vb, model },
        cfg: &model.config,
        precision,
    };
    let tokens = [Dim::Named("batch"), Dim::Named("sequence")];
    let ids = g.b.input("input_ids", DataType::Int64, &tokens);
    let mask = g.b.input("attention_mask", DataType::Int64, &tokens);
    let token_types = g.b.input("token_type_ids", DataType::Int64, &tokens);

    let mask = g
        .b
        .node("Cast", &[&mask], &[("to", Attr::Int(DataType::Float as i64))]);
    let key_bias = g.key_bias(&mask);
    let mut hidden = g.embeddings(&ids, &token_types)?;
    for index in 0..model.config.num_hidden_layers {
        hidden = g.layer(&hidden, &key_bias, index)?;
    }
    let pooled = g.pool(&hidden, &mask, pooling, normalize);

    let h = model.config.hidden_size as i64;
    g.b.publish(&hidden, TOKEN_OUTPUT);
    g.b.publish(&pooled, SENTENCE_OUTPUT);
    g.b.output(
        TOKEN_OUTPUT,
        DataType::Float,
        &[Dim::Named("batch"), Dim::Named("sequence"), Dim::Fixed(h)],
    );
    g.b.output(
        SENTENCE_OUTPUT,
        DataType::Float,
        &[Dim::Named("batch"), Dim::Fixed(h)],
    );
    Ok(g.b.finish("cpack_bert_encoder"))
}
