//! Host side of the fused LM-head + DAPO loss: a loop over token chunks of
//! cuBLAS logits → `dapo_rows` kernel → cuBLAS dX = dZ·W and dW += dZᵀ·X (f32 accumulator).
//! Only one chunk of logits ([chunk, V] f32) and of dZ exists at a time.
use super::gemm::gemm_into;
use crate::cpu::matmul::Gemm;
use crate::cpu::policy_loss::ClipParams;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CudaStorage;
use cudarc::driver::LaunchConfig;

/// Per-token tensors of the loss on the device (all f32 except targets).
pub struct LossRowsDev<'a> {
    pub targets: &'a CudaStorage,
    pub old_logp: &'a CudaStorage,
    pub advantages: &'a CudaStorage,
    pub mask: &'a CudaStorage,
    pub weights: &'a CudaStorage,
    /// Device scalar Z (the normaliser).
    pub z: &'a CudaStorage,
}

pub struct FusedLossOut {
    pub token_loss: CudaStorage,
    pub logp: CudaStorage,
    pub entropy: Option<CudaStorage>,
    /// ‖∂ℓ_t/∂logits_t‖ per token (before c_t) when asked for.
    pub grad_norm: Option<CudaStorage>,
    /// [T, 4]: clipped, dual-clipped, −δ, 1.
    pub flags: CudaStorage,
    /// dX (hidden's dtype) and dW (f32) when gradients were asked for.
    pub grads: Option<(CudaStorage, CudaStorage)>,
}

#[allow(clippy::too_many_arguments)]
pub fn fused_dapo_loss(
    x: &CudaStorage,
    w: &CudaStorage,
    rows: &LossRowsDev,
    (tokens, hidden, vocab): (usize, usize, usize),
    clip: ClipParams,
    temperature: f64,
    chunk: usize,
    want_entropy: bool,
    want_grad_norm: bool,
    want_grad: bool,
) -> Result<FusedLossOut> {
    let dev = &x.device;
    let dt = x.dtype;
    if w.dtype != dt {
        return Err(EngineError::DType { op: "dapo_loss", msg: format!("hidden {dt} vs lm_head {}", w.dtype) });
    }
    let f32s = [rows.old_logp, rows.advantages, rows.mask, rows.weights, rows.z];
    if f32s.iter().any(|s| s.dtype != DType::F32) || rows.targets.dtype != DType::I32 {
        return Err(EngineError::invalid("dapo_loss", "per-token inputs must be f32 (targets i32)"));
    }
    let chunk = chunk.clamp(1, tokens.max(1));
    let token_loss = CudaStorage::alloc(dev, DType::F32, tokens)?;
    let logp = CudaStorage::alloc(dev, DType::F32, tokens)?;
    let entropy = if want_entropy { Some(CudaStorage::alloc(dev, DType::F32, tokens)?) } else { None };
    let grad_norm = if want_grad_norm { Some(CudaStorage::alloc(dev, DType::F32, tokens)?) } else { None };
    let flags = CudaStorage::alloc(dev, DType::F32, tokens * 4)?;
    let grads = if want_grad {
        Some((CudaStorage::alloc(dev, dt, tokens * hidden)?, CudaStorage::zeros(dev, DType::F32, vocab * hidden)?))
    } else {
        None
    };
    let logits = CudaStorage::alloc(dev, DType::F32, chunk * vocab)?;
    let dlogits = if want_grad { Some(CudaStorage::alloc(dev, dt, chunk * vocab)?) } else { None };
    let (esz, f4) = (dt.size_in_bytes() as u64, 4u64);
    let i32_of = |v: usize| super::kernels::i32_arg("dapo_loss", v);
    let mut c0 = 0;
    while c0 < tokens {
        let rows_c = chunk.min(tokens - c0);
        let x_c = x.ptr() + (c0 * hidden) as u64 * esz;
        // 1. logits_c [rows, V] (f32) = X_c · Wᵀ
        let g =
            Gemm { batch: 1, m: rows_c, n: vocab, k: hidden, trans_a: false, trans_b: true, stride_a: 0, stride_b: 0 };
        gemm_into(dev, dt, DType::F32, &g, x_c, w.ptr(), logits.ptr(), 0.0)?;
        // 2. per-row log-prob, entropy, loss and dZ
        let at = |s: &CudaStorage, per: usize| s.ptr() + (c0 * per) as u64 * f4;
        let (pl, pdz) = (logits.ptr(), dlogits.as_ref().map_or(0u64, |d| d.ptr()));
        let (ptl, plp, pfl) = (at(&token_loss, 1), at(&logp, 1), at(&flags, 4));
        let (pen, pgn) = (entropy.as_ref().map_or(0u64, |e| at(e, 1)), grad_norm.as_ref().map_or(0u64, |g| at(g, 1)));
        let (pt, po, pa, pm, pw, pz) = (
            at(rows.targets, 1),
            at(rows.old_logp, 1),
            at(rows.advantages, 1),
            at(rows.mask, 1),
            at(rows.weights, 1),
            rows.z.ptr(),
        );
        let (nr, nv) = (i32_of(rows_c)?, i32_of(vocab)?);
        let (temp, el, eh, cc) =
            (temperature as f32, clip.eps_low as f32, clip.eps_high as f32, clip.clip_ratio_c as f32);
        let (we, wg, err) = (want_entropy as i32, want_grad as i32, dev.error_flag_ptr());
        let cfg = LaunchConfig { grid_dim: (rows_c as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let name = format!("dapo_rows_{}", dt.suffix());
        launch!(
            dev,
            "policy_loss",
            name,
            cfg,
            [pl, pdz, ptl, plp, pen, pgn, pfl, pt, po, pa, pm, pw, pz, nr, nv, temp, el, eh, cc, we, wg, err]
        );
        // 3. dX_c = dZ_c · W ; dW += dZ_cᵀ · X_c
        if let (Some((dx, dw)), Some(dz)) = (&grads, &dlogits) {
            let g = Gemm {
                batch: 1,
                m: rows_c,
                n: hidden,
                k: vocab,
                trans_a: false,
                trans_b: false,
                stride_a: 0,
                stride_b: 0,
            };
            gemm_into(dev, dt, dt, &g, dz.ptr(), w.ptr(), dx.ptr() + (c0 * hidden) as u64 * esz, 0.0)?;
            let g = Gemm {
                batch: 1,
                m: vocab,
                n: hidden,
                k: rows_c,
                trans_a: true,
                trans_b: false,
                stride_a: 0,
                stride_b: 0,
            };
            gemm_into(dev, dt, DType::F32, &g, dz.ptr(), x_c, dw.ptr(), 1.0)?;
        }
        c0 += rows_c;
    }
    Ok(FusedLossOut { token_loss, logp, entropy, grad_norm, flags, grads })
}
