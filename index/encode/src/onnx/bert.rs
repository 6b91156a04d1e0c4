//! The BERT encoder as an ONNX graph: embeddings, layers, pooling and
//! normalisation, computing what [`cpack_model::BertModel`] plus
//! [`crate::candle_backend::pool`] compute.
//!
//! Layers are written with ONNX Runtime's fused transformer kernels
//! (`Attention` / `QAttention`, `SkipLayerNormalization`, `BiasGelu`), as ORT's
//! offline transformer optimizer would leave them: its in-session fusions
//! need a fixed sequence length, and an encoder's is dynamic.

use super::graph::{Attr, Dim, GraphBuilder};
use crate::encoder::WeightPrecision;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_onnx::onnx::tensor_proto::DataType;
use cpack_model::{Activation, BertConfig, ModelDir, Pooling};

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
        let tensor = self
            .vb
            .get(dims, name)
            .map_err(|e| Error::model(&self.model.weights, format!("tensor {name}: {e}")))?;
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
    /// Dense layers as per-column int8 (`DynamicQuantizeMatMul`), else f32.
    int8: bool,
}

/// Operator domain of ONNX Runtime's fused transformer kernels.
const MS: &str = "com.microsoft";

impl BertGraph<'_> {
    /// `x · W` for the PyTorch linear layer at `prefix` (weight `[out, in]`),
    /// without its bias: the fused op that follows adds it.
    fn project(&mut self, x: &str, prefix: &str, in_dim: usize, out_dim: usize) -> Result<String> {
        let w = self
            .weights
            .linear_weight(&format!("{prefix}.weight"), out_dim, in_dim)?;
        self.matmul(x, prefix, &w, in_dim, out_dim)
    }

    /// `x · w` for a `[in_dim, out_dim]` weight, in the graph's precision.
    fn matmul(
        &mut self,
        x: &str,
        name: &str,
        w: &[f32],
        in_dim: usize,
        out_dim: usize,
    ) -> Result<String> {
        Ok(match self.int8 {
            false => {
                let w = self
                    .b
                    .f32_tensor(&format!("{name}.weight_t"), &[in_dim, out_dim], w);
                self.b.node("MatMul", &[x, &w], &[])
            }
            true => {
                let (q, scale) = quantize_columns(w, in_dim, out_dim);
                let q = self
                    .b
                    .i8_tensor(&format!("{name}.weight_q"), &[in_dim, out_dim], &q);
                let scale = self
                    .b
                    .f32_tensor(&format!("{name}.weight_scale"), &[out_dim], &scale);
                let zero = self.b.i8_tensor(
                    &format!("{name}.weight_zero"),
                    &[out_dim],
                    &vec![0; out_dim],
                );
                // Activations are quantised per call at run time; weights per column here.
                self.b
                    .node_in(MS, "DynamicQuantizeMatMul", &[x, &q, &scale, &zero], &[])
            }
        })
    }

    fn bias(&mut self, prefix: &str, dim: usize) -> Result<String> {
        let name = format!("{prefix}.bias");
        let bias = self.weights.get(&name, &[dim])?;
        Ok(self.b.f32_tensor(&name, &[dim], &bias))
    }

    fn layer_norm_params(&mut self, prefix: &str) -> Result<(String, String)> {
        let h = self.cfg.hidden_size;
        let (gamma, beta) = self.weights.layer_norm(prefix, h)?;
        Ok((
            self.b.f32_tensor(&format!("{prefix}.weight"), &[h], &gamma),
            self.b.f32_tensor(&format!("{prefix}.bias"), &[h], &beta),
        ))
    }

    fn epsilon(&self) -> (&'static str, Attr) {
        ("epsilon", Attr::Float(self.cfg.layer_norm_eps as f32))
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> Result<String> {
        let (gamma, beta) = self.layer_norm_params(prefix)?;
        let attrs = [("axis", Attr::Int(-1)), self.epsilon()];
        Ok(self
            .b
            .node("LayerNormalization", &[x, &gamma, &beta], &attrs))
    }

    /// `LayerNorm(x + residual + bias)` in one kernel.
    fn skip_layer_norm(
        &mut self,
        x: &str,
        residual: &str,
        bias: &str,
        prefix: &str,
    ) -> Result<String> {
        let (gamma, beta) = self.layer_norm_params(prefix)?;
        let attrs = [self.epsilon()];
        Ok(self.b.node_in(
            MS,
            "SkipLayerNormalization",
            &[x, residual, &gamma, &beta, bias],
            &attrs,
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
        let seq_len = self.b.node(
            "Shape",
            &[ids],
            &[("start", Attr::Int(1)), ("end", Attr::Int(2))],
        );
        let zero = self.b.i64_tensor("zero_1d", &[1], &[0]);
        // RoBERTa's first position sits past its padding index.
        let offset = cfg.position_offset() as i64;
        let start = self.b.i64_tensor("position_start", &[1], &[offset]);
        let end = self.b.node("Add", &[&seq_len, &start], &[]);
        let position = self
            .b
            .node("Slice", &[&positions, &start, &end, &zero], &[]);
        let token_type = self.b.node("Gather", &[&types, token_types], &[]);
        let sum = self.b.node("Add", &[&word, &position], &[]);
        let sum = self.b.node("Add", &[&sum, &token_type], &[]);
        self.layer_norm(&sum, "embeddings.LayerNorm")
    }

    /// Self-attention through ORT's `Attention` kernel (`QAttention` for
    /// int8): the Q, K and V projections as one matrix product written
    /// straight into per-head layout, biases and padding mask applied inside.
    fn attention(&mut self, x: &str, key_mask: &str, prefix: &str) -> Result<String> {
        let h = self.cfg.hidden_size;
        // [h, 3h]: columns 0..h are Q, h..2h K, 2h..3h V, as the kernel expects.
        let mut qkv = vec![0f32; h * 3 * h];
        let mut qkv_bias = Vec::with_capacity(3 * h);
        for (part, name) in ["query", "key", "value"].iter().enumerate() {
            let p = format!("{prefix}.self.{name}");
            let w = self.weights.linear_weight(&format!("{p}.weight"), h, h)?;
            for (row, chunk) in w.chunks_exact(h).enumerate() {
                qkv[row * 3 * h + part * h..row * 3 * h + (part + 1) * h].copy_from_slice(chunk);
            }
            qkv_bias.extend(self.weights.get(&format!("{p}.bias"), &[h])?);
        }
        let name = format!("{prefix}.self.qkv");
        let bias = self
            .b
            .f32_tensor(&format!("{name}.bias"), &[3 * h], &qkv_bias);
        let heads = [("num_heads", Attr::Int(self.cfg.num_attention_heads as i64))];
        Ok(match self.int8 {
            false => {
                let w = self
                    .b
                    .f32_tensor(&format!("{name}.weight"), &[h, 3 * h], &qkv);
                self.b
                    .node_in(MS, "Attention", &[x, &w, &bias, key_mask], &heads)
            }
            true => {
                let (q, scale) = quantize_columns(&qkv, h, 3 * h);
                let q = self
                    .b
                    .i8_tensor(&format!("{name}.weight_q"), &[h, 3 * h], &q);
                let scale = self
                    .b
                    .f32_tensor(&format!("{name}.weight_scale"), &[3 * h], &scale);
                let zero =
                    self.b
                        .i8_tensor(&format!("{name}.weight_zero"), &[3 * h], &vec![0; 3 * h]);
                let [xq, x_scale, x_zero] =
                    self.b.node_outputs("", "DynamicQuantizeLinear", &[x], &[]);
                self.b.node_in(
                    MS,
                    "QAttention",
                    &[&xq, &q, &bias, &x_scale, &scale, key_mask, &x_zero, &zero],
                    &heads,
                )
            }
        })
    }

    /// The feed-forward activation with the intermediate bias folded in.
    fn biased_activation(&mut self, x: &str, bias: &str) -> String {
        match self.cfg.hidden_act {
            Activation::Gelu => self.b.node_in(MS, "BiasGelu", &[x, bias], &[]),
            Activation::GeluNew => self.b.node_in(MS, "FastGelu", &[x, bias], &[]),
            Activation::Relu => {
                let biased = self.b.node("Add", &[x, bias], &[]);
                self.b.node("Relu", &[&biased], &[])
            }
        }
    }

    fn layer(&mut self, x: &str, key_mask: &str, index: usize) -> Result<String> {
        let prefix = format!("encoder.layer.{index}");
        let (h, i) = (self.cfg.hidden_size, self.cfg.intermediate_size);
        let attn = format!("{prefix}.attention");
        let context = self.attention(x, key_mask, &attn)?;
        let out = format!("{attn}.output");
        let projected = self.project(&context, &format!("{out}.dense"), h, h)?;
        let bias = self.bias(&format!("{out}.dense"), h)?;
        let attended = self.skip_layer_norm(&projected, x, &bias, &format!("{out}.LayerNorm"))?;

        let inter = format!("{prefix}.intermediate.dense");
        let inner = self.project(&attended, &inter, h, i)?;
        let bias = self.bias(&inter, i)?;
        let inner = self.biased_activation(&inner, &bias);
        let out = format!("{prefix}.output");
        let projected = self.project(&inner, &format!("{out}.dense"), i, h)?;
        let bias = self.bias(&format!("{out}.dense"), h)?;
        self.skip_layer_norm(&projected, &attended, &bias, &format!("{out}.LayerNorm"))
    }

    fn pool(&mut self, hidden: &str, mask: &str, pooling: Pooling, normalize: bool) -> String {
        let pooled = match pooling {
            Pooling::Cls => {
                let first = self.b.i64_tensor("pool.first", &[], &[0]);
                self.b
                    .node("Gather", &[hidden, &first], &[("axis", Attr::Int(1))])
            }
            Pooling::Mean => {
                let axis2 = self.b.i64_tensor("pool.axis2", &[1], &[2]);
                let axis1 = self.b.i64_tensor("pool.axis1", &[1], &[1]);
                let floor = self.b.scalar("pool.min_count", 1e-9);
                let mask3 = self.b.node("Unsqueeze", &[mask, &axis2], &[]);
                let masked = self.b.node("Mul", &[hidden, &mask3], &[]);
                let summed = self.b.node(
                    "ReduceSum",
                    &[&masked, &axis1],
                    &[("keepdims", Attr::Int(0))],
                );
                let count =
                    self.b
                        .node("ReduceSum", &[mask, &axis1], &[("keepdims", Attr::Int(1))]);
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
    let int8 = match precision {
        WeightPrecision::F32 => false,
        WeightPrecision::Int8 => true,
        WeightPrecision::Bf16 => {
            return Err(Error::Precision {
                what: "ONNX export",
                precision,
                int8: true,
            })
        }
    };
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
        int8,
    };
    let tokens = [Dim::Named("batch"), Dim::Named("sequence")];
    let ids = g.b.input("input_ids", DataType::Int64, &tokens);
    let mask = g.b.input("attention_mask", DataType::Int64, &tokens);
    let token_types = g.b.input("token_type_ids", DataType::Int64, &tokens);

    let cast = |g: &mut BertGraph, to: DataType| {
        g.b.node("Cast", &[&mask], &[("to", Attr::Int(to as i64))])
    };
    let key_mask = cast(&mut g, DataType::Int32);
    let mask = cast(&mut g, DataType::Float);
    let mut hidden = g.embeddings(&ids, &token_types)?;
    for index in 0..model.config.num_hidden_layers {
        hidden = g.layer(&hidden, &key_mask, index)?;
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
