//! Where a tensor lives: the CPU (reference backend) or one CUDA GPU.
use crate::cuda::{self, CudaDevice};
use crate::error::Result;
use std::fmt;

#[derive(Clone)]
pub enum Device {
    Cpu,
    Cuda(CudaDevice),
}

impl Device {
    /// GPU `ordinal`, or a typed error saying why CUDA cannot be used.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::Cuda(CudaDevice::new(ordinal)?))
    }
    /// The first GPU if one is usable, else the CPU (with the reason it fell back).
    pub fn best() -> (Device, Option<String>) {
        match Device::cuda(0) {
            Ok(d) => (d, None),
            Err(e) => (Device::Cpu, Some(e.to_string())),
        }
    }
    /// The device a user named: `cpu`, `cuda` (GPU 0), `cuda:N`, or `auto` (the first usable GPU, else the CPU).
    pub fn parse(name: &str) -> Result<Device> {
        match name {
            "auto" => Ok(Device::best().0),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Device::cuda(0),
            s => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => Device::cuda(n),
                None => {
                    Err(crate::EngineError::invalid("device", format!("expected auto, cpu, cuda or cuda:N, not {s:?}")))
                }
            },
        }
    }
    /// Number of usable GPUs (0 when there is no driver).
    pub fn cuda_count() -> usize {
        cuda::device_count().unwrap_or(0)
    }
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
    /// The model storage type when none is asked for: bf16 on a GPU (the kernels' type), f32 on the CPU.
    pub fn default_dtype(&self) -> crate::DType {
        if self.is_cuda() {
            crate::DType::BF16
        } else {
            crate::DType::F32
        }
    }
    pub fn as_cuda(&self) -> Option<&CudaDevice> {
        match self {
            Device::Cuda(d) => Some(d),
            Device::Cpu => None,
        }
    }
    /// Wait for queued work and surface asynchronous errors (no-op on CPU).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(d) => d.synchronize(),
        }
    }
    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => a.same(b),
            _ => false,
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(d) => write!(f, "{d:?}"),
        }
    }
}
impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(d) => write!(f, "cuda:{}", d.ordinal()),
        }
    }
}
