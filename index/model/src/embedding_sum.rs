//! BERT's input embedding: word + position + token-type vectors, as one
//! differentiable op whose backward sums over rows with [`super::reduce`]
//! (two broadcast adds would backpropagate through candle's element-wise
//! reduction over the batch).

use super::kernel::f32_rows;
use super::reduce::sum_rows;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `words[b, s] + positions[s] + segment` for `words` `[batch, seq, hidden]`,
/// `positions` `[seq, hidden]`, `segment` `[hidden]`.
struct EmbeddingSum;

impl CustomOp3 for EmbeddingSum {
    fn name(&self) -> &'static str {
        "embedding-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (words, hidden) = f32_rows(self.name(), s1, l1)?;
        let (positions, _) = f32_rows(self.name(), s2, l2)?;
        let (segment, _) = f32_rows(self.name(), s3, l3)?;
        let (_, seq, _) = l1.shape().dims3()?;
        if positions.len() != seq * hidden || segment.len() != hidden {
            bail!(
                "{}: positions {:?} and segment {:?} do not fit words {:?}",
                self.name(),
                l2.dims(),
                l3.dims(),
                l1.dims()
            );
        }
        let mut out = vec![0f32; words.len()];
        out.par_chunks_mut(seq * hidden)
            .zip(words.par_chunks(seq * hidden))
            .for_each(|(o, w)| {
                for (i, o) in o.iter_mut().enumerate() {
                    *o = (w[i] + positions[i]) + segment[i % hidden];
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _words: &Tensor,
        positions: &Tensor,
        segment: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Over the batch, then over the sequence.
        let grad_positions = sum_rows(&grad)?;
        let grad_segment = sum_rows(&grad_positions)?.reshape(segment.shape())?;
        let grad_positions = grad_positions.reshape(positions.shape())?;
        Ok((Some(grad), Some(grad_positions), Some(grad_segment)))
    }
}

/// `words + positions + segment`, broadcast over the batch and the sequence.
pub fn embedding_sum(words: &Tensor, positions: &Tensor, segment: &Tensor) -> Result<Tensor> {
    words.contiguous()?.apply_op3(
        &positions.contiguous()?,
        &segment.contiguous()?,
        EmbeddingSum,
    )
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    #[test]
    fn matches_broadcast_adds_and_their_gradients() {
        let words = Var::randn(0f32, 1., (3, 4, 5), &Device::Cpu).unwrap();
        let positions = Var::randn(0f32, 1., (4, 5), &Device::Cpu).unwrap();
        let segment = Var::randn(0f32, 1., 5, &Device::Cpu).unwrap();
        let probe = candle_core::Tensor::randn(0f32, 1., (3, 4, 5), &Device::Cpu).unwrap();
        let ours = super::embedding_sum(&words, &positions, &segment).unwrap();
        let reference = words
            .broadcast_add(&positions)
            .unwrap()
            .broadcast_add(&segment)
            .unwrap();
        assert_eq!(crate::max_abs_diff(&ours, &reference), 0.0);
        let grads = |y: candle_core::Tensor| (y * &probe).unwrap().sum_all().unwrap().backward();
        let (ours, reference) = (grads(ours).unwrap(), grads(reference).unwrap());
        for v in [&words, &positions, &segment] {
            let diff = crate::max_abs_diff(
                ours.get(v.as_tensor()).unwrap(),
                reference.get(v.as_tensor()).unwrap(),
            );
            assert!(diff < 1e-5, "{diff}");
        }
    }
}
