//! Packing rollouts into training rows. A sequence is prompt ++ response; row i of a sequence predicts
//! token i+1, so the response's tokens are the targets of rows P−1 .. P+R−2 (P prompt, R response
//! tokens). Per-row quantities (log-probs, attention and predictive entropy, weights) all live on these
//! rows: the attention entropy of a token is that of the query that produced it.
use crate::rollout::Sample;
use entrl_engine::{Device, Packing, Result, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// Host arrays of a run of consecutive samples, one entry per row.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub ids: Vec<i32>,
    pub targets: Vec<i32>,
    /// 1 where the target is a response token.
    pub mask: Vec<f32>,
    pub advantages: Vec<f32>,
    /// Position of the target within its response, and that response's length (0 off the response).
    pub position: Vec<usize>,
    pub response_len: Vec<usize>,
    pub seq_lens: Vec<usize>,
}

impl Rows {
    pub fn build(samples: &[Sample]) -> Self {
        let mut r = Rows::default();
        for s in samples {
            let (p, n) = (s.prompt.len(), s.response.len());
            let seq: Vec<u32> = s.prompt.iter().chain(&s.response).copied().collect();
            for i in 0..seq.len() {
                r.ids.push(seq[i] as i32);
                r.targets.push(seq.get(i + 1).map_or(0, |&t| t as i32));
                let resp_pos = (i + 1).checked_sub(p).filter(|&q| q < n);
                r.mask.push(resp_pos.is_some() as u8 as f32);
                r.advantages.push(if resp_pos.is_some() { s.advantage as f32 } else { 0.0 });
                r.position.push(resp_pos.unwrap_or(0));
                r.response_len.push(if resp_pos.is_some() { n } else { 0 });
            }
            r.seq_lens.push(seq.len());
        }
        r
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn response_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0.0).count()
    }
    pub fn packing(&self) -> Result<Arc<Packing>> {
        Ok(Arc::new(Packing::from_lengths(&self.seq_lens)?))
    }
}

/// Device tensors of one micro-batch.
pub struct DeviceRows {
    pub ids: Tensor,
    pub targets: Tensor,
    pub mask: Tensor,
    pub advantages: Tensor,
    pub packing: Arc<Packing>,
}

impl DeviceRows {
    pub fn upload(r: &Rows, dev: &Device) -> Result<Self> {
        let t = r.len();
        Ok(Self {
            ids: Tensor::from_vec(r.ids.clone(), [t], dev)?,
            targets: Tensor::from_vec(r.targets.clone(), [t], dev)?,
            mask: Tensor::from_vec(r.mask.clone(), [t], dev)?,
            advantages: Tensor::from_vec(r.advantages.clone(), [t], dev)?,
            packing: r.packing()?,
        })
    }
}

/// Consecutive samples packed greedily into micro-batches of at most `budget` tokens (a longer single
/// sequence gets a micro-batch of its own). Returns sample ranges.
pub fn micro_batches(samples: &[Sample], budget: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, s) in samples.iter().enumerate() {
        if i > start && tokens + s.len() > budget {
            out.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens += s.len();
    }
    if start < samples.len() {
        out.push(start..samples.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use entrl_qwen3::FinishReason;

    fn sample(p: usize, r: usize, adv: f64) -> Sample {
        Sample {
            group: 0,
            prompt: Arc::new((1..=p as u32).collect()),
            data_source: String::new(),
            response: (100..100 + r as u32).collect(),
            finish: FinishReason::Stop,
            reward: 0.0,
            correct: false,
            advantage: adv,
        }
    }

    #[test]
    fn rows_align_targets_with_the_response() {
        let r = Rows::build(&[sample(3, 2, 0.5), sample(1, 1, -1.0)]);
        assert_eq!(r.ids, vec![1, 2, 3, 100, 101, 1, 100]);
        assert_eq!(r.targets, vec![2, 3, 100, 101, 0, 100, 0]);
        assert_eq!(r.mask, vec![0., 0., 1., 1., 0., 1., 0.]);
        assert_eq!(r.advantages, vec![0., 0., 0.5, 0.5, 0., -1.0, 0.]);
        assert_eq!(r.position, vec![0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(r.response_len, vec![0, 0, 2, 2, 0, 1, 0]);
        assert_eq!(r.seq_lens, vec![5, 2]);
        assert_eq!(r.response_tokens(), 3);
    }

    #[test]
    fn micro_batches_respect_the_budget() {
        let s: Vec<Sample> = [4, 4, 4, 9, 1].iter().map(|&l| sample(l, 1, 0.0)).collect();
        assert_eq!(micro_batches(&s, 10), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(micro_batches(&s, 100), vec![0..5]);
    }
}
