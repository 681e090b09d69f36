//! Partial correlation for `entrl analyze`: the correlation of x and y after both are regressed on the
//! controls by ordinary least squares with an intercept (the residuals' Pearson correlation), its rank
//! version (the same on average ranks of every variable: Spearman's partial ρ), and a Fisher-z interval.
//!
//! The least squares solve the normal equations in f64 on standardised controls (each centred and divided by
//! its standard deviation, which leaves the residuals unchanged and keeps the system well scaled) by
//! Gaussian elimination with partial pivoting. A constant control, or controls that are (numerically)
//! linear in one another, make the system singular: the result is `None`, never a made-up number.
use crate::entropy_stats::{average_ranks, pearson};
use statrs::distribution::{ContinuousCDF, Normal};

/// A correlation over `n` pairs with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Correlation {
    pub r: f64,
    pub n: usize,
    /// 95% Fisher-z interval: tanh(atanh r ± z₀.₉₇₅ / sqrt(n − 3 − controls)); `None` when n ≤ 3 + controls.
    pub ci: Option<Interval>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// Pivots below this fraction of the largest diagonal entry count as singular.
const SINGULAR: f64 = 1e-10;

/// Residuals of `y` after OLS on an intercept and `controls` (each as long as `y`); `None` when the
/// system is singular (a constant control, collinear controls) or the lengths differ.
pub fn residuals(y: &[f64], controls: &[&[f64]]) -> Option<Vec<f64>> {
    let n = y.len();
    if controls.iter().any(|c| c.len() != n) || n == 0 {
        return None;
    }
    // Design columns: intercept, then each control standardised.
    let mut cols: Vec<Vec<f64>> = vec![vec![1.0; n]];
    for c in controls {
        let m = c.iter().sum::<f64>() / n as f64;
        let sd = (c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64).sqrt();
        if !(sd > 0.0 && sd.is_finite()) {
            return None; // constant: collinear with the intercept
        }
        cols.push(c.iter().map(|v| (v - m) / sd).collect());
    }
    let p = cols.len();
    // Normal equations [XᵀX | Xᵀy].
    let mut a = vec![vec![0.0; p + 1]; p];
    for i in 0..p {
        for j in 0..p {
            a[i][j] = cols[i].iter().zip(&cols[j]).map(|(x, z)| x * z).sum();
        }
        a[i][p] = cols[i].iter().zip(y).map(|(x, v)| x * v).sum();
    }
    let beta = solve(a)?;
    Some((0..n).map(|t| y[t] - (0..p).map(|j| beta[j] * cols[j][t]).sum::<f64>()).collect())
}

/// Solve the augmented p × (p + 1) system by Gaussian elimination with partial pivoting; `None` when a
/// pivot is below [`SINGULAR`] times the largest diagonal entry.
fn solve(mut a: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let p = a.len();
    let scale = (0..p).map(|i| a[i][i].abs()).fold(0.0, f64::max);
    if !(scale > 0.0 && scale.is_finite()) {
        return None;
    }
    for k in 0..p {
        let piv = (k..p).max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs()))?;
        if a[piv][k].abs() < SINGULAR * scale {
            return None;
        }
        a.swap(k, piv);
        let pivot_row = a[k].clone();
        for row in a.iter_mut().skip(k + 1) {
            let f = row[k] / pivot_row[k];
            for (x, y) in row[k..].iter_mut().zip(&pivot_row[k..]) {
                *x -= f * y;
            }
        }
    }
    let mut x = vec![0.0; p];
    for k in (0..p).rev() {
        x[k] = (a[k][p] - (k + 1..p).map(|j| a[k][j] * x[j]).sum::<f64>()) / a[k][k];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// The 95% Fisher-z interval of `r` over `n` pairs with `controls` variables partialled out.
pub fn fisher_ci(r: f64, n: usize, controls: usize) -> Option<Interval> {
    let dof = n.checked_sub(3 + controls).filter(|&d| d > 0)? as f64;
    let z0 = Normal::new(0.0, 1.0).ok()?.inverse_cdf(0.975);
    let z = r.clamp(-1.0 + 1e-15, 1.0 - 1e-15).atanh();
    let half = z0 / dof.sqrt();
    Some(Interval { lo: (z - half).tanh(), hi: (z + half).tanh() })
}

/// Pearson correlation of x and y after regressing both on `controls`; `None` when undefined (singular
/// controls, a constant residual, fewer than 2 pairs).
pub fn partial_pearson(x: &[f64], y: &[f64], controls: &[&[f64]]) -> Option<Correlation> {
    let (rx, ry) = (residuals(x, controls)?, residuals(y, controls)?);
    let r = pearson(&rx, &ry)?;
    Some(Correlation { r, n: x.len(), ci: fisher_ci(r, x.len(), controls.len()) })
}

/// Spearman's partial ρ: [`partial_pearson`] on the average ranks of x, y and every control.
pub fn partial_spearman(x: &[f64], y: &[f64], controls: &[&[f64]]) -> Option<Correlation> {
    let ranked: Vec<Vec<f64>> = controls.iter().map(|c| average_ranks(c)).collect();
    let refs: Vec<&[f64]> = ranked.iter().map(Vec::as_slice).collect();
    partial_pearson(&average_ranks(x), &average_ranks(y), &refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = x + z with x and z correlated: controlling for z, y's residual is x's residual, so r = 1.
    #[test]
    fn controlling_for_the_added_variable_leaves_a_perfect_correlation() {
        let x = [1.0, 2.0, 4.0, 3.0, 7.0, 5.0, 6.0, 9.0];
        let z = [2.0, 1.0, 5.0, 2.0, 6.0, 7.0, 3.0, 8.0];
        let y: Vec<f64> = x.iter().zip(&z).map(|(a, b)| a + b).collect();
        let c = partial_pearson(&x, &y, &[&z]).unwrap();
        assert!((c.r - 1.0).abs() < 1e-12, "{}", c.r);
        assert_eq!(c.n, 8);
        // The raw correlation is below 1 (z adds variation), so the control matters.
        assert!(pearson(&x, &y).unwrap() < 0.99);
    }

    /// One control: the textbook formula (r_xy − r_xz r_yz) / sqrt((1 − r_xz²)(1 − r_yz²)).
    #[test]
    fn one_control_matches_the_closed_form() {
        let x = [3.1, 1.2, 4.8, 2.2, 5.9, 0.7, 3.3, 4.1, 2.9, 6.2];
        let y = [2.0, 1.9, 3.7, 1.1, 4.4, 1.5, 2.0, 3.9, 3.1, 4.0];
        let z = [1.0, 0.5, 2.0, 1.5, 2.5, 0.2, 1.1, 1.8, 0.9, 3.0];
        let (rxy, rxz, ryz) = (pearson(&x, &y).unwrap(), pearson(&x, &z).unwrap(), pearson(&y, &z).unwrap());
        let want = (rxy - rxz * ryz) / ((1.0 - rxz * rxz) * (1.0 - ryz * ryz)).sqrt();
        let got = partial_pearson(&x, &y, &[&z]).unwrap();
        assert!((got.r - want).abs() < 1e-12, "{} vs {want}", got.r);
        // Fisher interval: n − 3 − 1 = 6 degrees of freedom, around r.
        let ci = got.ci.unwrap();
        let half = 1.959963984540054 / 6f64.sqrt();
        assert!((ci.lo - (want.atanh() - half).tanh()).abs() < 1e-9);
        assert!((ci.hi - (want.atanh() + half).tanh()).abs() < 1e-9);
        // No controls: the plain correlation.
        assert!((partial_pearson(&x, &y, &[]).unwrap().r - rxy).abs() < 1e-12);
    }

    /// Spearman's partial ρ is invariant under monotone transforms of every variable.
    #[test]
    fn rank_version_ignores_monotone_transforms() {
        let x = [3.1, 1.2, 4.8, 2.2, 5.9, 0.7, 3.3, 4.1, 2.9, 6.2];
        let y = [2.0, 1.9, 3.7, 1.1, 4.4, 1.5, 2.05, 3.9, 3.1, 4.0];
        let z = [1.0, 0.5, 2.0, 1.5, 2.5, 0.2, 1.1, 1.8, 0.9, 3.0];
        let a = partial_spearman(&x, &y, &[&z]).unwrap();
        let ex: Vec<f64> = x.iter().map(|v| v.exp()).collect();
        let z3: Vec<f64> = z.iter().map(|v| v * v * v).collect();
        let b = partial_spearman(&ex, &y, &[&z3]).unwrap();
        assert!((a.r - b.r).abs() < 1e-12);
        assert!(a.r.abs() < 1.0);
    }

    #[test]
    fn singular_controls_give_no_result() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 1.0, 4.0, 3.0, 6.0];
        let z = [1.0, 3.0, 2.0, 5.0, 4.0];
        let twice: Vec<f64> = z.iter().map(|v| 2.0 * v + 1.0).collect();
        assert!(partial_pearson(&x, &y, &[&z, &twice]).is_none(), "collinear controls");
        assert!(partial_pearson(&x, &y, &[&[7.0; 5]]).is_none(), "constant control");
        assert!(fisher_ci(0.5, 4, 1).is_none(), "too few pairs for an interval");
    }
}
