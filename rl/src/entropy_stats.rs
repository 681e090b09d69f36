//! Entropy dynamics of one step (issue 17): per probe layer, the distribution of the head-mean normalised
//! attention entropy `Hnorm` over the step's response tokens, the mean `Hnorm` of its anchors and explorers
//! (lowest / highest [`TAIL_FRAC`], the paper's k, whatever the training strategy), and its Spearman rank
//! correlations with predictive entropy and with relative position.
//!
//! Host-only and bounded: it reads the per-token vectors the old-log-prob pass already produced (no extra
//! pass), over at most [`SUBSAMPLE_CAP`] response tokens (a seeded, hence deterministic, uniform subsample
//! when the pool is larger).
//!
//! Rules: quantiles by linear interpolation between order statistics (numpy's default, Hyndman–Fan type 7:
//! `h = (n − 1)·p`, `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])`); tails of `tail_count(0.2, n)` = ⌈0.2·n⌉
//! tokens (the selection kernels' count); Spearman = Pearson correlation of average ranks (ties share the
//! mean of their ranks). A statistic that is undefined (no tokens; fewer than 2 tokens or a constant
//! variable for a correlation) or not finite is `None`, logged as JSON `null`, never NaN.
use entrl_engine::ops::tail_count;
use serde::{Deserialize, Serialize};

/// Most response tokens the statistics read per step; a larger pool is subsampled to this many.
pub const SUBSAMPLE_CAP: usize = 65_536;
/// Fraction of tokens in each tail (anchors: lowest `Hnorm`, explorers: highest).
pub const TAIL_FRAC: f64 = 0.2;
/// The logged quantiles: key suffix and probability.
pub const QUANTILES: [(&str, f64); 5] = [("q05", 0.05), ("q25", 0.25), ("q50", 0.5), ("q75", 0.75), ("q95", 0.95)];

/// One probe layer's statistics for one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// 0-based model layer (`tokens.entropy_layers`).
    pub layer: usize,
    /// `Hnorm` at the probabilities of [`QUANTILES`], in order.
    pub quantiles: [Option<f64>; 5],
    pub anchor_mean: Option<f64>,
    pub explorer_mean: Option<f64>,
    /// Spearman ρ of `Hnorm` with predictive entropy, and with relative position (position / response length).
    pub rho_pred: Option<f64>,
    pub rho_relpos: Option<f64>,
}

impl LayerStats {
    /// The metrics.jsonl fields: `hnorm_l{layer}_q05 … _q95`, `_anchor_mean`, `_explorer_mean`, `_rho_pred`,
    /// `_rho_relpos` (`None` → null).
    pub fn fields(&self) -> Vec<(String, Option<f64>)> {
        let key = |s: &str| format!("hnorm_l{}_{s}", self.layer);
        let mut out: Vec<(String, Option<f64>)> =
            QUANTILES.iter().zip(self.quantiles).map(|((s, _), q)| (key(s), q)).collect();
        out.push((key("anchor_mean"), self.anchor_mean));
        out.push((key("explorer_mean"), self.explorer_mean));
        out.push((key("rho_pred"), self.rho_pred));
        out.push((key("rho_relpos"), self.rho_relpos));
        out
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// SplitMix64: a tiny seeded generator (the subsample needs determinism, not quality beyond uniformity).
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `min(n, cap)` distinct indices of `0..n` in increasing order: all of them when `n ≤ cap`, else a uniform
/// sample drawn by selection sampling (Knuth's Algorithm S: one pass, O(cap) memory) from `seed`.
pub fn subsample(n: usize, cap: usize, seed: u64) -> Vec<usize> {
    if n <= cap {
        return (0..n).collect();
    }
    let mut rng = SplitMix(seed);
    let mut out = Vec::with_capacity(cap);
    for t in 0..n {
        let need = cap - out.len();
        if need == 0 {
            break;
        }
        if ((n - t) as f64) * rng.next_f64() < need as f64 {
            out.push(t);
        }
    }
    out
}

/// The `p`-quantile of ascending `sorted` by linear interpolation (type 7); `None` when empty.
pub fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    finite(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// 1-based ranks of `x`, ties given the mean of the ranks they span.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && x[order[j]] == x[order[i]] {
            j += 1;
        }
        let r = (i + j + 1) as f64 / 2.0; // mean of ranks i+1 ..= j
        order[i..j].iter().for_each(|&k| ranks[k] = r);
        i = j;
    }
    ranks
}

/// Pearson correlation, `None` for fewer than 2 pairs or a constant variable.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 2 || y.len() != n {
        return None;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n as f64, y.iter().sum::<f64>() / n as f64);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    finite((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's ρ (Pearson of average ranks); `None` for fewer than 2 pairs or a constant variable.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Means of the lowest and the highest `tail_count(frac, n)` values of ascending `sorted`.
pub fn tail_means(sorted: &[f64], frac: f64) -> (Option<f64>, Option<f64>) {
    let k = tail_count(frac, sorted.len());
    if k == 0 {
        return (None, None);
    }
    let mean = |s: &[f64]| finite(s.iter().sum::<f64>() / k as f64);
    (mean(&sorted[..k]), mean(&sorted[sorted.len() - k..]))
}

/// One layer's statistics over the tokens given: `hnorm`, predictive entropy (`None` when the pass did not
/// produce it) and relative position, aligned.
pub fn layer_stats(layer: usize, hnorm: &[f64], pred: Option<&[f64]>, relpos: &[f64]) -> LayerStats {
    let mut sorted = hnorm.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (anchor_mean, explorer_mean) = tail_means(&sorted, TAIL_FRAC);
    LayerStats {
        layer,
        quantiles: QUANTILES.map(|(_, p)| quantile(&sorted, p)),
        anchor_mean,
        explorer_mean,
        rho_pred: pred.and_then(|p| spearman(hnorm, p)),
        rho_relpos: spearman(hnorm, relpos),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn quantiles_interpolate_linearly() {
        let x = [0.1, 0.2, 0.4, 0.8, 1.0];
        // h = 4p: q05 → h 0.2 → 0.1 + 0.2·0.1; q25 → x[1]; q50 → x[2]; q75 → x[3]; q95 → h 3.8 → 0.8 + 0.8·0.2.
        assert!(close(quantile(&x, 0.05), 0.12));
        assert!(close(quantile(&x, 0.25), 0.2));
        assert!(close(quantile(&x, 0.5), 0.4));
        assert!(close(quantile(&x, 0.75), 0.8));
        assert!(close(quantile(&x, 0.95), 0.96));
        assert!(close(quantile(&x, 0.0), 0.1) && close(quantile(&x, 1.0), 1.0));
        // Four values: the median is halfway between the middle two.
        assert!(close(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5));
        assert!(close(quantile(&[0.3], 0.95), 0.3));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(average_ranks(&[10.0, 20.0, 20.0, 30.0, 20.0]), vec![1.0, 3.0, 3.0, 5.0, 3.0]);
        assert_eq!(average_ranks(&[2.0, 1.0, 2.0]), vec![2.5, 1.0, 2.5]);
        assert_eq!(average_ranks(&[]), Vec::<f64>::new());
    }

    /// x = [1, 2, 2, 3, 4], y = [2, 1, 3, 3, 5]: ranks rx = [1, 2.5, 2.5, 4, 5], ry = [2, 1, 3.5, 3.5, 5],
    /// both with mean 3. dx = [-2, -.5, -.5, 1, 2], dy = [-1, -2, .5, .5, 2]:
    /// Σdx·dy = 2 + 1 − .25 + .5 + 4 = 7.25, Σdx² = 4 + .25 + .25 + 1 + 4 = 9.5, Σdy² = 1 + 4 + .25 + .25 + 4
    /// = 9.5, so ρ = 7.25 / 9.5.
    #[test]
    fn spearman_with_ties_matches_hand_calculation() {
        let (x, y) = ([1.0, 2.0, 2.0, 3.0, 4.0], [2.0, 1.0, 3.0, 3.0, 5.0]);
        assert!(close(spearman(&x, &y), 7.25 / 9.5), "{:?}", spearman(&x, &y));
        // Monotone (not linear) relations are ±1.
        assert!(close(spearman(&[1.0, 2.0, 3.0], &[1.0, 8.0, 27.0]), 1.0));
        assert!(close(spearman(&[1.0, 2.0, 3.0], &[9.0, 4.0, 1.0]), -1.0));
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert_eq!(spearman(&[], &[]), None);
        assert_eq!(spearman(&[0.5], &[0.1]), None);
        assert_eq!(spearman(&[0.5, 0.5, 0.5], &[0.1, 0.2, 0.3]), None, "constant x");
        assert_eq!(spearman(&[0.1, 0.2, 0.3], &[1.0, 1.0, 1.0]), None, "constant y");
        assert_eq!(tail_means(&[], 0.2), (None, None));
        let s = layer_stats(3, &[], Some(&[]), &[]);
        assert_eq!(s, LayerStats { layer: 3, ..Default::default() });
        let fields = s.fields();
        assert_eq!(fields.len(), 9);
        assert!(fields.iter().all(|(k, v)| k.starts_with("hnorm_l3_") && v.is_none()), "{fields:?}");
        // One token: quantiles and tails are that token; correlations are undefined.
        let one = layer_stats(0, &[0.4], Some(&[1.0]), &[0.0]);
        assert!(one.quantiles.iter().all(|&q| close(q, 0.4)));
        assert!(close(one.anchor_mean, 0.4) && close(one.explorer_mean, 0.4));
        assert_eq!((one.rho_pred, one.rho_relpos), (None, None));
        // Non-finite values never reach the log.
        assert_eq!(quantile(&[f64::NAN], 0.5), None);
    }

    #[test]
    fn anchor_and_explorer_means_are_the_tails() {
        // Ten values: tails of ⌈0.2·10⌉ = 2.
        let h: Vec<f64> = (0..10).map(|i| i as f64 / 10.0).rev().collect();
        let s = layer_stats(1, &h, None, &[0.0; 10]);
        assert!(close(s.anchor_mean, 0.05) && close(s.explorer_mean, 0.85), "{s:?}");
        assert_eq!(s.rho_pred, None, "no predictive entropy");
        // Eleven values: ⌈2.2⌉ = 3 each.
        let h: Vec<f64> = (0..11).map(|i| i as f64).collect();
        assert_eq!(tail_means(&h, 0.2), (Some(1.0), Some(9.0)));
        let names: Vec<String> = s.fields().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "hnorm_l1_q05",
                "hnorm_l1_q25",
                "hnorm_l1_q50",
                "hnorm_l1_q75",
                "hnorm_l1_q95",
                "hnorm_l1_anchor_mean",
                "hnorm_l1_explorer_mean",
                "hnorm_l1_rho_pred",
                "hnorm_l1_rho_relpos"
            ]
        );
    }

    #[test]
    fn subsample_is_deterministic_bounded_and_sorted() {
        assert_eq!(subsample(5, 8, 1), vec![0, 1, 2, 3, 4], "small pools are read whole");
        let a = subsample(100_000, 1000, 42);
        assert_eq!(a, subsample(100_000, 1000, 42), "same seed, same sample");
        assert_ne!(a, subsample(100_000, 1000, 43), "the seed (step) changes it");
        assert_eq!(a.len(), 1000);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 100_000);
        // Spread over the whole range, not a prefix.
        assert!(a[0] < 1000 && a[999] > 99_000, "{} {}", a[0], a[999]);
        assert_eq!(subsample(10, 10, 7).len(), 10);
        assert_eq!(subsample(11, 10, 7).len(), 10);
    }
}
