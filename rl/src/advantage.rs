//! Group-relative advantages as verl's `compute_grpo_outcome_advantage` (dapo.md §4):
//! Â_i = (R_i − mean_G R) / (std_G R + 1e-6) with the unbiased std (N − 1); a group of one sample gets
//! mean 0 and std 1. `norm_by_std = false` gives Dr.GRPO's R − mean.

/// Advantages for rewards grouped by `group` ids (any order; groups need not be contiguous).
pub fn group_advantages(rewards: &[f64], group: &[usize], norm_by_std: bool) -> Vec<f64> {
    assert_eq!(rewards.len(), group.len(), "one group id per reward");
    let mut sums: std::collections::HashMap<usize, (f64, f64, usize)> = std::collections::HashMap::new();
    for (&r, &g) in rewards.iter().zip(group) {
        let e = sums.entry(g).or_insert((0.0, 0.0, 0));
        e.0 += r;
        e.2 += 1;
    }
    for (&r, &g) in rewards.iter().zip(group) {
        let e = sums.get_mut(&g).expect("inserted");
        let mean = e.0 / e.2 as f64;
        e.1 += (r - mean) * (r - mean);
    }
    rewards
        .iter()
        .zip(group)
        .map(|(&r, g)| {
            let (sum, sq, n) = sums[g];
            let (mean, std) = if n > 1 { (sum / n as f64, (sq / (n - 1) as f64).sqrt()) } else { (0.0, 1.0) };
            if norm_by_std {
                (r - mean) / (std + 1e-6)
            } else {
                r - mean
            }
        })
        .collect()
}
