//! Matmul through cuBLAS (`cublasGemmStridedBatchedEx`): bf16 or f32 inputs, f32 accumulation
//! (`CUBLAS_COMPUTE_32F`, no TF32). Row-major C[b] = op(A[b])·op(B[b]) is computed as the column-major
//! product Cᵀ = op(B)ᵀ·op(A)ᵀ, so no operand is ever copied or transposed in memory.
use super::CudaDevice;
use crate::cpu::matmul::Gemm;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use cudarc::cublas::result;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t as Op, cudaDataType_t};
use std::ffi::c_void;

/// `c` must hold batch·m·n elements of `dtype`; `a`, `b` as described by `g` (batch stride 0 = broadcast).
pub fn gemm(dev: &CudaDevice, dtype: DType, g: &Gemm, a: u64, b: u64, c: u64) -> Result<()> {
    gemm_into(dev, dtype, dtype, g, a, b, c, 0.0)
}

fn cuda_type(dtype: DType) -> Result<cudaDataType_t> {
    match dtype {
        DType::BF16 => Ok(cudaDataType_t::CUDA_R_16BF),
        DType::F32 => Ok(cudaDataType_t::CUDA_R_32F),
        d => Err(EngineError::UnsupportedDType { op: "matmul", dtype: d, msg: "cuBLAS path takes f32 or bf16" }),
    }
}

/// C = op(A)·op(B) + beta·C with inputs of `in_dtype` and C of `out_dtype` (e.g. bf16 inputs into an f32
/// accumulator with beta = 1 for gradient accumulation).
#[allow(clippy::too_many_arguments)]
pub fn gemm_into(
    dev: &CudaDevice,
    in_dtype: DType,
    out_dtype: DType,
    g: &Gemm,
    a: u64,
    b: u64,
    c: u64,
    beta: f32,
) -> Result<()> {
    let (ty, cty) = (cuda_type(in_dtype)?, cuda_type(out_dtype)?);
    let dtype = out_dtype;
    let to_i32 = |x: usize| {
        i32::try_from(x).map_err(|_| EngineError::shape("matmul", format!("dimension {x} exceeds cuBLAS's i32 range")))
    };
    if g.batch * g.m * g.n == 0 {
        return Ok(());
    }
    dev.bind()?;
    if g.k == 0 && beta == 0.0 {
        // An empty inner dimension gives zeros (cuBLAS would reject ld = 0).
        let bytes = g.batch * g.m * g.n * dtype.size_in_bytes();
        // SAFETY: c holds batch·m·n elements of dtype.
        return unsafe { cudarc::driver::result::memset_d8_async(c, 0, bytes, dev.stream().cu_stream()) }
            .map_err(|e| EngineError::cuda("matmul with k = 0", e));
    }
    if g.k == 0 {
        if beta != 1.0 {
            return Err(EngineError::invalid("matmul", format!("k = 0 with beta {beta} (0 or 1 only)")));
        }
        return Ok(()); // C = 0 + 1·C, already in place
    }
    let (m, n, k) = (to_i32(g.m)?, to_i32(g.n)?, to_i32(g.k)?);
    if dev.kernel_choices().gemm == super::gemm_lt::GemmBackend::Lt {
        to_i32(g.batch)?;
        return super::gemm_lt::gemm_into_lt(dev, (in_dtype, out_dtype), g, [a, b, c], beta);
    }
    // Column-major view: A_cm = B (ld = k if trans_b else n), B_cm = A (ld = m if trans_a else k).
    let (op_a, lda) = if g.trans_b { (Op::CUBLAS_OP_T, k) } else { (Op::CUBLAS_OP_N, n) };
    let (op_b, ldb) = if g.trans_a { (Op::CUBLAS_OP_T, m) } else { (Op::CUBLAS_OP_N, k) };
    let alpha = 1.0f32;
    let batch = to_i32(g.batch)?;
    // SAFETY: pointers are live device buffers sized by the caller for this geometry; alpha/beta are host
    // scalars (the handle's default pointer mode).
    crate::profile::host_region("cuda: cublasGemmStridedBatchedEx", || unsafe {
        result::gemm_strided_batched_ex(
            *dev.blas().handle(),
            op_a,
            op_b,
            n,
            m,
            k,
            (&alpha as *const f32).cast::<c_void>(),
            b as *const c_void,
            ty,
            lda,
            g.stride_b as i64,
            a as *const c_void,
            ty,
            ldb,
            g.stride_a as i64,
            (&beta as *const f32).cast::<c_void>(),
            c as *mut c_void,
            cty,
            n,
            (g.m * g.n) as i64,
            batch,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    })
    .map_err(|e| {
        EngineError::cuda(format!("cublasGemmStridedBatchedEx {}x{}x{} batch {}", g.m, g.n, g.k, g.batch), e)
    })?;
    dev.after_launch("gemm")
}
