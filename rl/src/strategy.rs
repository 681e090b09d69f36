//! Token strategies: which response tokens train, and with what weight. Each strategy turns per-token
//! scores into f32 weights [N] over a packed batch (0 outside the response); hard selections are 0/1.
//!
//! | flag | tokens |
//! |---|---|
//! | `full` | every response token |
//! | `random:K` | exactly ⌈K·n⌉ uniformly random tokens per pool (seeded) |
//! | `anchors:K` / `explorers:K` | lowest / highest K of normalised attention entropy per pool |
//! | `pred-bottom:K` / `pred-top:K` | lowest / highest K of predictive entropy (the 80/20 paper's score) |
//! | `position-random:K` | random tokens matching the anchors' distribution over relative position (control) |
//! | `position-random-explorers:K` | random tokens matching the explorers' distribution over relative position (control) |
//! | `anchors-matched:K` / `explorers-matched:K` | lowest / highest attention entropy within each (relative-position decile × predictive-entropy decile) stratum, apportioned so the selection matches the pool's strata (control) |
//! | `soft` | entrl's own soft weighting family, not the seed paper's formula (it gives none): [`entrl_engine::ops::soft_weights`] |
//!
//! The last three rows are entrl's own controls, not the seed paper's: the paper compares anchors and
//! explorers without holding position or predictive entropy fixed. See [`stratum_matched`] for the rule.
//!
//! K is a fraction (`0.2`) or a percentage (`20%`). Pools are the units selection counts within
//! (micro-batch, mini-batch or sequence), given as a [`Packing`] of contiguous segments.
use entrl_engine::ops::{select_random, select_tails, soft_weights, tail_count, SoftWeightSchedule};
use entrl_engine::{DType, EngineError, Packing, Result, Tensor};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
    Full,
    Random(f64),
    Anchors(f64),
    Explorers(f64),
    PredTop(f64),
    PredBottom(f64),
    PositionRandom(f64),
    /// Random tokens matching the explorers' relative-position histogram (the twin of `PositionRandom`).
    PositionRandomExplorers(f64),
    /// Lowest attention entropy within (position decile × predictive-entropy decile) strata.
    AnchorsMatched(f64),
    /// Highest attention entropy within (position decile × predictive-entropy decile) strata.
    ExplorersMatched(f64),
    Soft(SoftWeightSchedule),
}

/// A malformed strategy is a `tokens.strategy` error (the message names the strategy, not yet the key).
impl FromStr for Strategy {
    type Err = crate::Error;
    fn from_str(s: &str) -> std::result::Result<Self, crate::Error> {
        let bad = |msg: String| crate::Error::config("tokens.strategy", msg);
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        let frac = || -> std::result::Result<f64, crate::Error> {
            let a =
                arg.ok_or_else(|| bad(format!("strategy {name:?} needs a fraction, e.g. {name}:0.2 or {name}:20%")))?;
            let v = match a.strip_suffix('%') {
                Some(p) => p.parse::<f64>().map(|x| x / 100.0),
                None => a.parse::<f64>(),
            }
            .map_err(|_| bad(format!("strategy {name:?}: {a:?} is not a fraction")))?;
            if v > 0.0 && v <= 1.0 {
                Ok(v)
            } else {
                Err(bad(format!("strategy {name:?}: fraction {v} outside (0, 1]")))
            }
        };
        let bare = |s: Strategy| match arg {
            None => Ok(s),
            Some(a) => Err(bad(format!(
                "strategy {name:?} takes no argument (got {a:?}){}",
                if name == "soft" { "; its knobs are tokens.soft_*" } else { "" }
            ))),
        };
        Ok(match name {
            "full" => bare(Strategy::Full)?,
            "random" => Strategy::Random(frac()?),
            "anchors" => Strategy::Anchors(frac()?),
            "explorers" => Strategy::Explorers(frac()?),
            "pred-top" => Strategy::PredTop(frac()?),
            "pred-bottom" => Strategy::PredBottom(frac()?),
            "position-random" => Strategy::PositionRandom(frac()?),
            "position-random-explorers" => Strategy::PositionRandomExplorers(frac()?),
            "anchors-matched" => Strategy::AnchorsMatched(frac()?),
            "explorers-matched" => Strategy::ExplorersMatched(frac()?),
            "soft" => bare(Strategy::Soft(SoftWeightSchedule::default()))?,
            other => {
                return Err(bad(format!(
                    "unknown token strategy {other:?} (known: full, random:K, anchors:K, explorers:K, pred-top:K, \
                     pred-bottom:K, position-random:K, position-random-explorers:K, anchors-matched:K, \
                     explorers-matched:K, soft)"
                )))
            }
        })
    }
}

/// Per-token inputs of a strategy, all f32 [N] on one device.
pub struct TokenScores<'a> {
    /// 1 on response tokens.
    pub valid: &'a Tensor,
    /// Head-mean normalised attention entropy (of the chosen layers).
    pub attn_entropy: Option<&'a Tensor>,
    /// Predictive entropy of the next-token distribution.
    pub pred_entropy: Option<&'a Tensor>,
    /// Position of each token within its response, and the response's length (for position matching).
    pub position: &'a [usize],
    pub response_len: &'a [usize],
}

impl Strategy {
    /// Token weights [N] for this step. `seed` drives the random strategies.
    pub fn weights(&self, s: &TokenScores, pools: &Packing, step: u64, seed: u64) -> Result<Tensor> {
        fn need<'t>(t: Option<&'t Tensor>, me: &Strategy, what: &str) -> Result<&'t Tensor> {
            t.ok_or_else(|| EngineError::invalid("token strategy", format!("{me:?} needs the {what} scores")))
        }
        match *self {
            Strategy::Full => Ok(s.valid.clone()),
            Strategy::Random(k) => select_random(s.valid, k, seed, pools),
            Strategy::Anchors(k) => {
                Ok(select_tails(need(s.attn_entropy, self, "attention-entropy")?, s.valid, k, pools)?.bottom)
            }
            Strategy::Explorers(k) => {
                Ok(select_tails(need(s.attn_entropy, self, "attention-entropy")?, s.valid, k, pools)?.top)
            }
            Strategy::PredTop(k) => {
                Ok(select_tails(need(s.pred_entropy, self, "predictive-entropy")?, s.valid, k, pools)?.top)
            }
            Strategy::PredBottom(k) => {
                Ok(select_tails(need(s.pred_entropy, self, "predictive-entropy")?, s.valid, k, pools)?.bottom)
            }
            Strategy::Soft(sched) => {
                soft_weights(need(s.attn_entropy, self, "attention-entropy")?, s.valid, pools, &sched, step)
            }
            Strategy::PositionRandom(k) => {
                let anchors = select_tails(need(s.attn_entropy, self, "attention-entropy")?, s.valid, k, pools)?.bottom;
                position_matched(&anchors, s, pools, seed)
            }
            Strategy::PositionRandomExplorers(k) => {
                let explorers = select_tails(need(s.attn_entropy, self, "attention-entropy")?, s.valid, k, pools)?.top;
                position_matched(&explorers, s, pools, seed)
            }
            Strategy::AnchorsMatched(k) | Strategy::ExplorersMatched(k) => {
                let attn = need(s.attn_entropy, self, "attention-entropy")?;
                let pred = need(s.pred_entropy, self, "predictive-entropy")?;
                stratum_matched(attn, pred, s, pools, k, matches!(self, Strategy::AnchorsMatched(_)))
            }
        }
    }
}

/// Relative-position bins used by the position-matched control.
pub const POSITION_BINS: usize = 10;

fn bin(pos: usize, len: usize) -> usize {
    (pos * POSITION_BINS).checked_div(len).unwrap_or(0).min(POSITION_BINS - 1)
}

/// Random valid tokens with, per pool and relative-position bin, as many as `reference` selected.
fn position_matched(reference: &Tensor, s: &TokenScores, pools: &Packing, seed: u64) -> Result<Tensor> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let (r, v) = (reference.to_vec_f64()?, s.valid.to_vec_f64()?);
    if s.position.len() != r.len() || s.response_len.len() != r.len() {
        return Err(EngineError::invalid("position-random", "positions and response lengths must cover every token"));
    }
    let mut out = vec![0.0f32; r.len()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (start, len) in pools.spans() {
        let mut want = [0usize; POSITION_BINS];
        let mut cand: Vec<Vec<usize>> = vec![Vec::new(); POSITION_BINS];
        for i in start..start + len {
            let b = bin(s.position[i], s.response_len[i]);
            if r[i] != 0.0 {
                want[b] += 1;
            }
            if v[i] != 0.0 {
                cand[b].push(i);
            }
        }
        for b in 0..POSITION_BINS {
            cand[b].shuffle(&mut rng);
            for &i in cand[b].iter().take(want[b]) {
                out[i] = 1.0;
            }
        }
    }
    Tensor::from_vec(out, [r.len()], reference.device()).and_then(|t| t.to_dtype(DType::F32))
}

/// Predictive-entropy deciles of the matched strategies.
pub const PRED_DECILES: usize = 10;

/// Strata of the matched strategies: [`POSITION_BINS`] × [`PRED_DECILES`].
pub const STRATA: usize = POSITION_BINS * PRED_DECILES;

/// `anchors-matched:K` (`low`) and `explorers-matched:K`: per pool, the valid tokens with the lowest
/// (highest) attention entropy *within* strata of (relative-position bin × predictive-entropy decile), so
/// that the selection has the pool's distribution over both and differs from it only in attention entropy.
///
/// Rule, per pool with n valid tokens:
/// - position bin: the relative-position bin of `position-random` (⌊10·pos/len⌋, capped at 9);
/// - predictive-entropy decile: rank r of the token's predictive entropy among the pool's valid tokens
///   (ascending, ties by token index), decile ⌊10·r/n⌋ — 10 bins whose sizes differ by at most 1;
/// - stratum = (position bin, decile), c_s valid tokens each;
/// - total T = [`tail_count`]`(K, n)` = ⌈K·n⌉, the count every other hard strategy takes, so matched and
///   unmatched selections are the same size;
/// - apportionment (largest remainder, Hamilton): stratum s gets ⌊T·c_s/n⌋, and the T − Σ⌊·⌋ left over
///   go one each to the strata with the largest remainders T·c_s mod n (ties: lower stratum index,
///   position bin major), so every stratum takes T·c_s/n rounded up or down (|t_s − K'·c_s| < 1 with
///   K' = T/n ≈ K) and the counts add up to T exactly;
/// - within a stratum: the t_s smallest (attention entropy, index) pairs (`low`), or the t_s largest
///   entropies with the lower index first among equals (the tie rule of `select_tails`).
///
/// Host-side; the weights (f32 0/1) come back on the scores' device. A NaN score on a valid token is an error.
fn stratum_matched(
    attn: &Tensor,
    pred: &Tensor,
    s: &TokenScores,
    pools: &Packing,
    k: f64,
    low: bool,
) -> Result<Tensor> {
    const OP: &str = "matched strategy";
    let (a, p, v) = (attn.to_vec_f64()?, pred.to_vec_f64()?, s.valid.to_vec_f64()?);
    let n = v.len();
    if a.len() != n || p.len() != n || s.position.len() != n || s.response_len.len() != n || pools.total() != n {
        return Err(EngineError::invalid(OP, "scores, positions, response lengths and pools must cover every token"));
    }
    let mut out = vec![0.0f32; n];
    for (start, len) in pools.spans() {
        let idx: Vec<usize> = (start..start + len).filter(|&i| v[i] != 0.0).collect();
        if let Some(&i) = idx.iter().find(|&&i| a[i].is_nan() || p[i].is_nan()) {
            return Err(EngineError::invalid(OP, format!("NaN score on valid token {i}")));
        }
        let strata = strata_of(&idx, &p, s);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); STRATA];
        for (&i, &st) in idx.iter().zip(&strata) {
            members[st].push(i);
        }
        let counts: Vec<usize> = members.iter().map(Vec::len).collect();
        let take = apportion(tail_count(k, idx.len()), &counts);
        for (m, t) in members.iter_mut().zip(take) {
            // Members are in ascending index order, so a stable sort keeps index order among equal keys.
            if low {
                m.sort_by(|&x, &y| a[x].total_cmp(&a[y]));
            } else {
                m.sort_by(|&x, &y| a[y].total_cmp(&a[x]));
            }
            for &i in &m[..t] {
                out[i] = 1.0;
            }
        }
    }
    Tensor::from_vec(out, [n], attn.device()).and_then(|t| t.to_dtype(DType::F32))
}

/// The stratum (position bin · [`PRED_DECILES`] + predictive-entropy decile) of each of one pool's valid
/// tokens `idx` (ascending), by the rule of [`stratum_matched`].
fn strata_of(idx: &[usize], pred: &[f64], s: &TokenScores) -> Vec<usize> {
    let n = idx.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| pred[idx[x]].total_cmp(&pred[idx[y]]).then(x.cmp(&y)));
    let mut decile = vec![0usize; n];
    for (rank, &j) in order.iter().enumerate() {
        decile[j] = rank * PRED_DECILES / n;
    }
    idx.iter().zip(decile).map(|(&i, d)| bin(s.position[i], s.response_len[i]) * PRED_DECILES + d).collect()
}

/// Largest-remainder apportionment of `total` over strata of sizes `counts` (Σ counts ≥ total): stratum s
/// gets ⌊total·c_s/n⌋, plus one for the (total − Σ⌊·⌋) largest remainders (ties: lower s). Exact integers.
fn apportion(total: usize, counts: &[usize]) -> Vec<usize> {
    let n: usize = counts.iter().sum();
    if n == 0 {
        return vec![0; counts.len()];
    }
    let mut take: Vec<usize> = counts.iter().map(|&c| total * c / n).collect();
    let mut by_rem: Vec<usize> = (0..counts.len()).collect();
    by_rem.sort_by_key(|&s| (std::cmp::Reverse(total * counts[s] % n), s));
    let left = total - take.iter().sum::<usize>();
    for &s in &by_rem[..left] {
        take[s] += 1;
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;
    use entrl_engine::Device;
    use rand::{Rng, SeedableRng};

    /// A batch of `pools` pools, each of `seqs` sequences: 2 invalid prompt tokens, then a response of a random
    /// length in 5..=`max_len` (positions 0..len). Scores come from `score(rng, relative position)` as
    /// (attention entropy, predictive entropy).
    struct Batch {
        valid: Vec<f32>,
        attn: Vec<f32>,
        pred: Vec<f32>,
        position: Vec<usize>,
        len: Vec<usize>,
        pools: Packing,
    }

    impl Batch {
        fn new(
            seed: u64,
            pools: usize,
            seqs: usize,
            max_len: usize,
            score: impl Fn(&mut rand::rngs::StdRng, f64) -> (f32, f32),
        ) -> Self {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut b = Batch {
                valid: vec![],
                attn: vec![],
                pred: vec![],
                position: vec![],
                len: vec![],
                pools: Packing::from_lengths(&[1]).unwrap(),
            };
            let mut pool_lens = Vec::new();
            for _ in 0..pools {
                let start = b.valid.len();
                for _ in 0..seqs {
                    let l = rng.random_range(5..=max_len);
                    for t in 0..l + 2 {
                        let (pos, ok) = if t < 2 { (0, false) } else { (t - 2, true) };
                        let (a, p) = if ok { score(&mut rng, pos as f64 / l as f64) } else { (f32::NAN, f32::NAN) };
                        b.valid.push(if ok { 1.0 } else { 0.0 });
                        b.attn.push(if ok { a } else { 0.0 });
                        b.pred.push(if ok { p } else { 0.0 });
                        b.position.push(pos);
                        b.len.push(l);
                    }
                }
                pool_lens.push(b.valid.len() - start);
            }
            b.pools = Packing::from_lengths(&pool_lens).unwrap();
            b
        }

        fn weights(&self, st: Strategy) -> Vec<f32> {
            let t = |v: &Vec<f32>| Tensor::from_vec(v.clone(), [v.len()], &Device::Cpu).unwrap();
            let (valid, attn, pred) = (t(&self.valid), t(&self.attn), t(&self.pred));
            let s = TokenScores {
                valid: &valid,
                attn_entropy: Some(&attn),
                pred_entropy: Some(&pred),
                position: &self.position,
                response_len: &self.len,
            };
            let w = st.weights(&s, &self.pools, 0, 7).unwrap();
            assert_eq!(w.dtype(), DType::F32);
            w.to_vec_f32().unwrap()
        }

        /// Brute-force stratum of every valid token of the pool `(start, len)`: (index, stratum).
        fn strata(&self, start: usize, len: usize) -> Vec<(usize, usize)> {
            let idx: Vec<usize> = (start..start + len).filter(|&i| self.valid[i] != 0.0).collect();
            let n = idx.len();
            idx.iter()
                .map(|&i| {
                    let rank = idx.iter().filter(|&&j| (self.pred[j], j) < (self.pred[i], i)).count();
                    let pos_bin = (10 * self.position[i] / self.len[i]).min(9);
                    (i, pos_bin * 10 + rank * 10 / n)
                })
                .collect()
        }
    }

    fn uniform(rng: &mut rand::rngs::StdRng, _: f64) -> (f32, f32) {
        // Coarse attention entropies so that ties occur and the index tie-break is exercised.
        ((rng.random_range(0..6) as f32) / 5.0, rng.random::<f32>() * 3.0)
    }

    fn hist(strata: &[(usize, usize)], keep: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut h = vec![0; STRATA];
        for &(i, s) in strata {
            if keep(i) {
                h[s] += 1;
            }
        }
        h
    }

    #[test]
    fn apportionment_is_largest_remainder() {
        assert_eq!(apportion(3, &[5, 5, 5]), vec![1, 1, 1]);
        assert_eq!(apportion(2, &[5, 5, 5]), vec![1, 1, 0], "ties go to the lower stratum");
        assert_eq!(apportion(4, &[1, 6, 3]), vec![1, 2, 1], "quotas 0.4, 2.4, 1.2: one left over, tie to stratum 0");
        assert_eq!(apportion(4, &[2, 7, 1]), vec![1, 3, 0], "quotas 0.8, 2.8, 0.4: two left over");
        assert_eq!(apportion(0, &[0, 0]), vec![0, 0]);
        assert_eq!(apportion(7, &[3, 0, 4]), vec![3, 0, 4]);
    }

    /// (1) The selection's stratum histogram is exactly the apportioned target, which sums to the unmatched
    /// strategies' count and is within 1 of K'·(the pool's histogram) in every stratum.
    #[test]
    fn matched_selections_have_the_apportioned_stratum_histogram() {
        for (seed, k) in [(1u64, 0.2), (2, 0.37), (3, 0.05), (4, 1.0), (5, 0.5)] {
            let b = Batch::new(seed, 4, 6, 40, uniform);
            for st in [Strategy::AnchorsMatched(k), Strategy::ExplorersMatched(k)] {
                let w = b.weights(st);
                assert!(w.iter().zip(&b.valid).all(|(&w, &v)| w == 0.0 || (w == 1.0 && v != 0.0)));
                for (start, len) in b.pools.spans() {
                    let strata = b.strata(start, len);
                    let pool = hist(&strata, |_| true);
                    let sel = hist(&strata, |i| w[i] != 0.0);
                    let n = strata.len();
                    let total = tail_count(k, n);
                    assert_eq!(sel, apportion(total, &pool), "{st:?} pool at {start}");
                    assert_eq!(sel.iter().sum::<usize>(), total, "{st:?}: same count as the unmatched strategies");
                    for s in 0..STRATA {
                        let want = total as f64 * pool[s] as f64 / n as f64;
                        assert!((sel[s] as f64 - want).abs() < 1.0, "{st:?} stratum {s}: {} vs {want}", sel[s]);
                    }
                }
            }
        }
    }

    /// (2) Within each stratum, anchors-matched takes exactly the lowest (attention entropy, index) pairs and
    /// explorers-matched the highest entropies (lower index first among equals), against a brute-force sort.
    #[test]
    fn matched_selections_take_the_stratum_tails() {
        for seed in 10..14u64 {
            let b = Batch::new(seed, 3, 5, 30, uniform);
            for (st, low) in [(Strategy::AnchorsMatched(0.3), true), (Strategy::ExplorersMatched(0.3), false)] {
                let w = b.weights(st);
                for (start, len) in b.pools.spans() {
                    let strata = b.strata(start, len);
                    let target = apportion(tail_count(0.3, strata.len()), &hist(&strata, |_| true));
                    for (s, &t) in target.iter().enumerate() {
                        let mut members: Vec<usize> = strata.iter().filter(|x| x.1 == s).map(|x| x.0).collect();
                        members.sort_by(|&x, &y| {
                            let (ax, ay) = (b.attn[x], b.attn[y]);
                            let by_score = if low { ax.partial_cmp(&ay) } else { ay.partial_cmp(&ax) };
                            by_score.unwrap().then(x.cmp(&y))
                        });
                        let mut want = members[..t].to_vec();
                        want.sort();
                        let got: Vec<usize> = members.iter().copied().filter(|&i| w[i] != 0.0).collect::<Vec<_>>();
                        let mut got = got;
                        got.sort();
                        assert_eq!(got, want, "{st:?} seed {seed} stratum {s}");
                    }
                }
            }
        }
    }

    /// (3) With attention entropy tracking predictive entropy, which tracks position, plain anchors are early,
    /// low-entropy tokens; matched anchors have the pool's mean relative position and predictive entropy.
    ///
    /// Tolerance (a bound, not a guess): mean_sel − mean_pool equals Σ_s (t_s/T)(m_sel,s − m_pool,s) plus
    /// Σ_s (t_s/T − c_s/n)(m_pool,s − c) for any c (the weights each sum to 1). The first term is at most
    /// Σ_s (t_s/T)·(range of the value in stratum s), as the selection only moves within its strata; the
    /// second at most Σ_s |t_s/T − c_s/n|·max_s |m_pool,s − c|, the apportionment rounding (< 1 token a
    /// stratum). The test takes c = the pool mean.
    #[test]
    fn matched_anchors_match_the_pool_in_position_and_predictive_entropy() {
        let b = Batch::new(21, 1, 25, 250, |rng, rel| {
            let p = rel + rng.random::<f64>();
            ((p + 0.05 * rng.random::<f64>()) as f32, p as f32)
        });
        let (start, len) = b.pools.spans().next().unwrap();
        let strata = b.strata(start, len);
        let n = strata.len();
        let rel = |i: usize| b.position[i] as f64 / b.len[i] as f64;
        let pred = |i: usize| b.pred[i] as f64;
        let mean = |f: &dyn Fn(usize) -> f64, keep: &dyn Fn(usize) -> bool| {
            let xs: Vec<f64> = strata.iter().map(|x| x.0).filter(|&i| keep(i)).map(f).collect();
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        let matched = b.weights(Strategy::AnchorsMatched(0.2));
        let plain = b.weights(Strategy::Anchors(0.2));
        let pool_counts = hist(&strata, |_| true);
        let sel_counts = hist(&strata, |i| matched[i] != 0.0);
        let total = sel_counts.iter().sum::<usize>() as f64;
        for (name, f) in [("relative position", &rel as &dyn Fn(usize) -> f64), ("predictive entropy", &pred)] {
            let pool_mean = mean(f, &|_| true);
            let mut within = 0.0;
            let (mut rounding, mut spread) = (0.0, 0.0f64);
            for s in 0..STRATA {
                let vals: Vec<f64> = strata.iter().filter(|x| x.1 == s).map(|x| f(x.0)).collect();
                if vals.is_empty() {
                    continue;
                }
                let (lo, hi) = vals.iter().fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                within += sel_counts[s] as f64 / total * (hi - lo);
                rounding += (sel_counts[s] as f64 / total - pool_counts[s] as f64 / n as f64).abs();
                spread = spread.max((vals.iter().sum::<f64>() / vals.len() as f64 - pool_mean).abs());
            }
            let tol = within + rounding * spread;
            let d_matched = (mean(f, &|i| matched[i] != 0.0) - pool_mean).abs();
            let d_plain = (mean(f, &|i| plain[i] != 0.0) - pool_mean).abs();
            assert!(d_matched <= tol, "{name}: matched anchors off by {d_matched} > bound {tol}");
            assert!(d_plain > 2.0 * tol, "{name}: plain anchors off by only {d_plain} (bound {tol})");
        }
    }

    /// (4) position-random-explorers matches the explorers' relative-position histogram in every pool (and
    /// position-random the anchors').
    #[test]
    fn position_random_explorers_matches_the_explorer_position_histogram() {
        let b = Batch::new(31, 3, 6, 40, |rng, rel| {
            let p = rel + 0.3 * rng.random::<f64>();
            (p as f32, p as f32)
        });
        let pos_hist = |w: &[f32], start: usize, len: usize| {
            let mut h = [0usize; POSITION_BINS];
            for i in (start..start + len).filter(|&i| w[i] != 0.0) {
                h[bin(b.position[i], b.len[i])] += 1;
            }
            h
        };
        for (control, reference) in [
            (Strategy::PositionRandomExplorers(0.25), Strategy::Explorers(0.25)),
            (Strategy::PositionRandom(0.25), Strategy::Anchors(0.25)),
        ] {
            let (c, r) = (b.weights(control), b.weights(reference));
            assert_ne!(c, r, "{control:?}: the control is random, not the reference itself");
            for (start, len) in b.pools.spans() {
                assert_eq!(pos_hist(&c, start, len), pos_hist(&r, start, len), "{control:?} pool at {start}");
            }
        }
        let (e, a) = (b.weights(Strategy::Explorers(0.25)), b.weights(Strategy::Anchors(0.25)));
        let (start, len) = b.pools.spans().next().unwrap();
        assert_ne!(pos_hist(&e, start, len), pos_hist(&a, start, len), "the data must separate the two twins");
    }

    /// (5) Names, fractions and errors; matched strategies need both scores.
    #[test]
    fn matched_strategies_parse_and_need_both_scores() {
        assert_eq!("anchors-matched:0.2".parse::<Strategy>().unwrap(), Strategy::AnchorsMatched(0.2));
        assert_eq!("explorers-matched:20%".parse::<Strategy>().unwrap(), Strategy::ExplorersMatched(0.2));
        assert_eq!(
            " position-random-explorers : 0.5".parse::<Strategy>().unwrap(),
            Strategy::PositionRandomExplorers(0.5)
        );
        let err = |s: &str| s.parse::<Strategy>().unwrap_err().to_string();
        for name in ["anchors-matched", "explorers-matched", "position-random-explorers"] {
            assert!(err(name).contains("needs a fraction"), "{name}");
            assert!(err(&format!("{name}:0")).contains("outside (0, 1]"), "{name}");
            assert!(err(&format!("{name}:x")).contains("is not a fraction"), "{name}");
        }
        let e = "anchors-unmatched:0.2".parse::<Strategy>().unwrap_err();
        assert!(matches!(&e, crate::Error::Config { key, .. } if key == "tokens.strategy"), "{e:?}");
        let e = e.to_string();
        for name in ["position-random-explorers:K", "anchors-matched:K", "explorers-matched:K"] {
            assert!(e.contains(name), "{e}");
        }
        let b = Batch::new(41, 1, 2, 10, uniform);
        let t = |v: &Vec<f32>| Tensor::from_vec(v.clone(), [v.len()], &Device::Cpu).unwrap();
        let (valid, attn, pred) = (t(&b.valid), t(&b.attn), t(&b.pred));
        let s = TokenScores {
            valid: &valid,
            attn_entropy: Some(&attn),
            pred_entropy: None,
            position: &b.position,
            response_len: &b.len,
        };
        let e = Strategy::AnchorsMatched(0.2).weights(&s, &b.pools, 0, 1).err().unwrap().to_string();
        assert!(e.contains("needs the predictive-entropy scores"), "{e}");
        let s = TokenScores { attn_entropy: None, pred_entropy: Some(&pred), ..s };
        let e = Strategy::ExplorersMatched(0.2).weights(&s, &b.pools, 0, 1).err().unwrap().to_string();
        assert!(e.contains("needs the attention-entropy scores"), "{e}");
        let mut nan = b.pred.clone();
        nan[3] = f32::NAN;
        let nan = t(&nan);
        let s = TokenScores { attn_entropy: Some(&attn), pred_entropy: Some(&nan), ..s };
        let e = Strategy::AnchorsMatched(0.2).weights(&s, &b.pools, 0, 1).err().unwrap().to_string();
        assert!(e.contains("NaN"), "{e}");
    }
}
