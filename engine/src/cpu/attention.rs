//! Reference attention over packed causal sequences, materialising each row's scores (the ground
//! truth for the fused CUDA kernel). All sums accumulate in f64 whatever the storage type.
//!
//! For query i of a sequence and its keys j ≤ i (GQA: KV head = q head / (Hq / Hkv)):
//!   s_ij = scale · q_i·k_j,  m_i = max_j s_ij,  l_i = Σ_j e^(s_ij − m_i),  p_ij = e^(s_ij − m_i) / l_i
//!   o_i = Σ_j p_ij v_j,  LSE_i = m_i + ln l_i,  H_i = −Σ_j p_ij ln p_ij = ln l_i − Σ_j p_ij (s_ij − m_i)
//! Row statistics: each one's reference in `ops/row_stat.rs` on p_i· of a head, or on the head mixture
//! p̄_ij = (1/Hq) Σ_h p_hij.
//! Backward (FlashAttention-2): D_i = do_i·o_i, dp_ij = do_i·v_j, ds_ij = p_ij (dp_ij − D_i),
//!   dq_i = scale Σ_j ds_ij k_j,  dk_j = scale Σ_i ds_ij q_i,  dv_j = Σ_i p_ij do_i.
use super::storage::FloatKernel;
use super::Real;
use crate::error::Result;
use crate::ops::{Over, RowProbs, RowStat, RowStats};

/// Shape of one attention call.
#[derive(Clone, Debug)]
pub struct AttnGeom {
    /// (start, len) per packed sequence.
    pub spans: Vec<(usize, usize)>,
    pub total: usize,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
    pub scale: f64,
}

impl AttnGeom {
    fn kv_head(&self, h: usize) -> usize {
        h / (self.hq / self.hkv)
    }
    fn q_at(&self, t: usize, h: usize) -> usize {
        (t * self.hq + h) * self.d
    }
    fn kv_at(&self, t: usize, h: usize) -> usize {
        (t * self.hkv + h) * self.d
    }
    /// Scores of query `i` (absolute token) against keys start..=i, in f64.
    fn scores<T: Real>(&self, q: &[T], k: &[T], start: usize, i: usize, h: usize) -> Vec<f64> {
        let (qo, kh) = (self.q_at(i, h), self.kv_head(h));
        (start..=i)
            .map(|j| {
                let ko = self.kv_at(j, kh);
                self.scale * (0..self.d).map(|c| q[qo + c].f64() * k[ko + c].f64()).sum::<f64>()
            })
            .collect()
    }
}

/// Inputs (q, k, v); outputs (o [T, Hq, D], lse [T, Hq], then each statistic of `stats` in slot order:
/// [T, Hq] per head, [T] over the head mixture), each by its table reference (`ops/row_stat.rs`).
pub struct AttentionFwd<'a> {
    pub g: &'a AttnGeom,
    pub stats: RowStats,
}
impl FloatKernel for AttentionFwd<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let g = self.g;
        let (q, k, v) = (x[0], x[1], x[2]);
        let mut o = vec![T::zero(); g.total * g.hq * g.d];
        let mut lse = vec![T::zero(); g.total * g.hq];
        let wanted: Vec<RowStat> = self.stats.iter().collect();
        let mut stats: Vec<Vec<T>> = wanted
            .iter()
            .map(|s| match s.spec().over {
                Over::Head => vec![T::zero(); g.total * g.hq],
                Over::HeadMixture => vec![T::zero(); g.total],
            })
            .collect();
        let mixed = wanted.iter().any(|s| s.spec().over == Over::HeadMixture);
        for &(start, len) in &g.spans {
            for i in start..start + len {
                let mut mix = vec![0f64; if mixed { i + 1 - start } else { 0 }];
                for h in 0..g.hq {
                    let s = g.scores(q, k, start, i, h);
                    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let l: f64 = e.iter().sum();
                    let p: Vec<f64> = e.iter().map(|x| x / l).collect();
                    lse[i * g.hq + h] = T::of(m + l.ln());
                    let row = RowProbs { p: &p, sink_keys: self.stats.sink_keys() };
                    for (stat, out) in wanted.iter().zip(&mut stats) {
                        if stat.spec().over == Over::Head {
                            out[i * g.hq + h] = T::of((stat.spec().reference)(&row));
                        }
                    }
                    mix.iter_mut().zip(&p).for_each(|(a, p)| *a += p / g.hq as f64);
                    let kh = g.kv_head(h);
                    for c in 0..g.d {
                        let acc: f64 = (start..=i).zip(&p).map(|(j, p)| p * v[g.kv_at(j, kh) + c].f64()).sum();
                        o[g.q_at(i, h) + c] = T::of(acc);
                    }
                }
                let row = RowProbs { p: &mix, sink_keys: self.stats.sink_keys() };
                for (stat, out) in wanted.iter().zip(&mut stats) {
                    if stat.spec().over == Over::HeadMixture {
                        out[i] = T::of((stat.spec().reference)(&row));
                    }
                }
            }
        }
        Ok([o, lse].into_iter().chain(stats).collect())
    }
}

/// Inputs (q, k, v, o, do, lse); outputs (dq, dk, dv).
pub struct AttentionBwd<'a> {
    pub g: &'a AttnGeom,
}
impl FloatKernel for AttentionBwd<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let g = self.g;
        let (q, k, v, o, dout, lse) = (x[0], x[1], x[2], x[3], x[4], x[5]);
        let mut dq = vec![0f64; q.len()];
        let mut dk = vec![0f64; k.len()];
        let mut dv = vec![0f64; v.len()];
        for &(start, len) in &g.spans {
            for i in start..start + len {
                for h in 0..g.hq {
                    let (qo, kh) = (g.q_at(i, h), g.kv_head(h));
                    let s = g.scores(q, k, start, i, h);
                    let l = lse[i * g.hq + h].f64();
                    let dd: f64 = (0..g.d).map(|c| dout[qo + c].f64() * o[qo + c].f64()).sum();
                    for (jj, j) in (start..=i).enumerate() {
                        let ko = g.kv_at(j, kh);
                        let p = (s[jj] - l).exp();
                        let dp: f64 = (0..g.d).map(|c| dout[qo + c].f64() * v[ko + c].f64()).sum();
                        let ds = p * (dp - dd);
                        for c in 0..g.d {
                            dq[qo + c] += g.scale * ds * k[ko + c].f64();
                            dk[ko + c] += g.scale * ds * q[qo + c].f64();
                            dv[ko + c] += p * dout[qo + c].f64();
                        }
                    }
                }
            }
        }
        let cast = |v: Vec<f64>| v.into_iter().map(T::of).collect();
        Ok(vec![cast(dq), cast(dk), cast(dv)])
    }
}

/// Normalised entropy H / ln(#keys) with #keys = position + 1 (0 at position 0), per (token, head),
/// and its mean over heads per token. Input: entropy [T, Hq] and each token's position.
pub fn normalize_entropy<T: Real>(h: &[T], positions: &[i32], hq: usize) -> (Vec<T>, Vec<T>) {
    let mut norm = Vec::with_capacity(h.len());
    let mut mean = Vec::with_capacity(positions.len());
    for (t, &p) in positions.iter().enumerate() {
        let denom = ((p + 1) as f64).ln();
        let mut acc = 0.0;
        for hh in 0..hq {
            let x = if p == 0 { 0.0 } else { h[t * hq + hh].f64() / denom };
            acc += x;
            norm.push(T::of(x));
        }
        mean.push(T::of(acc / hq as f64));
    }
    (norm, mean)
}
