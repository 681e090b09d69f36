//! Launchers for `kernels-cu/cuda/decode.cu`.
use crate::cpu::decode::DecodeGeom;
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

pub fn decode_attention(
    q: &CudaStorage,
    k_cache: &CudaStorage,
    v_cache: &CudaStorage,
    slot: &CudaStorage,
    len: &CudaStorage,
    batch: usize,
    g: &DecodeGeom,
) -> Result<CudaStorage> {
    let dev = &q.device;
    let o = CudaStorage::alloc(dev, q.dtype, q.len)?;
    if batch == 0 {
        return Ok(o);
    }
    let smem = g.max_len * 4;
    if smem > 227 * 1024 {
        return Err(EngineError::shape(
            "decode_attention",
            format!("max_len {} exceeds the {} keys one block holds", g.max_len, 227 * 256),
        ));
    }
    let name = format!("decode_attention_{}", q.dtype.suffix());
    dev.allow_shared_memory("decode", &name, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (batch as u32, g.hq as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let (po, pq, pk, pv, ps, pl) = (o.ptr(), q.ptr(), k_cache.ptr(), v_cache.ptr(), slot.ptr(), len.ptr());
    let (hq, hkv, d, ml, scale) =
        (i32_of(g.hq)?, i32_of(g.hkv)?, i32_of(g.d)?, i32_of(g.max_len)?, (1.0 / (g.d as f64).sqrt()) as f32);
    launch!(dev, "decode", name, cfg, [po, pq, pk, pv, ps, pl, hq, hkv, d, ml, scale]);
    Ok(o)
}
