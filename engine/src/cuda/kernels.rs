//! Launchers for the PTX kernels in `kernels-cu/cuda` (signatures in its README). Each takes and returns
//! [`CudaStorage`]; outputs are allocated here from the caching allocator.
use super::geo::{pack, BcastGeo, CopyGeo, ReduceGeo};
use super::CudaDevice;
use crate::cpu::elementwise::BinaryOp;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::LaunchConfig;

const THREADS: u32 = 256;

pub(crate) fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}
fn rows_grid(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.clamp(1, 1 << 20) as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}
fn float_only(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 | DType::BF16 => Ok(dtype.suffix()),
        d => Err(EngineError::UnsupportedDType { op, dtype: d, msg: "CUDA kernels take f32 or bf16" }),
    }
}
pub(crate) fn i32_arg(op: &'static str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| EngineError::shape(op, format!("{x} exceeds the kernel's i32 range")))
}

pub fn fill(dev: &CudaDevice, dtype: DType, len: usize, v: f64) -> Result<CudaStorage> {
    if dtype == DType::I32 {
        if v != 0.0 {
            return Err(EngineError::invalid("fill", "i32 CUDA tensors can only be zero-filled"));
        }
        return CudaStorage::zeros(dev, dtype, len);
    }
    let out = CudaStorage::alloc(dev, dtype, len)?;
    let (o, v, n) = (out.ptr(), v as f32, len as i64);
    launch!(dev, "elementwise", format!("fill_{}", float_only("fill", dtype)?), grid(len), [o, v, n]);
    Ok(out)
}

/// Counter-based normal samples (see `cpu::random`).
pub fn randn(dev: &CudaDevice, dtype: DType, len: usize, seed: u64, std: f64) -> Result<CudaStorage> {
    let out = CudaStorage::alloc(dev, dtype, len)?;
    let (o, n, s, sd) = (out.ptr(), len as i64, seed, std as f32);
    launch!(dev, "elementwise", format!("randn_{}", float_only("randn", dtype)?), grid(len), [o, n, s, sd]);
    Ok(out)
}

pub fn cast(x: &CudaStorage, to: DType) -> Result<CudaStorage> {
    let dev = &x.device;
    if x.dtype == to {
        return x.try_clone();
    }
    let name = match (x.dtype, to) {
        (DType::F32, DType::BF16) => "cast_f32_to_bf16",
        (DType::BF16, DType::F32) => "cast_bf16_to_f32",
        (a, b) => return Err(EngineError::invalid("cast", format!("no CUDA cast from {a} to {b}"))),
    };
    let out = CudaStorage::alloc(dev, to, x.len)?;
    let (o, i, n) = (out.ptr(), x.ptr(), x.len as i64);
    launch!(dev, "elementwise", name, grid(x.len), [o, i, n]);
    Ok(out)
}

pub fn scale(x: &CudaStorage, s: f64) -> Result<CudaStorage> {
    let dev = &x.device;
    let out = CudaStorage::alloc(dev, x.dtype, x.len)?;
    let (o, i, s, n) = (out.ptr(), x.ptr(), s as f32, x.len as i64);
    launch!(dev, "elementwise", format!("scale_{}", float_only("scale", x.dtype)?), grid(x.len), [o, i, s, n]);
    Ok(out)
}

/// out = a ∘ b; `a_strides`/`b_strides` are broadcast strides over `out_dims` (None = same shape).
pub fn binary(
    op: BinaryOp,
    a: &CudaStorage,
    b: &CudaStorage,
    out_dims: &[usize],
    strides: Option<(&[usize], &[usize])>,
) -> Result<CudaStorage> {
    let dev = &a.device;
    let sfx = float_only(op.name(), a.dtype)?;
    let n: usize = out_dims.iter().product();
    let out = CudaStorage::alloc(dev, a.dtype, n)?;
    let (o, pa, pb, nn) = (out.ptr(), a.ptr(), b.ptr(), n as i64);
    match strides {
        None => launch!(dev, "elementwise", format!("{}_{sfx}", op.name()), grid(n), [o, pa, pb, nn]),
        Some((sa, sb)) => {
            let g = BcastGeo {
                ndim: out_dims.len() as i32,
                dims: pack(op.name(), out_dims, 1)?,
                a_strides: pack(op.name(), sa, 0)?,
                b_strides: pack(op.name(), sb, 0)?,
            };
            launch!(dev, "elementwise", format!("bcast_{}_{sfx}", op.name()), grid(n), [o, pa, pb, nn, g]);
        }
    }
    Ok(out)
}

/// acc (f32) += alpha · x
/// acc += alpha · x for an f32 accumulator; for a bf16 accumulator acc = round(acc + alpha · x), the sum
/// formed in f32 and rounded once per element (no widened copy of the accumulator).
pub fn axpy(acc: &CudaStorage, x: &CudaStorage, alpha: f64) -> Result<()> {
    let dev = &x.device;
    if !matches!(acc.dtype, DType::F32 | DType::BF16) || acc.len != x.len {
        return Err(EngineError::invalid("axpy", "accumulator must be f32 or bf16 of the same length"));
    }
    let (y, p, a, n) = (acc.ptr(), x.ptr(), alpha as f32, x.len as i64);
    let sfx = float_only("axpy", x.dtype)?;
    let name = match acc.dtype {
        DType::BF16 => format!("axpy_bf16_acc_{sfx}"),
        _ => format!("axpy_{sfx}"),
    };
    launch!(dev, "elementwise", name, grid(x.len), [y, p, a, n]);
    Ok(())
}

pub fn copy_strided(x: &CudaStorage, dims: &[usize], in_strides: &[usize]) -> Result<CudaStorage> {
    copy_strided_at(x, 0, dims, in_strides)
}

/// [`copy_strided`] reading from element `offset` of `x` on (the same kernel, given a shifted base pointer):
/// out[i] = x[offset + off(i)]. Every element read must lie inside `x`.
pub fn copy_strided_at(x: &CudaStorage, offset: usize, dims: &[usize], in_strides: &[usize]) -> Result<CudaStorage> {
    let dev = &x.device;
    let n: usize = dims.iter().product();
    let last = dims.iter().zip(in_strides).map(|(&d, &s)| d.saturating_sub(1) * s).sum::<usize>();
    if n > 0 && offset + last >= x.len {
        return Err(EngineError::shape(
            "copy_strided",
            format!("a view of {dims:?} at element {offset} reads past the {} elements stored", x.len),
        ));
    }
    let out = CudaStorage::alloc(dev, x.dtype, n)?;
    let g = CopyGeo {
        ndim: dims.len() as i32,
        dims: pack("permute", dims, 1)?,
        in_strides: pack("permute", in_strides, 0)?,
    };
    let (o, i, nn) = (out.ptr(), x.ptr() + (offset * x.dtype.size_in_bytes()) as u64, n as i64);
    launch!(
        dev,
        "elementwise",
        format!("copy_strided_{}", if x.dtype == DType::I32 { "i32" } else { float_only("permute", x.dtype)? }),
        grid(n),
        [o, i, nn, g]
    );
    Ok(out)
}

/// out[r·cols + off + c] = x[r·w + c] for r < rows, c < w: the part x [rows, w] written into its columns
/// off .. off + w of out [rows, cols] (the other columns are left as they are).
pub fn place_cols(out: &CudaStorage, x: &CudaStorage, rows: usize, w: usize, cols: usize, off: usize) -> Result<()> {
    let fits = x.len >= rows * w && out.len >= rows * cols && off + w <= cols;
    if x.dtype != out.dtype || !fits {
        return Err(EngineError::shape(
            "place_cols",
            format!("a {} part [{rows}, {w}] at column {off} of a {} [{rows}, {cols}]", x.dtype, out.dtype),
        ));
    }
    if rows * w == 0 {
        return Ok(());
    }
    let dev = &x.device;
    let (o, i) = (out.ptr(), x.ptr());
    let (r, wi, c, at) = (rows as i64, w as i64, cols as i64, off as i64);
    let name = format!("place_cols_{}", float_only("split_last", x.dtype)?);
    launch!(dev, "elementwise", name, grid(rows * w), [o, i, r, wi, c, at]);
    Ok(())
}

/// out[o] = scale · Σ_r x[off(o) + off(r)]
pub fn reduce_sum(
    x: &CudaStorage,
    out_dims: &[usize],
    out_strides: &[usize],
    red_dims: &[usize],
    red_strides: &[usize],
    scale: f64,
) -> Result<CudaStorage> {
    let dev = &x.device;
    let n_out: usize = out_dims.iter().product();
    let n_red: usize = red_dims.iter().product();
    let out = CudaStorage::alloc(dev, x.dtype, n_out)?;
    let g = ReduceGeo {
        out_ndim: out_dims.len() as i32,
        out_dims: pack("sum", out_dims, 1)?,
        out_strides: pack("sum", out_strides, 0)?,
        red_ndim: red_dims.len() as i32,
        red_dims: pack("sum", red_dims, 1)?,
        red_strides: pack("sum", red_strides, 0)?,
    };
    let (o, i, no, nr, s) = (out.ptr(), x.ptr(), n_out as i64, n_red as i64, scale as f32);
    let sfx = float_only("sum", x.dtype)?;
    let splits = reduce_splits(n_out, n_red);
    if splits == 1 {
        launch!(dev, "reduce", format!("reduce_sum_{sfx}"), rows_grid(n_out), [o, i, no, nr, s, g]);
    } else {
        let partials = CudaStorage::alloc(dev, DType::F32, n_out * splits)?;
        let (p, k) = (partials.ptr(), splits as i32);
        launch!(dev, "reduce", format!("reduce_split_{sfx}"), rows_grid(n_out * splits), [p, i, no, nr, k, g]);
        launch!(dev, "reduce", format!("reduce_partials_{sfx}"), rows_grid(n_out), [o, p, no, k, s]);
    }
    Ok(out)
}

/// Blocks per output for `reduce_sum`: 1 (one block per output) unless there are too few outputs to fill
/// the GPU and each is a long reduction; then enough chunks of at least 4096 elements for ~2048 blocks.
pub fn reduce_splits(n_out: usize, n_red: usize) -> usize {
    const MIN_RED: usize = 1 << 16;
    const TARGET_BLOCKS: usize = 2048;
    if n_red < MIN_RED || n_out >= TARGET_BLOCKS / 2 {
        return 1;
    }
    (TARGET_BLOCKS / n_out.max(1)).clamp(2, 1024).min(n_red.div_ceil(4096))
}

/// Number of partial sums each `sumsq_partials` launch writes.
pub const SUMSQ_BLOCKS: usize = 264;

/// partials[0..SUMSQ_BLOCKS] = per-block Σx² of x (written at element offset `at` of `partials`).
pub fn sumsq_partials(x: &CudaStorage, partials: &CudaStorage, at: usize) -> Result<()> {
    let dev = &x.device;
    let cfg = LaunchConfig { grid_dim: (SUMSQ_BLOCKS as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    let (p, i, n) = (partials.ptr() + (at * 4) as u64, x.ptr(), x.len as i64);
    launch!(dev, "reduce", format!("sumsq_partials_{}", float_only("grad norm", x.dtype)?), cfg, [p, i, n]);
    Ok(())
}

/// out[0] = Σ partials: `reduce_partials_f32` with one output row, in one block.
pub fn sum_partials(partials: &CudaStorage, out: &CudaStorage) -> Result<()> {
    let dev = &partials.device;
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
    let (o, p, rows, n, scale) = (out.ptr(), partials.ptr(), 1i64, i32_arg("grad norm", partials.len)?, 1.0f32);
    launch!(dev, "reduce", "reduce_partials_f32", cfg, [o, p, rows, n, scale]);
    Ok(())
}

/// coef = min(1, max_norm / (sqrt(sumsq) + 1e-6))
pub fn clip_coef(sumsq: &CudaStorage, coef: &CudaStorage, max_norm: f64) -> Result<()> {
    let dev = &sumsq.device;
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
    let (c, s, m) = (coef.ptr(), sumsq.ptr(), max_norm as f32);
    launch!(dev, "reduce", "clip_coef_f32", cfg, [c, s, m]);
    Ok(())
}

/// x (f32) *= coef[0]
pub fn scale_by(x: &CudaStorage, coef: &CudaStorage) -> Result<()> {
    let dev = &x.device;
    if x.dtype != DType::F32 || coef.dtype != DType::F32 {
        return Err(EngineError::invalid("clip_grad_norm", "gradients and the coefficient must be f32"));
    }
    let (p, c, n) = (x.ptr(), coef.ptr(), x.len as i64);
    launch!(dev, "reduce", "scale_by_f32", grid(x.len), [p, c, n]);
    Ok(())
}

pub fn embedding_fwd(table: &CudaStorage, ids: &CudaStorage, dim: usize, vocab: usize) -> Result<CudaStorage> {
    let dev = &table.device;
    let n_ids = ids.len;
    let out = CudaStorage::alloc(dev, table.dtype, n_ids * dim)?;
    let (o, t, i, ni, d, v, e) =
        (out.ptr(), table.ptr(), ids.ptr(), n_ids as i64, dim as i64, vocab as i64, dev.error_flag_ptr());
    let name = format!("embedding_fwd_{}", float_only("embedding", table.dtype)?);
    launch!(dev, "index", name, grid(n_ids * dim), [o, t, i, ni, d, v, e]);
    Ok(out)
}

/// dtable (f32, [vocab, dim]) with rows scatter-added from dout.
pub fn embedding_bwd(dout: &CudaStorage, ids: &CudaStorage, dim: usize, vocab: usize) -> Result<CudaStorage> {
    let dev = &dout.device;
    let dt = CudaStorage::zeros(dev, DType::F32, vocab * dim)?;
    let (o, g, i, ni, d, v) = (dt.ptr(), dout.ptr(), ids.ptr(), ids.len as i64, dim as i64, vocab as i64);
    let name = format!("embedding_bwd_{}", float_only("embedding backward", dout.dtype)?);
    launch!(dev, "index", name, grid(ids.len * dim), [o, g, i, ni, d, v]);
    Ok(dt)
}

pub fn gather_last(x: &CudaStorage, idx: &CudaStorage, rows: usize, cols: usize) -> Result<CudaStorage> {
    let dev = &x.device;
    let out = CudaStorage::alloc(dev, x.dtype, rows)?;
    let (o, p, i, r, c, e) = (
        out.ptr(),
        x.ptr(),
        idx.ptr(),
        i32_arg("gather_last", rows)?,
        i32_arg("gather_last", cols)?,
        dev.error_flag_ptr(),
    );
    launch!(
        dev,
        "index",
        format!("gather_last_{}", float_only("gather_last", x.dtype)?),
        grid(rows),
        [o, p, i, r, c, e]
    );
    Ok(out)
}

pub fn scatter_last(dout: &CudaStorage, idx: &CudaStorage, rows: usize, cols: usize) -> Result<CudaStorage> {
    let dev = &dout.device;
    let dx = CudaStorage::zeros(dev, dout.dtype, rows * cols)?;
    let (o, g, i, r, c) =
        (dx.ptr(), dout.ptr(), idx.ptr(), i32_arg("gather_last", rows)?, i32_arg("gather_last", cols)?);
    let name = format!("scatter_last_{}", float_only("gather_last", dout.dtype)?);
    launch!(dev, "index", name, grid(rows), [o, g, i, r, c]);
    Ok(dx)
}

/// (x + y, rmsnorm(x + y)·w) over rows of `dim`, one pass (inference).
pub fn add_rmsnorm_fwd(
    x: &CudaStorage,
    y: &CudaStorage,
    w: &CudaStorage,
    rows: usize,
    dim: usize,
    eps: f64,
) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "add_rms_norm";
    let dev = &x.device;
    let sum = CudaStorage::alloc(dev, x.dtype, x.len)?;
    let out = CudaStorage::alloc(dev, x.dtype, x.len)?;
    let (ps, po, px, py, pw) = (sum.ptr(), out.ptr(), x.ptr(), y.ptr(), w.ptr());
    let (nr, d, e) = (i32_arg(OP, rows)?, i32_arg(OP, dim)?, eps as f32);
    let name = format!("add_rmsnorm_fwd_{}", float_only(OP, x.dtype)?);
    launch!(dev, "rmsnorm", name, rows_grid(rows), [ps, po, px, py, pw, nr, d, e]);
    Ok((sum, out))
}

/// Returns (y, rstd f32[rows]).
pub fn rmsnorm_fwd(
    x: &CudaStorage,
    w: &CudaStorage,
    rows: usize,
    dim: usize,
    eps: f64,
) -> Result<(CudaStorage, CudaStorage)> {
    let dev = &x.device;
    let y = CudaStorage::alloc(dev, x.dtype, x.len)?;
    let rstd = CudaStorage::alloc(dev, DType::F32, rows)?;
    let (o, r, px, pw, nr, d, e) =
        (y.ptr(), rstd.ptr(), x.ptr(), w.ptr(), i32_arg("rms_norm", rows)?, i32_arg("rms_norm", dim)?, eps as f32);
    let name = format!("rmsnorm_fwd_{}", float_only("rms_norm", x.dtype)?);
    launch!(dev, "rmsnorm", name, rows_grid(rows), [o, r, px, pw, nr, d, e]);
    Ok((y, rstd))
}

/// Rows per block of the RMSNorm backward (each block writes one row of dw partials).
const RMS_ROWS_PER_BLOCK: usize = 32;

/// Returns (dx, dw_partials f32[blocks, dim]); the caller sums the partials over blocks.
pub fn rmsnorm_bwd(
    dy: &CudaStorage,
    x: &CudaStorage,
    w: &CudaStorage,
    rstd: &CudaStorage,
    rows: usize,
    dim: usize,
) -> Result<(CudaStorage, CudaStorage, usize)> {
    let dev = &x.device;
    let blocks = rows.div_ceil(RMS_ROWS_PER_BLOCK).max(1);
    let dx = CudaStorage::alloc(dev, x.dtype, x.len)?;
    let dwp = CudaStorage::alloc(dev, DType::F32, blocks * dim)?;
    // The dynamic dw accumulator plus block_sum's 128-byte static scratch must fit the default 48 KiB.
    let smem = dim * 4;
    if smem + 128 > 48 * 1024 {
        return Err(EngineError::shape("rms_norm backward", format!("dim {dim} exceeds the 12256 supported")));
    }
    let cfg =
        LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: smem as u32 };
    let (pdx, pdw, pdy, px, pw, pr) = (dx.ptr(), dwp.ptr(), dy.ptr(), x.ptr(), w.ptr(), rstd.ptr());
    let (nr, d, rpb) = (i32_arg("rms_norm", rows)?, i32_arg("rms_norm", dim)?, RMS_ROWS_PER_BLOCK as i32);
    let name = format!("rmsnorm_bwd_{}", float_only("rms_norm", x.dtype)?);
    launch!(dev, "rmsnorm", name, cfg, [pdx, pdw, pdy, px, pw, pr, nr, d, rpb]);
    Ok((dx, dwp, blocks))
}

pub fn rope(
    x: &CudaStorage,
    pos: &CudaStorage,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    spec: crate::ops::RopeSpec,
    sign: f64,
) -> Result<CudaStorage> {
    let dev = &x.device;
    let out = CudaStorage::alloc(dev, x.dtype, x.len)?;
    let (o, px, pp) = (out.ptr(), x.ptr(), pos.ptr());
    let (t, h, d) = (i32_arg("rope", tokens)?, i32_arg("rope", heads)?, i32_arg("rope", head_dim)?);
    let (th, sg, bf) = (spec.theta as f32, sign as f32, spec.bf16_inv_freq as i32);
    let name = format!("rope_{}", float_only("rope", x.dtype)?);
    launch!(dev, "rope", name, grid(tokens * heads * head_dim / 2), [o, px, pp, t, h, d, th, sg, bf]);
    Ok(out)
}

/// Rows per 256-thread block of `qk_norm_rope` (one warp a row) and the largest head_dim it stages.
const NORM_ROPE_ROWS_PER_BLOCK: usize = 8;
pub const NORM_ROPE_MAX_HEAD_DIM: usize = 512;

/// RMSNorm (weights `qw`, `kw`) then RoPE of q [tokens, hq, d] and k [tokens, hk, d], one launch.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(
    q: &CudaStorage,
    k: &CudaStorage,
    qw: &CudaStorage,
    kw: &CudaStorage,
    pos: &CudaStorage,
    (tokens, hq, hk, d): (usize, usize, usize, usize),
    eps: f64,
    spec: crate::ops::RopeSpec,
) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "qk_norm_rope";
    let dev = &q.device;
    if d % 2 != 0 || d > NORM_ROPE_MAX_HEAD_DIM {
        return Err(EngineError::shape(OP, format!("head_dim {d} (even, at most {NORM_ROPE_MAX_HEAD_DIM})")));
    }
    let q_out = CudaStorage::alloc(dev, q.dtype, q.len)?;
    let k_out = CudaStorage::alloc(dev, k.dtype, k.len)?;
    let rows = tokens * (hq + hk);
    let blocks = u32::try_from(rows.div_ceil(NORM_ROPE_ROWS_PER_BLOCK).max(1))
        .map_err(|_| EngineError::shape(OP, format!("{rows} rows exceed the grid")))?;
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    let (pqo, pko, pq, pk, pqw, pkw, pp) = (q_out.ptr(), k_out.ptr(), q.ptr(), k.ptr(), qw.ptr(), kw.ptr(), pos.ptr());
    let (t, nq, nk, dd) = (i32_arg(OP, tokens)?, i32_arg(OP, hq)?, i32_arg(OP, hk)?, i32_arg(OP, d)?);
    let (e, th, bf) = (eps as f32, spec.theta as f32, spec.bf16_inv_freq as i32);
    let name = format!("qk_norm_rope_{}", float_only(OP, q.dtype)?);
    launch!(dev, "rope", name, cfg, [pqo, pko, pq, pk, pqw, pkw, pp, t, nq, nk, dd, e, th, bf]);
    Ok((q_out, k_out))
}

pub fn swiglu_fwd(gate: &CudaStorage, up: &CudaStorage) -> Result<CudaStorage> {
    let dev = &gate.device;
    let out = CudaStorage::alloc(dev, gate.dtype, gate.len)?;
    let (o, g, u, n) = (out.ptr(), gate.ptr(), up.ptr(), gate.len as i64);
    launch!(dev, "swiglu", format!("swiglu_fwd_{}", float_only("swiglu", gate.dtype)?), grid(gate.len), [o, g, u, n]);
    Ok(out)
}

pub fn swiglu_bwd(dout: &CudaStorage, gate: &CudaStorage, up: &CudaStorage) -> Result<(CudaStorage, CudaStorage)> {
    let dev = &gate.device;
    let dg = CudaStorage::alloc(dev, gate.dtype, gate.len)?;
    let du = CudaStorage::alloc(dev, gate.dtype, gate.len)?;
    let (pdg, pdu, pd, g, u, n) = (dg.ptr(), du.ptr(), dout.ptr(), gate.ptr(), up.ptr(), gate.len as i64);
    let name = format!("swiglu_bwd_{}", float_only("swiglu", gate.dtype)?);
    launch!(dev, "swiglu", name, grid(gate.len), [pdg, pdu, pd, g, u, n]);
    Ok((dg, du))
}

pub fn softmax_fwd(x: &CudaStorage, rows: usize, cols: usize, log: bool) -> Result<CudaStorage> {
    let dev = &x.device;
    let y = CudaStorage::alloc(dev, x.dtype, x.len)?;
    let (o, p, r, c, l) = (y.ptr(), x.ptr(), i32_arg("softmax", rows)?, i32_arg("softmax", cols)?, log as i32);
    let name = format!("softmax_fwd_{}", float_only("softmax", x.dtype)?);
    launch!(dev, "softmax", name, rows_grid(rows), [o, p, r, c, l]);
    Ok(y)
}

pub fn softmax_bwd(dy: &CudaStorage, y: &CudaStorage, rows: usize, cols: usize, log: bool) -> Result<CudaStorage> {
    let dev = &y.device;
    let dx = CudaStorage::alloc(dev, y.dtype, y.len)?;
    let (o, g, p, r, c, l) =
        (dx.ptr(), dy.ptr(), y.ptr(), i32_arg("softmax", rows)?, i32_arg("softmax", cols)?, log as i32);
    let name = format!("softmax_bwd_{}", float_only("softmax", y.dtype)?);
    launch!(dev, "softmax", name, rows_grid(rows), [o, g, p, r, c, l]);
    Ok(dx)
}

/// Hyper-parameters of one AdamW step, bias corrections included.
#[derive(Clone, Copy, Debug)]
pub struct AdamWArgs {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bc1: f32,
    pub bc2: f32,
}

/// One fused AdamW step on an f32 master; `working` (bf16) receives the rounded copy when given.
pub fn adamw(
    master: &CudaStorage,
    working: Option<&CudaStorage>,
    m: &CudaStorage,
    v: &CudaStorage,
    grad: &CudaStorage,
    grad_scale: Option<&CudaStorage>,
    a: AdamWArgs,
) -> Result<()> {
    let dev = &master.device;
    let f32_same = |s: &CudaStorage| s.dtype == DType::F32 && s.len == master.len;
    // a bf16 gradient (GradStorage::Bf16) only for a bf16 parameter: read and widened by the kernel
    let grad_ok = f32_same(grad) || (working.is_some() && grad.dtype == DType::BF16 && grad.len == master.len);
    if !(master.dtype == DType::F32 && f32_same(m) && f32_same(v) && grad_ok) {
        return Err(EngineError::invalid(
            "AdamW",
            "master and moments must be f32 of one length, the gradient f32 (or bf16 for a bf16 parameter)",
        ));
    }
    if working.is_some_and(|w| w.dtype != DType::BF16 || w.len != master.len) {
        return Err(EngineError::invalid("AdamW", "the working copy must be bf16 of the master's length"));
    }
    if grad_scale.is_some_and(|s| s.dtype != DType::F32) {
        return Err(EngineError::invalid("AdamW", "the gradient scale must be an f32 scalar"));
    }
    let n = master.len as i64;
    let (p, pm, pv, g) = (master.ptr(), m.ptr(), v.ptr(), grad.ptr());
    let gs = grad_scale.map_or(0u64, |s| s.ptr());
    let (lr, b1, b2, eps, wd, bc1, bc2) = (a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.bc1, a.bc2);
    match working {
        None => {
            launch!(dev, "adamw", "adamw_f32", grid(master.len), [p, pm, pv, g, gs, n, lr, b1, b2, eps, wd, bc1, bc2])
        }
        Some(w) => {
            let pw = w.ptr();
            let name = if grad.dtype == DType::BF16 { "adamw_bf16_gbf16" } else { "adamw_bf16" };
            launch!(dev, "adamw", name, grid(master.len), [p, pw, pm, pv, g, gs, n, lr, b1, b2, eps, wd, bc1, bc2]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::reduce_splits;

    #[test]
    fn long_reductions_with_few_outputs_split_and_others_do_not() {
        assert_eq!(reduce_splits(1, 1000), 1, "short rows stay one block per output");
        assert_eq!(reduce_splits(4096, 1 << 20), 1, "enough outputs to fill the GPU");
        assert_eq!(reduce_splits(1, 155_000_000), 1024, "a full sum of a big gradient: 1024 chunks");
        assert_eq!(reduce_splits(3, 70_001), 18, "chunks of at least 4096 elements");
        assert_eq!(reduce_splits(100, 1 << 20), 20);
    }
}
