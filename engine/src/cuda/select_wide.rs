//! Launcher for `kernels-cu/cuda/select_wide.cu`, the `wide` version of the radix select: 11-bit digits
//! (3 key passes), candidate compaction after the second pass, which also writes the non-candidates' masks,
//! scans fused into the last block when there are few slots, float4 loads, and no stream drain: every pass is queued up front and the flags (NaN score)
//! come back through a page-locked read after pass 2 (`readback.rs`). Same arguments and result as the
//! other versions (`select::select_masks`, which validates the arguments and calls this).
use super::kernels::i32_arg;
use super::select::blocks;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;

/// Most tokens per tile, one tile per block (`Packing::tiles_on` cuts every pool into such tiles).
pub const WIDE_TILE: usize = 16384;
/// Blocks per tile in the candidate kernels (`wide_tile`'s split): parts of at most 4096 positions, so the
/// few tiles that hold a slot's candidates (the first positions of its pool's range) spread over 4× the
/// blocks.
const CAND_SPLIT: usize = 4;
/// Histogram bins per slot (`kBins`).
const BINS: usize = 2048;
/// Words before the per-slot parts of the workspace: [need index passes, NaN score, ticket, unused].
const FLAG_WORDS: usize = 4;
/// With at most this many slots the block that finishes a pass last runs the scan (one launch less per
/// pass); with more, `select_wide_scan` runs one block per pool.
const FUSE_SLOTS: usize = 8;
fn aligned16(ptr: u64) -> bool {
    ptr.is_multiple_of(16)
}

/// What `select::select_masks` passes on, its arguments checked there.
pub(super) struct WideJob<'a> {
    pub op: &'static str,
    /// None: the seeded hash keys (random selection).
    pub scores: Option<&'a CudaStorage>,
    pub valid: &'a CudaStorage,
    /// The pools' cu_seqlens, i32 [num_pools + 1].
    pub cu: &'a CudaStorage,
    /// The pools' tiles of at most [`WIDE_TILE`] tokens, i32 [tiles, 3] (`Packing::tiles_on`).
    pub tiles: &'a CudaStorage,
    pub num_pools: usize,
    pub frac: f64,
    pub slack: f64,
    pub seed: u64,
}

/// Fills `outs` (one f32 mask per tail, `valid.len` > 0 tokens each, already allocated) with the per-pool
/// tails. `job.tiles` must be `Packing::tiles_on(_, WIDE_TILE)` of the packing whose offsets are `job.cu`
/// (the ops layer builds both from one `Packing`): pass 1 writes the mask entry of every token a tile covers.
/// Device memory besides the outputs: 4 words plus 2053 per slot (pool × tail; 8 KiB, mostly the 2048-bin
/// histogram, so 16 MiB for 1024 per-sequence pools × 2 tails) and 8 bytes per token and tail of candidates.
pub(super) fn select_masks_wide(job: &WideJob, outs: &[CudaStorage]) -> Result<()> {
    let WideJob { op, scores, valid, cu, tiles, num_pools, frac, slack, seed } = *job;
    if tiles.dtype != DType::I32 || tiles.len % 3 != 0 || tiles.len == 0 {
        return Err(EngineError::invalid(op, "the tile table must be i32 [tiles >= 1, 3] (Packing::tiles_on)"));
    }
    let dev = &valid.device;
    let n = valid.len;
    let ntails = outs.len();
    let nslots = num_pools * ntails;
    // One zeroed workspace (one memset): flags, candidate counts, slot states, histograms.
    let ws = CudaStorage::zeros(dev, DType::I32, FLAG_WORDS + nslots * (1 + 4 + BINS))?;
    // Candidates per tail, (key, index) pairs in the pools' layout; only the counted prefix of each pool's
    // range is ever read, so it is not zeroed.
    let cand = CudaStorage::alloc(dev, DType::I32, 2 * ntails * n)?;
    let cfg = blocks(op, tiles.len / 3)?;
    let cand_cfg = blocks(op, tiles.len / 3 * CAND_SPLIT)?;
    let scan_cfg = blocks(op, num_pools.min(65_535))?;
    let (pws, pcand, pv, pc, pt) = (ws.ptr(), cand.ptr(), valid.ptr(), cu.ptr(), tiles.ptr());
    let ps = scores.map_or(0u64, |s| s.ptr());
    let (p0, p1) = (outs[0].ptr(), outs.get(1).map_or(0u64, |o| o.ptr()));
    let vec = [ps, pv, p0, p1].into_iter().all(aligned16) as i32;
    let fuse = (nslots <= FUSE_SLOTS) as i32;
    let (np, nn, nt, split) = (i32_arg(op, num_pools)?, n as i64, ntails as i32, CAND_SPLIT as i32);
    let scan = |pass: i32| -> Result<()> {
        if fuse == 0 {
            launch!(dev, "select_wide", "select_wide_scan", scan_cfg, [pws, np, nt, pass, frac, slack]);
        }
        Ok(())
    };
    for pass in 0..2i32 {
        launch!(
            dev,
            "select_wide",
            "select_wide_data",
            cfg,
            [pws, pt, p0, p1, ps, pv, pc, np, nn, seed, nt, pass, pcand, vec, fuse, frac, slack]
        );
        scan(pass)?;
    }
    let cand_pass = |pass: i32| -> Result<()> {
        launch!(
            dev,
            "select_wide",
            "select_wide_cand",
            cand_cfg,
            [pws, pt, split, pcand, pc, np, nn, nt, pass, fuse, frac, slack]
        );
        scan(pass)
    };
    cand_pass(2)?;
    // The flags after pass 2 are read without draining the stream: the index passes are queued regardless
    // (they exit at once unless some pool has a partial tie at its threshold key), then the mask, and the
    // host waits for the copy alone, to report a NaN score. (The 8-bit versions read the flags with a
    // synchronisation and skip the index launches instead.)
    let flags = dev.read_i32_async(pws, 2)?;
    for pass in 3..6 {
        cand_pass(pass)?;
    }
    // Pass 1 wrote every mask entry but the candidates'; the selected candidates get their 1.
    launch!(dev, "select_wide", "select_wide_cand_mask", cand_cfg, [p0, p1, pws, pt, split, pcand, pc, np, nn, nt]);
    if flags.wait()?[1] != 0 {
        return Err(super::select::nan_score_error(op));
    }
    Ok(())
}
