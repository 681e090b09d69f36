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
//! | `soft` | entrl's own soft weighting family, not the seed paper's formula (it gives none): [`entrl_engine::ops::soft_weights`] |
//!
//! K is a fraction (`0.2`) or a percentage (`20%`). Pools are the units selection counts within
//! (micro-batch, mini-batch or sequence), given as a [`Packing`] of contiguous segments.
use entrl_engine::ops::{select_random, select_tails, soft_weights, SoftWeightSchedule};
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
    Soft(SoftWeightSchedule),
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        let frac = || -> std::result::Result<f64, String> {
            let a = arg.ok_or_else(|| format!("strategy {name:?} needs a fraction, e.g. {name}:0.2 or {name}:20%"))?;
            let v = match a.strip_suffix('%') {
                Some(p) => p.parse::<f64>().map(|x| x / 100.0),
                None => a.parse::<f64>(),
            }
            .map_err(|_| format!("strategy {name:?}: {a:?} is not a fraction"))?;
            if v > 0.0 && v <= 1.0 {
                Ok(v)
            } else {
                Err(format!("strategy {name:?}: fraction {v} outside (0, 1]"))
            }
        };
        let bare = |s: Strategy| match arg {
            None => Ok(s),
            Some(a) => Err(format!(
                "strategy {name:?} takes no argument (got {a:?}){}",
                if name == "soft" { "; its knobs are tokens.soft_*" } else { "" }
            )),
        };
        Ok(match name {
            "full" => bare(Strategy::Full)?,
            "random" => Strategy::Random(frac()?),
            "anchors" => Strategy::Anchors(frac()?),
            "explorers" => Strategy::Explorers(frac()?),
            "pred-top" => Strategy::PredTop(frac()?),
            "pred-bottom" => Strategy::PredBottom(frac()?),
            "position-random" => Strategy::PositionRandom(frac()?),
            "soft" => bare(Strategy::Soft(SoftWeightSchedule::default()))?,
            other => {
                return Err(format!(
                    "unknown token strategy {other:?} (known: full, random:K, anchors:K, explorers:K, pred-top:K, \
                     pred-bottom:K, position-random:K, soft)"
                ))
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
