//! Entropy-aware soft token weights: entrl's own weighting family (the seed paper describes a dynamic soft
//! reweighting but gives no formula; this is not it).
//!
//! Within each pool (whole batch, micro-batch or sequence, given as a [`Packing`] of segments), over the
//! valid tokens: z_t = (s_t − μ) / (σ + 1e-6) standardises the score (e.g. normalised attention entropy),
//! and w_t = floor + (1 − floor)·σ(d(step)·z_t / τ), with 0 on invalid tokens. The direction moves linearly
//! over training: d(step) = d_start + (d_end − d_start)·min(1, step / ramp_steps) — e.g. from anchors
//! (d < 0, favour low entropy) early towards explorers (d > 0) later. τ → 0 approaches a hard split at the
//! pool mean; hard masks (anchors, explorers, random) are the special case of weights in {0, 1} and go to
//! the loss the same way.
use super::check_same_device;
use crate::cuda::weights as cuda_weights;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::packing::Packing;
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftWeightSchedule {
    /// τ: smaller = sharper.
    pub temperature: f64,
    pub direction_start: f64,
    pub direction_end: f64,
    /// Steps over which the direction moves from start to end (0 = end from the first step).
    pub ramp_steps: u64,
    /// Lowest weight a valid token gets, in [0, 1).
    pub floor: f64,
}

impl Default for SoftWeightSchedule {
    /// Favour anchors at first, move to neutral-towards-explorers over 200 steps.
    fn default() -> Self {
        Self { temperature: 1.0, direction_start: -1.0, direction_end: 0.5, ramp_steps: 200, floor: 0.1 }
    }
}

impl SoftWeightSchedule {
    /// d(step).
    pub fn direction(&self, step: u64) -> f64 {
        let f = if self.ramp_steps == 0 { 1.0 } else { (step as f64 / self.ramp_steps as f64).min(1.0) };
        self.direction_start + (self.direction_end - self.direction_start) * f
    }
    fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && (0.0..1.0).contains(&self.floor) && self.direction(0).is_finite()) {
            return Err(EngineError::invalid(
                "soft_weights",
                format!("need temperature > 0 and 0 <= floor < 1; got {self:?}"),
            ));
        }
        Ok(())
    }
}

/// Weights [N] (f32) for scores [N] (f32) with validity [N] (f32, nonzero = valid) at training `step`.
pub fn soft_weights(
    scores: &Tensor,
    valid: &Tensor,
    pools: &Packing,
    sched: &SoftWeightSchedule,
    step: u64,
) -> Result<Tensor> {
    sched.validate()?;
    check_same_device("soft_weights", scores, valid)?;
    let n = pools.total();
    // f32 on the GPU; the CPU also takes f64 (the self-test's reference precision).
    let ok_dtype = |t: &Tensor| t.dtype() == DType::F32 || (t.dtype() == DType::F64 && !t.device().is_cuda());
    for (name, t) in [("scores", scores), ("valid", valid)] {
        if t.dims() != [n] || !ok_dtype(t) {
            return Err(EngineError::shape(
                "soft_weights",
                format!("{name} must be f32 [{n}], got {} {}", t.dtype(), t.shape()),
            ));
        }
    }
    let d = sched.direction(step);
    let dev = scores.device();
    let st = match (&*scores.storage(), &*valid.storage()) {
        (Storage::Cpu(s), Storage::Cpu(v)) => {
            let w = weights_cpu(&s.to_f64_vec(), &v.to_f64_vec(), pools, d, sched);
            Storage::Cpu(crate::cpu::CpuStorage::from_f64(s.dtype(), &w))
        }
        (Storage::Cuda(s), Storage::Cuda(v)) => {
            let cu = pools.on(dev)?;
            let g = cu.storage();
            let Storage::Cuda(c) = &*g else { unreachable!("uploaded to the same device") };
            Storage::Cuda(cuda_weights::soft_weights(s, v, c, pools.num_seqs(), d, sched.temperature, sched.floor)?)
        }
        _ => unreachable!("devices checked"),
    };
    Ok(Tensor::from_storage(st, Shape::new([n]), dev))
}

/// The CPU reference (f64 moments).
fn weights_cpu(s: &[f64], valid: &[f64], pools: &Packing, d: f64, sched: &SoftWeightSchedule) -> Vec<f64> {
    let mut w = vec![0f64; s.len()];
    for (a, len) in pools.spans() {
        let idx = a..a + len;
        let ok = |i: usize| valid[i] != 0.0;
        let n = idx.clone().filter(|&i| ok(i)).count() as f64;
        let mean = if n > 0.0 { idx.clone().filter(|&i| ok(i)).map(|i| s[i]).sum::<f64>() / n } else { 0.0 };
        let var =
            if n > 0.0 { idx.clone().filter(|&i| ok(i)).map(|i| (s[i] - mean).powi(2)).sum::<f64>() / n } else { 0.0 };
        let inv_std = 1.0 / (var.sqrt() + 1e-6);
        for i in idx {
            let z = (s[i] - mean) * inv_std;
            let sig = 1.0 / (1.0 + (-d * z / sched.temperature).exp());
            w[i] = if ok(i) { sched.floor + (1.0 - sched.floor) * sig } else { 0.0 };
        }
    }
    w
}
