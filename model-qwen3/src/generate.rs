//! Generation with a KV cache: prefill the packed prompts with the fused attention (writing K/V into
//! each request's cache slot), then decode one token per active request per step with decode attention.
//! Sampling (temperature, top-k, top-p; one uniform keyed by request seed and response position) is
//! `crate::sampling`: on the device on a GPU, on the host on the CPU.
use crate::error::{ModelError, Result};
use crate::model::{attention_inputs_fused, layer_output_normed, Qwen3};
pub use crate::sampling::{sample, SamplingParams};
use crate::sampling::{sample_active, SampleKey};
use entrl_engine::ops::{attention, CacheIndex, CacheRows, KvCache, PoolShape};
use entrl_engine::{no_grad, profile, Packing, Tensor};

#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced (it is included in `tokens`).
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// log π(token) under the temperature-scaled full distribution (before top-k/top-p truncation).
    pub logprobs: Vec<f64>,
    pub finish: FinishReason,
}

/// Generate for every request (all decoding together); `on_token(request, token)` is called as tokens are
/// produced.
pub fn generate(
    model: &Qwen3,
    reqs: &[Request],
    params: &SamplingParams,
    stop_ids: &[u32],
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generation>> {
    generate_batched(model, reqs, params, stop_ids, reqs.len(), on_token)
}

/// Generate with at most `slots` requests decoding at once (continuous batching): a request that stops
/// frees its KV-cache slot and waiting requests are prefilled into freed slots (in batches of
/// [`refill_batch`] slots, each prefill being a pass over the weights), so a long response does not hold a
/// whole wave of finished ones. Each response token is sampled with the uniform keyed by its request's
/// seed and its position, from logits that depend on its own tokens only, so the outputs equal those of
/// [`generate`] for any `slots` (up to GPU rounding).
pub fn generate_batched(
    model: &Qwen3,
    reqs: &[Request],
    params: &SamplingParams,
    stop_ids: &[u32],
    slots: usize,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generation>> {
    let _ng = no_grad();
    let c = &model.config;
    if !(params.temperature >= 0.0 && params.temperature.is_finite() && params.top_p > 0.0 && params.top_p <= 1.0) {
        return Err(ModelError::Invalid(format!(
            "sampling needs a finite temperature >= 0 and 0 < top_p <= 1, got {params:?}"
        )));
    }
    if let Some(r) = reqs.iter().find(|r| r.prompt.is_empty()) {
        return Err(ModelError::Invalid(format!("empty prompt (seed {})", r.seed)));
    }
    if let Some(&bad) = reqs.iter().flat_map(|r| r.prompt.iter()).find(|&&t| t as usize >= c.vocab_size) {
        return Err(ModelError::Invalid(format!("prompt token {bad} outside the vocabulary of {}", c.vocab_size)));
    }
    let dev = &model.device;
    let n = reqs.len();
    let slots = slots.clamp(1, n.max(1));
    let max_len = reqs.iter().map(|r| r.prompt.len().saturating_add(r.max_new_tokens)).max().unwrap_or(1).max(1);
    check_kv_cache(model, slots, max_len)?;
    let pool = PoolShape::contiguous(slots, max_len)?;
    let layers: Vec<KvCache> = (0..c.num_hidden_layers)
        .map(|_| KvCache::new(pool, c.num_key_value_heads, c.head_dim, c.num_attention_heads, model.dtype, dev))
        .collect::<std::result::Result<_, _>>()?;
    let mut cache = SlotCache { layers, pool, slot_of: vec![usize::MAX; n] };
    let mut out: Vec<Generation> = reqs
        .iter()
        .map(|_| Generation { tokens: Vec::new(), logprobs: Vec::new(), finish: FinishReason::Length })
        .collect();
    let mut waiting = (0..n).filter(|&i| reqs[i].max_new_tokens > 0).collect::<std::collections::VecDeque<_>>();
    let mut free: Vec<usize> = (0..slots).rev().collect();
    let mut decoding: Vec<usize> = Vec::new(); // requests whose next token comes from a decode step

    // Each admission is a prefill pass (one more read of every weight), so freed slots are refilled in
    // batches of at least `refill` (or whenever nothing is decoding): at most refill − 1 slots idle.
    let refill = refill_batch(slots);
    loop {
        // 1. admit waiting requests into free slots: packed prefill, then their first token
        let ready = decoding.is_empty() || free.len() >= refill;
        let take = if ready { free.len().min(waiting.len()) } else { 0 };
        let admit: Vec<usize> = (0..take).filter_map(|_| waiting.pop_front()).collect();
        if !admit.is_empty() {
            for &r in &admit {
                cache.slot_of[r] = free.pop().expect("a free slot per admitted request");
            }
            let dev = &model.device;
            let logits = profile::region("generate: prefill", dev, || prefill(model, reqs, &admit, &cache))?;
            let keys = sample_keys(&admit, reqs, &out);
            let picks =
                profile::region("generate: sample", dev, || sample_active(&logits, &keys, params, c.vocab_size))?;
            check_finite_picks(&admit, &picks, reqs, &out)?;
            record(&admit, picks, reqs, stop_ids, &mut out, &mut on_token, &mut decoding, &mut free, &cache.slot_of);
        }
        if decoding.is_empty() {
            if waiting.is_empty() {
                break;
            }
            continue;
        }
        // 2. one decode step for every request past its prefill
        let step = std::mem::take(&mut decoding);
        let dev = &model.device;
        let logits = profile::region("generate: decode step", dev, || decode_step(model, reqs, &step, &out, &cache))?;
        let keys = sample_keys(&step, reqs, &out);
        let picks = profile::region("generate: sample", dev, || sample_active(&logits, &keys, params, c.vocab_size))?;
        check_finite_picks(&step, &picks, reqs, &out)?;
        record(&step, picks, reqs, stop_ids, &mut out, &mut on_token, &mut decoding, &mut free, &cache.slot_of);
    }
    Ok(out)
}

/// Refuse a KV cache of `slots` × `max_len` positions that cannot be indexed (positions are i32) or does
/// not fit the model's device: slots × max_len × layers × (K and V) × KV heads × head_dim × dtype bytes,
/// in saturating arithmetic, against the available memory, before anything is allocated.
fn check_kv_cache(model: &Qwen3, slots: usize, max_len: usize) -> Result<()> {
    let c = &model.config;
    if max_len > i32::MAX as usize {
        return Err(ModelError::Invalid(format!(
            "prompt + max_new_tokens = {max_len} positions; positions are i32 (at most {})",
            i32::MAX
        )));
    }
    let u = |x: usize| x as u64;
    let bytes = entrl_engine::memory::bytes_of(&[
        u(slots),
        u(max_len),
        u(c.num_hidden_layers),
        2,
        u(c.num_key_value_heads),
        u(c.head_dim),
        u(model.dtype.size_in_bytes()),
    ]);
    let what = format!(
        "the KV cache ({slots} slots × {max_len} positions × {} layers × K and V × {} KV heads × {} × {})",
        c.num_hidden_layers, c.num_key_value_heads, c.head_dim, model.dtype
    );
    Ok(model.device.ensure_fits(&what, bytes)?)
}

/// A sampled token whose log-prob is not finite came from a logits row holding NaN or ±Inf (non-finite
/// weights or activations): an error naming the request and the response position, never a garbage token.
fn check_finite_picks(active: &[usize], picks: &[(u32, f64)], reqs: &[Request], out: &[Generation]) -> Result<()> {
    match active.iter().zip(picks).find(|(_, (_, lp))| !lp.is_finite()) {
        None => Ok(()),
        Some((&r, (_, lp))) => Err(ModelError::Invalid(format!(
            "generation: request {r} (seed {}): the logits of response token {} are not finite (log-prob {lp}); \
             the model's weights or activations hold NaN or Inf",
            reqs[r].seed,
            out[r].tokens.len()
        ))),
    }
}

/// Freed slots refilled per prefill pass in continuous batching: an eighth of the slots (at least one).
pub fn refill_batch(slots: usize) -> usize {
    (slots / 8).max(1)
}

/// The per-layer KV caches of a generation and which slot each request holds.
struct SlotCache {
    layers: Vec<KvCache>,
    pool: PoolShape,
    /// Slot of each request while it is being generated.
    slot_of: Vec<usize>,
}

impl SlotCache {
    /// Cache rows of (request, position) pairs.
    fn rows(&self, at: impl Iterator<Item = (usize, i32)>, dev: &entrl_engine::Device) -> Result<CacheRows> {
        let rows = at
            .map(|(r, p)| self.pool.row(&[self.slot_of[r] as i32], p as usize))
            .collect::<std::result::Result<_, _>>()?;
        Ok(CacheRows::new(rows, self.pool, dev)?)
    }
    /// The decode index of requests `step` at positions `pos`.
    fn index(&self, step: &[usize], pos: &[i32], dev: &entrl_engine::Device) -> Result<CacheIndex> {
        let slot: Vec<i32> = step.iter().map(|&r| self.slot_of[r] as i32).collect();
        Ok(CacheIndex::slots(&slot, pos, self.pool, dev)?)
    }
}

/// Prefill the prompts of `admit` (packed) into their cache slots; logits [admit.len(), vocab] of each
/// prompt's last position.
fn prefill(model: &Qwen3, reqs: &[Request], admit: &[usize], cache: &SlotCache) -> Result<Tensor> {
    let (c, dev) = (&model.config, &model.device);
    let lens: Vec<usize> = admit.iter().map(|&r| reqs[r].prompt.len()).collect();
    let packing = Packing::from_lengths(&lens)?;
    let ids: Vec<i32> = admit.iter().flat_map(|&r| reqs[r].prompt.iter().map(|&t| t as i32)).collect();
    let pos = packing.positions();
    let owners = admit.iter().zip(&lens).flat_map(|(&r, &l)| std::iter::repeat_n(r, l));
    let idx = cache.rows(owners.zip(pos.iter().copied()), dev)?;
    let pos_t = Tensor::from_vec(pos, [packing.total()], dev)?;
    let (mut x, mut h) = embed_normed(model, &Tensor::from_vec(ids, [packing.total()], dev)?)?;
    for (i, (layer, cache)) in model.layers.iter().zip(&cache.layers).enumerate() {
        let (q, k, v) = attention_inputs_fused(layer, c, &h, &pos_t)?;
        cache.write(&k, &v, &idx)?;
        let a = attention(&q, &k, &v, &packing, false)?;
        (x, h) = layer_output_normed(layer, c, &x, &a.out, next_norm(model, i))?;
    }
    let last: Vec<i32> = packing.spans().map(|(s, l)| (s + l - 1) as i32).collect();
    let last_t = Tensor::from_vec(last, [admit.len()], dev)?;
    Ok(h.embedding(&last_t)?.linear(model.lm_head())?)
}

/// The embedded tokens and their first normed copy (the first layer's input norm; the final norm for a
/// model without layers). Generation carries both: each layer's residual add is fused with the norm after it.
fn embed_normed(model: &Qwen3, ids: &Tensor) -> Result<(Tensor, Tensor)> {
    let x = model.embed.embedding(ids)?;
    let first = model.layers.first().map_or(&model.norm, |l| &l.input_norm);
    let h = x.rms_norm(first, model.config.rms_norm_eps)?;
    Ok((x, h))
}

/// The norm after layer `i`: the next layer's input norm, or the final norm.
fn next_norm(model: &Qwen3, i: usize) -> &Tensor {
    model.layers.get(i + 1).map_or(&model.norm, |l| &l.input_norm)
}

/// Feed each request of `step` its last sampled token; logits [step.len(), vocab].
fn decode_step(
    model: &Qwen3,
    reqs: &[Request],
    step: &[usize],
    out: &[Generation],
    cache: &SlotCache,
) -> Result<Tensor> {
    let (c, dev) = (&model.config, &model.device);
    let ids: Vec<i32> = step.iter().map(|&r| *out[r].tokens.last().expect("sampled") as i32).collect();
    let pos: Vec<i32> = step.iter().map(|&r| (reqs[r].prompt.len() + out[r].tokens.len() - 1) as i32).collect();
    let rows = cache.rows(step.iter().copied().zip(pos.iter().copied()), dev)?;
    let idx = cache.index(step, &pos, dev)?;
    let pos_t = Tensor::from_vec(pos, [step.len()], dev)?;
    let (mut x, mut h) = embed_normed(model, &Tensor::from_vec(ids, [step.len()], dev)?)?;
    for (i, (layer, cache)) in model.layers.iter().zip(&cache.layers).enumerate() {
        let (q, k, v) =
            profile::region("decode: q/k/v, q/k norm + rope", dev, || attention_inputs_fused(layer, c, &h, &pos_t))?;
        profile::region("decode: kv-cache write", dev, || cache.write(&k, &v, &rows))?;
        let o = profile::region("decode: attention (split-K)", dev, || cache.attend(&q, &idx))?;
        (x, h) = profile::region("decode: o_proj, residual + norm, MLP, residual + norm", dev, || {
            layer_output_normed(layer, c, &x, &o, next_norm(model, i))
        })?;
    }
    profile::region("decode: LM head", dev, || Ok(h.linear(model.lm_head())?))
}

/// Append each request's pick; a request that stops or reaches its length frees its slot, the others
/// go back to `decoding`.
#[allow(clippy::too_many_arguments)]
fn record(
    reqs_now: &[usize],
    picks: Vec<(u32, f64)>,
    reqs: &[Request],
    stop_ids: &[u32],
    out: &mut [Generation],
    on_token: &mut impl FnMut(usize, u32),
    decoding: &mut Vec<usize>,
    free: &mut Vec<usize>,
    slot_of: &[usize],
) {
    for (&r, (tok, lp)) in reqs_now.iter().zip(picks) {
        out[r].tokens.push(tok);
        out[r].logprobs.push(lp);
        on_token(r, tok);
        if stop_ids.contains(&tok) {
            out[r].finish = FinishReason::Stop;
            free.push(slot_of[r]);
        } else if out[r].tokens.len() < reqs[r].max_new_tokens {
            decoding.push(r);
        } else {
            free.push(slot_of[r]);
        }
    }
}

/// The sampling key of each request of `active` (row i of its logits): its seed and the index of the
/// response token being sampled.
fn sample_keys(active: &[usize], reqs: &[Request], out: &[Generation]) -> Vec<SampleKey> {
    active.iter().map(|&r| SampleKey { seed: reqs[r].seed, position: out[r].tokens.len() as u64 }).collect()
}
