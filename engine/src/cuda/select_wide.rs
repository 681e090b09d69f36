//! Launcher for `kernels-cu/cuda/select_wide.cu`, the `wide` version of the radix select: 11-bit digits
//! (3 key passes), candidate compaction after the second pass, which also writes the non-candidates' masks,
//! scans fused into the last block when there are few slots, float4 loads, and no stream drain: every pass is queued up front and the flags (NaN score)
//! come back through a page-locked read after pass 2 (`readback.rs`). Same arguments and result as the
//! other versions (`select::select_masks`, which validates the arguments and calls this).
use super::kernels::i32_arg;
use super::select::blocks;
use super::select_params::SelectWideParams;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use std::sync::Mutex;

/// The wide version's tuning, process-wide ([`set_wide_shape`]; `bench select --wide-sweep` times a grid of
/// them and checks each against the plain version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WideShape {
    /// Most tokens per tile, one tile per block in the data passes (`Packing::tiles_on` cuts every pool
    /// into such tiles).
    pub tile: usize,
    /// Blocks per tile in the candidate kernels (`wide_tile`'s split): a slot's candidates fill only the
    /// first positions of its pool's range, so only the first tiles, which this spreads over more blocks.
    pub cand_split: usize,
    /// Pass 0 counts into two shared copies of its histogram by lane parity (fewer same-address atomics).
    pub pass0_copies: bool,
}

impl WideShape {
    /// 16384-token tiles, 4 candidate parts of 4096, two pass-0 copies.
    pub const DEFAULT: WideShape = WideShape { tile: 16384, cand_split: 4, pass0_copies: true };
}

static SHAPE: Mutex<WideShape> = Mutex::new(WideShape::DEFAULT);

/// The wide version's current tuning ([`WideShape::DEFAULT`] unless [`set_wide_shape`] changed it).
pub fn wide_shape() -> WideShape {
    *SHAPE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Use `shape` for the wide version's later calls in this process: a tile of 1 to 2^24 tokens, 1 to 64
/// candidate parts per tile.
pub fn set_wide_shape(shape: WideShape) -> Result<()> {
    if !(1..=1 << 24).contains(&shape.tile) || !(1..=64).contains(&shape.cand_split) {
        return Err(EngineError::invalid(
            "select (wide)",
            format!("tile {} (1 to 2^24 tokens), candidate split {} (1 to 64)", shape.tile, shape.cand_split),
        ));
    }
    *SHAPE.lock().unwrap_or_else(|e| e.into_inner()) = shape;
    Ok(())
}
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

/// The pools' tile table and the shape it was cut for, read once per call by the ops layer (which caches
/// the table on the `Packing`), so a call never pairs a table with another call's shape.
#[derive(Clone, Copy)]
pub struct WideTiles<'a> {
    /// Tiles of at most `shape.tile` tokens, i32 [tiles, 3] (`Packing::tiles_on`).
    pub table: &'a CudaStorage,
    pub shape: WideShape,
}

/// What `select::select_masks` passes on, its arguments checked there.
pub(super) struct WideJob<'a> {
    pub op: &'static str,
    /// None: the seeded hash keys (random selection).
    pub scores: Option<&'a CudaStorage>,
    pub valid: &'a CudaStorage,
    /// The pools' cu_seqlens, i32 [num_pools + 1].
    pub cu: &'a CudaStorage,
    pub tiles: WideTiles<'a>,
    pub num_pools: usize,
    pub frac: f64,
    pub slack: f64,
    pub seed: u64,
}

/// Fills `outs` (one f32 mask per tail, `valid.len` > 0 tokens each, already allocated) with the per-pool
/// tails. `job.tiles.table` must be `Packing::tiles_on(_, job.tiles.shape.tile)` of the packing whose offsets
/// are `job.cu` (the ops layer builds both from one `Packing`): pass 1 writes the mask entry of every token a
/// tile covers.
/// Device memory besides the outputs: 4 words plus 2053 per slot (pool × tail; 8 KiB, mostly the 2048-bin
/// histogram, so 16 MiB for 1024 per-sequence pools × 2 tails) and 8 bytes per token and tail of candidates.
pub(super) fn select_masks_wide(job: &WideJob, outs: &[CudaStorage]) -> Result<()> {
    let WideJob { op, scores, valid, cu, tiles, num_pools, frac, slack, seed } = *job;
    let WideTiles { table: tiles, shape } = tiles;
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
    let cand_cfg = blocks(op, tiles.len / 3 * shape.cand_split)?;
    let scan_cfg = blocks(op, num_pools.min(65_535))?;
    let (ps, pv) = (scores.map_or(0u64, |s| s.ptr()), valid.ptr());
    let (p0, p1) = (outs[0].ptr(), outs.get(1).map_or(0u64, |o| o.ptr()));
    let p = SelectWideParams {
        ws: ws.ptr(),
        tiles: tiles.ptr(),
        out0: p0,
        out1: p1,
        scores: ps,
        valid: pv,
        cu: cu.ptr(),
        cand: cand.ptr(),
        n: n as i64,
        seed,
        frac,
        slack,
        num_pools: i32_arg(op, num_pools)?,
        ntails: ntails as i32,
        split: shape.cand_split as i32,
        vec: [ps, pv, p0, p1].into_iter().all(aligned16) as i32,
        fuse: (nslots <= FUSE_SLOTS) as i32,
        copies: shape.pass0_copies as i32,
    };
    let scan = |pass: i32| -> Result<()> {
        if p.fuse == 0 {
            launch!(dev, "select_wide", "select_wide_scan", scan_cfg, [p, pass]);
        }
        Ok(())
    };
    for pass in 0..2i32 {
        launch!(dev, "select_wide", "select_wide_data", cfg, [p, pass]);
        scan(pass)?;
    }
    let cand_pass = |pass: i32| -> Result<()> {
        launch!(dev, "select_wide", "select_wide_cand", cand_cfg, [p, pass]);
        scan(pass)
    };
    cand_pass(2)?;
    // The flags after pass 2 are read without draining the stream: the index passes are queued regardless
    // (they exit at once unless some pool has a partial tie at its threshold key), then the mask, and the
    // host waits for the copy alone, to report a NaN score. (The 8-bit versions read the flags with a
    // synchronisation and skip the index launches instead.)
    let flags = dev.read_i32_async(p.ws, 2)?;
    for pass in 3..6 {
        cand_pass(pass)?;
    }
    // Pass 1 wrote every mask entry but the candidates'; the selected candidates get their 1.
    launch!(dev, "select_wide", "select_wide_cand_mask", cand_cfg, [p]);
    if flags.wait()?[1] != 0 {
        return Err(super::select::nan_score_error(op));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_shape_out_of_range_is_refused_and_changes_nothing() {
        for bad in [
            WideShape { tile: 0, ..WideShape::DEFAULT },
            WideShape { tile: (1 << 24) + 1, ..WideShape::DEFAULT },
            WideShape { cand_split: 0, ..WideShape::DEFAULT },
            WideShape { cand_split: 65, ..WideShape::DEFAULT },
        ] {
            let e = set_wide_shape(bad).unwrap_err().to_string();
            assert!(e.contains("candidate split"), "{e}");
        }
        assert_eq!(wide_shape(), WideShape::DEFAULT);
    }
}
