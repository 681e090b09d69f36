//! AdamW (torch.optim.AdamW semantics) on an f32/f64 master copy.
//! p ← p − lr·wd·p;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  p ← p − (lr/bc1)·m / (√v/√bc2 + ε)
//! with bc1 = 1 − β1^t, bc2 = 1 − β2^t and g the (optionally clip-scaled) gradient.
use super::Real;

#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub bc1: f64,
    pub bc2: f64,
    pub grad_scale: f64,
}

pub fn adamw<T: Real>(p: &mut [T], m: &mut [T], v: &mut [T], g: &[T], a: &AdamWStep) {
    let c = |x: f64| T::of(x);
    let (b1, b2) = (c(a.beta1), c(a.beta2));
    let step = c(a.lr / a.bc1);
    let sbc2 = c(a.bc2).sqrt();
    for i in 0..p.len() {
        let gi = g[i] * c(a.grad_scale);
        p[i] = p[i] - c(a.lr * a.weight_decay) * p[i];
        m[i] = b1 * m[i] + (T::one() - b1) * gi;
        v[i] = b2 * v[i] + (T::one() - b2) * gi * gi;
        let denom = v[i].sqrt() / sbc2 + c(a.eps);
        p[i] = p[i] - step * m[i] / denom;
    }
}
