//! The engine's typed errors. Every fallible call returns [`Result`]; nothing user-reachable panics.
use crate::dtype::DType;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{op}: shape mismatch: {msg}")]
    Shape { op: &'static str, msg: String },
    #[error("{op}: dtype mismatch: {msg}")]
    DType { op: &'static str, msg: String },
    #[error("{op}: {dtype} is not supported here ({msg})")]
    UnsupportedDType { op: &'static str, dtype: DType, msg: &'static str },
    #[error("{op}: tensors live on different devices ({a} vs {b}); move them with .to_device() first")]
    DeviceMismatch { op: &'static str, a: String, b: String },
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    #[error(
        "this build of entrl has no CUDA kernels: nvcc was not found when it was compiled \
         (install the pinned nvcc, set NVCC=/path/to/nvcc and rebuild)"
    )]
    KernelsNotCompiled,
    #[error("CUDA error in {context}: {msg}")]
    Cuda { context: String, msg: String },
    #[error("{op}: invalid argument: {msg}")]
    Invalid { op: &'static str, msg: String },
    #[error("autograd: {0}")]
    Autograd(String),
    #[error("collective: {0}")]
    Comm(String),
    /// A collective refused because the group was aborted (another rank failed, or a timeout): the echo of
    /// the failure that caused it, which is the one to report.
    #[error("collective: {0}")]
    Aborted(String),
    /// A size checked before allocating ([`crate::Device::ensure_fits`]): what, its bytes, what is free.
    #[error(
        "{what} needs {} but {device} has {} available",
        crate::memory::format_bytes(*bytes),
        crate::memory::format_bytes(*available)
    )]
    OutOfMemory { what: String, bytes: u64, available: u64, device: String },
}

impl EngineError {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Self::Shape { op, msg: msg.into() }
    }
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Self::Invalid { op, msg: msg.into() }
    }
    pub fn cuda(context: impl Into<String>, err: impl std::fmt::Debug) -> Self {
        Self::Cuda { context: context.into(), msg: format!("{err:?}") }
    }
}
