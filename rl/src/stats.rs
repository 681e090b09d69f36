//! Statistics over seeds for `entrl compare`: mean and sample standard deviation, a seeded percentile
//! bootstrap interval of the mean, and two paired tests of a difference against zero (Student's t with
//! n − 1 degrees of freedom from `statrs`, and a sign-flip permutation test).
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The arithmetic mean (NaN for no values).
pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// The sample standard deviation (n − 1 in the denominator; 0 for fewer than two values).
pub fn std_dev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// The 95% percentile bootstrap interval of the mean: `resamples` resamples with replacement drawn with
/// a generator seeded by `seed` (the same interval every time), the 2.5th and 97.5th percentiles of their
/// means. None for no values.
pub fn bootstrap_ci(x: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if x.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let n = x.len();
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| x[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Some((at(0.025), at(0.975)))
}

/// Two-sided p-value of the paired t-test of differences `d` against a mean of zero: t = mean/(sd/√n),
/// Student t with n − 1 degrees of freedom. None with fewer than two differences or no spread.
pub fn paired_t_p(d: &[f64]) -> Option<f64> {
    let n = d.len();
    let sd = std_dev(d);
    if n < 2 || sd == 0.0 || !sd.is_finite() {
        return None;
    }
    let t = mean(d) / (sd / (n as f64).sqrt());
    let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
    Some((2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0))
}

/// Seeds up to which [`sign_flip_p`] enumerates every assignment of signs.
pub const EXACT_SIGN_FLIP_MAX: usize = 16;

/// Two-sided p-value of the sign-flip permutation test of differences `d` against zero: the share of
/// sign assignments whose |mean| is at least the observed one. Exact (all 2^n assignments) for
/// n ≤ [`EXACT_SIGN_FLIP_MAX`], else `draws` seeded random assignments, (hits + 1)/(draws + 1). None for
/// no differences.
pub fn sign_flip_p(d: &[f64], draws: usize, seed: u64) -> Option<f64> {
    let n = d.len();
    if n == 0 {
        return None;
    }
    let observed = d.iter().sum::<f64>().abs();
    let tol = 1e-12 * d.iter().map(|x| x.abs()).sum::<f64>().max(1e-300);
    let stat = |mask: u64| d.iter().enumerate().map(|(i, x)| if mask >> i & 1 == 1 { -x } else { *x }).sum::<f64>();
    if n <= EXACT_SIGN_FLIP_MAX {
        let total = 1u64 << n;
        let hits = (0..total).filter(|&m| stat(m).abs() >= observed - tol).count();
        return Some(hits as f64 / total as f64);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let hits = (0..draws)
        .filter(|_| {
            let s: f64 = d.iter().map(|x| if rng.random::<bool>() { -x } else { *x }).sum();
            s.abs() >= observed - tol
        })
        .count();
    Some((hits + 1) as f64 / (draws + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert!((std_dev(&[1.0, 2.0, 3.0, 4.0]) - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(std_dev(&[7.0]), 0.0);
    }

    /// d = 1, 2, 3, 4: t = 2.5/(√(5/3)/2) = √15, 3 degrees of freedom. The t(3) CDF has the closed form
    /// F(t) = 1/2 + (1/π)(t/(√3(1 + t²/3)) + atan(t/√3)); at √15, t/√3 = √5 and 1 + t²/3 = 6, so
    /// p = 2(1 − F) = 1 − (2/π)(√5/6 + atan √5) ≈ 0.030472 (scipy.stats.ttest_1samp gives 0.03047).
    #[test]
    fn paired_t_matches_the_closed_form_for_three_degrees_of_freedom() {
        let want = 1.0 - 2.0 / std::f64::consts::PI * (5f64.sqrt() / 6.0 + 5f64.sqrt().atan());
        let p = paired_t_p(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((p - want).abs() < 1e-9, "{p} vs {want}");
        assert!((p - 0.030472).abs() < 1e-5);
        // One degree of freedom is the Cauchy distribution: d = 1, 3 gives t = 2/(√2/√2) = 2,
        // p = 1 − (2/π) atan 2.
        let p1 = paired_t_p(&[1.0, 3.0]).unwrap();
        assert!((p1 - (1.0 - 2.0 / std::f64::consts::PI * 2f64.atan())).abs() < 1e-9);
        assert_eq!(paired_t_p(&[1.0]), None);
        assert_eq!(paired_t_p(&[2.0, 2.0]), None);
    }

    /// Enumerated by hand: for 1, 2, 3, 4 only all-plus and all-minus reach |sum| 10, 2/16; for 1, −2, 3
    /// (|sum| 2) the sums ±6, ±4, ±2, 0, 0 give six of eight at least 2.
    #[test]
    fn sign_flip_is_exact_for_few_seeds() {
        assert_eq!(sign_flip_p(&[1.0, 2.0, 3.0, 4.0], 0, 0), Some(0.125));
        assert_eq!(sign_flip_p(&[1.0, -2.0, 3.0], 0, 0), Some(0.75));
        // The same by enumeration here.
        let d = [0.3, -0.1, 0.25, 0.05, 0.2];
        let obs: f64 = d.iter().sum::<f64>().abs();
        let hits = (0..32u32)
            .filter(|m| {
                let s: f64 = d.iter().enumerate().map(|(i, x)| if m >> i & 1 == 1 { -x } else { *x }).sum();
                s.abs() >= obs - 1e-12
            })
            .count();
        assert_eq!(sign_flip_p(&d, 0, 0), Some(hits as f64 / 32.0));
        assert_eq!(sign_flip_p(&[], 0, 0), None);
    }

    #[test]
    fn sign_flip_monte_carlo_beyond_sixteen_seeds() {
        let d: Vec<f64> = (0..20).map(|i| 1.0 + i as f64 * 0.1).collect();
        let p = sign_flip_p(&d, 2000, 7).unwrap();
        assert!(p > 0.0 && p < 0.01, "{p}");
        assert_eq!(sign_flip_p(&d, 2000, 7), Some(p), "seeded");
    }

    #[test]
    fn bootstrap_interval_is_deterministic_and_holds_the_mean() {
        let x = [0.2, 0.35, 0.3, 0.5, 0.41];
        let (lo, hi) = bootstrap_ci(&x, 10_000, 1).unwrap();
        assert_eq!(bootstrap_ci(&x, 10_000, 1), Some((lo, hi)));
        assert!(lo < mean(&x) && mean(&x) < hi, "{lo} {hi}");
        assert!(lo >= 0.2 && hi <= 0.5);
        assert_eq!(bootstrap_ci(&[0.4], 100, 1), Some((0.4, 0.4)));
        assert_eq!(bootstrap_ci(&[], 100, 1), None);
    }
}
