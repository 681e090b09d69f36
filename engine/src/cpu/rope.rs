//! Rotary position embedding, rotate-half form (as HF Qwen3):
//! for pair i < D/2, θ_i = pos · base^(−2i/D); (x1, x2) → (x1 cos θ − x2 sin θ, x2 cos θ + x1 sin θ).
//! The backward pass is the same rotation by −θ (a rotation's transpose is its inverse).
use super::storage::FloatKernel;
use super::Real;
use crate::error::Result;

pub struct Rope<'a> {
    pub pos: &'a [i32],
    pub heads: usize,
    pub head_dim: usize,
    pub theta: f64,
    /// +1 forward, −1 backward.
    pub sign: f64,
    /// Round inv_freq to bf16 (HF after `.to(torch.bfloat16)` on the module).
    pub bf16_freqs: bool,
}
impl FloatKernel for Rope<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let (d, half) = (self.head_dim, self.head_dim / 2);
        let mut out = vec![T::zero(); x[0].len()];
        for (t, &p) in self.pos.iter().enumerate() {
            for h in 0..self.heads {
                let base = (t * self.heads + h) * d;
                for i in 0..half {
                    let (c, s) = angle::<T>(p, i, d, self.theta, self.sign, self.bf16_freqs);
                    let (x1, x2) = (x[0][base + i], x[0][base + i + half]);
                    out[base + i] = x1 * c - x2 * s;
                    out[base + i + half] = x2 * c + x1 * s;
                }
            }
        }
        Ok(vec![out])
    }
}

/// (cos, sin) of pos·inv_freq_i·sign. The angle is computed in f32 exactly as HF Qwen3 does
/// (inv_freq = 1 / base^(2i/D) in f32, then an f32 product), whatever the compute type; only cos/sin use T.
fn angle<T: Real>(pos: i32, i: usize, d: usize, theta: f64, sign: f64, bf16_freqs: bool) -> (T, T) {
    let mut inv = 1.0f32 / (theta as f32).powf((2 * i) as f32 / d as f32);
    if bf16_freqs {
        inv = half::bf16::from_f32(inv).to_f32();
    }
    let a = T::of((pos as f32 * inv) as f64) * T::of(sign);
    (a.cos(), a.sin())
}
