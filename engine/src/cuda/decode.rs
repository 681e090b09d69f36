//! Launchers for `kernels-cu/cuda/decode.cu`.
use crate::cpu::decode::DecodeGeom;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::LaunchConfig;

fn i32_of(x: usize) -> Result<i32> {
    super::kernels::i32_arg("decode", x)
}

/// Rows k, v [n, Hkv, D] to the pool rows `dst` [n] of a cache of `cache_rows` rows.
#[allow(clippy::too_many_arguments)]
pub fn kv_write(
    k_cache: &CudaStorage,
    v_cache: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    dst: &CudaStorage,
    n: usize,
    g: &DecodeGeom,
    cache_rows: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let dev = &k.device;
    let sfx = k.dtype.suffix();
    let (pk, pv, nk, nv, pd) = (k_cache.ptr(), v_cache.ptr(), k.ptr(), v.ptr(), dst.ptr());
    let (nn, hkv, d, rows, err) = (i32_of(n)?, i32_of(g.hkv)?, i32_of(g.d)?, i32_of(cache_rows)?, dev.error_flag_ptr());
    launch!(
        dev,
        "decode",
        format!("kv_write_{sfx}"),
        super::kernels::grid(n * g.hkv * g.d),
        [pk, pv, nk, nv, pd, nn, hkv, d, rows, err]
    );
    Ok(())
}

/// Whole blocks of `block_elems` elements src[i] → dst[i] within one cache tensor.
pub fn copy_blocks(
    cache: &CudaStorage,
    src: &CudaStorage,
    dst: &CudaStorage,
    n: usize,
    block_elems: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let dev = &cache.device;
    let sfx = cache.dtype.suffix();
    let (pc, ps, pd, nn, be) = (cache.ptr(), src.ptr(), dst.ptr(), i32_of(n)?, block_elems as i64);
    launch!(
        dev,
        "decode",
        format!("kv_copy_blocks_{sfx}"),
        super::kernels::grid(n * block_elems),
        [pc, ps, pd, nn, be]
    );
    Ok(())
}

/// Keys per CTA of `decode_chunk_*` (`kChunk`) and the most query heads one CTA takes (`kMaxGroup`).
pub const CHUNK: usize = 256;
const MAX_GROUP: usize = 8;
/// The most query rows (group members × heads per CTA) one `decode_prefix_*` CTA takes (`kMaxPrefixRows`).
pub const MAX_PREFIX_ROWS: usize = 64;

/// Query heads one CTA of the decode kernels takes: the largest divisor of the GQA group that is at most
/// `MAX_GROUP`.
pub fn heads_per_cta(hq: usize, hkv: usize) -> usize {
    let group = hq / hkv.max(1);
    (1..=group.min(MAX_GROUP)).rev().find(|&h| group.is_multiple_of(h)).unwrap_or(1)
}
const THREADS: u32 = 128;

/// Keys per CTA of `decode_prefix_*` (`kPrefixChunk`).
pub const PREFIX_CHUNK: usize = 128;

/// Prefix groups of a decode-attention call (`ops::check_prefix_groups`): `group_rows`, `prefix_len` i32
/// [batch]; `max_prefix` bounds the prefixes (sets the prefix pass's chunk count).
pub struct PrefixArgs<'a> {
    pub group_rows: &'a CudaStorage,
    pub prefix_len: &'a CudaStorage,
    pub max_prefix: usize,
}

/// Split-K decode attention (see decode.cu): chunk partials into f32 workspaces, then the combine.
/// `table` [batch, g.width] block-table rows, `len` [batch] key counts; `max_keys` = the largest key
/// count, which sets the number of chunks. With prefix groups, `decode_prefix` first writes each group's
/// shared-prefix partials (every key row read once for the group's rows) into the first slots and the
/// chunk pass covers each row's keys from its prefix on.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    q: &CudaStorage,
    k_cache: &CudaStorage,
    v_cache: &CudaStorage,
    table: &CudaStorage,
    len: &CudaStorage,
    batch: usize,
    max_keys: usize,
    g: &DecodeGeom,
    prefix: Option<PrefixArgs>,
) -> Result<CudaStorage> {
    let dev = &q.device;
    let o = CudaStorage::alloc(dev, q.dtype, q.len)?;
    if batch == 0 {
        return Ok(o);
    }
    if ![32, 64, 128].contains(&g.d) {
        return Err(EngineError::shape("decode_attention", format!("head_dim {} (the kernel takes 32, 64, 128)", g.d)));
    }
    let heads = heads_per_cta(g.hq, g.hkv);
    let capacity = g.width * g.block_size;
    let prefix = prefix.filter(|p| p.max_prefix > 0);
    let prefix_chunks = prefix.as_ref().map_or(0, |p| p.max_prefix.min(capacity).div_ceil(PREFIX_CHUNK));
    let chunks = max_keys.clamp(1, capacity).div_ceil(CHUNK);
    let slots = prefix_chunks + chunks;
    let rows = batch * g.hq * slots;
    let ws_o = CudaStorage::alloc(dev, DType::F32, rows * g.d)?;
    let ws_m = CudaStorage::alloc(dev, DType::F32, rows)?;
    let ws_l = CudaStorage::alloc(dev, DType::F32, rows)?;
    let sfx = q.dtype.suffix();
    let (pwo, pwm, pwl) = (ws_o.ptr(), ws_m.ptr(), ws_l.ptr());
    let (pq, pk, pv, pt, pl) = (q.ptr(), k_cache.ptr(), v_cache.ptr(), table.ptr(), len.ptr());
    let (hq, hkv, gh, bs, width, scale, nslots) = (
        i32_of(g.hq)?,
        i32_of(g.hkv)?,
        i32_of(heads)?,
        i32_of(g.block_size)?,
        i32_of(g.width)?,
        (1.0 / (g.d as f64).sqrt()) as f32,
        i32_of(slots)?,
    );
    let mut start = 0u64; // null: every row's keys from 0
    if let Some(p) = &prefix {
        // pool-row offsets | K and V tiles (rows padded by 16 bytes) | per query row its f32 q and scores
        let es = q.dtype.size_in_bytes();
        let smem = 8 * PREFIX_CHUNK + 2 * PREFIX_CHUNK * (g.d * es + 16) + 4 * MAX_PREFIX_ROWS * (g.d + 136);
        let name = format!("decode_prefix_{sfx}_d{}", g.d);
        dev.allow_shared_memory("decode", &name, smem)?;
        let cfg = LaunchConfig {
            grid_dim: (i32_of(batch)? as u32, (g.hq / heads) as u32, i32_of(prefix_chunks)? as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let (pg, pp) = (p.group_rows.ptr(), p.prefix_len.ptr());
        launch!(
            dev,
            "decode",
            name,
            cfg,
            [pwo, pwm, pwl, pq, pk, pv, pt, pp, pg, hq, hkv, gh, bs, width, scale, nslots]
        );
        start = pp;
    }
    let per_thread_keys = THREADS as usize / (g.d / (16 / q.dtype.size_in_bytes()));
    let smem = (heads * g.d + heads * CHUNK + per_thread_keys * heads * g.d) * 4 + CHUNK * 8;
    let name = format!("decode_chunk_{sfx}_d{}", g.d);
    dev.allow_shared_memory("decode", &name, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (i32_of(batch)? as u32, (g.hq / heads) as u32, i32_of(chunks)? as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let slot0 = i32_of(prefix_chunks)?;
    launch!(
        dev,
        "decode",
        name,
        cfg,
        [pwo, pwm, pwl, pq, pk, pv, pt, pl, start, hq, hkv, gh, bs, width, scale, slot0, nslots]
    );
    let combine =
        LaunchConfig { grid_dim: (batch as u32, g.hq as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    let (po, d) = (o.ptr(), i32_of(g.d)?);
    launch!(dev, "decode", format!("decode_combine_{sfx}"), combine, [po, pwo, pwm, pwl, hq, d, nslots]);
    Ok(o)
}
