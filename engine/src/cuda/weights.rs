//! Launcher for `kernels-cu/cuda/weights.cu` (soft token weights, one block per pool).
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::LaunchConfig;

pub fn soft_weights(
    s: &CudaStorage,
    valid: &CudaStorage,
    cu_pools: &CudaStorage,
    num_pools: usize,
    direction: f64,
    temperature: f64,
    floor: f64,
) -> Result<CudaStorage> {
    let dev = &s.device;
    let w = CudaStorage::alloc(dev, DType::F32, s.len)?;
    if num_pools == 0 || s.len == 0 {
        return Ok(w);
    }
    let cfg =
        LaunchConfig { grid_dim: (num_pools.min(1 << 20) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let np = super::kernels::i32_arg("soft_weights", num_pools)?;
    let (pw, ps, pv, pc) = (w.ptr(), s.ptr(), valid.ptr(), cu_pools.ptr());
    let (d, it, fl) = (direction as f32, (1.0 / temperature) as f32, floor as f32);
    launch!(dev, "weights", "soft_weights", cfg, [pw, ps, pv, pc, np, d, it, fl]);
    Ok(w)
}
