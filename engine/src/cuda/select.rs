//! Launchers for `kernels-cu/cuda/select.cu`: per-pool top/bottom-k masks by radix select (scores or seeded
//! random keys) and the stable LSD radix sort of (f32 key, i32 index) pairs. Algorithms: the header of
//! `select.cu`.
use super::kernels::{grid, i32_arg};
use super::select_params::{SelectParams, SortScatterParams};
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::LaunchConfig;

pub use super::select_wide::{set_wide_shape, wide_shape, WideShape, WideTiles};

/// The versions of the radix select (both exact; they differ in speed only), a device's
/// `KernelChoices::select`. The histogram versions that are not shipped (match, unroll, match_unroll, keys,
/// lean) are in `kernels-cu/dev/select_versions.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistVersion {
    /// `select.cu`: 8-bit digits (4 key passes, index passes only after a partial tie), one token per
    /// thread per iteration, every increment a shared atomic; a mask pass over every token.
    Plain,
    /// `select_wide.cu`: 11-bit digits (3 key passes), candidates compacted after the second pass so the
    /// third and the index passes read only them, one histogram for both tails on the first pass, scans
    /// fused into the last block (few slots), float4 loads and stores.
    Wide,
}

impl HistVersion {
    pub const ALL: [HistVersion; 2] = [Self::Plain, Self::Wide];
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Wide => "wide",
        }
    }
}

/// The versions of the radix sort's scatter pass in `select.cu` (both stable; they differ in speed only), a
/// device's `KernelChoices::sort_scatter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortScatter {
    /// `radix_sort_scatter`: `__match_any_sync` warp ranks, each element written straight to its place.
    Match,
    /// `radix_sort_scatter_local`: ballot warp ranks, the tile staged in shared memory in digit order so
    /// the global writes are contiguous per digit.
    Local,
}

impl SortScatter {
    pub const ALL: [SortScatter; 2] = [Self::Match, Self::Local];
    pub fn name(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Local => "local",
        }
    }
    fn scatter_kernel(self) -> &'static str {
        match self {
            Self::Match => "radix_sort_scatter",
            Self::Local => "radix_sort_scatter_local",
        }
    }
}

/// Threads per block of every kernel in `select.cu` and `select_wide.cu` (they require exactly this many).
const THREADS: u32 = 256;
/// Elements per block of the tiled kernels (`kTile` in `select.cu`).
const TILE: usize = 4096;
/// Histogram passes of the radix select: 4 key bytes, then 4 token-index bytes (launched only when some
/// pool has a partial tie at its threshold).
const SELECT_PASSES: i32 = 8;
const KEY_PASSES: i32 = 4;

/// `n` blocks of [`THREADS`] threads.
pub(super) fn blocks(op: &'static str, n: usize) -> Result<LaunchConfig> {
    let b = u32::try_from(n.max(1))
        .ok()
        .filter(|&b| b < i32::MAX as u32)
        .ok_or_else(|| EngineError::shape(op, format!("{n} blocks exceed the grid")))?;
    Ok(LaunchConfig { grid_dim: (b, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

/// Per-pool tail masks (f32 0/1, one per tail) over `valid.len` tokens. `scores` = None selects with the
/// seeded hash keys instead (random selection). `ntails` = 1 gives the bottom tail only, 2 gives
/// [bottom, top]. `cu` is the pools' cu_seqlens (i32, `num_pools + 1`); `slack` the host's count slack.
/// Reads back a small flag buffer after the key passes (one synchronisation): NaN scores, partial ties.
/// `tiles`: the pools' tile table and its shape, needed by the wide version only.
#[allow(clippy::too_many_arguments)]
pub fn select_masks(
    op: &'static str,
    scores: Option<&CudaStorage>,
    valid: &CudaStorage,
    cu: &CudaStorage,
    tiles: Option<WideTiles>,
    num_pools: usize,
    frac: f64,
    slack: f64,
    seed: u64,
    ntails: usize,
    version: HistVersion,
) -> Result<Vec<CudaStorage>> {
    let dev = &valid.device;
    let n = valid.len;
    if !(1..=2).contains(&ntails) {
        return Err(EngineError::invalid(op, format!("{ntails} tails (1 or 2)")));
    }
    if valid.dtype != DType::F32 || scores.is_some_and(|s| s.dtype != DType::F32 || s.len != n) {
        return Err(EngineError::invalid(op, "scores and valid must be f32 of one length"));
    }
    if cu.dtype != DType::I32 || cu.len != num_pools + 1 {
        return Err(EngineError::invalid(op, "cu_seqlens must be i32 with num_pools + 1 entries"));
    }
    let outs = (0..ntails).map(|_| CudaStorage::alloc(dev, DType::F32, n)).collect::<Result<Vec<_>>>()?;
    if n == 0 {
        return Ok(outs);
    }
    i32_arg(op, n)?;
    if version == HistVersion::Wide {
        let tiles = tiles.ok_or_else(|| EngineError::invalid(op, "the wide version needs the pools' tile table"))?;
        let job = super::select_wide::WideJob { op, scores, valid, cu, tiles, num_pools, frac, slack, seed };
        super::select_wide::select_masks_wide(&job, &outs)?;
        return Ok(outs);
    }
    let nslots = num_pools * ntails;
    // Per slot: a 256-bin histogram (zeroed here, re-zeroed by select_scan) and [kk, key, idx, mode].
    let hist = CudaStorage::zeros(dev, DType::I32, nslots * 256)?;
    let state = CudaStorage::zeros(dev, DType::I32, nslots * 4)?;
    // [need index passes, NaN on a valid token]
    let flags = CudaStorage::zeros(dev, DType::I32, 2)?;

    let hist_cfg = blocks(op, n.div_ceil(TILE))?;
    let scan_cfg = blocks(op, nslots.min(65_535))?;
    let p = SelectParams {
        hist: hist.ptr(),
        state: state.ptr(),
        flags: flags.ptr(),
        out0: outs[0].ptr(),
        out1: outs.get(1).map_or(0u64, |o| o.ptr()),
        scores: scores.map_or(0u64, |s| s.ptr()),
        valid: valid.ptr(),
        cu: cu.ptr(),
        n: n as i64,
        seed,
        frac,
        slack,
        num_pools: i32_arg(op, num_pools)?,
        ntails: ntails as i32,
    };
    let run_pass = |pass: i32| -> Result<()> {
        launch!(dev, "select", "select_hist_plain", hist_cfg, [p, pass]);
        launch!(dev, "select", "select_scan", scan_cfg, [p, pass]);
        Ok(())
    };
    for p in 0..KEY_PASSES {
        run_pass(p)?;
    }
    // One synchronisation: a NaN score on a valid token is an error, and the index passes run only when
    // some pool has a partial tie at its threshold key (saving their 8 launches otherwise).
    if needs_index_passes(op, &flags)? {
        for p in KEY_PASSES..SELECT_PASSES {
            run_pass(p)?;
        }
    }
    launch!(dev, "select", "select_mask", grid(n), [p]);
    Ok(outs)
}

/// Reads the flags [need index passes, NaN score on a valid token] (after the stream's work): a NaN is an
/// error, else whether some pool has a partial tie at its threshold key.
fn needs_index_passes(op: &'static str, flags: &CudaStorage) -> Result<bool> {
    let f = flags.device.read_i32_async(flags.ptr(), 2)?.wait()?;
    if f[1] != 0 {
        return Err(nan_score_error(op));
    }
    Ok(f[0] != 0)
}

/// The error for a NaN score on a valid token (flags[1]).
pub(super) fn nan_score_error(op: &'static str) -> EngineError {
    EngineError::invalid(
        op,
        "NaN score on a valid token (scores of valid tokens must not be NaN; mask the token out instead)",
    )
}

/// Stable ascending sort of f32 keys: (sorted keys with their original bits, i32 source indices).
/// -0.0 sorts equal to +0.0 and NaNs sort last, each group in index order.
pub fn radix_sort(x: &CudaStorage, scatter: SortScatter) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "radix_sort";
    let dev = &x.device;
    let n = x.len;
    if x.dtype != DType::F32 {
        return Err(EngineError::invalid(OP, "keys must be f32"));
    }
    let out = CudaStorage::alloc(dev, DType::F32, n)?;
    let idx_a = CudaStorage::alloc(dev, DType::I32, n)?;
    if n == 0 {
        return Ok((out, idx_a));
    }
    i32_arg(OP, n)?;
    let tiles = n.div_ceil(TILE);
    // Ping-pong buffers: (keys_a, idx_a) -> (keys_b, idx_b) -> (keys_a, idx_a) ... (4 passes end in a).
    let keys_a = CudaStorage::alloc(dev, DType::I32, n)?;
    let keys_b = CudaStorage::alloc(dev, DType::I32, n)?;
    let idx_b = CudaStorage::alloc(dev, DType::I32, n)?;
    let counts = CudaStorage::alloc(dev, DType::I32, 256 * tiles)?;
    let totals = CudaStorage::alloc(dev, DType::I32, 256)?;
    let (px, nn, nt) = (x.ptr(), n as i64, tiles as i64);
    let (ka, kb, ia, ib, pcount, ptot) =
        (keys_a.ptr(), keys_b.ptr(), idx_a.ptr(), idx_b.ptr(), counts.ptr(), totals.ptr());
    launch!(dev, "select", "radix_sort_init_f32", grid(n), [ka, ia, px, nn]);
    let tile_cfg = blocks(OP, tiles)?;
    let digit_cfg = blocks(OP, 256)?;
    for pass in 0..4i32 {
        let shift = 8 * pass;
        let ((kin, iin), (kout, iout)) = if pass % 2 == 0 { ((ka, ia), (kb, ib)) } else { ((kb, ib), (ka, ia)) };
        launch!(dev, "select", "radix_sort_hist", tile_cfg, [pcount, kin, nn, nt, shift]);
        launch!(dev, "select", "radix_sort_scan", digit_cfg, [pcount, ptot, nt]);
        let p = SortScatterParams {
            keys_out: kout,
            idx_out: iout,
            keys_in: kin,
            idx_in: iin,
            counts: pcount,
            totals: ptot,
            n: nn,
            tiles: nt,
            shift,
            pad: 0,
        };
        launch!(dev, "select", scatter.scatter_kernel(), tile_cfg, [p]);
    }
    let po = out.ptr();
    launch!(dev, "select", "radix_sort_gather_f32", grid(n), [po, px, ia, nn]);
    Ok((out, idx_a))
}
