//! A BERT encoder written with candle ops, under Hugging Face tensor names.
//!
//! Two forward flavours share the weights: [`Mode::Inference`] uses kernels
//! without a backward (candle's fused layer norm, which silently detaches,
//! and cpack's one-kernel attention), [`Mode::Differentiable`] uses ops with
//! backwards so gradients reach every weight. The trainer must use the latter, through
//! [`BertModel::forward_train`], which also applies the config's dropout.
//!
//! Which implementation runs each op follows the device of the weights
//! ([`Kernels::for_weights`]): cpack's CPU kernels for f32 on the CPU, candle's own
//! ops ([`super::portable`]) anywhere else. Both serve both modes. The CPU
//! kernels multiply in the model's [`Products`] precision: f32, or bf16
//! operands with f32 sums ([`BertModel::with_products`]).

use super::config::{Activation, BertConfig};
use super::dropout::{Dropout, Mask};
use super::portable;
use crate::matmul::Products;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

/// Whether the forward pass keeps what a backward needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fused kernels, no gradients.
    Inference,
    /// Plain, differentiable ops.
    Differentiable,
}

/// Which implementation runs the model's ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// cpack's fused, multithreaded kernels; CPU tensors only.
    Cpu,
    /// candle's own differentiable ops, on whatever device the tensors live.
    Portable,
}

impl Kernels {
    /// The CPU kernels for f32 tensors on the CPU (all they handle),
    /// candle's ops for any other device or dtype.
    pub fn for_weights(device: &Device, dtype: DType) -> Self {
        if device.is_cpu() && dtype == DType::F32 {
            Kernels::Cpu
        } else {
            Kernels::Portable
        }
    }
}

/// The op implementations of one forward pass: kernels, mode and the
/// precision of the products together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ops {
    /// CPU kernels without a backward.
    Fused(Products),
    /// CPU kernels with a backward.
    Trainable(Products),
    /// candle's ops (differentiable in either mode).
    Portable,
}

impl Ops {
    fn new(kernels: Kernels, mode: Mode, products: Products) -> Self {
        match (kernels, mode) {
            (Kernels::Portable, _) => Ops::Portable,
            (Kernels::Cpu, Mode::Inference) => Ops::Fused(products),
            (Kernels::Cpu, Mode::Differentiable) => Ops::Trainable(products),
        }
    }

    /// `x` with the next hidden-state dropout mask applied.
    fn hidden_dropout(self, dropout: Option<&Dropout>, x: &Tensor) -> Result<Tensor> {
        match self {
            Ops::Portable => portable::dropout(Dropout::hidden_mask(dropout), &x.contiguous()?),
            Ops::Fused(_) | Ops::Trainable(_) => Dropout::hidden(dropout, x),
        }
    }
}

struct Linear {
    /// `[out, in]`, as stored.
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Linear {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: vb.get(out_dim, "bias")?,
        })
    }

    /// `x` is `[rows, in]`.
    fn forward(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        affine(x, &self.weight, &self.bias, ops)
    }
}

/// `x · weightᵀ + bias` as one matrix product.
fn affine(x: &Tensor, weight: &Tensor, bias: &Tensor, ops: Ops) -> Result<Tensor> {
    match ops {
        Ops::Fused(products) => super::dense::affine(x, weight, bias, products),
        Ops::Trainable(products) => super::dense::trainable_affine(x, weight, bias, products),
        Ops::Portable => portable::affine(x, weight, bias),
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        // Old TF-converted checkpoints call these gamma/beta.
        let (w, b) = if vb.contains_tensor("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            weight: vb.get(dim, w)?,
            bias: vb.get(dim, b)?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        match ops {
            Ops::Fused(_) => {
                candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32)
            }
            Ops::Trainable(_) => super::fused::layer_norm(x, &self.weight, &self.bias, self.eps),
            Ops::Portable => portable::layer_norm(x, &self.weight, &self.bias, self.eps),
        }
    }
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    /// Row of `position` the first token reads ([`BertConfig::position_offset`]).
    position_offset: usize,
    token_type: Tensor,
    /// Whether token types beyond 0 exist ([`BertConfig::segmented`]).
    segmented: bool,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: &VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Embeddings {
            word: vb.get((cfg.vocab_size, h), "word_embeddings.weight")?,
            position: vb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            position_offset: cfg.position_offset(),
            token_type: vb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
            segmented: cfg.segmented(),
            norm: LayerNorm::load(&vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    /// `input_ids` is `[batch, seq]` (u32), `token_types` the same shape or
    /// `None` for one segment; returns `[batch * seq, hidden]`.
    fn forward(
        &self,
        input_ids: &Tensor,
        token_types: Option<&Tensor>,
        ops: Ops,
    ) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let lookup = |table: &Tensor, ids: &Tensor| -> Result<Tensor> {
            table
                .embedding(&ids.flatten_all()?)?
                .reshape((batch, seq, ()))
        };
        let words = lookup(&self.word, input_ids)?;
        let positions = self.position.narrow(0, self.position_offset, seq)?;
        let sum = match token_types.filter(|_| self.segmented) {
            // Sentence pairs: each token's own type vector.
            Some(types) => (words + lookup(&self.token_type, types)?)?.broadcast_add(&positions)?,
            None => {
                let segment = self.token_type.get(0)?;
                match ops {
                    Ops::Portable => portable::embedding_sum(&words, &positions, &segment)?,
                    Ops::Fused(_) | Ops::Trainable(_) => {
                        super::embedding_sum::embedding_sum(&words, &positions, &segment)?
                    }
                }
            }
        };
        self.norm.forward(&sum.reshape((batch * seq, ()))?, ops)
    }
}

/// Query, key and value projections, run as one matrix product.
struct QkvProjection {
    parts: [Linear; 3],
}

impl QkvProjection {
    /// The weights are concatenated on every call, not once at load time, so a
    /// trainer updating the variables in place is always seen.
    fn forward(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        let [q, k, v] = &self.parts;
        let weight = Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?;
        let bias = Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0)?;
        affine(x, &weight, &bias, ops)
    }
}

struct Layer {
    qkv: QkvProjection,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: &VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let attn = vb.pp("attention");
        let heads = attn.pp("self");
        let qkv = QkvProjection {
            parts: [
                Linear::load(&heads.pp("query"), h, h)?,
                Linear::load(&heads.pp("key"), h, h)?,
                Linear::load(&heads.pp("value"), h, h)?,
            ],
        };
        Ok(Layer {
            qkv,
            attention_out: Linear::load(&attn.pp("output").pp("dense"), h, h)?,
            attention_norm: LayerNorm::load(&attn.pp("output").pp("LayerNorm"), h, eps)?,
            intermediate: Linear::load(&vb.pp("intermediate").pp("dense"), h, i)?,
            output: Linear::load(&vb.pp("output").pp("dense"), i, h)?,
            output_norm: LayerNorm::load(&vb.pp("output").pp("LayerNorm"), h, eps)?,
        })
    }
}

/// BERT without its pooler: token ids in, last hidden states out.
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    activation: Activation,
    kernels: Kernels,
    products: Products,
}

impl BertModel {
    /// Loads weights under `vb` (already prefixed with `bert.` when the checkpoint uses it).
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let embeddings = Embeddings::load(&vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(&vb.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<_>>()?;
        Ok(BertModel {
            embeddings,
            layers,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            activation: cfg.hidden_act,
            kernels: Kernels::for_weights(vb.device(), vb.dtype()),
            products: Products::F32,
        })
    }

    /// The same model with its CPU kernels' products in `products` (the
    /// portable ops multiply in the weights' dtype).
    pub fn with_products(mut self, products: Products) -> Self {
        self.products = products;
        self
    }

    /// The precision of the CPU kernels' products.
    pub fn products(&self) -> Products {
        self.products
    }

    /// The same model running `kernels` (the portable ops on CPU test the
    /// path other devices take).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// Where the weights live; inputs go there too.
    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }

    /// The weights' dtype, which the activations keep.
    pub fn dtype(&self) -> DType {
        self.embeddings.word.dtype()
    }

    /// `input_ids` `[batch, seq]` u32, `attention_mask` `[batch, seq]` f32 (1 = token, 0 = pad).
    /// Returns the last hidden states, `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        self.run(input_ids, None, attention_mask, mode, None)
    }

    /// [`BertModel::forward`] over sentence pairs: `token_types` `[batch, seq]`
    /// u32 (0 for the first text, 1 for the second) as the tokenizer gave them.
    pub fn forward_segments(
        &self,
        input_ids: &Tensor,
        token_types: &Tensor,
        attention_mask: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        self.run(input_ids, Some(token_types), attention_mask, mode, None)
    }

    /// [`BertModel::forward_train`] over sentence pairs (a cross-encoder's training).
    pub fn forward_train_segments(
        &self,
        input_ids: &Tensor,
        token_types: &Tensor,
        attention_mask: &Tensor,
        dropout: Option<&Dropout>,
    ) -> Result<Tensor> {
        let mode = Mode::Differentiable;
        self.run(input_ids, Some(token_types), attention_mask, mode, dropout)
    }

    /// The differentiable forward pass with training-time dropout (`None` = no dropout).
    pub fn forward_train(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        dropout: Option<&Dropout>,
    ) -> Result<Tensor> {
        self.run(
            input_ids,
            None,
            attention_mask,
            Mode::Differentiable,
            dropout,
        )
    }

    fn run(
        &self,
        input_ids: &Tensor,
        token_types: Option<&Tensor>,
        attention_mask: &Tensor,
        mode: Mode,
        dropout: Option<&Dropout>,
    ) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let ops = Ops::new(self.kernels, mode, self.products);
        // Padding keys get a large negative score, so softmax gives them zero weight.
        let key_bias =
            ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.to_dtype(self.dtype())?;
        let embedded = self.embeddings.forward(input_ids, token_types, ops)?;
        let mut hidden = ops.hidden_dropout(dropout, &embedded)?;
        for layer in &self.layers {
            hidden = self.layer_forward(layer, &hidden, &key_bias, ops, dropout)?;
        }
        hidden.reshape((batch, seq, ()))
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        hidden: &Tensor,
        key_bias: &Tensor,
        ops: Ops,
        dropout: Option<&Dropout>,
    ) -> Result<Tensor> {
        let context = self.attention(layer, hidden, key_bias, ops, dropout)?;
        let projected =
            ops.hidden_dropout(dropout, &layer.attention_out.forward(&context, ops)?)?;
        let attended = layer.attention_norm.forward(&(projected + hidden)?, ops)?;
        let inner = self.intermediate(&layer.intermediate, &attended, ops)?;
        let projected = ops.hidden_dropout(dropout, &layer.output.forward(&inner, ops)?)?;
        layer.output_norm.forward(&(projected + attended)?, ops)
    }

    /// The intermediate dense layer and its activation.
    fn intermediate(&self, dense: &Linear, x: &Tensor, ops: Ops) -> Result<Tensor> {
        if let (Activation::Gelu, Ops::Trainable(products)) = (self.activation, ops) {
            return super::dense::trainable_affine_gelu(x, &dense.weight, &dense.bias, products);
        }
        let inner = dense.forward(x, ops)?;
        match (self.activation, ops) {
            (Activation::Gelu, Ops::Portable) => inner.gelu_erf(),
            (Activation::Gelu, _) => super::gelu::gelu_erf(&inner),
            (Activation::GeluNew, _) => inner.gelu(),
            (Activation::Relu, _) => inner.relu(),
        }
    }

    /// Multi-head self-attention; `hidden` is `[batch * seq, hidden]`,
    /// `key_bias` `[batch, seq]`.
    fn attention(
        &self,
        layer: &Layer,
        hidden: &Tensor,
        key_bias: &Tensor,
        ops: Ops,
        dropout: Option<&Dropout>,
    ) -> Result<Tensor> {
        let qkv = layer.qkv.forward(hidden, ops)?;
        let mask: Option<Mask> = Dropout::attention_mask(dropout);
        match ops {
            Ops::Fused(products) => {
                super::attention::attention(&qkv, key_bias, self.heads, self.head_dim, products)
            }
            Ops::Trainable(products) => super::attention::trainable_attention(
                &qkv,
                key_bias,
                self.heads,
                self.head_dim,
                mask,
                products,
            ),
            Ops::Portable => portable::attention(&qkv, key_bias, self.heads, self.head_dim, mask),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelDir;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn tiny() -> (tempfile::TempDir, ModelDir) {
        let dir = tempfile::tempdir().unwrap();
        crate::test_model::write_tiny_model(dir.path(), &["hello world", "保险"], 3).unwrap();
        let model = ModelDir::open(dir.path()).unwrap();
        (dir, model)
    }

    fn trainable(model: &ModelDir) -> (VarMap, BertModel) {
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let bert = BertModel::load(vb.pp(&model.weight_prefix), &model.config).unwrap();
        varmap.load(&model.weights).unwrap();
        (varmap, bert)
    }

    fn inputs() -> (Tensor, Tensor) {
        let ids = Tensor::new(&[[2u32, 7, 9, 3], [2, 8, 3, 0]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1., 1.], [1., 1., 1., 0.]], &Device::Cpu).unwrap();
        (ids, mask)
    }

    #[test]
    fn fused_and_differentiable_forwards_agree() {
        let (_dir, model) = tiny();
        let (_vars, bert) = trainable(&model);
        let (ids, mask) = inputs();
        let fused = bert.forward(&ids, &mask, Mode::Inference).unwrap();
        let plain = bert.forward(&ids, &mask, Mode::Differentiable).unwrap();
        let diff = crate::max_abs_diff(&fused, &plain);
        assert!(diff < 1e-4, "max difference {diff}");
    }

    #[test]
    fn dropout_changes_the_training_forward_and_none_leaves_it_alone() {
        let (_dir, model) = tiny();
        let (_vars, bert) = trainable(&model);
        let (ids, mask) = inputs();
        let plain = bert.forward(&ids, &mask, Mode::Differentiable).unwrap();
        let none = bert.forward_train(&ids, &mask, None).unwrap();
        assert_eq!(crate::max_abs_diff(&plain, &none), 0.0);
        let dropped = |seed| {
            bert.forward_train(&ids, &mask, Some(&Dropout::new(0.5, 0.5, seed)))
                .unwrap()
        };
        assert!(crate::max_abs_diff(&plain, &dropped(1)) > 1e-3);
        assert_eq!(crate::max_abs_diff(&dropped(1), &dropped(1)), 0.0);
    }

    #[test]
    fn differentiable_forward_reaches_every_weight() {
        let (_dir, model) = tiny();
        let (varmap, bert) = trainable(&model);
        let (ids, mask) = inputs();
        let hidden = bert.forward(&ids, &mask, Mode::Differentiable).unwrap();
        let loss = probe_loss(&hidden);
        let grads = loss.backward().unwrap();
        let vars: Vec<Var> = varmap.all_vars();
        assert!(vars.len() > 30);
        let missing: Vec<String> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| {
                grads.get(v.as_tensor()).is_none_or(|g| {
                    g.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                        == 0.0
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        // Key biases shift every score of a query row equally, which softmax
        // ignores: their gradient is zero in any BERT. Every other tensor must get one.
        let missing: Vec<&String> = missing
            .iter()
            .filter(|n| !n.ends_with("attention.self.key.bias"))
            .collect();
        assert!(missing.is_empty(), "no gradient reached {missing:?}");
    }

    /// A loss that is not invariant under layer norm (unlike a plain sum).
    fn probe_loss(hidden: &Tensor) -> Tensor {
        let probe = Tensor::arange(0f32, hidden.elem_count() as f32, &Device::Cpu)
            .unwrap()
            .reshape(hidden.shape())
            .unwrap()
            .sin()
            .unwrap();
        (hidden * probe).unwrap().sum_all().unwrap()
    }

    /// Largest |a − b| over the largest |b|.
    fn relative(a: &Tensor, b: &Tensor) -> f32 {
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        crate::max_abs_diff(a, b) / scale.max(1e-30)
    }

    /// Every variable's gradient of loss `a` within `bound` (relative) of
    /// its gradient of loss `b`.
    fn assert_gradients_close(varmap: &VarMap, a: &Tensor, b: &Tensor, bound: f32) {
        let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with("attention.self.key.bias") {
                continue; // zero in any BERT: both sides hold rounding noise
            }
            let (x, y) = (ga.get(var.as_tensor()), gb.get(var.as_tensor()));
            let (Some(x), Some(y)) = (x, y) else {
                panic!("{name}: gradient on one side only");
            };
            assert!(relative(x, y) < bound, "{name}: {}", relative(x, y));
        }
    }

    #[test]
    fn portable_ops_compute_what_the_cpu_kernels_compute() {
        let (_dir, model) = tiny();
        let (varmap, cpu) = trainable(&model);
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let portable = BertModel::load(vb.pp(&model.weight_prefix), &model.config)
            .unwrap()
            .with_kernels(Kernels::Portable);
        let (ids, mask) = inputs();
        for mode in [Mode::Inference, Mode::Differentiable] {
            let a = portable.forward(&ids, &mask, mode).unwrap();
            let b = cpu.forward(&ids, &mask, mode).unwrap();
            assert!(relative(&a, &b) < 1e-5, "{mode:?}: {}", relative(&a, &b));
        }
        // Training with dropout: the same masks, the same loss, the same
        // gradient on every weight (both models share the variables).
        let dropout = || Dropout::new(0.2, 0.2, 17);
        let a = probe_loss(
            &portable
                .forward_train(&ids, &mask, Some(&dropout()))
                .unwrap(),
        );
        let b = probe_loss(&cpu.forward_train(&ids, &mask, Some(&dropout())).unwrap());
        let (la, lb) = (a.to_scalar::<f32>().unwrap(), b.to_scalar::<f32>().unwrap());
        assert!((la - lb).abs() <= 1e-5 * lb.abs(), "loss {la} vs {lb}");
        assert_gradients_close(&varmap, &a, &b, 1e-4);
    }

    /// bf16 products move the hidden states by what bf16 rounding allows and
    /// no more, in both modes, and the gradients stay close to f32's; the
    /// differentiable forward computes what the fused one does.
    #[test]
    fn bf16_products_stay_near_f32_in_both_modes() {
        let (_dir, model) = tiny();
        let (varmap, f32_model) = trainable(&model);
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let bf16_model = BertModel::load(vb.pp(&model.weight_prefix), &model.config)
            .unwrap()
            .with_products(Products::bf16());
        let (ids, mask) = inputs();
        let fused = bf16_model.forward(&ids, &mask, Mode::Inference).unwrap();
        let plain = bf16_model
            .forward(&ids, &mask, Mode::Differentiable)
            .unwrap();
        assert!(
            relative(&fused, &plain) < 1e-5,
            "{}",
            relative(&fused, &plain)
        );
        let reference = f32_model.forward(&ids, &mask, Mode::Inference).unwrap();
        let moved = relative(&fused, &reference);
        assert!(moved > 0.0 && moved < 5e-3, "bf16 against f32: {moved}");
        let (a, b) = (
            probe_loss(&bf16_model.forward_train(&ids, &mask, None).unwrap()),
            probe_loss(&f32_model.forward_train(&ids, &mask, None).unwrap()),
        );
        assert_gradients_close(&varmap, &a, &b, 3e-2);
    }
}
