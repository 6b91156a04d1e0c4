//! The precision of a training step's matrix products: f32, or bf16
//! operands with f32 sums (PyTorch's CPU autocast recipe). Weights, AdamW's
//! moments, layer norms, softmax, the loss and the gradients' sums stay f32
//! either way; checkpoints are f32.

use cpack_core::InvalidSetting;
use cpack_encode::ComputeDevice;
use cpack_model::matmul::Products;
use serde::{Deserialize, Serialize};

/// `train.precision`, `--train-precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum TrainPrecision {
    #[default]
    F32,
    /// Forward and backward products on bf16 operands, summed in f32 (CPU
    /// kernels: AMX or AVX-512 BF16 where the CPU has them).
    Bf16,
}

impl std::fmt::Display for TrainPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrainPrecision::F32 => "f32",
            TrainPrecision::Bf16 => "bf16",
        })
    }
}

impl TrainPrecision {
    /// The products a model trained on `device` runs; bf16 needs cpack's CPU
    /// kernels (a GPU's portable ops would silently stay f32).
    pub fn products_on(self, device: ComputeDevice) -> Result<Products, InvalidSetting> {
        match self {
            TrainPrecision::F32 => Ok(Products::F32),
            TrainPrecision::Bf16 if device.is_cpu() => Ok(Products::bf16()),
            TrainPrecision::Bf16 => Err(InvalidSetting::new(
                "precision",
                self,
                format!("trains on the CPU only; on {device} train in f32"),
            )),
        }
    }

    /// Whether this is the default (left out of `run.json`).
    pub fn is_f32(&self) -> bool {
        *self == TrainPrecision::F32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_runs_on_the_cpu_kernels_and_is_refused_elsewhere() {
        assert_eq!(
            TrainPrecision::F32.products_on(ComputeDevice::Cuda(0)),
            Ok(Products::F32)
        );
        assert_eq!(
            TrainPrecision::Bf16.products_on(ComputeDevice::Cpu),
            Ok(Products::bf16())
        );
        let refused = TrainPrecision::Bf16
            .products_on(ComputeDevice::Cuda(0))
            .unwrap_err();
        assert!(
            refused.to_string().contains("on cuda:0 train in f32"),
            "{refused}"
        );
    }
}
