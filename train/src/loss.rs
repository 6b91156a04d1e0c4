//! Contrastive losses over one batch: `B` queries and `B·G` passages, where
//! passage `i·G` is query `i`'s positive and the rest of its group are its
//! hard negatives. Every passage in the batch is a candidate for every query.

use crate::error::Result;
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

/// Which partition function the softmax uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// InfoNCE over in-batch + hard negatives (BGE / FlagEmbedding).
    #[cfg_attr(feature = "clap", value(name = "infonce"))]
    InfoNce,
    /// GTE's improved contrastive loss: adds query–query, passage–query and
    /// passage–passage terms to the partition function.
    Gte,
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossKind::InfoNce => "infonce",
            LossKind::Gte => "gte",
        })
    }
}

/// Masks self-similarities out of a softmax (exp underflows to exactly 0).
const MASKED: f32 = -1e9;

/// Mean loss over the batch's queries. `queries` is `[B, d]`, `passages` `[B·G, d]`.
pub fn contrastive_loss(
    kind: LossKind,
    queries: &Tensor,
    passages: &Tensor,
    group_size: usize,
    temperature: f64,
) -> Result<Tensor> {
    let (batch, _) = queries.dims2()?;
    let query_passage = (queries.matmul(&passages.t()?)? / temperature)?;
    let target = positive_scores(&query_passage, group_size)?;
    let logits = match kind {
        LossKind::InfoNce => query_passage,
        LossKind::Gte => {
            let dim = queries.dim(1)?;
            let positives = passages
                .reshape((batch, group_size, dim))?
                .narrow(1, 0, 1)?
                .squeeze(1)?;
            let self_mask = diagonal_mask(batch, queries.device())?;
            let query_query =
                (queries.matmul(&queries.t()?)? / temperature)?.broadcast_add(&self_mask)?;
            // Row i: s(q_j, d_i) for every query j.
            let passage_query = (positives.matmul(&queries.t()?)? / temperature)?;
            let passage_passage =
                (positives.matmul(&positives.t()?)? / temperature)?.broadcast_add(&self_mask)?;
            Tensor::cat(
                &[
                    &query_passage,
                    &query_query,
                    &passage_query,
                    &passage_passage,
                ],
                1,
            )?
        }
    };
    Ok((log_sum_exp(&logits)? - target)?.mean_all()?)
}

/// How the student learns from a teacher's scores of each query's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum DistillKind {
    /// KL divergence from the teacher's softmax over the group to the
    /// student's (FlagEmbedding's `kd_loss_type kl_div`).
    Kl,
    /// Mean squared error between the student's and the teacher's margins
    /// of the positive over each negative (sentence-transformers' MarginMSE).
    MarginMse,
}

impl std::fmt::Display for DistillKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DistillKind::Kl => "kl",
            DistillKind::MarginMse => "margin-mse",
        })
    }
}

/// A teacher's raw scores of a batch's groups: `scores[i·G + j]` for query
/// `i` and the `j`-th passage of its group (the positive first), NaN where
/// the teacher never scored the passage. Only groups scored in full take
/// part in the distillation term.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScores {
    pub scores: Vec<f32>,
    pub group_size: usize,
}

impl GroupScores {
    fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.scores.chunks(self.group_size.max(1))
    }

    /// Whether each group is scored in full.
    fn complete(&self) -> Vec<bool> {
        self.rows()
            .map(|row| row.iter().all(|s| s.is_finite()))
            .collect()
    }
}

/// The distillation term, averaged over the groups the teacher scored in
/// full (0 when there is none). The student's group scores are the logits
/// InfoNCE sees, `q·p / temperature`; the teacher's are its raw scores over
/// `teacher_temperature`.
pub fn distill_loss(
    kind: DistillKind,
    queries: &Tensor,
    passages: &Tensor,
    teacher: &GroupScores,
    temperature: f64,
    teacher_temperature: f64,
) -> Result<Tensor> {
    let (batch, dim) = queries.dims2()?;
    let group = teacher.group_size;
    let device = queries.device();
    let student = passages
        .reshape((batch, group, dim))?
        .matmul(&queries.unsqueeze(2)?)?
        .squeeze(2)?;
    let student = (student / temperature)?;
    let complete = teacher.complete();
    let scored = complete.iter().filter(|&&c| c).count();
    if scored == 0 {
        return Ok(Tensor::zeros((), candle_core::DType::F32, device)?);
    }
    let mask = Tensor::from_vec(
        complete.iter().map(|&c| c as u8 as f32).collect::<Vec<_>>(),
        batch,
        device,
    )?;
    // Incomplete groups get zeros: the mask removes their term.
    let t = teacher_temperature as f32;
    let rows: Vec<Vec<f32>> = teacher
        .rows()
        .zip(&complete)
        .map(|(row, &c)| match c {
            true => row.iter().map(|s| s / t).collect(),
            false => vec![0.0; group],
        })
        .collect();
    let per_query = match kind {
        DistillKind::Kl => {
            let (targets, negative_entropy): (Vec<Vec<f32>>, Vec<f32>) = rows
                .iter()
                .map(|row| {
                    let p = softmax(row);
                    let h: f32 = p.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum();
                    (p, h)
                })
                .unzip();
            let targets = Tensor::from_vec(targets.concat(), (batch, group), device)?;
            let log_student = student.broadcast_sub(&log_sum_exp(&student)?.unsqueeze(1)?)?;
            let cross = (targets * log_student)?.sum(1)?;
            (Tensor::from_vec(negative_entropy, batch, device)? - cross)?
        }
        DistillKind::MarginMse => {
            let teacher = Tensor::from_vec(rows.concat(), (batch, group), device)?;
            let margins = |scores: &Tensor| -> Result<Tensor> {
                let positive = scores.narrow(1, 0, 1)?;
                let negatives = scores.narrow(1, 1, group - 1)?;
                Ok(negatives.broadcast_sub(&positive)?.neg()?)
            };
            let gap = (margins(&student)? - margins(&teacher)?)?;
            (gap.sqr()?.sum(1)? / (group.max(2) - 1) as f64)?
        }
    };
    Ok(((per_query * mask)?.sum_all()? / scored as f64)?)
}

/// The softmax of one row, in f32.
fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

/// `scores[i, i·G]` for every row i.
fn positive_scores(scores: &Tensor, group_size: usize) -> Result<Tensor> {
    let (batch, columns) = scores.dims2()?;
    let mut one_hot = vec![0f32; batch * columns];
    for i in 0..batch {
        one_hot[i * columns + i * group_size] = 1.0;
    }
    let one_hot = Tensor::from_vec(one_hot, (batch, columns), scores.device())?;
    Ok((scores * one_hot)?.sum(1)?)
}

fn diagonal_mask(n: usize, device: &Device) -> Result<Tensor> {
    let mut mask = vec![0f32; n * n];
    for i in 0..n {
        mask[i * n + i] = MASKED;
    }
    Ok(Tensor::from_vec(mask, (n, n), device)?)
}

/// Row-wise log Σ exp, shifted by the (constant) row maximum for stability.
fn log_sum_exp(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    Ok((shifted.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?.squeeze(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(rows: &[&[f32]]) -> Tensor {
        let cols = rows[0].len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), cols), &Device::Cpu).unwrap()
    }

    fn scalar(t: Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    /// The loss written out by hand for two queries, group size 2.
    #[test]
    fn infonce_matches_the_formula() {
        let q = tensor(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let p = tensor(&[&[0.8, 0.6], &[0.6, 0.8], &[0.0, 1.0], &[1.0, 0.0]]);
        let t = 0.5;
        let loss = scalar(contrastive_loss(LossKind::InfoNce, &q, &p, 2, t).unwrap());
        let row = |scores: [f64; 4], pos: usize| {
            let z: f64 = scores.iter().map(|s| (s / t).exp()).sum();
            -((scores[pos] / t).exp() / z).ln()
        };
        let expected = (row([0.8, 0.6, 0.0, 1.0], 0) + row([0.6, 0.8, 1.0, 0.0], 2)) / 2.0;
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    }

    #[test]
    fn gte_adds_the_extra_partition_terms() {
        let q = tensor(&[&[1.0, 0.0], &[0.6, 0.8]]);
        let p = tensor(&[&[0.8, 0.6], &[0.0, 1.0], &[0.0, 1.0], &[1.0, 0.0]]);
        let t = 0.5;
        let loss = scalar(contrastive_loss(LossKind::Gte, &q, &p, 2, t).unwrap());
        let dot = |a: &[f64], b: &[f64]| a[0] * b[0] + a[1] * b[1];
        let qs = [[1.0, 0.0], [0.6, 0.8]];
        let ps = [[0.8, 0.6], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]];
        let pos = [ps[0], ps[2]];
        let e = |s: f64| (s / t).exp();
        let mut expected = 0.0;
        for i in 0..2 {
            let mut z: f64 = ps.iter().map(|d| e(dot(&qs[i], d))).sum();
            z += (0..2)
                .filter(|&j| j != i)
                .map(|j| e(dot(&qs[i], &qs[j])))
                .sum::<f64>();
            z += (0..2).map(|j| e(dot(&qs[j], &pos[i]))).sum::<f64>();
            z += (0..2)
                .filter(|&j| j != i)
                .map(|j| e(dot(&pos[i], &pos[j])))
                .sum::<f64>();
            expected += -(e(dot(&qs[i], &pos[i])) / z).ln() / 2.0;
        }
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        let infonce = scalar(contrastive_loss(LossKind::InfoNce, &q, &p, 2, t).unwrap());
        assert!(loss > infonce, "more partition terms must raise the loss");
    }
}
