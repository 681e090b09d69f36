//! Launcher for `kernels-cu/cuda/sample.cu` (one CTA per sampled row).
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::LaunchConfig;

const THREADS: u32 = 256;

/// The row-independent arguments of the device sampler.
pub struct DeviceSampling {
    pub vocab: usize,
    /// 1 / temperature (1 when greedy).
    pub inv_t: f32,
    pub greedy: bool,
    /// 0 = off.
    pub top_k: usize,
    /// In (0, 1]; 1 = off.
    pub top_p: f32,
}

/// The device sampler's outputs: tokens i32 [m], log-probs f32 [m].
pub struct DevicePicks {
    pub tokens: CudaStorage,
    pub logprobs: CudaStorage,
}

/// One pick per row `rows` (i32 [m]) of `logits` [R, vocab], keyed by `keys` (i32 [m, 4]: seed lo, seed
/// hi, position lo, position hi).
pub fn sample_rows(
    logits: &CudaStorage,
    rows: &CudaStorage,
    keys: &CudaStorage,
    cfg: &DeviceSampling,
) -> Result<DevicePicks> {
    let dev = &logits.device;
    let m = rows.len;
    if keys.len != 4 * m {
        return Err(EngineError::invalid("sample_rows", format!("{m} rows but {} key words (need 4 a row)", keys.len)));
    }
    let tokens = CudaStorage::alloc(dev, DType::I32, m)?;
    let logprobs = CudaStorage::alloc(dev, DType::F32, m)?;
    if m == 0 {
        return Ok(DevicePicks { tokens, logprobs });
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
    let launch = LaunchConfig {
        grid_dim: (m as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: (2 * THREADS + 2) * 4,
    };
    let vocab = super::kernels::i32_arg("sample_rows", cfg.vocab)?;
    let top_k = super::kernels::i32_arg("sample_rows", cfg.top_k)?;
    let (inv_t, top_p, greedy) = (cfg.inv_t, cfg.top_p, cfg.greedy as i32);
    let (pt, pl, pz, pr, pk) = (tokens.ptr(), logprobs.ptr(), logits.ptr(), rows.ptr(), keys.ptr());
    launch!(dev, "sample", name, launch, [pt, pl, pz, pr, pk, vocab, inv_t, greedy, top_k, top_p]);
    Ok(DevicePicks { tokens, logprobs })
}
