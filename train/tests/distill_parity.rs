//! The distillation terms against PyTorch: one batch of vectors and a
//! teacher's group scores (one group unscored) from
//! tests/fixtures/distill/make_fixture.py, whose `expected.json` holds
//! PyTorch's loss and gradients for `kl` and `margin-mse`.

use candle_core::{Device, Tensor, Var};
use cpack_train::loss::{distill_loss, DistillKind, GroupScores};
use serde_json::Value;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/distill/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    let list = v.as_array().unwrap();
    list.iter()
        .map(|x| x.as_f64().map_or(f32::NAN, |f| f as f32))
        .collect()
}

fn close(what: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let tolerance = 1e-4 * b.abs().max(1.0);
        assert!(
            (a - b).abs() <= tolerance,
            "{what}[{i}]: {a} vs PyTorch {b}"
        );
    }
}

#[test]
fn kl_and_margin_mse_match_pytorch_in_loss_and_gradient() {
    let f = fixture();
    let n = |k: &str| f[k].as_u64().unwrap() as usize;
    let (batch, group, dim) = (n("batch"), n("group"), n("dim"));
    let teacher = GroupScores {
        scores: floats(&f["teacher"]),
        group_size: group,
    };
    for (kind, key) in [
        (DistillKind::Kl, "kl"),
        (DistillKind::MarginMse, "margin-mse"),
    ] {
        let q = Tensor::from_vec(floats(&f["queries"]), (batch, dim), &Device::Cpu).unwrap();
        let p = Tensor::from_vec(floats(&f["passages"]), (batch * group, dim), &Device::Cpu);
        let (q, p) = (
            Var::from_tensor(&q).unwrap(),
            Var::from_tensor(&p.unwrap()).unwrap(),
        );
        let tau = f["temperature"].as_f64().unwrap();
        let teacher_t = f["teacher_temperature"].as_f64().unwrap();
        let loss =
            distill_loss(kind, q.as_tensor(), p.as_tensor(), &teacher, tau, teacher_t).unwrap();
        let expected = &f[key];
        let value = loss.to_scalar::<f32>().unwrap();
        close(
            &format!("{key} loss"),
            &[value],
            &[expected["loss"].as_f64().unwrap() as f32],
        );
        let grads = loss.backward().unwrap();
        let grad = |v: &Var| {
            let g = grads.get(v.as_tensor()).unwrap();
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        close(
            &format!("{key} ∂q"),
            &grad(&q),
            &floats(&expected["grad_queries"]),
        );
        close(
            &format!("{key} ∂p"),
            &grad(&p),
            &floats(&expected["grad_passages"]),
        );
    }
}

#[test]
fn groups_without_teacher_scores_add_nothing() {
    let q = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0], (2, 2), &Device::Cpu).unwrap();
    let p = Tensor::from_vec(
        vec![0.6f32, 0.8, 1.0, 0.0, 0.0, 1.0, 0.8, 0.6],
        (4, 2),
        &Device::Cpu,
    )
    .unwrap();
    let unscored = GroupScores {
        scores: vec![f32::NAN; 4],
        group_size: 2,
    };
    for kind in [DistillKind::Kl, DistillKind::MarginMse] {
        let loss = distill_loss(kind, &q, &p, &unscored, 0.05, 1.0).unwrap();
        assert_eq!(loss.to_scalar::<f32>().unwrap(), 0.0);
    }
    // A teacher that agrees with the student's own softmax leaves no KL.
    let student = [0.6f32 / 0.05, 1.0 / 0.05, 1.0 / 0.05, 0.6 / 0.05];
    let agreeing = GroupScores {
        scores: student.to_vec(),
        group_size: 2,
    };
    let kl = distill_loss(DistillKind::Kl, &q, &p, &agreeing, 0.05, 1.0).unwrap();
    assert!(kl.to_scalar::<f32>().unwrap().abs() < 1e-5);
    let mse = distill_loss(DistillKind::MarginMse, &q, &p, &agreeing, 0.05, 1.0).unwrap();
    assert!(mse.to_scalar::<f32>().unwrap().abs() < 1e-6);
}
