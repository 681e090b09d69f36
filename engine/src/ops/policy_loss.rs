//! The DAPO token loss fused with the LM head: log-probs (and optionally predictive entropy) of the
//! targets, the clip-higher / dual-clip surrogate weighted per token, normalised by all response tokens
//! or by the selected weight, with the gradients for the hidden states and the LM-head weight computed in
//! the same chunked pass (so the [T, vocab] logits never exist at once on the GPU).
use super::{check_float, check_i32, check_same_device, check_same_dtype};
use crate::autograd::Backward;
use crate::cpu::policy_loss::{ClipParams, DapoLossRef, LossRows};
use crate::cpu::storage::{compute_dtype, run_float};
use crate::cuda::policy_loss::{fused_dapo_loss, LossRowsDev};
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;
use std::sync::Mutex;

/// What the summed token losses are divided by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossNormalizer {
    /// Σ mask over the mini-batch: DAPO's token-mean ("all-token").
    AllTokens,
    /// Σ mask·weight: the mean over the selected (weighted) tokens ("selected-token", as the 80/20 code).
    SelectedWeight,
    /// A given count, e.g. the response tokens of the mini-batch summed over all data-parallel ranks.
    Fixed(f64),
}

#[derive(Clone, Copy, Debug)]
pub struct DapoLossConfig {
    pub clip: ClipParams,
    pub normalizer: LossNormalizer,
    /// Logits are divided by the rollout temperature before the log-softmax (verl).
    pub temperature: f64,
    /// Tokens per chunk on the GPU (one [chunk, vocab] f32 logits buffer lives at a time).
    pub chunk_tokens: usize,
    /// Also return the predictive entropy of each next-token distribution.
    pub want_entropy: bool,
    /// Also return each token's gradient-signal magnitude ([`DapoLossOutput::grad_norm`]).
    pub want_grad_norm: bool,
}

impl Default for DapoLossConfig {
    /// DAPO's recipe: ε_low 0.2, ε_high 0.28, dual-clip c = 10, token-mean over all response tokens.
    fn default() -> Self {
        Self {
            clip: ClipParams { eps_low: 0.2, eps_high: 0.28, clip_ratio_c: 10.0 },
            normalizer: LossNormalizer::AllTokens,
            temperature: 1.0,
            chunk_tokens: 1024,
            want_entropy: false,
            want_grad_norm: false,
        }
    }
}

/// Per-token inputs, all [T] on the hidden states' device: targets i32; the rest f32.
pub struct DapoBatch<'a> {
    pub targets: &'a Tensor,
    pub old_logp: &'a Tensor,
    pub advantages: &'a Tensor,
    /// 1 on response tokens, 0 elsewhere.
    pub mask: &'a Tensor,
    /// Token weights w_t (hard selections are 0/1).
    pub weights: &'a Tensor,
}

pub struct DapoLossOutput {
    /// Scalar loss, differentiable w.r.t. the hidden states and the LM-head weight.
    pub loss: Tensor,
    /// log π(y_t) per token [T] (no gradient).
    pub logp: Tensor,
    /// Predictive entropy per token [T] when asked for.
    pub entropy: Option<Tensor>,
    /// Per token [T], when asked for: the L2 norm of the token's logit-gradient row before the
    /// c_t = mask·w / Z factor, ‖∂ℓ_t/∂logits_t‖ = |∂ℓ_t/∂logp_t|·‖onehot(y_t) − p_t‖ / T (0 where the
    /// surrogate is flat: A = 0, a clipped branch, the ±20 log-ratio clamp). The gradient the loss applies to
    /// the row is c_t times it. Formed whether or not gradients are recorded.
    pub grad_norm: Option<Tensor>,
    /// c_t·ℓ_t per token [T] (sums to the loss).
    pub token_loss: Tensor,
    /// Σ_t mask_t·(clipped, dual-clipped, −δ, 1): read with [`DapoLossOutput::metrics`].
    pub stats: Tensor,
}

/// Host-side metrics (verl's names): pg_clipfrac, pg_clipfrac_lower, ppo_kl, and the response-token count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DapoMetrics {
    pub clip_frac: f64,
    pub clip_frac_lower: f64,
    pub approx_kl: f64,
    pub response_tokens: f64,
}

impl DapoLossOutput {
    /// Reads the masked means back (synchronises the device).
    pub fn metrics(&self) -> Result<DapoMetrics> {
        let s = self.stats.to_vec_f64()?;
        let n = s[3].max(1e-12);
        Ok(DapoMetrics { clip_frac: s[0] / n, clip_frac_lower: s[1] / n, approx_kl: s[2] / n, response_tokens: s[3] })
    }
}

/// The fused loss. hidden [T, H], lm_head [V, H] (same float dtype, same device); see the module doc.
pub fn dapo_loss(hidden: &Tensor, lm_head: &Tensor, b: &DapoBatch, cfg: &DapoLossConfig) -> Result<DapoLossOutput> {
    let (t, h, v) = validate(hidden, lm_head, b, cfg)?;
    let dev = hidden.device();
    // The normaliser Z as a device scalar (no host round trip).
    let z = match cfg.normalizer {
        LossNormalizer::AllTokens => b.mask.sum()?,
        LossNormalizer::SelectedWeight => b.mask.mul(b.weights)?.sum()?,
        LossNormalizer::Fixed(n) => Tensor::scalar(n, DType::F32, dev)?,
    };
    let want_grad = Tensor::would_record(&[hidden, lm_head]);
    let cd = compute_dtype(hidden.dtype());
    let (token_loss, logp, entropy, grad_norm, flags, grads) = match dev {
        crate::Device::Cpu => {
            let host = |x: &Tensor| x.to_vec_f64();
            let (old, adv, mask, w) = (host(b.old_logp)?, host(b.advantages)?, host(b.mask)?, host(b.weights)?);
            let targets = b.targets.to_vec_i32()?;
            let rows = LossRows {
                targets: &targets,
                old_logp: &old,
                advantages: &adv,
                mask: &mask,
                weights: &w,
                z: z.to_scalar()?,
                temperature: cfg.temperature,
                clip: cfg.clip,
            };
            let k = DapoLossRef { rows, hidden: h, vocab: v };
            let mut o = {
                let (xs, ws) = (hidden.storage(), lm_head.storage());
                let (Storage::Cpu(xs), Storage::Cpu(ws)) = (&*xs, &*ws) else { unreachable!("CPU device") };
                run_float("dapo_loss", &k, &[xs, ws])?
            };
            let cpu = |s| Tensor::from_storage(Storage::Cpu(s), Shape::new([t]), dev);
            let flags = Tensor::from_storage(Storage::Cpu(o.pop().expect("flags")), Shape::new([t, 3]), dev);
            let dw = Tensor::from_storage(Storage::Cpu(o.pop().expect("dw")), Shape::new([v, h]), dev);
            let dx =
                Tensor::from_storage(Storage::Cpu(o.pop().expect("dx").cast(hidden.dtype())), Shape::new([t, h]), dev);
            let gn = cpu(o.pop().expect("grad norm"));
            let ent = cpu(o.pop().expect("entropy"));
            let (logp, tl) = (cpu(o.pop().expect("logp")), cpu(o.pop().expect("token loss")));
            // The CPU reference returns 3 flag columns; append the count column to match the GPU layout.
            let flags = flags_with_count(&flags, cd)?;
            let (ent, gn) = (cfg.want_entropy.then_some(ent), cfg.want_grad_norm.then_some(gn));
            (tl, logp, ent, gn, flags, want_grad.then_some((dx, dw)))
        }
        crate::Device::Cuda(_) => {
            let guards = [b.targets, b.old_logp, b.advantages, b.mask, b.weights, &z].map(|x| x.storage());
            let st: Vec<&crate::storage::CudaStorage> = guards
                .iter()
                .map(|g| match &**g {
                    Storage::Cuda(s) => s,
                    Storage::Cpu(_) => unreachable!("devices checked"),
                })
                .collect();
            let rows = LossRowsDev {
                targets: st[0],
                old_logp: st[1],
                advantages: st[2],
                mask: st[3],
                weights: st[4],
                z: st[5],
            };
            let out = {
                let (xs, ws) = (hidden.storage(), lm_head.storage());
                let (Storage::Cuda(xs), Storage::Cuda(ws)) = (&*xs, &*ws) else { unreachable!("CUDA device") };
                fused_dapo_loss(
                    xs,
                    ws,
                    &rows,
                    (t, h, v),
                    cfg.clip,
                    cfg.temperature,
                    cfg.chunk_tokens,
                    cfg.want_entropy,
                    cfg.want_grad_norm,
                    want_grad,
                )?
            };
            let vec_t = |s| Tensor::from_storage(Storage::Cuda(s), Shape::new([t]), dev);
            let grads = out.grads.map(|(dx, dw)| {
                (
                    Tensor::from_storage(Storage::Cuda(dx), Shape::new([t, h]), dev),
                    Tensor::from_storage(Storage::Cuda(dw), Shape::new([v, h]), dev),
                )
            });
            let flags = Tensor::from_storage(Storage::Cuda(out.flags), Shape::new([t, 4]), dev);
            (vec_t(out.token_loss), vec_t(out.logp), out.entropy.map(vec_t), out.grad_norm.map(vec_t), flags, grads)
        }
    };
    // Masked sums of the flags: Σ mask·(clipped, dual-clipped, −δ, 1).
    let stats = {
        let _ng = crate::autograd::no_grad();
        flags.mul(&b.mask.to_dtype(flags.dtype())?.reshape([t, 1])?)?.sum_dims(&[0], false)?
    };
    let loss_value = {
        let _ng = crate::autograd::no_grad();
        token_loss.sum()?
    };
    let loss = match grads {
        Some(g) => Tensor::from_op_output(loss_value, &[hidden, lm_head], FusedLossBackward(Mutex::new(Some(g))))?,
        None => loss_value,
    };
    Ok(DapoLossOutput { loss, logp, entropy, grad_norm, token_loss, stats })
}

/// [T, 3] flags → [T, 4] with a column of ones (so one masked sum also counts the response tokens).
fn flags_with_count(f: &Tensor, cd: DType) -> Result<Tensor> {
    let t = f.dims()[0];
    let mut v = f.to_vec_f64()?;
    let mut out = Vec::with_capacity(t * 4);
    for row in v.chunks_mut(3) {
        out.extend_from_slice(row);
        out.push(1.0);
    }
    Tensor::from_f64(&out, [t, 4], cd, f.device())
}

fn validate(x: &Tensor, w: &Tensor, b: &DapoBatch, cfg: &DapoLossConfig) -> Result<(usize, usize, usize)> {
    check_float("dapo_loss", x)?;
    check_same_dtype("dapo_loss", x, w)?;
    check_same_device("dapo_loss", x, w)?;
    if x.rank() != 2 || w.rank() != 2 || x.dims()[1] != w.dims()[1] {
        return Err(EngineError::shape(
            "dapo_loss",
            format!("hidden [T, H] and lm_head [V, H] expected; got {} and {}", x.shape(), w.shape()),
        ));
    }
    let (t, h, v) = (x.dims()[0], x.dims()[1], w.dims()[0]);
    check_i32("dapo_loss", b.targets)?;
    for (name, y) in [
        ("targets", b.targets),
        ("old_logp", b.old_logp),
        ("advantages", b.advantages),
        ("mask", b.mask),
        ("weights", b.weights),
    ] {
        check_same_device("dapo_loss", x, y)?;
        if y.dims() != [t] {
            return Err(EngineError::shape("dapo_loss", format!("{name} must be [{t}], got {}", y.shape())));
        }
        if name != "targets" && y.dtype() != DType::F32 {
            return Err(EngineError::DType { op: "dapo_loss", msg: format!("{name} must be f32, got {}", y.dtype()) });
        }
    }
    let c = cfg.clip;
    if !(c.eps_low >= 0.0 && c.eps_low < 1.0 && c.eps_high >= 0.0 && c.clip_ratio_c > 1.0 && cfg.temperature > 0.0) {
        return Err(EngineError::invalid(
            "dapo_loss",
            format!(
                "need 0 <= eps_low < 1, eps_high >= 0, clip_ratio_c > 1, temperature > 0; got {c:?}, T {}",
                cfg.temperature
            ),
        ));
    }
    if let LossNormalizer::Fixed(n) = cfg.normalizer {
        if !(n >= 0.0 && n.is_finite()) {
            return Err(EngineError::invalid(
                "dapo_loss",
                format!("a fixed normaliser must be finite and >= 0, got {n}"),
            ));
        }
    }
    Ok((t, h, v))
}

/// The gradients were formed in the forward pass; backward hands them over, scaled by the upstream
/// scalar (dW, the big one, in place). The tape runs a node's backward once, so they are moved, not copied.
struct FusedLossBackward(Mutex<Option<(Tensor, Tensor)>>);

impl Backward for FusedLossBackward {
    fn name(&self) -> &'static str {
        "dapo_loss"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (dx, dw) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| EngineError::Autograd("dapo_loss: backward ran twice on one forward".into()))?;
        let dx = dx.mul(&g.to_dtype(dx.dtype())?)?;
        dw.mul_assign_scalar(&g.to_dtype(dw.dtype())?)?;
        Ok(vec![Some(dx), Some(dw)])
    }
}
