//! Launcher for `kernels-cu/cuda/sample.cu` (one CTA per sampled row).
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::LaunchConfig;

const THREADS: u32 = 256;

/// (tokens i32 [m], log-probs f32 [m]) for rows `rows` (i32 [m]) of `logits` [R, vocab] with uniforms
/// `u` (f32 [m]); `inv_t` = 1/temperature (1 when greedy).
pub fn sample_rows(
    logits: &CudaStorage,
    rows: &CudaStorage,
    u: &CudaStorage,
    vocab: usize,
    inv_t: f32,
    greedy: bool,
) -> Result<(CudaStorage, CudaStorage)> {
    let dev = &logits.device;
    let m = rows.len;
    let tokens = CudaStorage::alloc(dev, DType::I32, m)?;
    let logps = CudaStorage::alloc(dev, DType::F32, m)?;
    if m == 0 {
        return Ok((tokens, logps));
    }
    if m >= 1 << 31 {
        return Err(EngineError::invalid("sample_rows", format!("{m} rows exceed the grid")));
    }
    let name = match logits.dtype {
        DType::F32 => "sample_rows_f32",
        DType::BF16 => "sample_rows_bf16",
        other => {
            return Err(EngineError::UnsupportedDType { op: "sample_rows", dtype: other, msg: "f32 or bf16 logits" })
        }
    };
    let cfg =
        LaunchConfig { grid_dim: (m as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: (THREADS + 1) * 4 };
    let vocab = super::kernels::i32_arg("sample_rows", vocab)?;
    let (pt, pl, pz, pr, pu, g) = (tokens.ptr(), logps.ptr(), logits.ptr(), rows.ptr(), u.ptr(), greedy as i32);
    launch!(dev, "sample", name, cfg, [pt, pl, pz, pr, pu, vocab, inv_t, g]);
    Ok((tokens, logps))
}
