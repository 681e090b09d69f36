//! One DAPO rollout step, as verl's DAPO trainer does it (`shared/docs/dapo.md`):
//! 1. rollouts: draw prompts, sample n responses each, score them; with dynamic sampling keep only groups
//!    whose correctness varies and refill until the batch is full (surplus cut);
//! 2. group-relative advantages;
//! 3. old log-probs from a separate no-grad forward of the training model, which also yields the token
//!    scores: head-mean normalised attention entropy of the chosen layers (fused kernel) and predictive
//!    entropy (fused loss);
//! 4. mini-batch updates in order: strategy weights over the pool, micro-batch forward/backward of the
//!    fused DAPO loss with one normaliser per mini-batch, global-norm clipping, AdamW — a non-finite loss
//!    or gradient skips the update.
use crate::advantage::group_advantages;
use crate::batch::{micro_batches, DeviceRows, Rows};
use crate::codec::{Reader, Writer};
use crate::config::{Normalizer, Pool, ShortBatch};
use crate::diagnose::Diagnostics;
use crate::dynamic_sampling::{DynamicSampler, Outcome, SamplerState};
use crate::entropy_stats::{layer_stats, subsample, LayerStats, SUBSAMPLE_CAP};
use crate::error::Error;
use crate::metrics::StepMetrics;
use crate::progress::Progress;
use crate::rollout::{decode_samples, encode_samples, mix_seed, rollout, EncodedPrompt, RolloutSpec, Sample};
use crate::session::{Optim, Session};
use crate::strategy::{Strategy, TokenScores};
use crate::trace;
use entrl_engine::ops::{
    dapo_loss, normalized_entropy, AttnStats, DapoBatch, DapoLossConfig, LossNormalizer, Over, RowStat, RowStats,
    ScoreNorm,
};
use entrl_engine::optim::clip_grad_norm;
use entrl_engine::{no_grad, profile, DType, Packing, Tensor};
use entrl_qwen3::{FinishReason, ForwardOptions, GenerateStats, SamplingParams};
use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

type Res<T> = crate::Result<T>;

fn err(e: impl Into<Error>) -> Error {
    e.into()
}

fn internal(what: &str) -> Error {
    Error::Internal(what.into())
}

/// Scores and old log-probs of one micro-batch, from the old-log-prob pass.
pub(crate) struct Scored {
    pub(crate) rows: Rows,
    /// Index in the step's batch of the first sample these rows hold (the rest follow in order).
    first_sample: usize,
    old_logp: Vec<f32>,
    pub(crate) attn: Vec<f32>,
    pub(crate) pred: Vec<f32>,
    /// Per probe layer (layer order, as the forward returns them): the layer and its head-mean normalised
    /// attention entropy, the vectors `attn` averages (kept for the step's entropy dynamics).
    layers: Vec<(usize, Vec<f32>)>,
}

/// One mini-batch: its micro-batches in order (every rank's, so selection can pool them all) and which of
/// them this rank trains on.
pub(crate) struct MiniBatch {
    micros: Vec<Scored>,
    mine: Range<usize>,
}

impl Scored {
    fn encode(&self, w: &mut Writer) {
        let r = &self.rows;
        w.i32s(&r.ids);
        w.i32s(&r.targets);
        w.f32s(&r.mask);
        w.f32s(&r.advantages);
        w.usizes(&r.position);
        w.usizes(&r.response_len);
        w.usizes(&r.seq_lens);
        w.f32s(&self.old_logp);
        w.f32s(&self.attn);
        w.f32s(&self.pred);
        w.u64(self.first_sample as u64);
        w.u64(self.layers.len() as u64);
        for (layer, h) in &self.layers {
            w.u64(*layer as u64);
            w.f32s(h);
        }
    }

    fn decode(r: &mut Reader) -> Res<Self> {
        let rows = Rows {
            ids: r.i32s()?,
            targets: r.i32s()?,
            mask: r.f32s()?,
            advantages: r.f32s()?,
            position: r.usizes()?,
            response_len: r.usizes()?,
            seq_lens: r.usizes()?,
        };
        let (old_logp, attn, pred) = (r.f32s()?, r.f32s()?, r.f32s()?);
        let first_sample = r.u64()? as usize;
        let layers = (0..r.u64()?).map(|_| Ok((r.u64()? as usize, r.f32s()?))).collect::<Res<Vec<_>>>()?;
        Ok(Self { rows, first_sample, old_logp, attn, pred, layers })
    }
}

/// Contiguous parts of `lens` with near-equal token sums, one per rank (data parallelism balanced by
/// length): an item joins part r while its midpoint stays within (r+1)/world of the total.
fn token_split(lens: &[usize], world: usize) -> Vec<Range<usize>> {
    let total: usize = lens.iter().sum();
    let mut out = Vec::with_capacity(world);
    let (mut start, mut acc, mut i) = (0, 0, 0);
    for r in 0..world {
        let goal = total * (r + 1) / world;
        while i < lens.len() && (2 * acc + lens[i] <= 2 * goal || r + 1 == world) {
            acc += lens[i];
            i += 1;
        }
        out.push(start..i);
        start = i;
    }
    out
}

impl MiniBatch {
    pub(crate) fn cat<T: Copy>(&self, f: impl Fn(&Scored) -> &[T]) -> Vec<T> {
        self.micros.iter().flat_map(|m| f(m).iter().copied()).collect()
    }
}

/// This rank's share of one mini-batch in the scoring plan.
struct Share<'a> {
    /// Index in the step's batch of the share's first sample.
    first: usize,
    samples: &'a [Sample],
    /// Micro-batches as sample ranges within `samples`.
    micros: Vec<Range<usize>>,
}

/// What phases 1–3 hand to the updates.
struct Prepared {
    batch: Vec<Sample>,
    minis: Vec<MiniBatch>,
    gen_tokens: usize,
    gen_correct: Vec<bool>,
    rounds: usize,
    cache: GenerateStats,
    t_rollout: f64,
    t_old: f64,
}

/// One mini-batch as a strategy sees it (host arrays over its rows), from [`Session::preview`].
#[derive(Clone, Debug)]
pub struct TokenView {
    pub valid: Vec<f32>,
    pub attn: Vec<f32>,
    pub pred: Vec<f32>,
    pub position: Vec<usize>,
    pub response_len: Vec<usize>,
    /// Lengths of the selection pools (contiguous, in row order).
    pub pools: Vec<usize>,
    pub weights: Vec<f32>,
}

/// What one update's backward pass sums over its micro-batches (this rank's, then all-reduced).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LossSums {
    pub loss: f64,
    /// Σ clip_frac · response tokens, and the same for the lower clip and the approximate KL.
    pub clip_tokens: f64,
    pub clip_lower_tokens: f64,
    pub kl_tokens: f64,
    pub tokens: f64,
}

impl LossSums {
    /// The host exchange's encoding (one all-reduce of five values).
    fn to_array(self) -> [f64; 5] {
        [self.loss, self.clip_tokens, self.clip_lower_tokens, self.kl_tokens, self.tokens]
    }
    fn from_array(v: &[f64]) -> Self {
        let at = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        Self { loss: at(0), clip_tokens: at(1), clip_lower_tokens: at(2), kl_tokens: at(3), tokens: at(4) }
    }
}

/// Running sums over a step's updates.
#[derive(Default)]
struct UpdateSums {
    loss: f64,
    grad_norm: f64,
    clip: f64,
    clip_lower: f64,
    kl: f64,
    tokens: f64,
    kept: f64,
    valid: f64,
    updates: usize,
    skipped: usize,
    diag: Vec<Diagnostics>,
    /// The first epoch's update of each mini-batch, on a traced step (`run.trace_every`).
    traced: Vec<TracedUpdate>,
}

/// What a traced mini-batch update leaves for the token trace.
struct TracedUpdate {
    /// Strategy weights of the whole mini-batch, and the normaliser Z.
    weights: Vec<f32>,
    z: f64,
    /// Per micro-batch of this rank (in order); empty when nothing was selected and no backward ran.
    micros: Vec<LossTrace>,
}

/// Per row of one micro-batch, from the update's fused loss: the new log-prob and the gradient-signal
/// magnitude ‖∂ℓ/∂logits‖ (before c_t).
pub(crate) struct LossTrace {
    new_logp: Vec<f32>,
    grad_norm: Vec<f32>,
}

/// Phase 1's result: the batch (groups in order), every generated sample's tokens and correctness (the
/// pre-filter accuracy), the generation rounds, and this rank's KV-cache scheduler summed over rounds.
struct Collected {
    batch: Vec<Sample>,
    generated_tokens: usize,
    generated_correct: Vec<bool>,
    rounds: usize,
    cache: GenerateStats,
}

impl Session {
    pub(crate) fn loss_config(&self, normalizer: LossNormalizer, want_entropy: bool) -> DapoLossConfig {
        let t = &self.cfg.train;
        let mut c = DapoLossConfig::default();
        c.clip.eps_low = t.eps_low;
        c.clip.eps_high = t.eps_high;
        c.clip.clip_ratio_c = t.clip_ratio_c;
        c.normalizer = normalizer;
        c.temperature = self.cfg.rollout.temperature;
        c.want_entropy = want_entropy;
        c
    }

    /// With `with_scores`: the probe layers' Hnorm (always, for the entropy dynamics and traces) and the
    /// statistic `tokens.score` ranks by.
    pub(crate) fn forward_options(&self, with_scores: bool, longest: usize) -> ForwardOptions {
        let checkpoint = self.cfg.model.checkpoint_for(longest);
        let t = &self.cfg.tokens;
        let probe_stats = RowStats::ENTROPY.with(t.score.0).with_sink_keys(t.sink_keys);
        ForwardOptions {
            probe_layers: if with_scores { t.entropy_layers.clone() } else { Vec::new() },
            probe_stats,
            checkpoint,
        }
    }

    /// The learning rate of rollout step `step` (0-based): linear warm-up from 0, then constant.
    pub fn lr_at(&self, step: u64) -> f64 {
        let w = self.cfg.train.warmup_steps;
        self.cfg.train.lr * if w == 0 { 1.0 } else { (step as f64 / w as f64).min(1.0) }
    }

    pub fn rollout_spec<'a>(&self, verifier: &'a crate::reward::VerifierFor) -> RolloutSpec<'a> {
        let r = &self.cfg.rollout;
        RolloutSpec {
            n: r.n,
            params: SamplingParams { temperature: r.temperature, top_p: r.top_p, top_k: r.top_k },
            max_response_len: r.max_response_len,
            generate: self.cfg.rollout.generate_options(self.rollout_slots),
            overlong: self
                .cfg
                .reward
                .overlong_penalty
                .then_some((self.cfg.reward.overlong_buffer, self.cfg.reward.overlong_factor)),
            verifier,
        }
    }

    /// Phase 1: rollouts with dynamic sampling. Returns the batch (groups in order) and every sample
    /// generated this step (for the pre-filter accuracy).
    fn collect(&mut self, step: u64, progress: &Progress) -> Res<Collected> {
        let (n, batch) = (self.cfg.rollout.n, self.cfg.train.batch_size);
        let dynamic = self.cfg.rollout.dynamic_sampling;
        let per_round = if dynamic { self.cfg.rollout.gen_batch_size } else { batch };
        let mut sampler = DynamicSampler::new(batch, if dynamic { self.cfg.rollout.max_gen_rounds } else { 1 });
        let mut by_group: HashMap<usize, Vec<Sample>> = HashMap::new();
        let (mut generated_correct, mut generated_tokens) = (Vec::new(), 0usize);
        let mut cache = GenerateStats::default();
        let verifier = self.verifier();
        for round in 0.. {
            let idx = self.stream.take(per_round);
            let prompts: Vec<&EncodedPrompt> = idx.iter().map(|&i| &self.prompts[i]).collect();
            let spec = self.rollout_spec(&verifier);
            // Each rank generates a contiguous share of the round's prompts; the samples are then
            // exchanged so every rank holds the whole round (and takes the same sampling decisions).
            // Balanced by expected length: prompt tokens + the last step's mean response length.
            let expected: Vec<usize> = prompts.iter().map(|p| p.ids.len() + self.expected_response).collect();
            let mine = token_split(&expected, self.world_size())[self.rank()].clone();
            progress.phase("rollout", (mine.len() * n * self.cfg.rollout.max_response_len) as u64);
            let first = self.next_group;
            let local = rollout(
                &self.model,
                &self.tok,
                &prompts[mine.clone()],
                first + mine.start,
                &spec,
                mix_seed(&[self.cfg.train.seed, step, round]),
                || progress.phase.inc(1),
            )?;
            cache.preemptions += local.cache.preemptions;
            cache.decode_steps += local.cache.decode_steps;
            cache.peak_running = cache.peak_running.max(local.cache.peak_running);
            let local = local.samples;
            let samples = match &self.comm {
                None => local,
                Some(c) => {
                    let all = c.all_gather_host(encode_samples(&local)).map_err(err)?;
                    let mut v = Vec::with_capacity(prompts.len() * n);
                    for b in all.iter() {
                        v.extend(decode_samples(b)?);
                    }
                    v
                }
            };
            self.next_group += prompts.len();
            generated_correct.extend(samples.iter().map(|s| s.correct));
            generated_tokens += samples.iter().map(Sample::len).sum::<usize>();
            let outcomes: Vec<Outcome> =
                samples.iter().map(|s| Outcome { group: s.group, correct: s.correct }).collect();
            for s in samples {
                by_group.entry(s.group).or_default().push(s);
            }
            let groups = if dynamic {
                match sampler.add_round(&outcomes) {
                    Ok(SamplerState::Full(groups)) => groups,
                    Ok(SamplerState::NeedMore { .. }) => continue,
                    Err(Error::ShortBatch { .. }) if self.cfg.rollout.on_short_batch == ShortBatch::Train => {
                        sampler.take_partial()
                    }
                    Err(e) => return Err(e),
                }
            } else {
                (first..first + prompts.len()).collect()
            };
            let batch: Vec<Sample> = groups.iter().flat_map(|g| by_group.remove(g).unwrap_or_default()).collect();
            return Ok(Collected { batch, generated_tokens, generated_correct, rounds: round as usize + 1, cache });
        }
        unreachable!("the loop returns or fails")
    }

    /// Phase 3: old log-probs and token scores of one micro-batch (no gradient).
    fn score(&self, rows: Rows, first_sample: usize) -> Res<Scored> {
        let _ng = no_grad();
        let dev = &self.device;
        let d = DeviceRows::upload(&rows, dev).map_err(err)?;
        let opts = self.forward_options(true, rows.seq_lens.iter().copied().max().unwrap_or(0));
        let fwd = self.model.forward(&d.ids, &d.packing, &opts).map_err(err)?;
        let zeros = Tensor::zeros([rows.len()], DType::F32, dev).map_err(err)?;
        let b =
            DapoBatch { targets: &d.targets, old_logp: &zeros, advantages: &zeros, mask: &d.mask, weights: &d.mask };
        let out = dapo_loss(&fwd.hidden, self.model.lm_head(), &b, &self.loss_config(LossNormalizer::AllTokens, true))
            .map_err(err)?;
        let mut attn = vec![0f32; rows.len()];
        let mut layers = Vec::with_capacity(fwd.probes.len());
        for p in &fwd.probes {
            let hnorm = token_score(&p.stats, RowStat::Entropy, &d.packing)?;
            let stat = self.cfg.tokens.score.0;
            let score = if stat == RowStat::Entropy { hnorm.clone() } else { token_score(&p.stats, stat, &d.packing)? };
            for (a, v) in attn.iter_mut().zip(&score) {
                *a += v / fwd.probes.len() as f32;
            }
            layers.push((p.layer, hnorm));
        }
        let pred = out.entropy.as_ref().map(|e| e.to_vec_f32()).transpose().map_err(err)?.unwrap_or_default();
        Ok(Scored { old_logp: out.logp.to_vec_f32().map_err(err)?, attn, pred, layers, rows, first_sample })
    }

    /// The selection pools of a mini-batch as contiguous row segments.
    fn pools(&self, mb: &MiniBatch) -> Res<Packing> {
        let lens: Vec<usize> = match self.cfg.tokens.pool {
            Pool::MiniBatch => vec![mb.micros.iter().map(|m| m.rows.len()).sum()],
            Pool::Sequence => mb.micros.iter().flat_map(|m| m.rows.seq_lens.iter().copied()).collect(),
            Pool::MicroBatch => mb.micros.iter().map(|m| m.rows.len()).collect(),
        };
        Packing::from_lengths(&lens).map_err(err)
    }

    /// Strategy weights (host, one per row of the mini-batch).
    fn weights(&self, mb: &MiniBatch, step: u64, mb_index: usize) -> Res<Vec<f32>> {
        self.weights_for(&self.strategy, mb, step, mb_index, 0x5e1ec7)
    }

    /// Weights of `strategy` over `mb` (host, one per row), its random draws seeded by the run's seed,
    /// `step`, `mb_index` and `salt`.
    pub(crate) fn weights_for(
        &self,
        strategy: &Strategy,
        mb: &MiniBatch,
        step: u64,
        mb_index: usize,
        salt: u64,
    ) -> Res<Vec<f32>> {
        let dev = &self.device;
        let n = mb.micros.iter().map(|m| m.rows.len()).sum::<usize>();
        let up = |v: Vec<f32>| Tensor::from_vec(v, [n], dev).map_err(err);
        let valid = up(mb.cat(|m| &m.rows.mask))?;
        let attn = up(mb.cat(|m| &m.attn))?;
        let pred =
            if mb.micros.iter().all(|m| m.pred.len() == m.rows.len()) { Some(up(mb.cat(|m| &m.pred))?) } else { None };
        let (position, response_len) = (mb.cat(|m| &m.rows.position), mb.cat(|m| &m.rows.response_len));
        let scores = TokenScores {
            valid: &valid,
            attn_entropy: Some(&attn),
            pred_entropy: pred.as_ref(),
            position: &position,
            response_len: &response_len,
        };
        let pools = self.pools(mb)?;
        let seed = mix_seed(&[self.cfg.train.seed, step, mb_index as u64, salt]);
        strategy.weights(&scores, &pools, step, seed).map_err(err)?.to_vec_f32().map_err(err)
    }

    /// Forward + fused loss + backward over this rank's micro-batches of `mb` with the given weights (one
    /// per row of the whole mini-batch) and normaliser. Returns this rank's [`LossSums`]; with `trace`, also
    /// pushes each micro-batch's new log-probs and gradient-signal magnitudes there.
    pub(crate) fn backward_pass(
        &self,
        mb: &MiniBatch,
        weights: &[f32],
        z: f64,
        mut trace: Option<&mut Vec<LossTrace>>,
    ) -> Res<LossSums> {
        let dev = &self.device;
        let mut cfg = self.loss_config(LossNormalizer::Fixed(z), false);
        cfg.want_grad_norm = trace.is_some();
        let mut acc = LossSums::default();
        let mut off: usize = mb.micros[..mb.mine.start].iter().map(|m| m.rows.len()).sum();
        for m in &mb.micros[mb.mine.clone()] {
            let n = m.rows.len();
            let d = DeviceRows::upload(&m.rows, dev).map_err(err)?;
            let w = Tensor::from_vec(weights[off..off + n].to_vec(), [n], dev).map_err(err)?;
            let old = Tensor::from_vec(m.old_logp.clone(), [n], dev).map_err(err)?;
            off += n;
            let opts = self.forward_options(false, m.rows.seq_lens.iter().copied().max().unwrap_or(0));
            let fwd = profile::region("update: model forward", dev, || self.model.forward(&d.ids, &d.packing, &opts))
                .map_err(err)?;
            let b = DapoBatch {
                targets: &d.targets,
                old_logp: &old,
                advantages: &d.advantages,
                mask: &d.mask,
                weights: &w,
            };
            let out = profile::region("update: dapo_loss forward", dev, || {
                dapo_loss(&fwd.hidden, self.model.lm_head(), &b, &cfg)
            })
            .map_err(err)?;
            profile::region("update: backward", dev, || out.loss.backward()).map_err(err)?;
            if let Some(t) = trace.as_deref_mut() {
                let grad_norm = out
                    .grad_norm
                    .as_ref()
                    .ok_or_else(|| internal("dapo_loss: no grad_norm"))?
                    .to_vec_f32()
                    .map_err(err)?;
                t.push(LossTrace { new_logp: out.logp.to_vec_f32().map_err(err)?, grad_norm });
            }
            let met = out.metrics().map_err(err)?;
            acc.loss += out.loss.to_scalar().map_err(err)?;
            acc.clip_tokens += met.clip_frac * met.response_tokens;
            acc.clip_lower_tokens += met.clip_frac_lower * met.response_tokens;
            acc.kl_tokens += met.approx_kl * met.response_tokens;
            acc.tokens += met.response_tokens;
        }
        Ok(acc)
    }

    pub(crate) fn zero_grads(&self) {
        self.params.iter().for_each(Tensor::zero_grad);
    }

    /// Phase 4 for one mini-batch: weights, backward, clip, AdamW (or skip when non-finite). With `trace`,
    /// what the token trace needs of it goes to `sums.traced`.
    fn update(
        &mut self,
        mb: &MiniBatch,
        step: u64,
        mb_index: usize,
        lr: f64,
        sums: &mut UpdateSums,
        trace: bool,
    ) -> Res<()> {
        let weights = profile::region("update: token weights", &self.device, || self.weights(mb, step, mb_index))?;
        let valid = mb.cat(|m| &m.rows.mask);
        let n_valid: f64 = valid.iter().map(|&v| v as f64).sum();
        let kept: f64 = valid.iter().zip(&weights).map(|(&v, &w)| (v * w) as f64).sum();
        sums.kept += kept;
        sums.valid += n_valid;
        let z = if self.cfg.tokens.normalizer == Normalizer::Selected { kept } else { n_valid };
        let mut loss_trace = Vec::new();
        let diagnosed = self.diagnosed(step) && z > 0.0;
        let pending = if diagnosed {
            Some(profile::region("update: diagnose", &self.device, || self.diagnose_begin(mb, step, mb_index))?)
        } else {
            None
        };
        let acc = if z <= 0.0 {
            None
        } else {
            Some(self.backward_pass(mb, &weights, z, trace.then_some(&mut loss_trace))?)
        };
        if let Some(p) = pending {
            let dev = self.device.clone();
            let d = profile::region("update: diagnose", &dev, || self.diagnose_end(p))?;
            sums.diag.push(d);
        }
        if trace {
            sums.traced.push(TracedUpdate { weights, z, micros: loss_trace });
        }
        let Some(mut acc) = acc else {
            return Ok(()); // nothing selected in this mini-batch: no update
        };
        if mb_index == 0 && self.nan_hook(step)?.is_some_and(|h| h.grad) {
            self.poison_first_element(true)?;
        }
        if let Some(c) = &self.comm {
            acc = LossSums::from_array(&c.all_reduce_host_many(&acc.to_array()).map_err(err)?);
        }
        let clip = self.cfg.train.grad_clip;
        let (params, opt) = (&self.params, &mut self.opt);
        let (norm, applied) = profile::region("update: clip + optimizer", &self.device, || -> Res<(f64, bool)> {
            Ok(match opt {
                Optim::Plain(o) => {
                    let norm = clip_grad_norm(params, clip).map_err(err)?;
                    let ok = norm.is_finite() && acc.loss.is_finite();
                    if ok {
                        o.step(lr, None).map_err(err)?;
                    }
                    (norm, ok)
                }
                // The loss sum is global, so every rank takes the same decision.
                Optim::Sharded(_) if !acc.loss.is_finite() => (f64::NAN, false),
                Optim::Sharded(o) => {
                    let r = o.step(lr, clip).map_err(err)?;
                    (r.norm, r.applied)
                }
            })
        })?;
        self.zero_grads();
        if !applied {
            sums.skipped += 1;
            self.skipped_total += 1;
            self.consecutive_skips += 1;
            let max = self.cfg.train.max_consecutive_skips;
            if self.consecutive_skips >= max {
                let msg = format!(
                    "stopping at step {}: {} updates in a row had a non-finite loss or gradient norm and were skipped \
                     (train.max_consecutive_skips = {max}); the weights may be corrupt or the learning rate too high. \
                     Nothing of them was applied or saved: checkpoints/latest still names the last checkpoint",
                    step + 1,
                    self.consecutive_skips
                );
                return Err(Error::NonFinite { what: "loss or gradient norm", step: step + 1, msg });
            }
        } else {
            self.consecutive_skips = 0;
            sums.updates += 1;
            sums.loss += acc.loss;
            sums.grad_norm += norm;
            sums.clip += acc.clip_tokens;
            sums.clip_lower += acc.clip_lower_tokens;
            sums.kl += acc.kl_tokens;
            sums.tokens += acc.tokens;
        }
        Ok(())
    }

    /// Phases 1–3: rollouts, advantages, old log-probs and token scores, grouped into mini-batches.
    fn prepare(&mut self, step: u64, progress: &Progress) -> Res<Prepared> {
        let t0 = Instant::now();
        let Collected { mut batch, generated_tokens: gen_tokens, generated_correct: gen_correct, rounds, cache } =
            self.collect(step, progress)?;
        let rewards: Vec<f64> = batch.iter().map(|s| s.reward).collect();
        let groups: Vec<usize> = batch.iter().map(|s| s.group).collect();
        for (s, a) in batch.iter_mut().zip(group_advantages(&rewards, &groups, self.cfg.train.norm_adv_by_std)) {
            s.advantage = a;
        }
        let t_rollout = t0.elapsed().as_secs_f64();

        // Old log-probs and token scores, micro-batch by micro-batch, grouped into mini-batches.
        let t1 = Instant::now();
        let per_mini = self.cfg.train.mini_batch_size * self.cfg.rollout.n;
        let ranges: Vec<Range<usize>> =
            (0..batch.len()).step_by(per_mini.max(1)).map(|s| s..(s + per_mini).min(batch.len())).collect();
        // This rank's token-balanced share of each mini-batch, cut into micro-batches (sample ranges).
        let budget = self.cfg.train.micro_batch_tokens;
        let plan: Vec<Share> = ranges
            .iter()
            .map(|r| {
                let part = &batch[r.clone()];
                let lens: Vec<usize> = part.iter().map(Sample::len).collect();
                let share = token_split(&lens, self.world_size())[self.rank()].clone();
                let mine = &part[share.clone()];
                Share { first: r.start + share.start, samples: mine, micros: micro_batches(mine, budget) }
            })
            .collect();
        progress.phase("old-logprob", plan.iter().map(|p| p.micros.len() as u64).sum());
        let mut minis = Vec::with_capacity(ranges.len());
        for Share { first, samples, micros: cuts } in plan {
            let mut micros = Vec::new();
            for m in cuts {
                let first = first + m.start;
                micros.push(self.score(Rows::build(&samples[m]), first)?);
                progress.phase.inc(1);
            }
            minis.push(match &self.comm {
                None => MiniBatch { mine: 0..micros.len(), micros },
                Some(c) => {
                    let mut w = Writer::default();
                    w.u64(micros.len() as u64);
                    micros.iter().for_each(|m| m.encode(&mut w));
                    let all = c.all_gather_host(w.0).map_err(err)?;
                    let (mut every, mut mine) = (Vec::new(), 0..0);
                    for (rank, b) in all.iter().enumerate() {
                        let mut rd = Reader::new(b);
                        let n = rd.u64()? as usize;
                        if rank == self.rank() {
                            mine = every.len()..every.len() + n;
                        }
                        for _ in 0..n {
                            every.push(Scored::decode(&mut rd)?);
                        }
                    }
                    MiniBatch { micros: every, mine }
                }
            });
        }
        let t_old = t1.elapsed().as_secs_f64();
        Ok(Prepared { batch, minis, gen_tokens, gen_correct, rounds, cache, t_rollout, t_old })
    }

    /// The token scores and strategy weights of the next step's mini-batches, without updating the model
    /// (the prompt stream still advances). For tests and for inspecting what a strategy selects.
    pub fn preview(&mut self) -> Res<Vec<TokenView>> {
        let progress = Progress::new(0, 0, false, false);
        let p = self.prepare(self.step, &progress)?;
        let mut out = Vec::new();
        for (i, mb) in p.minis.iter().enumerate() {
            out.push(TokenView {
                valid: mb.cat(|m| &m.rows.mask),
                attn: mb.cat(|m| &m.attn),
                pred: mb.cat(|m| &m.pred),
                position: mb.cat(|m| &m.rows.position),
                response_len: mb.cat(|m| &m.rows.response_len),
                pools: self.pools(mb)?.spans().map(|(_, l)| l).collect(),
                weights: self.weights(mb, self.step, i)?,
            });
        }
        Ok(out)
    }

    /// Run rollout step `self.step` and advance it.
    pub fn step(&mut self, progress: &Progress) -> Res<StepMetrics> {
        let t0 = Instant::now();
        let step = self.step;
        let lr = self.lr_at(step);
        let Prepared { batch, minis, gen_tokens, gen_correct, rounds, cache, t_rollout, t_old } =
            self.prepare(step, progress)?;
        let rewards: Vec<f64> = batch.iter().map(|s| s.reward).collect();

        let t2 = Instant::now();
        if self.nan_hook(step)?.is_some_and(|h| !h.grad) {
            self.poison_first_element(false)?;
        }
        let mut sums = UpdateSums::default();
        let every = self.cfg.run.trace_every;
        let traced = every > 0 && (step + 1).is_multiple_of(every);
        progress.phase("update", (minis.len() * self.cfg.train.epochs) as u64);
        for epoch in 0..self.cfg.train.epochs {
            for (i, mb) in minis.iter().enumerate() {
                // Each epoch draws its own random selections; a traced step records its first epoch.
                self.update(mb, step, epoch * minis.len() + i, lr, &mut sums, traced && epoch == 0)?;
                progress.phase.inc(1);
            }
        }
        self.device.synchronize().map_err(err)?;
        let t_update = t2.elapsed().as_secs_f64();
        if let Some(report) = profile::take_report() {
            eprintln!("ENTRL_PROFILE step {}:\n{report}", step + 1);
        }
        self.step += 1;

        let nb = batch.len().max(1) as f64;
        let lens: Vec<usize> = batch.iter().map(|s| s.response.len()).collect();
        self.expected_response = (lens.iter().sum::<usize>() as f64 / nb).round() as usize;
        let upd = sums.updates.max(1) as f64;
        let tok = sums.tokens.max(1.0);
        let time_step = t0.elapsed().as_secs_f64();
        let diag = (!sums.diag.is_empty()).then(|| Diagnostics::mean(&sums.diag));
        let hnorm = entropy_dynamics(&minis, self.cfg.train.seed, step);
        if traced {
            let path = trace::trace_path(&self.run_dir(), step + 1, self.rank(), self.world_size());
            let t = token_trace(&minis, &sums.traced, &batch, step + 1);
            profile::region("trace: write", &self.device, || trace::write(&path, &t.table()))?;
        }
        Ok(StepMetrics {
            step: self.step,
            reward_mean: rewards.iter().sum::<f64>() / nb,
            acc_mean: batch.iter().filter(|s| s.correct).count() as f64 / nb,
            acc_generated: gen_correct.iter().filter(|&&c| c).count() as f64 / gen_correct.len().max(1) as f64,
            response_len_mean: lens.iter().sum::<usize>() as f64 / nb,
            response_len_max: lens.iter().copied().max().unwrap_or(0),
            overlong_frac: batch.iter().filter(|s| s.finish == FinishReason::Length).count() as f64 / nb,
            kept_frac: sums.kept / sums.valid.max(1.0),
            loss: sums.loss / upd,
            grad_norm: sums.grad_norm / upd,
            clip_frac: sums.clip / tok,
            clip_frac_lower: sums.clip_lower / tok,
            approx_kl: sums.kl / tok,
            lr,
            prompts: batch.len() / self.cfg.rollout.n.max(1),
            responses: batch.len(),
            response_tokens: lens.iter().sum(),
            gen_rounds: rounds,
            updates: sums.updates,
            skipped_updates: sums.skipped,
            skipped_total: self.skipped_total,
            time_rollout_s: t_rollout,
            time_old_logprob_s: t_old,
            time_update_s: t_update,
            time_step_s: time_step,
            tokens_per_s: gen_tokens as f64 / time_step.max(1e-9),
            rollout_preemptions: cache.preemptions,
            rollout_peak_running: cache.peak_running,
            rollout_decode_steps: cache.decode_steps,
            eval_acc: None,
            diag,
            hnorm,
        })
    }
}

impl Session {
    /// `run.debug_nan_at`, when it names rollout step `step` (0-based here, 1-based in the key).
    fn nan_hook(&self, step: u64) -> Res<Option<crate::config::NanAt>> {
        Ok(crate::config::parse_nan_at(&self.cfg.run.debug_nan_at)?.filter(|h| h.step == step + 1))
    }

    /// Test hook (`run.debug_nan_at`): a NaN in the first element of the final norm's weight (every
    /// token's logits then become NaN), or of the first parameter's gradient.
    fn poison_first_element(&self, grad: bool) -> Res<()> {
        let target = if grad {
            self.params
                .iter()
                .find_map(Tensor::grad)
                .ok_or_else(|| internal("run.debug_nan_at: no gradient to poison"))?
        } else {
            let i = self
                .names
                .iter()
                .position(|n| n == "model.norm.weight")
                .ok_or_else(|| internal("run.debug_nan_at: no model.norm.weight"))?;
            self.params[i].clone()
        };
        let mut v = target.to_vec_f32().map_err(err)?;
        v[0] = f32::NAN;
        let poisoned = Tensor::from_vec(v, target.dims().to_vec(), target.device())
            .and_then(|t| t.to_dtype(target.dtype()))
            .map_err(err)?;
        target.copy_from(&poisoned).map_err(err)
    }
}

/// Per token: a row statistic as `tokens.score` ranks it (its table's normalisation, then the mean over
/// heads for a per-head statistic).
fn token_score(stats: &AttnStats, stat: RowStat, packing: &Packing) -> Res<Vec<f32>> {
    let x = stats.require(stat).map_err(err)?;
    let x = match stat.spec().over {
        Over::Head => x.clone(),
        Over::HeadMixture => x.reshape([packing.total(), 1]).map_err(err)?,
    };
    match stat.spec().score_norm {
        ScoreNorm::LnKeys => normalized_entropy(&x, packing).and_then(|(_, mean)| mean.to_vec_f32()).map_err(err),
        ScoreNorm::Raw => {
            let hq = x.dims()[1].max(1);
            let v = x.to_vec_f32().map_err(err)?;
            Ok(v.chunks(hq).map(|c| c.iter().sum::<f32>() / hq as f32).collect())
        }
    }
}

/// The step's entropy dynamics (issue 17) from the scores the old-log-prob pass left on the host, no extra
/// pass: every mini-batch's micro-batches (every rank's, after the gather, so each rank logs the same
/// numbers), response tokens only (mask ≠ 0), at most [`SUBSAMPLE_CAP`] of them (a sample seeded by the run's
/// seed and `step`). Relative position = position / response length, as the diagnostics have it.
fn entropy_dynamics(minis: &[MiniBatch], seed: u64, step: u64) -> Vec<LayerStats> {
    let micros = || minis.iter().flat_map(|mb| &mb.micros);
    let Some(first) = micros().next() else { return Vec::new() };
    let ids: Vec<usize> = first.layers.iter().map(|(l, _)| *l).collect();
    let n_valid: usize = micros().map(|m| m.rows.mask.iter().filter(|&&v| v != 0.0).count()).sum();
    let pick = subsample(n_valid, SUBSAMPLE_CAP, mix_seed(&[seed, step, 0xd1a7]));
    let mut h: Vec<Vec<f64>> = vec![Vec::with_capacity(pick.len()); ids.len()];
    let (mut pred, mut relpos) = (Vec::with_capacity(pick.len()), Vec::with_capacity(pick.len()));
    let (mut has_pred, mut t, mut next) = (true, 0usize, pick.iter().copied().peekable());
    for m in micros() {
        let r = &m.rows;
        has_pred &= m.pred.len() == r.len();
        for i in (0..r.len()).filter(|&i| r.mask[i] != 0.0) {
            if next.peek() == Some(&t) {
                next.next();
                for (hl, (_, v)) in h.iter_mut().zip(&m.layers) {
                    hl.push(v[i] as f64);
                }
                pred.push(m.pred.get(i).copied().unwrap_or(0.0) as f64);
                relpos.push(r.position[i] as f64 / r.response_len[i].max(1) as f64);
            }
            t += 1;
        }
    }
    let pred = has_pred.then_some(&pred[..]);
    ids.iter().zip(&h).map(|(&l, hl)| layer_stats(l, hl, pred, &relpos)).collect()
}

/// The token trace of step `step` (1-based) from this rank's micro-batches: their scores (old-log-prob
/// pass) and the first epoch's update of each mini-batch (`traced`, in mini-batch order), response rows
/// only. A mini-batch whose update ran no backward (nothing selected) has NaN new log-prob, ratio and
/// gradient magnitudes.
fn token_trace(minis: &[MiniBatch], traced: &[TracedUpdate], batch: &[Sample], step: u64) -> trace::TokenTrace {
    let layers: Vec<usize> =
        minis.first().and_then(|mb| mb.micros.first()).map_or(Vec::new(), |m| m.layers.iter().map(|l| l.0).collect());
    let mut t = trace::TokenTrace::new(&layers);
    for (mb, up) in minis.iter().zip(traced) {
        let mut off: usize = mb.micros[..mb.mine.start].iter().map(|m| m.rows.len()).sum();
        for (k, m) in mb.micros[mb.mine.clone()].iter().enumerate() {
            let r = &m.rows;
            let lt = up.micros.get(k);
            let seq_of: Vec<usize> =
                r.seq_lens.iter().enumerate().flat_map(|(s, &n)| std::iter::repeat_n(s, n)).collect();
            for i in (0..r.len()).filter(|&i| r.mask[i] != 0.0) {
                let idx = m.first_sample + seq_of[i];
                let s = &batch[idx];
                let w = up.weights[off + i];
                let (new, g) = lt.map_or((f32::NAN, f32::NAN), |l| (l.new_logp[i], l.grad_norm[i]));
                t.step.push(step as i64);
                t.sample.push(idx as i32);
                t.prompt.push(s.group as i64);
                t.data_source.push(s.data_source.clone());
                t.position.push(r.position[i] as i32);
                t.rel_position.push(r.position[i] as f32 / r.response_len[i].max(1) as f32);
                t.response_len.push(r.response_len[i] as i32);
                for ((_, col), (_, h)) in t.hnorm.iter_mut().zip(&m.layers) {
                    col.push(h[i]);
                }
                t.pred_entropy.push(m.pred.get(i).copied().unwrap_or(f32::NAN));
                t.old_logp.push(m.old_logp[i]);
                t.new_logp.push(new);
                t.ratio.push(((new as f64) - (m.old_logp[i] as f64)).exp() as f32);
                t.advantage.push(r.advantages[i]);
                t.reward.push(s.reward);
                t.selected.push(w != 0.0);
                t.token_weight.push(w);
                t.grad_norm.push(g);
                let c = if up.z > 0.0 { (r.mask[i] * w) as f64 / up.z } else { 0.0 };
                t.grad_norm_applied.push((c * g as f64) as f32);
            }
            off += r.len();
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::token_split;

    #[test]
    fn token_split_balances_contiguous_parts() {
        assert_eq!(token_split(&[5, 5, 5, 5], 2), vec![0..2, 2..4]);
        assert_eq!(token_split(&[100, 1], 2), vec![0..1, 1..2]);
        assert_eq!(token_split(&[1, 1, 1], 4), vec![0..0, 0..1, 1..2, 2..3]);
        assert_eq!(token_split(&[], 2), vec![0..0, 0..0]);
        let parts = token_split(&[3, 9, 2, 7, 4, 4, 8, 1], 3);
        assert_eq!(parts.iter().map(|r| r.len()).sum::<usize>(), 8);
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
    }
}
