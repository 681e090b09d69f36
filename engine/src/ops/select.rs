//! Token selection over a packed batch: the top and bottom `frac` of the valid tokens of each pool by a
//! score, exact-k random selection from a seed, and a stable sort of (f32 key, index) pairs.
//!
//! Pools are the segments of a [`Packing`] over the N tokens (one segment = the whole batch; one per
//! micro-batch; one per sequence). In a pool with `n` valid tokens each tail holds exactly
//! [`tail_count`]`(frac, n)` = ceil(frac·n) tokens. Order: keys compare as IEEE values with -0.0 == +0.0
//! and ±inf allowed; among equal keys the lower token index wins, in both tails (the bottom tail takes the
//! smallest (key, index) pairs, the top tail the largest keys with ascending index among equals). A NaN
//! score on a valid token is an error; scores of invalid tokens are never looked at.
//!
//! GPU: the radix select and LSD radix sort in `kernels-cu/cuda/select.cu`. CPU: the reference below (sort
//! each pool's valid (key, index) pairs under a total order and take the first / last count). None of
//! these results carries a gradient.
use super::{check_same_device, dispatch};
use crate::cpu::CpuStorage;
use crate::cuda::select as cuda_select;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::packing::Packing;
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::cmp::Ordering;

/// Relative slack of [`tail_count`]: a product frac·n within 1e-12 (relative) above an integer counts as
/// that integer, so a frac that is not exactly representable (0.2, 0.3) does not round a count up.
pub const COUNT_SLACK: f64 = 1.0 - 1e-12;

/// The masks [`select_tails`] returns: f32 [N], 1.0 selected, 0.0 not.
pub struct TailMasks {
    pub top: Tensor,
    pub bottom: Tensor,
}

/// How many of `n_valid` tokens a tail of fraction `frac` holds: ceil(frac·n_valid) (with the
/// [`COUNT_SLACK`] rounding guard: `tail_count(0.2, 15)` = 3), never more than `n_valid`; 0 for n_valid = 0.
/// The CUDA kernels compute the identical value on the device.
pub fn tail_count(frac: f64, n_valid: usize) -> usize {
    let x = frac * n_valid as f64 * COUNT_SLACK;
    (x.ceil().max(0.0) as usize).min(n_valid)
}

/// Masks of the top and bottom `frac` of the valid tokens of every pool of `pools`, by `scores`.
/// `scores`, `valid`: f32 [N] on one device (valid: nonzero = valid); `pools.total()` = N; frac in [0, 1].
/// On a GPU, through the device's select version (`CudaDevice::kernel_choices`).
pub fn select_tails(scores: &Tensor, valid: &Tensor, frac: f64, pools: &Packing) -> Result<TailMasks> {
    const OP: &str = "select_tails";
    let n = check_tokens(OP, "scores", scores)?;
    check_tokens(OP, "valid", valid)?;
    check_same_device(OP, scores, valid)?;
    check_pools(OP, n, valid.numel(), pools)?;
    check_frac(OP, frac)?;
    let cu = pools.on(scores.device())?;
    let (v, wide) = gpu_version(scores.device(), pools)?;
    let mut inputs = vec![scores, valid, &cu];
    inputs.extend(wide.as_ref().map(|w| &w.0));
    let mut st = dispatch(
        OP,
        &inputs,
        |x| {
            let (top, bottom) = cpu_tails(x[0].as_f32(OP)?, x[1].as_f32(OP)?, x[2].as_i32(OP)?, frac)?;
            Ok(vec![CpuStorage::F32(top), CpuStorage::F32(bottom)])
        },
        |x| {
            let (n_pools, tiles) = (pools.num_seqs(), wide_tiles(x.get(3).copied(), &wide));
            let mut m =
                cuda_select::select_masks(OP, Some(x[0]), x[1], x[2], tiles, n_pools, frac, COUNT_SLACK, 0, 2, v)?;
            let top = m.pop().expect("two tails");
            Ok(vec![top, m.pop().expect("two tails")])
        },
    )?;
    let dev = scores.device();
    let bottom = Tensor::from_storage(st.pop().expect("bottom"), Shape::new([n]), dev);
    let top = Tensor::from_storage(st.pop().expect("top"), Shape::new([n]), dev);
    Ok(TailMasks { top, bottom })
}

/// The select version a call runs on `dev` (the GPU's choice; the CPU has one path) and, for the wide
/// version only, its shape (read once here) and the pools' tile table for it (cached on the packing).
fn gpu_version(
    dev: &Device,
    pools: &Packing,
) -> Result<(cuda_select::HistVersion, Option<(Tensor, cuda_select::WideShape)>)> {
    let Some(cuda) = dev.as_cuda() else {
        return Ok((cuda_select::HistVersion::Plain, None));
    };
    let v = cuda.kernel_choices().select;
    let shape = cuda_select::wide_shape();
    let wide = (v == cuda_select::HistVersion::Wide).then(|| pools.tiles_on(dev, shape.tile)).transpose()?;
    Ok((v, wide.map(|t| (t, shape))))
}

/// The wide version's tiles from the dispatched input `table` (present only with it) and the call's shape.
fn wide_tiles<'a>(
    table: Option<&'a crate::storage::CudaStorage>,
    wide: &Option<(Tensor, cuda_select::WideShape)>,
) -> Option<cuda_select::WideTiles<'a>> {
    Some(cuda_select::WideTiles { table: table?, shape: wide.as_ref()?.1 })
}

/// Mask of exactly [`tail_count`]`(frac, n_valid)` valid tokens per pool, chosen uniformly at random by a
/// hash of (`seed`, token index) (the bottom-k of those keys, ties by index): deterministic for a seed and
/// identical on the CPU and the GPU. `valid`: f32 [N]; `pools.total()` = N; frac in [0, 1].
pub fn select_random(valid: &Tensor, frac: f64, seed: u64, pools: &Packing) -> Result<Tensor> {
    const OP: &str = "select_random";
    let n = check_tokens(OP, "valid", valid)?;
    check_pools(OP, n, n, pools)?;
    check_frac(OP, frac)?;
    let cu = pools.on(valid.device())?;
    let (v, wide) = gpu_version(valid.device(), pools)?;
    let mut inputs = vec![valid, &cu];
    inputs.extend(wide.as_ref().map(|w| &w.0));
    let mut st = dispatch(
        OP,
        &inputs,
        |x| Ok(vec![CpuStorage::F32(cpu_random(x[0].as_f32(OP)?, x[1].as_i32(OP)?, frac, seed))]),
        |x| {
            let tiles = wide_tiles(x.get(2).copied(), &wide);
            cuda_select::select_masks(OP, None, x[0], x[1], tiles, pools.num_seqs(), frac, COUNT_SLACK, seed, 1, v)
        },
    )?;
    Ok(Tensor::from_storage(st.pop().expect("mask"), Shape::new([n]), valid.device()))
}

/// Stable ascending sort of f32 keys [N]: (sorted keys, i32 original indices). Equal keys keep their index
/// order; -0.0 and +0.0 are equal (each keeps its own bits in the output); NaNs sort last. On a GPU, through
/// the device's scatter version (`CudaDevice::kernel_choices`).
pub fn radix_sort(keys: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "radix_sort";
    let n = check_tokens(OP, "keys", keys)?;
    let mut st = dispatch(
        OP,
        &[keys],
        |x| {
            let (k, i) = cpu_sort(x[0].as_f32(OP)?);
            Ok(vec![CpuStorage::F32(k), CpuStorage::I32(i)])
        },
        |x| {
            let (k, i) = cuda_select::radix_sort(x[0], x[0].device.kernel_choices().sort_scatter)?;
            Ok(vec![k, i])
        },
    )?;
    let dev = keys.device();
    let idx = Tensor::from_storage(st.pop().expect("indices"), Shape::new([n]), dev);
    let sorted = Tensor::from_storage(st.pop().expect("keys"), Shape::new([n]), dev);
    Ok((sorted, idx))
}

// ---------------------------------------------------------------------------------------------- checks

/// `t` must be a rank-1 f32 tensor of at most 2^31 − 1 elements; returns its length.
fn check_tokens(op: &'static str, what: &str, t: &Tensor) -> Result<usize> {
    if t.dtype() != DType::F32 {
        return Err(EngineError::DType { op, msg: format!("{what} must be f32, got {}", t.dtype()) });
    }
    if t.rank() != 1 {
        return Err(EngineError::shape(op, format!("{what} must be 1-D [N], got {:?}", t.dims())));
    }
    if t.numel() > i32::MAX as usize {
        return Err(EngineError::shape(op, format!("{what} has {} elements (at most 2^31 - 1)", t.numel())));
    }
    Ok(t.numel())
}

fn check_pools(op: &'static str, n: usize, n_valid_len: usize, pools: &Packing) -> Result<()> {
    if n_valid_len != n {
        return Err(EngineError::shape(op, format!("scores have {n} tokens but valid has {n_valid_len}")));
    }
    if pools.total() != n {
        return Err(EngineError::shape(op, format!("the pools cover {} tokens but there are {n}", pools.total())));
    }
    Ok(())
}

fn check_frac(op: &'static str, frac: f64) -> Result<()> {
    if (0.0..=1.0).contains(&frac) {
        Ok(())
    } else {
        Err(EngineError::invalid(op, format!("frac must be in [0, 1], got {frac}")))
    }
}

// ---------------------------------------------------------------------------------------------- CPU reference

/// The pools' token ranges.
fn spans(cu: &[i32]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    cu.windows(2).map(|w| w[0] as usize..w[1] as usize)
}

/// -0.0 -> +0.0, so the total order below treats the two zeros as equal.
fn canonical(x: f32) -> f32 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// (top, bottom) masks. Per pool: the valid (score, index) pairs sorted ascending by (score, index) give
/// the bottom tail as the first `count`; sorted by (score descending, index ascending) the top tail.
fn cpu_tails(scores: &[f32], valid: &[f32], cu: &[i32], frac: f64) -> Result<(Vec<f32>, Vec<f32>)> {
    let n = scores.len();
    let (mut top, mut bottom) = (vec![0f32; n], vec![0f32; n]);
    for span in spans(cu) {
        let mut items = Vec::with_capacity(span.len());
        for i in span.filter(|&i| valid[i] != 0.0) {
            if scores[i].is_nan() {
                return Err(EngineError::invalid(
                    "select_tails",
                    format!("NaN score on a valid token (token {i}; mask the token out instead)"),
                ));
            }
            items.push((canonical(scores[i]), i));
        }
        let k = tail_count(frac, items.len());
        items.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, i) in &items[..k] {
            bottom[i] = 1.0;
        }
        items.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in &items[..k] {
            top[i] = 1.0;
        }
    }
    Ok((top, bottom))
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random-selection key of token `i` (splitmix64 of (seed, i); `hash_key` in select.cu).
fn random_key(seed: u64, i: usize) -> u32 {
    let z = mix64(seed).wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (mix64(z) >> 32) as u32
}

/// Per pool: the valid tokens sorted by (random_key, index); the first `count` are selected.
fn cpu_random(valid: &[f32], cu: &[i32], frac: f64, seed: u64) -> Vec<f32> {
    let mut out = vec![0f32; valid.len()];
    for span in spans(cu) {
        let mut items: Vec<(u32, usize)> =
            span.filter(|&i| valid[i] != 0.0).map(|i| (random_key(seed, i), i)).collect();
        let k = tail_count(frac, items.len());
        items.sort_unstable(); // (key, index) pairs are distinct: the order is total
        for &(_, i) in &items[..k] {
            out[i] = 1.0;
        }
    }
    out
}

/// IEEE order with -0.0 == +0.0, NaN above everything (NaNs equal to each other).
fn key_order(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).expect("neither is NaN"),
    }
}

/// Stable sort of the indices by key (`sort_by` is stable), then the keys gathered in that order.
fn cpu_sort(x: &[f32]) -> (Vec<f32>, Vec<i32>) {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| key_order(x[a], x[b]));
    (idx.iter().map(|&i| x[i]).collect(), idx.iter().map(|&i| i as i32).collect())
}
