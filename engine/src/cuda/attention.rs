//! Launchers for `kernels-cu/cuda/attention_mma.cu`, `attention_hopper.cu`, `attention_mma_bwd.cu`,
//! `attention_hmix.cu` and `attention.cu`: the fused forward with the row statistics asked for (by the
//! device's [`AttnVersion`] choice; the head-mixture entropy is a second pass), the backward (row dot preprocess, main kernel with f32 dQ accumulation, GQA reduce,
//! final cast) and entropy normalisation.
use super::kernels::{self, grid};
use super::tma::{self, TmaDesc};
use crate::cpu::attention::AttnGeom;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::ops::{Over, RowStat, RowStats};
use crate::storage::CudaStorage;
use cudarc::driver::{DeviceRepr, LaunchConfig};

/// The shipped versions of the fused attention, a device's `KernelChoices::attention`. Both forwards compute
/// the same outputs and row statistics from the same online-softmax stage (`attention_softmax.cuh`); both
/// backward main kernels write the same per-head dK/dV and dQ accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnVersion {
    /// `attention_mma.cu` and `attention_mma_bwd.cu`: mma.sync m16n8k16 from registers, cp.async double
    /// buffer (any sm_80+ GPU, d 32, 64, 128).
    Mma,
    /// `attention_hopper.cu`, and `attention_hopper_bwd.cu` as the backward's main kernel: TMA + mbarrier
    /// producer/consumer pipeline and wgmma (sm_90a, d 64 and 128; other head sizes and GPUs run `Mma`).
    Hopper,
}

impl AttnVersion {
    pub const ALL: [AttnVersion; 2] = [Self::Mma, Self::Hopper];
    pub fn name(self) -> &'static str {
        match self {
            Self::Mma => "mma",
            Self::Hopper => "hopper",
        }
    }
    /// Whether `attention_hopper.cu` runs head size `d` on a GPU of compute capability `cc` (sm_90a PTX loads
    /// on 9.0 only).
    pub fn hopper_runs(d: usize, cc: (i32, i32)) -> bool {
        (d == 64 || d == 128) && cc == (9, 0)
    }
}

/// `AttnFwdParams` of `kernels-cu/cuda/attention_params.cuh`, field for field (device pointers as u64;
/// `stat` by [`RowStat`] slot, 0 = not asked for).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct AttnFwdParams {
    o: u64,
    lse: u64,
    stat: [u64; RowStat::ONLINE],
    q: u64,
    k: u64,
    v: u64,
    cu_seqlens: u64,
    hq: i32,
    hkv: i32,
    scale: f32,
    sink_keys: i32,
}

/// `AttnHmixParams` of `attention_params.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct AttnHmixParams {
    hmix: u64,
    lse: u64,
    q: u64,
    k: u64,
    cu_seqlens: u64,
    hq: i32,
    hkv: i32,
    scale: f32,
    pad: i32,
}

/// `AttnHopperParams` of `attention_params.cuh`: the TMA maps of q, k and v, then the forward's parameters.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub(super) struct AttnHopperParams {
    tq: TmaDesc,
    tk: TmaDesc,
    tv: TmaDesc,
    fwd: AttnFwdParams,
}

/// `AttnHopperBwdParams` of `attention_params.cuh`: the TMA maps of q, k, v and dout, then the main backward
/// kernel's pointers and sizes.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub(super) struct AttnHopperBwdParams {
    tq: TmaDesc,
    tk: TmaDesc,
    tv: TmaDesc,
    tdo: TmaDesc,
    dq_accum: u64,
    dk_head: u64,
    dv_head: u64,
    lse: u64,
    dvec: u64,
    cu_seqlens: u64,
    hq: i32,
    hkv: i32,
    scale: f32,
    pad: i32,
}

// SAFETY: plain-old-data #[repr(C)] structs matching the CUDA declarations field for field.
unsafe impl DeviceRepr for AttnFwdParams {}
unsafe impl DeviceRepr for AttnHopperBwdParams {}
unsafe impl DeviceRepr for AttnHopperParams {}
unsafe impl DeviceRepr for AttnHmixParams {}

/// What [`forward`] returns: the output, the LSE and each statistic asked for.
pub struct CudaAttnOut {
    pub o: CudaStorage,
    pub lse: CudaStorage,
    /// The statistics asked for, in slot order (f32).
    pub stats: Vec<CudaStorage>,
}

/// `attention_hmix.cu`: 64 query rows per CTA (every head), 4 warps.
const HMIX_ROWS: usize = 64;
const HMIX_THREADS: u32 = 128;

/// Dynamic shared memory of `attn_hmix_d*` (mirrors `HmixSmem<D>`: two stages of a 64-row Q and K tile).
pub fn hmix_smem_bytes(d: usize) -> usize {
    4 * HMIX_ROWS * (d + 8) * 2
}

const BLOCK: usize = 64;
const THREADS: u32 = 128;
/// `attention_mma.cu`: 128 query rows per CTA, 8 warps.
const MMA_BLOCK: usize = 128;
const MMA_THREADS: u32 = 256;

/// Dynamic shared memory of `attn_fwd_mma_d*` (mirrors `MmaSmem<D>`: a 128-row Q tile and two stages of
/// 64-row K and V tiles, rows padded to D + 8 bf16).
pub fn mma_smem_bytes(d: usize) -> usize {
    (MMA_BLOCK + 4 * BLOCK) * (d + 8) * 2
}

/// `attention_hopper.cu`: 128 query rows per CTA, a producer and two consumer warpgroups.
const HOPPER_BLOCK: usize = 128;
const HOPPER_THREADS: u32 = 384;

/// Dynamic shared memory of `attn_fwd_hopper_d*` (mirrors `HopperSmem<D>`: 1024 bytes of alignment room, Q
/// and two stages of K and V as (D/64) boxes of 128 rows × 128 bytes, seven 8-byte barriers).
pub fn hopper_smem_bytes(d: usize) -> usize {
    1024 + 5 * (d / 64) * 128 * 128 + 8 * 7
}

/// `attention_hopper_bwd.cu`: 128 keys per CTA, 64 queries per step, 384 threads.
const HOPPER_BWD_KEYS: usize = 128;
const HOPPER_BWD_QUERIES: usize = 64;

/// Dynamic shared memory of `attn_bwd_hopper_d*` (mirrors `HopperBwdSmem<D>`: alignment room, K and V as
/// (D/64) boxes of 128 rows, two stages of Q and dO as boxes of 64 rows, the dSᵀ tile [128][64] bf16, two
/// stages of 64 LSE and 64 D values, the f32 dQ tile [64][D + 8], five barriers).
pub fn hopper_bwd_smem_bytes(d: usize) -> usize {
    let boxes = d / 64;
    1024 + 2 * boxes * 128 * 128 + 4 * boxes * 64 * 128 + 128 * 64 * 2 + 2 * 2 * 64 * 4 + 64 * (d + 8) * 4 + 8 * 5
}

fn cfg(blocks_x: usize, heads: usize, seqs: usize, threads: u32, smem: usize) -> Result<LaunchConfig> {
    if heads > 65_535 || seqs > 65_535 {
        return Err(EngineError::shape("attention", format!("{heads} heads x {seqs} sequences exceed the grid")));
    }
    Ok(LaunchConfig {
        grid_dim: (blocks_x.max(1) as u32, heads as u32, seqs as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem as u32,
    })
}

fn i32_of(x: usize) -> Result<i32> {
    kernels::i32_arg("attention", x)
}

/// Dynamic shared memory of `attn_bwd_mma_d*` (mirrors `BwdSmem<D>`: K, V and two stages of Q and dO as
/// [64][D + 8] bf16 tiles, the dSᵀ tile [64][72] bf16, two stages of 64 LSE and 64 D values).
pub fn bwd_mma_smem_bytes(d: usize) -> usize {
    (6 * BLOCK * (d + 8) + BLOCK * (BLOCK + 8)) * 2 + 4 * BLOCK * 4
}

/// o bf16 [T, Hq, D], lse f32 [T, Hq] and the statistics of `stats` (f32), computed by the device's forward (and the
/// head-mixture pass).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    cu: &CudaStorage,
    g: &AttnGeom,
    max_len: usize,
    stats: &RowStats,
) -> Result<CudaAttnOut> {
    let dev = &q.device;
    let rows = g.total * g.hq;
    let o = CudaStorage::alloc(dev, DType::BF16, q.len)?;
    let lse = CudaStorage::alloc(dev, DType::F32, rows)?;
    let mut slots: [Option<CudaStorage>; RowStat::SPECS.len()] = Default::default();
    for stat in stats.iter() {
        let n = match stat.spec().over {
            Over::Head => rows,
            Over::HeadMixture => g.total,
        };
        slots[stat as usize] = Some(CudaStorage::alloc(dev, DType::F32, n)?);
    }
    if g.total > 0 {
        let ptr = |s: &Option<CudaStorage>| s.as_ref().map_or(0u64, |s| s.ptr());
        let (pq, pk, pc) = (q.ptr(), k.ptr(), cu.ptr());
        let (hq, hkv, scale) = (i32_of(g.hq)?, i32_of(g.hkv)?, g.scale as f32);
        let fwd = AttnFwdParams {
            o: o.ptr(),
            lse: lse.ptr(),
            stat: std::array::from_fn(|i| ptr(&slots[i])),
            q: pq,
            k: pk,
            v: v.ptr(),
            cu_seqlens: pc,
            hq,
            hkv,
            scale,
            sink_keys: i32_of(stats.sink_keys())?,
        };
        // the entropy-only entries keep their register budget; the other online statistics take the second
        let more = stats.beyond_entropy();
        let hopper = dev.kernel_choices().attention == AttnVersion::Hopper
            && AttnVersion::hopper_runs(g.d, dev.compute_capability()?);
        if hopper {
            let name =
                if more { format!("attn_fwd_hopper_stats_d{}", g.d) } else { format!("attn_fwd_hopper_d{}", g.d) };
            let smem = hopper_smem_bytes(g.d);
            dev.allow_shared_memory("attention_hopper", &name, smem)?;
            let c = cfg(max_len.div_ceil(HOPPER_BLOCK), g.hq, g.spans.len(), HOPPER_THREADS, smem)?;
            let rows = HOPPER_BLOCK as u32;
            let p = AttnHopperParams {
                tq: tma::bf16_rows(q, g.total, g.hq, g.d, rows)?,
                tk: tma::bf16_rows(k, g.total, g.hkv, g.d, rows)?,
                tv: tma::bf16_rows(v, g.total, g.hkv, g.d, rows)?,
                fwd,
            };
            launch!(dev, "attention_hopper", name, c, [p]);
        } else {
            let name = if more { format!("attn_fwd_mma_stats_d{}", g.d) } else { format!("attn_fwd_mma_d{}", g.d) };
            let smem = mma_smem_bytes(g.d);
            dev.allow_shared_memory("attention_mma", &name, smem)?;
            let c = cfg(max_len.div_ceil(MMA_BLOCK), g.hq, g.spans.len(), MMA_THREADS, smem)?;
            launch!(dev, "attention_mma", name, c, [fwd]);
        }
        if let Some(h) = &slots[RowStat::HeadMix as usize] {
            let name = format!("attn_hmix_d{}", g.d);
            let smem = hmix_smem_bytes(g.d);
            dev.allow_shared_memory("attention_hmix", &name, smem)?;
            let c = cfg(max_len.div_ceil(HMIX_ROWS), 1, g.spans.len(), HMIX_THREADS, smem)?;
            let pl = lse.ptr();
            let p = AttnHmixParams { hmix: h.ptr(), lse: pl, q: pq, k: pk, cu_seqlens: pc, hq, hkv, scale, pad: 0 };
            launch!(dev, "attention_hmix", name, c, [p]);
        }
    }
    Ok(CudaAttnOut { o, lse, stats: slots.into_iter().flatten().collect() })
}

/// Returns (dq, dk, dv), all bf16.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    o: &CudaStorage,
    dout: &CudaStorage,
    lse: &CudaStorage,
    cu: &CudaStorage,
    g: &AttnGeom,
    max_len: usize,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let dev = &q.device;
    if dout.dtype != DType::BF16 || lse.dtype != DType::F32 {
        return Err(EngineError::invalid("attention backward", "dout must be bf16 and lse f32"));
    }
    let rows = g.total * g.hq;
    let dk = CudaStorage::alloc(dev, DType::BF16, k.len)?;
    let dv = CudaStorage::alloc(dev, DType::BF16, v.len)?;
    if g.total == 0 {
        return Ok((CudaStorage::alloc(dev, DType::BF16, q.len)?, dk, dv));
    }
    // 1. D_i = do_i · o_i
    let dvec = CudaStorage::alloc(dev, DType::F32, rows)?;
    let (pd, po, pdo, nrows, d) = (dvec.ptr(), o.ptr(), dout.ptr(), rows as i64, i32_of(g.d)?);
    let dot_cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(4).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(dev, "attention", "attn_bwd_dot", dot_cfg, [pd, po, pdo, nrows, d]);
    let dq_acc = CudaStorage::zeros(dev, DType::F32, q.len)?;
    let (pq, pk, pv, pl, pc) = (q.ptr(), k.ptr(), v.ptr(), lse.ptr(), cu.ptr());
    let (hq, hkv, scale) = (i32_of(g.hq)?, i32_of(g.hkv)?, g.scale as f32);
    // 2. main kernel per (key tile, query head) into f32 per-head dK/dV, then the GQA group sum
    let dk_head = CudaStorage::alloc(dev, DType::F32, q.len)?;
    let dv_head = CudaStorage::alloc(dev, DType::F32, q.len)?;
    let (pdq, pdkh, pdvh) = (dq_acc.ptr(), dk_head.ptr(), dv_head.ptr());
    if dev.kernel_choices().attention == AttnVersion::Hopper && AttnVersion::hopper_runs(g.d, dev.compute_capability()?)
    {
        let name = format!("attn_bwd_hopper_d{}", g.d);
        let smem = hopper_bwd_smem_bytes(g.d);
        dev.allow_shared_memory("attention_hopper_bwd", &name, smem)?;
        let c = cfg(max_len.div_ceil(HOPPER_BWD_KEYS), g.hq, g.spans.len(), HOPPER_THREADS, smem)?;
        let (kq, kk) = (HOPPER_BWD_QUERIES as u32, HOPPER_BWD_KEYS as u32);
        let p = AttnHopperBwdParams {
            tq: tma::bf16_rows(q, g.total, g.hq, g.d, kq)?,
            tk: tma::bf16_rows(k, g.total, g.hkv, g.d, kk)?,
            tv: tma::bf16_rows(v, g.total, g.hkv, g.d, kk)?,
            tdo: tma::bf16_rows(dout, g.total, g.hq, g.d, kq)?,
            dq_accum: pdq,
            dk_head: pdkh,
            dv_head: pdvh,
            lse: pl,
            dvec: pd,
            cu_seqlens: pc,
            hq,
            hkv,
            scale,
            pad: 0,
        };
        launch!(dev, "attention_hopper_bwd", name, c, [p]);
    } else {
        let name = format!("attn_bwd_mma_d{}", g.d);
        let smem = bwd_mma_smem_bytes(g.d);
        dev.allow_shared_memory("attention_mma_bwd", &name, smem)?;
        let c = cfg(max_len.div_ceil(BLOCK), g.hq, g.spans.len(), THREADS, smem)?;
        launch!(dev, "attention_mma_bwd", name, c, [pdq, pdkh, pdvh, pq, pk, pv, pdo, pl, pd, pc, hq, hkv, scale]);
    }
    let (pdk, pdv, n) = (dk.ptr(), dv.ptr(), k.len as i64);
    launch!(dev, "attention_mma_bwd", "attn_bwd_mma_reduce", grid(k.len), [pdk, pdv, pdkh, pdvh, n, hq, hkv, d]);
    // 3. dQ to bf16
    let dq = kernels::cast(&dq_acc, DType::BF16)?;
    Ok((dq, dk, dv))
}

/// (Hnorm [T, Hq], head mean [T]) from the entropy [T, Hq] (f32).
pub fn normalize_entropy(
    ent: &CudaStorage,
    cu: &CudaStorage,
    total: usize,
    hq: usize,
    num_seqs: usize,
) -> Result<(CudaStorage, CudaStorage)> {
    let dev = &ent.device;
    if ent.dtype != DType::F32 {
        return Err(EngineError::invalid("normalized_entropy", "the CUDA entropy is f32"));
    }
    let norm = CudaStorage::alloc(dev, DType::F32, total * hq)?;
    let mean = CudaStorage::alloc(dev, DType::F32, total)?;
    let (pn, pm, pe, pc, ns, t, h) =
        (norm.ptr(), mean.ptr(), ent.ptr(), cu.ptr(), i32_of(num_seqs)?, total as i64, i32_of(hq)?);
    launch!(dev, "attention", "attn_entropy_norm", grid(total), [pn, pm, pe, pc, ns, t, h]);
    Ok((norm, mean))
}

#[cfg(test)]
mod tests {
    /// The numbers `kernels-cu/emu/attention_hopper_bwd_check.cpp` asserts for `HopperBwdSmem<D>::bytes`.
    #[test]
    fn hopper_bwd_smem_mirrors_the_kernel() {
        assert_eq!(super::hopper_bwd_smem_bytes(64), 102_440);
        assert_eq!(super::hopper_bwd_smem_bytes(128), 184_360);
    }
}
