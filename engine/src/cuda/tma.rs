//! TMA descriptors (`CUtensorMap`) for the Hopper kernels: `cuTensorMapEncodeTiled` on a packed bf16 tensor
//! `[T, H, D]` seen as 3-D `(D, H, T)` with a box of `(64, 1, rows)` and the 128-byte swizzle — what
//! `kernels-cu/cuda/attention_hopper.cu` copies into shared memory (`TmaDesc` in `hopper_desc.cuh`; the CPU
//! model of the same map is `emu_encode_tma` in `kernels-cu/emu/hopper.cuh`).
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::sys;

/// `TmaDesc` of `hopper_desc.cuh`: a `CUtensorMap`'s 128 bytes, 64-byte aligned as a kernel parameter.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct TmaDesc {
    opaque: [u64; 16],
}

/// The box a tile copy moves: 64 elements of D (one 128-byte swizzle row), one head, `rows` tokens.
pub(crate) const BOX_D: usize = 64;

/// The map of `x` (bf16 `[tokens, heads, d]`, d a multiple of 64) for boxes of `rows` tokens.
pub(crate) fn bf16_rows(x: &CudaStorage, tokens: usize, heads: usize, d: usize, rows: u32) -> Result<TmaDesc> {
    let bad = |msg: String| EngineError::invalid("TMA descriptor", msg);
    if !d.is_multiple_of(BOX_D) || heads == 0 || tokens == 0 || !(1..=256).contains(&rows) {
        return Err(bad(format!("[{tokens}, {heads}, {d}] with {rows}-row boxes: d must be a multiple of 64")));
    }
    if x.len < tokens * heads * d {
        return Err(bad(format!("a buffer of {} elements holds no [{tokens}, {heads}, {d}] tensor", x.len)));
    }
    let dims: [u64; 3] = [d as u64, heads as u64, tokens as u64];
    let strides: [u64; 2] = [(d * 2) as u64, (heads * d * 2) as u64];
    let boxes: [u32; 3] = [BOX_D as u32, 1, rows];
    let elem_strides: [u32; 3] = [1, 1, 1];
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    // SAFETY: the arrays outlive the call and have the rank's lengths; the global address is a live device
    // allocation of at least tokens·heads·d bf16 (checked above), 16-byte aligned like every allocation.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            3,
            x.ptr() as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            elem_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(EngineError::Cuda {
            context: "cuTensorMapEncodeTiled".into(),
            msg: format!("{r:?} for a bf16 [{tokens}, {heads}, {d}] tensor with (64, 1, {rows}) boxes"),
        });
    }
    // SAFETY: the driver filled the map (CUDA_SUCCESS); its 128 bytes are plain data.
    let map = unsafe { map.assume_init() };
    Ok(TmaDesc { opaque: map.opaque })
}

#[cfg(test)]
mod tests {
    use super::TmaDesc;

    #[test]
    fn a_descriptor_is_a_tensor_maps_128_bytes_aligned_as_the_kernel_parameter() {
        assert_eq!(std::mem::size_of::<TmaDesc>(), 128);
        assert_eq!(std::mem::align_of::<TmaDesc>(), 64);
        assert_eq!(std::mem::size_of::<cudarc::driver::sys::CUtensorMap>(), 128);
    }
}
