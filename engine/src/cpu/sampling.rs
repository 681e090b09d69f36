//! CPU reference of next-token sampling (`ops::sample_rows`): the inverse CDF in index order, in f64.

/// (index, log-prob) for one row of temperature-scaled logits `z`: the first maximum when `greedy`, else
/// the first i with Σ_{j<=i} p_j >= u·Σ p (the last index with nonzero probability if rounding leaves the
/// target past the mass). Log-prob = z_i − logsumexp(z).
pub fn sample_row(z: &[f64], u: f64, greedy: bool) -> (usize, f64) {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = z.iter().map(|&x| (x - m).exp()).collect();
    let total: f64 = p.iter().sum();
    let lse = m + total.ln();
    let pick = if greedy {
        z.iter().position(|&x| x == m).unwrap_or(0)
    } else {
        let target = u * total;
        let mut run = 0.0;
        let found = p.iter().position(|&pi| {
            run += pi;
            run >= target
        });
        found.unwrap_or_else(|| p.iter().rposition(|&pi| pi > 0.0).unwrap_or(z.len() - 1))
    };
    (pick, z[pick] - lse)
}
