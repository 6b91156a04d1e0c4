//! Where a model's tensors live and its products run: the CPU or one CUDA
//! GPU. The binary makes one [`ComputeDevice`] from its flags and
//! `cpack.toml` and passes it down; nothing below picks a device itself.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A device to encode or train on, written `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ComputeDevice {
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal.
    Cuda(usize),
}

impl ComputeDevice {
    /// The candle device; fails with a clear message when this build has no
    /// CUDA or the GPU cannot be opened.
    pub fn candle(&self) -> Result<candle_core::Device> {
        match self {
            ComputeDevice::Cpu => Ok(candle_core::Device::Cpu),
            ComputeDevice::Cuda(ordinal) => {
                candle_core::Device::new_cuda(*ordinal).map_err(|source| Error::Device {
                    device: self.to_string(),
                    source: Box::new(source),
                })
            }
        }
    }

    pub fn is_cpu(&self) -> bool {
        *self == ComputeDevice::Cpu
    }
}

impl std::fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComputeDevice::Cpu => f.write_str("cpu"),
            ComputeDevice::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// A device name that is not `cpu`, the GPU word, or the GPU word with `:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} (expected cpu, {gpu_word} or {gpu_word}:N)")]
pub struct UnknownDevice {
    pub what: &'static str,
    pub given: String,
    pub gpu_word: &'static str,
}

/// Reads `cpu` (`Ok(None)`), `gpu_word` (GPU 0) or `gpu_word:N`; the error
/// names what was expected. Shared by the compute and index devices.
pub fn parse_device(
    s: &str,
    gpu_word: &'static str,
    what: &'static str,
) -> std::result::Result<Option<usize>, UnknownDevice> {
    let bad = || UnknownDevice {
        what,
        given: s.to_string(),
        gpu_word,
    };
    match s.split_once(':') {
        None if s == "cpu" => Ok(None),
        None if s == gpu_word => Ok(Some(0)),
        Some((word, n)) if word == gpu_word => n.parse().map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

impl std::str::FromStr for ComputeDevice {
    type Err = UnknownDevice;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownDevice> {
        Ok(parse_device(s, "cuda", "device")?.map_or(ComputeDevice::Cpu, ComputeDevice::Cuda))
    }
}

impl TryFrom<String> for ComputeDevice {
    type Error = UnknownDevice;
    fn try_from(s: String) -> std::result::Result<Self, UnknownDevice> {
        s.parse()
    }
}

impl From<ComputeDevice> for String {
    fn from(d: ComputeDevice) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_refuses() {
        for (text, device) in [
            ("cpu", ComputeDevice::Cpu),
            ("cuda", ComputeDevice::Cuda(0)),
            ("cuda:3", ComputeDevice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<ComputeDevice>().unwrap(), device);
            assert_eq!(device.to_string().parse::<ComputeDevice>().unwrap(), device);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cpu:0", ""] {
            let err = bad.parse::<ComputeDevice>().unwrap_err().to_string();
            assert!(err.contains("expected cpu, cuda or cuda:N"), "{bad}: {err}");
        }
        assert!(ComputeDevice::Cpu.candle().unwrap().is_cpu());
    }
}
