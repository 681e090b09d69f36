//! Kernel geometry structs, laid out exactly like their twins in `kernels-cu/cuda/common.cuh`.
use crate::error::{EngineError, Result};
use cudarc::driver::DeviceRepr;

pub const MAX_DIMS: usize = 6;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BcastGeo {
    pub ndim: i32,
    pub dims: [i64; MAX_DIMS],
    pub a_strides: [i64; MAX_DIMS],
    pub b_strides: [i64; MAX_DIMS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyGeo {
    pub ndim: i32,
    pub dims: [i64; MAX_DIMS],
    pub in_strides: [i64; MAX_DIMS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReduceGeo {
    pub out_ndim: i32,
    pub out_dims: [i64; MAX_DIMS],
    pub out_strides: [i64; MAX_DIMS],
    pub red_ndim: i32,
    pub red_dims: [i64; MAX_DIMS],
    pub red_strides: [i64; MAX_DIMS],
}

// SAFETY: plain-old-data #[repr(C)] structs matching the CUDA declarations field for field.
unsafe impl DeviceRepr for BcastGeo {}
unsafe impl DeviceRepr for CopyGeo {}
unsafe impl DeviceRepr for ReduceGeo {}

/// Copy `v` into a fixed array (left-aligned, as the kernels decompose dims `[0, ndim)`), padding with `pad`.
pub fn pack(op: &'static str, v: &[usize], pad: i64) -> Result<[i64; MAX_DIMS]> {
    if v.len() > MAX_DIMS {
        return Err(EngineError::shape(op, format!("rank {} exceeds the CUDA limit of {MAX_DIMS}", v.len())));
    }
    let mut a = [pad; MAX_DIMS];
    for (dst, &x) in a.iter_mut().zip(v) {
        *dst = x as i64;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    #[test]
    fn layouts_match_cuda() {
        // Sizes reported by nvcc for the CUDA structs (8-byte aligned).
        assert_eq!(std::mem::size_of::<super::BcastGeo>(), 152);
        assert_eq!(std::mem::size_of::<super::CopyGeo>(), 104);
        assert_eq!(std::mem::size_of::<super::ReduceGeo>(), 208);
    }
}
