//! With dropout on, the gradient is the gradient of the function the forward
//! pass computed: the loss under one fixed set of masks, differentiated by
//! central finite differences along the autograd gradient's direction, must
//! rise at the rate the gradient's norm says. A backward
//! that applied other masks than its forward (or none) would still give
//! losses and gradient norms of the right size, and only this catches it.

use crate::common::{tiny_model, trainer, PASSAGES, QUERIES};
use candle_core::Tensor;
use cpack_model::Kernels;
use cpack_train::optim::Gradients;
use cpack_train::{LossKind, Trainer};

/// The gradient scaled to unit norm, one tensor per variable (zeros where
/// the loss does not reach), and the norm it had.
fn unit_gradient(trainer: &Trainer, grads: &Gradients) -> (Vec<Tensor>, f64) {
    let per_var: Vec<Tensor> = trainer
        .encoder()
        .vars()
        .iter()
        .map(|(_, var)| match grads.get(var) {
            Some(g) => g.clone(),
            None => var.zeros_like().unwrap(),
        })
        .collect();
    let norm = grads.norm().unwrap();
    let unit = per_var.iter().map(|g| (g / norm).unwrap()).collect();
    (unit, norm)
}

/// The loss with every variable moved by `step · direction`, under the masks of `seed`.
fn loss_at(trainer: &Trainer, dir: &[Tensor], step: f64, seed: u64) -> f64 {
    let vars = trainer.encoder().vars();
    let saved: Vec<Tensor> = vars
        .iter()
        .map(|(_, v)| v.as_tensor().copy().unwrap())
        .collect();
    for ((_, var), d) in vars.iter().zip(dir) {
        var.set(&(var.as_tensor() + (d * step).unwrap()).unwrap())
            .unwrap();
    }
    let dropout = trainer.encoder().dropout(true, seed);
    let loss = trainer
        .pass(&QUERIES, &PASSAGES, dropout.as_ref())
        .unwrap()
        .loss as f64;
    for ((_, var), w) in vars.iter().zip(saved) {
        var.set(&w).unwrap();
    }
    loss
}

fn check(mini_batch: usize) {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    let trainer = trainer(dir.path(), Kernels::Cpu, LossKind::InfoNce, mini_batch);
    for seed in [3u64, 11, 29] {
        let dropout = trainer.encoder().dropout(true, seed);
        let pass = trainer.pass(&QUERIES, &PASSAGES, dropout.as_ref()).unwrap();
        // Along the gradient's own direction the slope is its norm; a
        // backward under other masks would point elsewhere and the loss
        // would climb more slowly than it says.
        let (d, analytic) = unit_gradient(&trainer, &pass.grads.unwrap());
        let eps = 1e-2;
        let numeric =
            (loss_at(&trainer, &d, eps, seed) - loss_at(&trainer, &d, -eps, seed)) / (2.0 * eps);
        let off = (analytic - numeric).abs() / numeric.abs().max(1e-3);
        assert!(
            off < 1e-3,
            "mini-batch {mini_batch}, seed {seed}: autograd {analytic:.6} vs finite differences {numeric:.6}"
        );
        // The masks must matter, or this test would not test them.
        let plain = trainer.pass(&QUERIES, &PASSAGES, None).unwrap().loss;
        assert!((plain - pass.loss).abs() > 1e-4, "dropout changed nothing");
    }
}

#[test]
fn dropout_gradients_are_the_gradients_of_the_masked_loss() {
    check(0);
}

#[test]
fn cached_dropout_gradients_are_the_gradients_of_the_masked_loss() {
    check(2);
}
