//! Reference for the fused LM-head + DAPO token loss (f64 accumulation, logits materialised).
//!
//! Per token t with hidden x_t, target y_t, logits z_t = W x_t / T (temperature T):
//!   logp_t = z_{t,y} − lse(z_t),   H_t = −Σ_v p_v ln p_v  (predictive entropy, a metric)
//!   δ = clamp(logp_t − old_t, −20, 20),  r = e^δ
//!   ℓ_t = max(−A r, −A clip(r, 1−ε_low, 1+ε_high)),  and for A < 0: ℓ_t = min(ℓ_t, −A c)   (verl, dapo.md §2)
//!   L = Σ_t c_t ℓ_t,  c_t = mask_t w_t / Z
//! ∂L/∂logp_t = c_t g_t with g_t = −A r on the active (unclipped) branch and 0 otherwise (kernels.md §5);
//! ∂L/∂z_t = c_t g_t (onehot(y_t) − p_t) / T, then dX = dZ W and dW = dZᵀ X.
//! The per-token gradient-signal magnitude is that row's L2 norm before the c_t factor:
//! ‖∂ℓ_t/∂z_t‖ = |g_t| ‖onehot(y_t) − p_t‖ / T (the row dZ holds is c_t times it).
use super::storage::FloatKernel;
use super::Real;
use crate::error::Result;

/// The clip-higher / dual-clip constants.
#[derive(Clone, Copy, Debug)]
pub struct ClipParams {
    pub eps_low: f64,
    pub eps_high: f64,
    pub clip_ratio_c: f64,
}

/// Per-token outcome of the DAPO surrogate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenTerm {
    /// ℓ_t (before the c_t weighting).
    pub loss: f64,
    /// ∂ℓ_t/∂logp_t.
    pub dlogp: f64,
    /// The clipped term won (verl's pg_clipfrac).
    pub clipped: bool,
    /// The dual clip (A < 0, ratio above c) bounded the loss (pg_clipfrac_lower).
    pub clipped_lower: bool,
    /// −δ: the per-token approximate KL (verl's ppo_kl).
    pub neg_log_ratio: f64,
}

/// ℓ_t and its derivative for one token (the same branch logic the CUDA kernel uses).
pub fn dapo_token(logp: f64, old: f64, adv: f64, c: &ClipParams) -> TokenTerm {
    let raw = logp - old;
    let delta = raw.clamp(-20.0, 20.0);
    let ratio = delta.exp();
    let l1 = -adv * ratio;
    let l2 = -adv * ratio.clamp(1.0 - c.eps_low, 1.0 + c.eps_high);
    let clipped = l2 > l1;
    let mut loss = l1.max(l2);
    // Gradient of the max: −A r from the unclipped branch; 0 when the clipped (constant) term wins.
    let mut dlogp = if clipped { 0.0 } else { -adv * ratio };
    let mut clipped_lower = false;
    if adv < 0.0 {
        let l3 = -adv * c.clip_ratio_c;
        if l3 < loss {
            loss = l3;
            dlogp = 0.0;
            clipped_lower = true;
        }
    }
    if raw != delta {
        dlogp = 0.0; // the ±20 clamp is flat
    }
    TokenTerm { loss, dlogp, clipped, clipped_lower, neg_log_ratio: -delta }
}

/// Host-side inputs of the reference (one value per token).
pub struct LossRows<'a> {
    pub targets: &'a [i32],
    pub old_logp: &'a [f64],
    pub advantages: &'a [f64],
    pub mask: &'a [f64],
    pub weights: &'a [f64],
    /// The normaliser Z (already chosen: Σ mask, Σ mask·w, or a global count).
    pub z: f64,
    pub temperature: f64,
    pub clip: ClipParams,
}

/// Inputs (x [T, H], w [V, H]); outputs (token_loss c_t ℓ_t [T], logp [T], entropy [T], grad_norm [T]
/// = ‖∂ℓ_t/∂z_t‖, dx [T, H], dw [V, H], flags [T, 3] = (clipped, clipped_lower, −δ)).
pub struct DapoLossRef<'a> {
    pub rows: LossRows<'a>,
    pub hidden: usize,
    pub vocab: usize,
}

impl FloatKernel for DapoLossRef<'_> {
    fn run<T: Real>(&self, inp: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let (x, w, h, v) = (inp[0], inp[1], self.hidden, self.vocab);
        let r = &self.rows;
        let n = r.targets.len();
        if let Some(bad) = r.targets.iter().find(|&&y| y < 0 || y as usize >= v) {
            return Err(crate::error::EngineError::invalid("dapo_loss", format!("target id {bad} outside [0, {v})")));
        }
        let (mut tl, mut lp, mut ent, mut gn, mut fl) =
            (vec![T::zero(); n], vec![T::zero(); n], vec![T::zero(); n], vec![T::zero(); n], vec![T::zero(); 3 * n]);
        let mut dx = vec![0f64; n * h];
        let mut dw = vec![0f64; v * h];
        for t in 0..n {
            let xt = &x[t * h..(t + 1) * h];
            // 1. logits / T, log-sum-exp, log-prob of the target, entropy
            let z: Vec<f64> =
                (0..v).map(|j| (0..h).map(|c| xt[c].f64() * w[j * h + c].f64()).sum::<f64>() / r.temperature).collect();
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let l: f64 = z.iter().map(|zj| (zj - m).exp()).sum();
            let lse = m + l.ln();
            let y = r.targets[t] as usize;
            let logp = z[y] - lse;
            let h_t = lse - z.iter().map(|zj| (zj - lse).exp() * zj).sum::<f64>();
            // 2. the DAPO term and its weight
            let term = dapo_token(logp, r.old_logp[t], r.advantages[t], &r.clip);
            let c = if r.z > 0.0 { r.mask[t] * r.weights[t] / r.z } else { 0.0 };
            tl[t] = T::of(c * term.loss);
            lp[t] = T::of(logp);
            ent[t] = T::of(h_t);
            fl[3 * t] = T::of(term.clipped as i32 as f64);
            fl[3 * t + 1] = T::of(term.clipped_lower as i32 as f64);
            fl[3 * t + 2] = T::of(term.neg_log_ratio);
            let miss: f64 =
                z.iter().enumerate().map(|(j, zj)| ((j == y) as i32 as f64 - (zj - lse).exp()).powi(2)).sum();
            gn[t] = T::of(term.dlogp.abs() * miss.sqrt() / r.temperature);
            // 3. dZ = c g (onehot − p) / T, then dX and dW
            let g = c * term.dlogp;
            if g == 0.0 {
                continue;
            }
            for (j, zj) in z.iter().enumerate() {
                let dz = g * (((j == y) as i32 as f64) - (zj - lse).exp()) / r.temperature;
                for cc in 0..h {
                    dx[t * h + cc] += dz * w[j * h + cc].f64();
                    dw[j * h + cc] += dz * xt[cc].f64();
                }
            }
        }
        let cast = |v: Vec<f64>| v.into_iter().map(T::of).collect();
        Ok(vec![tl, lp, ent, gn, cast(dx), cast(dw), fl])
    }
}
