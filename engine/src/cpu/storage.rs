//! Host storage and the dispatcher that runs a generic CPU kernel on f32 / bf16 / f64 data.
use super::Real;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use half::bf16;

/// f64 → bf16, rounded to nearest (ties to even) as `__float2bfloat16_rn` rounds an f32. `half`'s
/// `bf16::from_f64` reads only the upper 32 bits of the f64, so a value just off a tie in its low bits (an
/// f32's last three mantissa bits among them) is rounded as the tie. Here the f64 is first rounded to f32
/// with round-to-odd (an inexact result keeps a set last bit), which keeps what the second rounding needs:
/// f64 → f32 (odd) → bf16 (nearest even) is correctly rounded.
pub fn bf16_from_f64(x: f64) -> bf16 {
    let f = x as f32;
    if !f.is_finite() || f as f64 == x || f.to_bits() & 1 == 1 {
        return bf16::from_f32(f);
    }
    // inexact with an even last bit: one ulp toward x (x lies strictly between f and that neighbour)
    let bits = f.to_bits();
    let away_from_zero = (x > f as f64) == (f > 0.0 || (f == 0.0 && x > 0.0));
    bf16::from_f32(f32::from_bits(if away_from_zero { bits + 1 } else { bits - 1 }))
}

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
            DType::BF16 => CpuStorage::BF16(try_filled(n, bf16_from_f64(v))?),
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
            DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16_from_f64(x)).collect()),
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

#[cfg(test)]
mod tests {
    use super::bf16_from_f64;
    use half::bf16;

    #[test]
    fn f64_to_bf16_rounds_to_nearest_even_whatever_the_low_bits() {
        // 1 + 2^-8 is the tie between bf16 1.0 and 1 + 2^-7; a hair above it (2^-40, in the f64's low 32
        // bits) must round up, a hair below down, the tie itself to even (1.0)
        let tie = 1.0 + 2f64.powi(-8);
        assert_eq!(bf16_from_f64(tie + 2f64.powi(-40)).to_f64(), 1.0 + 2f64.powi(-7));
        assert_eq!(bf16_from_f64(tie - 2f64.powi(-40)).to_f64(), 1.0);
        assert_eq!(bf16_from_f64(tie).to_f64(), 1.0);
        assert_eq!(bf16_from_f64(-(tie + 2f64.powi(-40))).to_f64(), -(1.0 + 2f64.powi(-7)));
        // an f32 just above a tie by its last mantissa bit: what `half`'s from_f64 gets wrong
        let x = f32::from_bits(0x3f80_8001) as f64;
        assert_eq!(bf16_from_f64(x), bf16::from_f32(x as f32));
        assert_ne!(bf16::from_f64(x), bf16::from_f32(x as f32), "the half crate's rounding this replaces");
        // every f32 value converts as from_f32 does; specials and the extremes too
        let mut s: u64 = 7;
        for _ in 0..200_000 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let f = f32::from_bits((s >> 32) as u32);
            let (a, b) = (bf16_from_f64(f as f64), bf16::from_f32(f));
            assert!(a.to_bits() == b.to_bits() || (f.is_nan() && a.is_nan()), "{f:e}: {a} vs {b}");
        }
        for v in [0.0, -0.0, 1e-300, -1e-300, f64::INFINITY, f64::NEG_INFINITY, 1e300, f32::MAX as f64 * 1.0000001] {
            let got = bf16_from_f64(v);
            assert_eq!(got.to_bits(), bf16::from_f32(v as f32).to_bits(), "{v:e}");
        }
        assert!(bf16_from_f64(f64::NAN).is_nan());
    }
}
