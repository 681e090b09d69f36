//! Launchers for `kernels-cu/cuda/decode.cu`.
use crate::cpu::decode::DecodeGeom;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::LaunchConfig;

fn i32_of(x: usize) -> Result<i32> {
    super::kernels::i32_arg("decode", x)
}

#[allow(clippy::too_many_arguments)]
pub fn kv_write(
    k_cache: &CudaStorage,
    v_cache: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    slot: &CudaStorage,
    pos: &CudaStorage,
    n: usize,
    g: &DecodeGeom,
) -> Result<()> {
    let dev = &k.device;
    let sfx = k.dtype.suffix();
    let (pk, pv, nk, nv, ps, pp) = (k_cache.ptr(), v_cache.ptr(), k.ptr(), v.ptr(), slot.ptr(), pos.ptr());
    let (nn, hkv, d, ml, err) = (i32_of(n)?, i32_of(g.hkv)?, i32_of(g.d)?, i32_of(g.max_len)?, dev.error_flag_ptr());
    launch!(
        dev,
        "decode",
        format!("kv_write_{sfx}"),
        super::kernels::grid(n * g.hkv * g.d),
        [pk, pv, nk, nv, ps, pp, nn, hkv, d, ml, err]
    );
    Ok(())
}

/// Keys per CTA of `decode_chunk_*` (`kChunk`) and the most query heads one CTA takes (`kMaxGroup`).
const CHUNK: usize = 256;
const MAX_GROUP: usize = 8;
const THREADS: u32 = 128;

/// Split-K decode attention (see decode.cu): chunk partials into f32 workspaces, then the combine.
/// `max_keys` = the longest request's key count (its position + 1), which sets the number of chunks.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    q: &CudaStorage,
    k_cache: &CudaStorage,
    v_cache: &CudaStorage,
    slot: &CudaStorage,
    len: &CudaStorage,
    batch: usize,
    max_keys: usize,
    g: &DecodeGeom,
) -> Result<CudaStorage> {
    let dev = &q.device;
    let o = CudaStorage::alloc(dev, q.dtype, q.len)?;
    if batch == 0 {
        return Ok(o);
    }
    if ![32, 64, 128].contains(&g.d) {
        return Err(EngineError::shape("decode_attention", format!("head_dim {} (the kernel takes 32, 64, 128)", g.d)));
    }
    // query heads per CTA: the largest divisor of the GQA group that is at most MAX_GROUP
    let group = g.hq / g.hkv;
    let heads = (1..=group.min(MAX_GROUP)).rev().find(|&h| group.is_multiple_of(h)).unwrap_or(1);
    let chunks = max_keys.clamp(1, g.max_len).div_ceil(CHUNK);
    let rows = batch * g.hq * chunks;
    let ws_o = CudaStorage::alloc(dev, DType::F32, rows * g.d)?;
    let ws_m = CudaStorage::alloc(dev, DType::F32, rows)?;
    let ws_l = CudaStorage::alloc(dev, DType::F32, rows)?;
    let per_thread_keys = THREADS as usize / (g.d / (16 / q.dtype.size_in_bytes()));
    let smem = (heads * g.d + heads * CHUNK + per_thread_keys * heads * g.d) * 4;
    let sfx = q.dtype.suffix();
    let name = format!("decode_chunk_{sfx}_d{}", g.d);
    dev.allow_shared_memory("decode", &name, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (i32_of(batch)? as u32, (g.hq / heads) as u32, i32_of(chunks)? as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let (pwo, pwm, pwl) = (ws_o.ptr(), ws_m.ptr(), ws_l.ptr());
    let (pq, pk, pv, ps, pl) = (q.ptr(), k_cache.ptr(), v_cache.ptr(), slot.ptr(), len.ptr());
    let (hq, hkv, gh, ml, scale) =
        (i32_of(g.hq)?, i32_of(g.hkv)?, i32_of(heads)?, i32_of(g.max_len)?, (1.0 / (g.d as f64).sqrt()) as f32);
    launch!(dev, "decode", name, cfg, [pwo, pwm, pwl, pq, pk, pv, ps, pl, hq, hkv, gh, ml, scale]);
    let combine =
        LaunchConfig { grid_dim: (batch as u32, g.hq as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    let (po, d, nc) = (o.ptr(), i32_of(g.d)?, i32_of(chunks)?);
    launch!(dev, "decode", format!("decode_combine_{sfx}"), combine, [po, pwo, pwm, pwl, hq, d, nc]);
    Ok(o)
}
