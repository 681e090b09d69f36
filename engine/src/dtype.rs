//! Element types. GPU tensors are f32, bf16 or i32; the CPU backend also has f64 for gradient checks.
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    I32,
    /// CPU only: the precision used by finite-difference gradient checks.
    F64,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 => 2,
            DType::F64 => 8,
        }
    }
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }
    /// Kernel-name suffix of the CUDA kernels for this dtype.
    pub fn suffix(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::F64 => "f64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}
