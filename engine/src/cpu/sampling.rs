//! CPU reference of next-token sampling (`ops::sample_rows`, `kernels-cu/cuda/sample.cu`), in f64: the keyed
//! uniform, temperature, top-k and top-p by a threshold over the value bits (the kernel's stages), then the
//! inverse CDF over the kept candidates in id order.
use super::random::splitmix64;

/// Temperature, top-k and top-p of a sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
}

impl Default for SamplingParams {
    /// DAPO rollouts: temperature 1, top-p 1, no top-k.
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0, top_k: 0 }
    }
}

impl SamplingParams {
    /// Why these parameters cannot sample, if they cannot: the temperature must be finite and >= 0, top-p in
    /// (0, 1].
    pub fn invalid(&self) -> Option<String> {
        let ok = self.temperature >= 0.0 && self.temperature.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0;
        (!ok).then(|| format!("sampling needs a finite temperature >= 0 and 0 < top_p <= 1, got {self:?}"))
    }

    /// Whether top-k or top-p cut the candidates (greedy ignores both).
    pub fn truncates(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0
    }
}

/// What keys a sampled token's randomness: the request's seed and the index of the response token being
/// sampled (0 for the first response token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub seed: u64,
    pub position: u64,
}

/// A sampled token and its log-prob under the full temperature-scaled distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub token: u32,
    pub logprob: f64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The uniform in [0, 1) (53 bits) that samples response token `position` of the request seeded `seed`:
/// splitmix64(splitmix64(seed) + position·γ) with `cpu::random::splitmix64` (which adds γ, the golden-ratio
/// constant, before mixing). A pure function (a
/// counter-based hash), bit-identical in `kernels-cu/cuda/sample.cu`, so a response depends on neither its
/// batch nor preemption.
pub fn sample_uniform(seed: u64, position: u64) -> f64 {
    let h = splitmix64(splitmix64(seed).wrapping_add(position.wrapping_mul(GOLDEN)));
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl SampleKey {
    /// [`sample_uniform`] of this key.
    pub fn uniform(&self) -> f64 {
        sample_uniform(self.seed, self.position)
    }
}

/// Order-preserving u64 of an f64 (the order of `f64::total_cmp`: −0 < +0).
fn order_key(z: f64) -> u64 {
    let b = z.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// The sample of one row of temperature-scaled logits `z` (z = logits / T) with uniform `u`, by the device
/// kernel's stages: greedy (T = 0, `params.temperature == 0`) is the first maximum; otherwise the kept
/// set is the shortest prefix of the order (z descending, ties by id) with min(top_k, vocab) members or
/// mass >= top_p, found as a threshold τ over the value bits plus the first c ties at τ; the pick is
/// [`pick_by_cdf`] over the kept weights in id order. Log-prob = z_i − logsumexp(z).
pub fn sample_row(z: &[f64], u: f64, params: &SamplingParams) -> Sample {
    let n = z.len();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = z.iter().map(|&x| (x - m).exp()).collect();
    let total: f64 = p.iter().sum();
    let lse = m + total.ln();
    let done = |i: usize| Sample { token: i as u32, logprob: z[i] - lse };
    if params.temperature == 0.0 {
        return done(z.iter().position(|&x| x == m).unwrap_or(0));
    }
    let k_eff = if params.top_k > 0 { params.top_k.min(n) } else { n };
    let by_p = params.top_p < 1.0;
    let p_target = params.top_p * total;
    let keys: Vec<u64> = z.iter().map(|&x| order_key(x)).collect();
    let mut keep = vec![true; n];
    if k_eff < n || by_p {
        // τ: the largest key with count(key >= τ) >= k_eff or mass(key >= τ) >= top_p·total
        let mut tau = 0u64;
        for bit in (0..64).rev() {
            let cand = tau | (1 << bit);
            let (mut cnt, mut mass) = (0usize, 0.0);
            for (k, w) in keys.iter().zip(&p) {
                if *k >= cand {
                    cnt += 1;
                    mass += w;
                }
            }
            if cnt >= k_eff || (by_p && mass >= p_target) {
                tau = cand;
            }
        }
        let above = keys.iter().filter(|&&k| k > tau).count();
        let mass_above: f64 = keys.iter().zip(&p).filter(|(&k, _)| k > tau).map(|(_, w)| w).sum();
        let tie_ids: Vec<usize> = (0..n).filter(|&i| keys[i] == tau).collect();
        let mut c = (k_eff - above).min(tie_ids.len());
        if let Some(&t) = tie_ids.first() {
            if by_p && p[t] > 0.0 {
                let need = ((p_target - mass_above) / p[t]).ceil();
                if need < c as f64 {
                    c = need.max(0.0) as usize;
                }
            }
        }
        let c = c.max(1);
        let tie_end = tie_ids.get(c).copied().unwrap_or(n);
        for i in 0..n {
            keep[i] = keys[i] > tau || (keys[i] == tau && i < tie_end);
        }
    }
    let weights: Vec<f64> = (0..n).map(|i| if keep[i] { p[i] } else { 0.0 }).collect();
    done(pick_by_cdf(&weights, u))
}

/// Inverse CDF over `weights` in their order: the first position with positive weight whose inclusive
/// prefix sum reaches u·Σ weights; the last position with positive weight if rounding leaves the target
/// past the mass (the last position when none is positive). The one walk both the device sampler's
/// reference and model-qwen3's host sampler (over its kept candidates in id order) use.
pub fn pick_by_cdf(weights: &[f64], u: f64) -> usize {
    let target = u * weights.iter().sum::<f64>();
    let mut run = 0.0;
    let found = weights.iter().position(|&w| {
        run += w;
        w > 0.0 && run >= target
    });
    found.unwrap_or_else(|| weights.iter().rposition(|&w| w > 0.0).unwrap_or(weights.len().saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyed_uniform_is_a_deterministic_function_of_seed_and_position() {
        let u = sample_uniform(7, 3);
        assert_eq!(u.to_bits(), sample_uniform(7, 3).to_bits());
        assert!((0.0..1.0).contains(&u));
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20u64 {
            for pos in 0..50u64 {
                let v = sample_uniform(seed, pos);
                assert!((0.0..1.0).contains(&v));
                assert!(seen.insert(v.to_bits()), "seed {seed} position {pos} repeats a uniform");
            }
        }
        // roughly uniform: the mean of 4000 draws near 1/2
        let mean = seen.iter().map(|b| f64::from_bits(*b)).sum::<f64>() / seen.len() as f64;
        assert!((mean - 0.5).abs() < 0.03, "mean {mean}");
        assert_eq!(SampleKey { seed: 7, position: 3 }.uniform().to_bits(), u.to_bits());
        // pinned values (the same in kernels-cu/emu/sample_check.cpp, which runs the kernel's copy)
        let bits53 = |s, p| (sample_uniform(s, p) * (1u64 << 53) as f64) as u64;
        assert_eq!(bits53(0, 0), 5_876_733_520_225_071);
        assert_eq!(bits53(7, 3), 5_442_463_288_602_051);
        assert_eq!(bits53(u64::MAX, u64::MAX), 2_403_545_779_318_817);
    }

    #[test]
    fn pick_by_cdf_skips_zero_weights_even_at_u_zero() {
        assert_eq!(pick_by_cdf(&[0.0, 0.0, 1.0, 1.0], 0.0), 2);
        assert_eq!(pick_by_cdf(&[0.0, 1.0, 1.0, 0.0], 1.0), 2);
        assert_eq!(pick_by_cdf(&[1.0, 1.0, 1.0, 1.0], 0.3), 1);
    }

    #[test]
    fn truncation_keeps_the_top_candidates_with_ties_by_id() {
        let z = [1.0, 3.0, 2.0, 3.0, 3.0, 0.0];
        let t = |top_k, top_p| SamplingParams { temperature: 1.0, top_p, top_k };
        // top-k 2 keeps ids 1 and 3 (ties at 3.0 by id): u just below 1 picks 3, u = 0 picks 1
        assert_eq!(sample_row(&z, 0.999, &t(2, 1.0)).token, 3);
        assert_eq!(sample_row(&z, 0.0, &t(2, 1.0)).token, 1);
        // top-k 1 is the first maximum for every u
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(sample_row(&z, u, &t(1, 1.0)).token, 1);
        }
        // a tiny top-p keeps one candidate
        assert_eq!(sample_row(&z, 0.999, &t(0, 1e-9)).token, 1);
        // log-prob under the full distribution
        let lse = z.iter().map(|x: &f64| x.exp()).sum::<f64>().ln();
        assert!((sample_row(&z, 0.5, &t(1, 1.0)).logprob - (3.0 - lse)).abs() < 1e-12);
    }
}
