//! The portable path — candle's own ops, which run on any device candle
//! supports and are what a CUDA model runs — trains as cpack's CPU kernels
//! do: on the same batch with the same dropout masks, the same loss and the
//! same gradient on every weight, whole and with gradient caching. This is
//! how the logic of the GPU path is tested on machines without a GPU.

use crate::common::{tiny_model, trainer, PASSAGES, QUERIES};
use cpack_model::Kernels;
use cpack_train::{LossKind, Trainer};

fn norm(t: &candle_core::Tensor) -> f64 {
    (t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64)
        .sqrt()
}

#[test]
fn portable_ops_train_as_the_cpu_kernels_do() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    for loss in [LossKind::InfoNce, LossKind::Gte] {
        for mini_batch in [0, 2] {
            let cpu = trainer(dir.path(), Kernels::Cpu, loss, mini_batch);
            let portable = trainer(dir.path(), Kernels::Portable, loss, mini_batch);
            let run = |t: &Trainer| {
                let dropout = t.encoder().dropout(true, 41);
                t.pass(&QUERIES, &PASSAGES, dropout.as_ref()).unwrap()
            };
            let (a, b) = (run(&portable), run(&cpu));
            let case = format!("{loss}, mini-batch {mini_batch}");
            assert!(
                (a.loss - b.loss).abs() <= 1e-5 * b.loss.abs(),
                "{case}: loss {} vs {}",
                a.loss,
                b.loss
            );
            let (ga, gb) = (a.grads.unwrap(), b.grads.unwrap());
            let vars = portable
                .encoder()
                .vars()
                .into_iter()
                .zip(cpu.encoder().vars());
            for ((name, va), (_, vb)) in vars {
                // Key biases get a zero gradient in any BERT: rounding noise on both sides.
                if name.ends_with("attention.self.key.bias") {
                    continue;
                }
                let (x, y) = (ga.get(&va).unwrap(), gb.get(&vb).unwrap());
                let off = norm(&(x - y).unwrap()) / norm(y).max(1e-30);
                assert!(off < 1e-4, "{case}, {name}: gradients differ by {off:.2e}");
            }
        }
    }
}
