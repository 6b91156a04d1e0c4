//! AdamW with PyTorch's semantics, the linear warm-up/decay schedule of
//! Hugging Face's `get_linear_schedule_with_warmup` over a run's epochs, and global-norm clipping.

use crate::error::{Result, StateError};
use crate::update::{
    adamw_update, portable_adamw_update, scale, sum_of_squares, to_vec, AdamWStep,
};
use candle_core::{backprop::GradStore, Tensor, Var};
use cpack_model::Kernels;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Param {
    name: String,
    var: Var,
    moments: Moments,
    decay: bool,
}

/// A parameter's moment estimates, where its update kernel wants them.
enum Moments {
    /// Flat host memory, updated in place by cpack's CPU kernel.
    Host {
        exp_avg: Vec<f32>,
        exp_avg_sq: Vec<f32>,
    },
    /// Tensors beside the variable, updated with candle's ops (any device).
    Tensors { exp_avg: Tensor, exp_avg_sq: Tensor },
}

/// Decoupled weight decay, as `torch.optim.AdamW`: the decay shrinks the
/// weight directly and never enters the moment estimates.
pub struct AdamW {
    params: Vec<Param>,
    hyper: AdamWParams,
    /// Optimizer steps taken (PyTorch's per-parameter `step`, shared here).
    steps: u64,
}

/// Biases and LayerNorm weights get no weight decay, as in Hugging Face's
/// Trainer, sentence-transformers and FlagEmbedding.
fn decays(name: &str) -> bool {
    !(name.ends_with(".bias")
        || name.contains("LayerNorm")
        || name.ends_with(".gamma")
        || name.ends_with(".beta"))
}

impl AdamW {
    /// The optimizer for `vars`, updating each with the kernels of its device.
    pub fn new(vars: Vec<(String, Var)>, hyper: AdamWParams) -> Result<Self> {
        let kernels = vars.first().map_or(Kernels::Cpu, |(_, v)| {
            Kernels::for_weights(v.device(), v.dtype())
        });
        Self::with_kernels(vars, hyper, kernels)
    }

    /// The optimizer updating with `kernels` (the portable ops on CPU test
    /// the path other devices take).
    pub fn with_kernels(
        vars: Vec<(String, Var)>,
        hyper: AdamWParams,
        kernels: Kernels,
    ) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let moments = match kernels {
                    Kernels::Cpu => Moments::Host {
                        exp_avg: vec![0f32; var.elem_count()],
                        exp_avg_sq: vec![0f32; var.elem_count()],
                    },
                    Kernels::Portable => Moments::Tensors {
                        exp_avg: var.zeros_like()?,
                        exp_avg_sq: var.zeros_like()?,
                    },
                };
                Ok(Param {
                    moments,
                    decay: decays(&name),
                    name,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW {
            params,
            hyper,
            steps: 0,
        })
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update at learning rate `lr`. Variables without a gradient are left
    /// alone, as PyTorch skips parameters whose `.grad` is `None`.
    pub fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        self.steps += 1;
        let h = self.hyper;
        let t = self.steps as i32;
        let bias_correction1 = 1.0 - h.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - h.beta2.powi(t)).sqrt();
        for p in &mut self.params {
            let Some(grad) = grads.get(&p.var) else {
                continue;
            };
            let step = AdamWStep {
                decay_factor: if p.decay && h.weight_decay != 0.0 {
                    1.0 - lr * h.weight_decay
                } else {
                    1.0
                },
                beta1: h.beta1,
                beta2: h.beta2,
                eps: h.eps,
                bias_correction2_sqrt,
                step_size: lr / bias_correction1,
                grad_scale: 1.0,
            };
            match &mut p.moments {
                Moments::Host {
                    exp_avg,
                    exp_avg_sq,
                } => adamw_update(p.var.as_tensor(), grad, exp_avg, exp_avg_sq, step)?,
                Moments::Tensors {
                    exp_avg,
                    exp_avg_sq,
                } => portable_adamw_update(&p.var, grad, exp_avg, exp_avg_sq, step)?,
            }
        }
        Ok(())
    }

    /// Moment estimates by name, for checkpoints (`exp_avg.<name>`, `exp_avg_sq.<name>`).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            let (shape, device) = (p.var.shape(), p.var.device());
            let (m, v) = match &p.moments {
                Moments::Host {
                    exp_avg,
                    exp_avg_sq,
                } => (
                    Tensor::from_slice(exp_avg, shape, device)?,
                    Tensor::from_slice(exp_avg_sq, shape, device)?,
                ),
                Moments::Tensors {
                    exp_avg,
                    exp_avg_sq,
                } => (exp_avg.copy()?, exp_avg_sq.copy()?),
            };
            state.push((format!("exp_avg.{}", p.name), m));
            state.push((format!("exp_avg_sq.{}", p.name), v));
        }
        Ok(state)
    }

    /// Restores what [`AdamW::state`] saved after `steps` updates.
    pub fn restore(
        &mut self,
        mut state: HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<(), StateError> {
        for p in &mut self.params {
            let mut take = |kind: &str| {
                let key = format!("{kind}.{}", p.name);
                let t = state
                    .remove(&key)
                    .ok_or_else(|| StateError::Missing { key: key.clone() })?;
                if t.shape() != p.var.shape() {
                    return Err(StateError::Shape {
                        key,
                        found: t.dims().to_vec(),
                        expected: p.var.dims().to_vec(),
                    });
                }
                Ok(t)
            };
            let (m, v) = (take("exp_avg")?, take("exp_avg_sq")?);
            let failed = |source| StateError::Unreadable {
                name: p.name.clone(),
                source,
            };
            p.moments = match &p.moments {
                Moments::Host { .. } => Moments::Host {
                    exp_avg: to_vec(&m).map_err(failed)?,
                    exp_avg_sq: to_vec(&v).map_err(failed)?,
                },
                Moments::Tensors { .. } => Moments::Tensors {
                    exp_avg: m.to_device(p.var.device()).map_err(failed)?,
                    exp_avg_sq: v.to_device(p.var.device()).map_err(failed)?,
                },
            };
        }
        self.steps = steps;
        Ok(())
    }
}

/// Gradients summed over the micro-batches of one optimizer step.
#[derive(Default)]
pub struct Gradients {
    by_var: HashMap<candle_core::TensorId, Tensor>,
}

impl Gradients {
    /// Adds `scale ·` each variable's gradient from one backward pass.
    pub fn accumulate(
        &mut self,
        vars: &[(String, Var)],
        grads: &GradStore,
        scale: f64,
    ) -> Result<()> {
        for (_, var) in vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = if scale == 1.0 {
                g.clone()
            } else {
                (g * scale)?
            };
            let id = var.as_tensor().id();
            let sum = match self.by_var.remove(&id) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            self.by_var.insert(id, sum);
        }
        Ok(())
    }

    /// Adds `scale ·` another sum of gradients (one batch's, into a step's).
    pub fn merge(&mut self, other: Gradients, scale: f64) -> Result<()> {
        for (id, g) in other.by_var {
            let g = if scale == 1.0 { g } else { (g * scale)? };
            let sum = match self.by_var.remove(&id) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            self.by_var.insert(id, sum);
        }
        Ok(())
    }

    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.by_var.get(&var.as_tensor().id())
    }

    /// The global L2 norm of all gradients.
    pub fn norm(&self) -> Result<f64> {
        // Added in a fixed order (the map's is random per process), so the
        // norm is the same bits in every run.
        let mut squares = self
            .by_var
            .values()
            .map(sum_of_squares)
            .collect::<candle_core::Result<Vec<f64>>>()?;
        squares.sort_by(f64::total_cmp);
        let total: f64 = squares.iter().sum();
        Ok(total.sqrt())
    }

    /// Scales gradients down so their global norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.norm()?;
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            // In place, as torch's clip_grad_norm_: these tensors are this
            // sum's own (the backward passes they came from are gone).
            for g in self.by_var.values_mut() {
                scale(g, coef)?;
            }
        }
        Ok(norm)
    }
}

/// The learning rate through a run: Hugging Face's
/// `get_linear_schedule_with_warmup` (linear warm-up from 0, then linear
/// decay to 0) over `epochs × nominal` steps, where `nominal` is the steps
/// an epoch of full batches takes. An epoch's real steps — clash-free packing
/// can add batches, and a refreshed round changes how many — are spread
/// evenly over its share, so the rate never reaches 0 before the run's last
/// step and reaches it just after, whatever each epoch's count. When an
/// epoch takes exactly `nominal` steps this is Hugging Face's schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    peak: f64,
    nominal: f64,
    warmup: f64,
    total: f64,
}

impl Schedule {
    pub fn new(peak: f64, warmup_ratio: f64, epochs: usize, nominal_steps_per_epoch: u64) -> Self {
        let total = (epochs as u64 * nominal_steps_per_epoch.max(1)) as f64;
        Schedule {
            peak,
            nominal: nominal_steps_per_epoch.max(1) as f64,
            warmup: (warmup_ratio * total).ceil(),
            total,
        }
    }

    /// The rate for step `step` (0-based) of the `steps` of `epoch` (1-based).
    pub fn lr(&self, epoch: usize, step: u64, steps: u64) -> f64 {
        let at = (epoch.max(1) - 1) as f64 * self.nominal
            + step as f64 * self.nominal / steps.max(1) as f64;
        if at < self.warmup {
            return self.peak * at / self.warmup;
        }
        self.peak * ((self.total - at) / (self.total - self.warmup).max(1.0)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// PyTorch's AdamW update for one scalar, written out.
    fn torch_adamw(mut w: f64, grads: &[f64], lr: f64, h: AdamWParams) -> f64 {
        let (mut m, mut v) = (0.0, 0.0);
        for (i, g) in grads.iter().enumerate() {
            let t = (i + 1) as i32;
            w *= 1.0 - lr * h.weight_decay;
            m = h.beta1 * m + (1.0 - h.beta1) * g;
            v = h.beta2 * v + (1.0 - h.beta2) * g * g;
            let denom = v.sqrt() / (1.0 - h.beta2.powi(t)).sqrt() + h.eps;
            w -= lr / (1.0 - h.beta1.powi(t)) * m / denom;
        }
        w
    }

    #[test]
    fn adamw_follows_torch_and_spares_biases_from_decay() {
        let h = AdamWParams {
            weight_decay: 0.1,
            ..Default::default()
        };
        let weight = Var::new(&[0.5f32], &Device::Cpu).unwrap();
        let bias = Var::new(&[0.5f32], &Device::Cpu).unwrap();
        let vars = vec![
            ("layer.bias".to_string(), bias.clone()),
            ("layer.weight".to_string(), weight.clone()),
        ];
        let mut opt = AdamW::new(vars.clone(), h).unwrap();
        let steps = [0.3, -0.2, 0.05];
        for g in steps {
            let loss = ((weight.as_tensor() * g).unwrap() + (bias.as_tensor() * g).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let mut grads = Gradients::default();
            grads
                .accumulate(&vars, &loss.backward().unwrap(), 1.0)
                .unwrap();
            opt.step(&grads, 0.01).unwrap();
        }
        let got = |v: &Var| v.as_tensor().to_vec1::<f32>().unwrap()[0] as f64;
        let decayed = torch_adamw(0.5, &steps, 0.01, h);
        let undecayed = torch_adamw(
            0.5,
            &steps,
            0.01,
            AdamWParams {
                weight_decay: 0.0,
                ..h
            },
        );
        assert!(
            (got(&weight) - decayed).abs() < 1e-6,
            "{} vs {decayed}",
            got(&weight)
        );
        assert!(
            (got(&bias) - undecayed).abs() < 1e-6,
            "{} vs {undecayed}",
            got(&bias)
        );
        assert_ne!(got(&weight), got(&bias));
    }

    #[test]
    fn the_portable_update_is_the_cpu_kernels_update() {
        let values = |seed: f32, n: usize| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
        };
        let make = || {
            vec![
                (
                    "layer.bias".to_string(),
                    Var::new(values(1.0, 5), &Device::Cpu).unwrap(),
                ),
                (
                    "layer.weight".to_string(),
                    Var::new(values(2.0, 7), &Device::Cpu).unwrap(),
                ),
            ]
        };
        let (cpu_vars, portable_vars) = (make(), make());
        let h = AdamWParams::default();
        let mut cpu = AdamW::with_kernels(cpu_vars.clone(), h, Kernels::Cpu).unwrap();
        let mut portable =
            AdamW::with_kernels(portable_vars.clone(), h, Kernels::Portable).unwrap();
        for step in 0..4 {
            let grads = |vars: &[(String, Var)]| {
                let mut g = Gradients::default();
                let loss = vars
                    .iter()
                    .map(|(_, v)| {
                        (v.as_tensor().sqr().unwrap() * (step as f64 + 1.5))
                            .unwrap()
                            .sum_all()
                            .unwrap()
                    })
                    .reduce(|a, b| (a + b).unwrap())
                    .unwrap();
                g.accumulate(vars, &loss.backward().unwrap(), 1.0).unwrap();
                g
            };
            let (mut gc, mut gp) = (grads(&cpu_vars), grads(&portable_vars));
            assert_eq!(gc.clip(1.0).unwrap(), gp.clip(1.0).unwrap());
            cpu.step(&gc, 0.01).unwrap();
            portable.step(&gp, 0.01).unwrap();
        }
        for ((name, a), (_, b)) in cpu_vars.iter().zip(&portable_vars) {
            let (a, b) = (
                a.as_tensor().to_vec1::<f32>().unwrap(),
                b.as_tensor().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(a, b, "{name}");
        }
        // Saved state restores into either kind.
        let state: HashMap<String, Tensor> = portable.state().unwrap().into_iter().collect();
        let mut restored = AdamW::with_kernels(make(), h, Kernels::Cpu).unwrap();
        restored.restore(state, 4).unwrap();
        let again: HashMap<String, Tensor> = restored.state().unwrap().into_iter().collect();
        for (key, t) in cpu.state().unwrap() {
            assert_eq!(
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                again[&key].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{key}"
            );
        }
    }

    #[test]
    fn schedule_is_hugging_faces_when_epochs_take_their_nominal_steps() {
        // 2 epochs of 55 steps, warm-up 10 % = 11 steps.
        let schedule = Schedule::new(1.0, 0.1, 2, 55);
        let lr = |global: u64| schedule.lr(1 + (global / 55) as usize, global % 55, 55);
        let hf = |step: u64| {
            if step < 11 {
                step as f64 / 11.0
            } else {
                (110 - step) as f64 / 99.0
            }
        };
        for step in 0..110 {
            assert!((lr(step) - hf(step)).abs() < 1e-12, "step {step}");
        }
        assert_eq!(Schedule::new(2.0, 0.0, 1, 4).lr(1, 0, 4), 2.0);
    }

    #[test]
    fn extra_steps_in_an_epoch_never_train_at_rate_zero() {
        // Nominally 5 steps an epoch; packing made 7 and then 6.
        let schedule = Schedule::new(1.0, 0.1, 2, 5);
        let rates: Vec<f64> = (0..7)
            .map(|s| schedule.lr(1, s, 7))
            .chain((0..6).map(|s| schedule.lr(2, s, 6)))
            .collect();
        assert_eq!(rates[0], 0.0, "warm-up starts at 0");
        assert!(rates[1..].iter().all(|&r| r > 0.0), "{rates:?}");
        let peak = rates.iter().cloned().fold(0.0, f64::max);
        let after_peak = rates.iter().position(|&r| r == peak).unwrap();
        assert!(rates[after_peak..].windows(2).all(|w| w[1] < w[0]));
        // One step past the end the schedule is at 0.
        assert_eq!(schedule.lr(2, 6, 6), 0.0);
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let a = Var::new(&[3f32], &Device::Cpu).unwrap();
        let b = Var::new(&[4f32], &Device::Cpu).unwrap();
        let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let loss = (a.as_tensor().sqr().unwrap() / 2.0)
            .unwrap()
            .sum_all()
            .unwrap()
            + (b.as_tensor().sqr().unwrap() / 2.0)
                .unwrap()
                .sum_all()
                .unwrap();
        let mut grads = Gradients::default();
        grads
            .accumulate(&vars, &loss.unwrap().backward().unwrap(), 1.0)
            .unwrap();
        assert!((grads.clip(1.0).unwrap() - 5.0).abs() < 1e-5);
        assert!((grads.norm().unwrap() - 1.0).abs() < 1e-5);
    }
}
