//! Host storage and the dispatcher that runs a generic CPU kernel on f32 / bf16 / f64 data.
use super::Real;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use half::bf16;

#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I32(_) => DType::I32,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `n` zeros; an allocation the system cannot satisfy is an [`EngineError::OutOfMemory`], not an abort.
    pub fn zeros(dtype: DType, n: usize) -> Result<Self> {
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(try_zeroed(n)?),
            DType::F64 => CpuStorage::F64(try_zeroed(n)?),
            DType::BF16 => CpuStorage::BF16(try_zeroed(n)?),
            DType::I32 => CpuStorage::I32(try_zeroed(n)?),
        })
    }
    /// `n` copies of `v` (rounded to `dtype`); fallible like [`CpuStorage::zeros`].
    pub fn full(dtype: DType, n: usize, v: f64) -> Result<Self> {
        if v.to_bits() == 0 {
            // +0.0 is all-zero bytes in every dtype (-0.0 is not)
            return Self::zeros(dtype, n);
        }
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(try_filled(n, v as f32)?),
            DType::F64 => CpuStorage::F64(try_filled(n, v)?),
            DType::BF16 => CpuStorage::BF16(try_filled(n, bf16::from_f64(v))?),
            DType::I32 => CpuStorage::I32(try_filled(n, v as i32)?),
        })
    }
    /// Values as f64 (for tests, checks and printing).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.clone(),
            CpuStorage::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::I32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    /// Build storage of `dtype` from f64 values (rounding to the target type).
    pub fn from_f64(dtype: DType, v: &[f64]) -> Self {
        match dtype {
            DType::F32 => CpuStorage::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(v.to_vec()),
            DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::I32 => CpuStorage::I32(v.iter().map(|&x| x as i32).collect()),
        }
    }
    pub fn cast(&self, dtype: DType) -> CpuStorage {
        match (self, dtype) {
            (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(v.iter().map(|x| x.to_f32()).collect()),
            (s, d) if s.dtype() == d => s.clone(),
            (s, d) => CpuStorage::from_f64(d, &s.to_f64_vec()),
        }
    }
    pub fn as_i32(&self, op: &'static str) -> Result<&[i32]> {
        match self {
            CpuStorage::I32(v) => Ok(v),
            s => Err(EngineError::DType { op, msg: format!("expected i32 indices, got {}", s.dtype()) }),
        }
    }
    pub fn as_f32(&self, op: &'static str) -> Result<&[f32]> {
        match self {
            CpuStorage::F32(v) => Ok(v),
            s => Err(EngineError::DType { op, msg: format!("expected f32, got {}", s.dtype()) }),
        }
    }
}

/// The error of a host allocation of `n` elements of `T` that could not be made.
fn host_oom<T>(n: usize) -> EngineError {
    EngineError::OutOfMemory {
        what: format!("a CPU tensor of {n} elements"),
        bytes: crate::memory::bytes_of(&[n as u64, std::mem::size_of::<T>() as u64]),
        available: crate::memory::host_available().unwrap_or(0),
        device: "cpu".into(),
    }
}

/// `n` zero values from the allocator's zeroed memory (untouched pages stay unbacked, as with `vec![0; n]`),
/// or an error when the allocation fails.
fn try_zeroed<T: bytemuck::Zeroable>(n: usize) -> Result<Vec<T>> {
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| host_oom::<T>(n))?;
    // SAFETY: the layout has a non-zero size (n > 0 and T is not zero-sized).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(host_oom::<T>(n));
    }
    // SAFETY: ptr comes from the global allocator with the layout of [T; n] (capacity n), and all n
    // elements are initialised: all-zero bytes are a valid T (Zeroable).
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// `n` copies of `v`, or an error when the allocation fails.
fn try_filled<T: Clone>(n: usize, v: T) -> Result<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| host_oom::<T>(n))?;
    out.resize(n, v);
    Ok(out)
}

/// A CPU kernel written once for any [`Real`]: takes slices of the inputs in compute precision and
/// returns its outputs in compute precision.
pub trait FloatKernel {
    fn run<T: Real>(&self, inputs: &[&[T]]) -> Result<Vec<Vec<T>>>;
}

/// Compute precision of a storage dtype: f64 stays f64, f32/bf16 compute in f32.
pub fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Run `k` on float inputs (all of one dtype; bf16 is widened to f32). Outputs come back in compute
/// precision (f32 or f64); callers cast to the storage dtype where the op's output is a tensor.
pub fn run_float(op: &'static str, k: &impl FloatKernel, inputs: &[&CpuStorage]) -> Result<Vec<CpuStorage>> {
    let dt = inputs.first().map(|s| s.dtype()).unwrap_or(DType::F32);
    match dt {
        DType::F64 => {
            let xs = inputs
                .iter()
                .map(|s| match s {
                    CpuStorage::F64(v) => Ok(v.as_slice()),
                    s => Err(mixed(op, dt, s.dtype())),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(k.run::<f64>(&xs)?.into_iter().map(CpuStorage::F64).collect())
        }
        DType::F32 | DType::BF16 => {
            let owned: Vec<std::borrow::Cow<[f32]>> = inputs
                .iter()
                .map(|s| match s {
                    CpuStorage::F32(v) => Ok(std::borrow::Cow::Borrowed(v.as_slice())),
                    CpuStorage::BF16(v) => Ok(std::borrow::Cow::Owned(v.iter().map(|x| x.to_f32()).collect())),
                    s => Err(mixed(op, dt, s.dtype())),
                })
                .collect::<Result<Vec<_>>>()?;
            let xs: Vec<&[f32]> = owned.iter().map(|c| c.as_ref()).collect();
            Ok(k.run::<f32>(&xs)?.into_iter().map(CpuStorage::F32).collect())
        }
        DType::I32 => Err(EngineError::UnsupportedDType { op, dtype: dt, msg: "needs a float tensor" }),
    }
}

fn mixed(op: &'static str, a: DType, b: DType) -> EngineError {
    EngineError::DType { op, msg: format!("inputs mix {a} and {b}") }
}
