//! The supervised warm start (`train.warmup_sft_steps`): teacher forcing on worked solutions of the
//! built-in chain task before rollout step 1, so that RL starts from a partly competent policy.
//!
//! Each update draws `train.warmup_sft_batch` training prompts (seeded by `train.seed` and the update's
//! index, so the warm start is a deterministic function of the seed), appends each one's worked solution
//! ([`crate::task::chain_solution`]) and `<|im_end|>`, and minimises the mean negative log-likelihood of
//! the response tokens. The loss is entrl's fused DAPO loss with advantage 1 on every response token and
//! old log-probs equal to the current ones (a no-grad forward first, temperature 1): the ratio is exactly
//! 1, nothing is clipped, and the gradient of `−Σ ratio / T` is that of the mean response log-likelihood,
//! `−Σ ∇log p / T`, without materialising the logits. The no-grad pass also gives the reported NLL. Updates
//! use the run's AdamW (its state carries into RL) with `train.warmup_sft_lr`, constant, and
//! `train.grad_clip`. With data parallelism every rank builds the same batch and trains on its share.
//!
//! Only a fresh run warms up: a run resumed from a checkpoint skips it, since any checkpoint is taken
//! after the warm start and holds the warm-started weights and optimizer state.
use crate::batch::{micro_batches, DeviceRows, Rows};
use crate::error::{Error, Result};
use crate::rollout::{mix_seed, Sample};
use crate::session::{Optim, Session};
use entrl_engine::ops::{dapo_loss, DapoBatch, LossNormalizer};
use entrl_engine::optim::clip_grad_norm;
use entrl_engine::{no_grad, DType, Tensor};
use entrl_qwen3::FinishReason;
use std::sync::Arc;

fn err(e: impl Into<Error>) -> Error {
    e.into()
}

/// One warm-start update's report.
#[derive(Clone, Debug, PartialEq)]
pub struct SftStep {
    /// 1-based.
    pub step: u64,
    /// Mean negative log-likelihood of the batch's response tokens before the update (nats/token).
    pub nll: f64,
    pub grad_norm: f64,
    pub tokens: usize,
}

impl SftStep {
    pub fn to_json_line(&self) -> String {
        serde_json::json!({"sft_step": self.step, "nll": self.nll, "grad_norm": self.grad_norm, "tokens": self.tokens})
            .to_string()
    }
}

impl Session {
    /// The worked-solution samples of warm-start update `step` (1-based).
    fn sft_batch(&self, step: u64) -> Result<Vec<Sample>> {
        let rows = crate::session::load_rows(&self.cfg.data.train, &self.cfg, false)?;
        let key = "train.warmup_sft_steps";
        let end = (self.tok.token_id("<|im_end|>"))
            .ok_or_else(|| Error::config(key, format!("{key}: the tokenizer has no <|im_end|>")))?;
        let n = self.prompts.len();
        (0..self.cfg.train.warmup_sft_batch)
            .map(|i| {
                let p = &self.prompts[(mix_seed(&[self.cfg.train.seed, step, i as u64, 0x5f7]) % n as u64) as usize];
                let row = &rows[p.index];
                let sol = crate::task::chain_solution(row)
                    .ok_or_else(|| Error::config(key, format!("{key}: prompt {} has no worked solution", p.index)))?;
                let mut response = self.tok.encode(&sol).map_err(err)?;
                response.push(end);
                Ok(Sample {
                    group: i,
                    prompt: Arc::clone(&p.ids),
                    data_source: p.data_source.clone(),
                    response,
                    finish: FinishReason::Stop,
                    reward: 1.0,
                    correct: true,
                    advantage: 1.0,
                })
            })
            .collect()
    }

    /// One warm-start update (1-based `step`): NLL of the batch, then a teacher-forced update.
    pub fn sft_step(&mut self, step: u64) -> Result<SftStep> {
        let samples = self.sft_batch(step)?;
        let (world, rank) = (self.world_size(), self.rank());
        let share = &samples[samples.len() * rank / world..samples.len() * (rank + 1) / world];
        let tokens: usize = samples.iter().map(|s| s.response.len()).sum();
        let mut cfg = self.loss_config(LossNormalizer::Fixed(tokens as f64), false);
        cfg.temperature = 1.0;
        let dev = self.device.clone();
        let mut nll = 0.0;
        for r in micro_batches(share, self.cfg.train.micro_batch_tokens) {
            let rows = Rows::build(&share[r]);
            let d = DeviceRows::upload(&rows, &dev).map_err(err)?;
            let opts = self.forward_options(false, rows.seq_lens.iter().copied().max().unwrap_or(0));
            let old = {
                let _ng = no_grad();
                let fwd = self.model.forward(&d.ids, &d.packing, &opts).map_err(err)?;
                let zeros = Tensor::zeros([rows.len()], DType::F32, &dev).map_err(err)?;
                let b = DapoBatch {
                    targets: &d.targets,
                    old_logp: &zeros,
                    advantages: &zeros,
                    mask: &d.mask,
                    weights: &d.mask,
                };
                dapo_loss(&fwd.hidden, self.model.lm_head(), &b, &cfg).map_err(err)?.logp
            };
            let logp = old.to_vec_f32().map_err(err)?;
            nll -= logp.iter().zip(&rows.mask).map(|(&l, &m)| (l * m) as f64).sum::<f64>();
            let fwd = self.model.forward(&d.ids, &d.packing, &opts).map_err(err)?;
            let b = DapoBatch {
                targets: &d.targets,
                old_logp: &old,
                advantages: &d.advantages,
                mask: &d.mask,
                weights: &d.mask,
            };
            dapo_loss(&fwd.hidden, self.model.lm_head(), &b, &cfg).map_err(err)?.loss.backward().map_err(err)?;
        }
        if let Some(c) = &self.comm {
            nll = c.all_reduce_host_many(&[nll]).map_err(err)?[0];
        }
        let (lr, clip) = (self.cfg.train.warmup_sft_lr, self.cfg.train.grad_clip);
        let norm = match &mut self.opt {
            Optim::Plain(o) => {
                let norm = clip_grad_norm(&self.params, clip).map_err(err)?;
                if norm.is_finite() {
                    o.step(lr, None).map_err(err)?;
                }
                norm
            }
            Optim::Sharded(o) => o.step(lr, clip).map_err(err)?.norm,
        };
        self.params.iter().for_each(Tensor::zero_grad);
        if !norm.is_finite() {
            let msg = format!("warm-start update {step}: non-finite gradient norm (train.warmup_sft_lr too high?)");
            return Err(Error::NonFinite { what: "warm-start gradient norm", step, msg });
        }
        Ok(SftStep { step, nll: nll / tokens.max(1) as f64, grad_norm: norm, tokens })
    }

    /// The whole warm start: `train.warmup_sft_steps` updates, each reported to `report`.
    pub fn warm_start(&mut self, mut report: impl FnMut(&SftStep)) -> Result<Vec<SftStep>> {
        let mut out = Vec::new();
        for step in 1..=self.cfg.train.warmup_sft_steps {
            let s = self.sft_step(step)?;
            report(&s);
            out.push(s);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::TrainConfig;
    use crate::session::Session;

    fn session() -> Session {
        let mut cfg = TrainConfig::chain();
        cfg.model.device = "cpu".into();
        cfg.train.warmup_sft_batch = 16;
        cfg.train.warmup_sft_steps = 6;
        Session::new(cfg).unwrap()
    }

    #[test]
    fn warm_start_lowers_the_nll_deterministically() {
        let mut s = session();
        assert_eq!(s.tok.vocab_size(), 33);
        assert_eq!((s.prompts.len(), s.eval_prompts.len()), (4096, 200));
        let a = s.warm_start(|_| {}).unwrap();
        assert_eq!(a.len(), 6);
        assert!(a.iter().all(|x| x.nll.is_finite() && x.grad_norm.is_finite() && x.tokens > 16 * 10));
        // Random init: about ln(33) nats per token; teacher forcing brings it down within a few updates.
        assert!((a[0].nll - (33f64).ln()).abs() < 0.5, "{a:?}");
        assert!(a[5].nll < a[0].nll - 0.25 && a[1..].iter().all(|x| x.nll < a[0].nll), "{a:?}");
        let b = session().warm_start(|_| {}).unwrap();
        assert_eq!(a, b, "the warm start is a function of the seed");
    }
}
