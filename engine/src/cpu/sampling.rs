//! CPU reference of next-token sampling (`ops::sample_rows`): the inverse CDF in index order, in f64.

/// (index, log-prob) for one row of temperature-scaled logits `z`: the first maximum when `greedy`, else
/// the first i with Σ_{j<=i} p_j >= u·Σ p (the last index with nonzero probability if rounding leaves the
/// target past the mass). Log-prob = z_i − logsumexp(z).
pub fn sample_row(z: &[f64], u: f64, greedy: bool) -> (usize, f64) {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = z.iter().map(|&x| (x - m).exp()).collect();
    let lse = m + p.iter().sum::<f64>().ln();
    let pick = if greedy { z.iter().position(|&x| x == m).unwrap_or(0) } else { pick_by_cdf(&p, u) };
    (pick, z[pick] - lse)
}

/// Inverse CDF over `weights` in their order: the first position whose inclusive prefix sum reaches
/// u·Σ weights; the last position with nonzero weight if rounding leaves the target past the mass. The one
/// walk both the device sampler's reference and model-qwen3's host sampler (over its top-k/top-p
/// candidates) use.
pub fn pick_by_cdf(weights: &[f64], u: f64) -> usize {
    let target = u * weights.iter().sum::<f64>();
    let mut run = 0.0;
    let found = weights.iter().position(|&w| {
        run += w;
        run >= target
    });
    found.unwrap_or_else(|| weights.iter().rposition(|&w| w > 0.0).unwrap_or(weights.len().saturating_sub(1)))
}
