//! Rollouts: n responses per prompt from the policy's KV-cache generator, decoded and scored by the
//! prompt's verifier (plus DAPO's soft overlong penalty), and the seeded prompt stream that feeds them.
use crate::codec::{Reader, Writer};
use crate::config::MAX_ROUND_RESPONSES;
use crate::data::PromptRow;
use crate::reward::overlong_penalty;
use entrl_engine::memory::bytes_of;
use entrl_qwen3::{generate_batched, FinishReason, Qwen3, Request, SamplingParams, Tokenizer};
use std::sync::Arc;

/// A prompt ready for generation.
#[derive(Clone, Debug)]
pub struct EncodedPrompt {
    /// Index in the dataset.
    pub index: usize,
    pub ids: Arc<Vec<u32>>,
    pub ground_truth: String,
    pub data_source: String,
}

/// Render every row with the chat template (generation prompt open) and tokenize it. Rows longer than
/// `max_prompt_len` are dropped, as verl's `filter_overlong_prompts`; returns (kept, dropped count).
pub fn encode_prompts(
    rows: &[PromptRow],
    tok: &Tokenizer,
    max_prompt_len: usize,
) -> Result<(Vec<EncodedPrompt>, usize), String> {
    let mut out = Vec::with_capacity(rows.len());
    let mut dropped = 0;
    for (i, r) in rows.iter().enumerate() {
        let text = tok.apply_chat_template(&r.messages, true).map_err(|e| format!("prompt {}: {e}", i + 1))?;
        let ids = tok.encode(&text).map_err(|e| format!("prompt {}: {e}", i + 1))?;
        if ids.is_empty() || ids.len() > max_prompt_len {
            dropped += 1;
            continue;
        }
        out.push(EncodedPrompt {
            index: i,
            ids: Arc::new(ids),
            ground_truth: r.ground_truth.clone(),
            data_source: r.data_source.clone(),
        });
    }
    if out.is_empty() {
        return Err(format!("no prompt fits rollout.max_prompt_len = {max_prompt_len} tokens"));
    }
    Ok((out, dropped))
}

/// One sampled response and its judgement.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Unique id of the prompt group (all n responses of one prompt draw).
    pub group: usize,
    pub prompt: Arc<Vec<u32>>,
    pub data_source: String,
    /// Generated tokens, including the stop token when there is one.
    pub response: Vec<u32>,
    pub finish: FinishReason,
    /// Verifier score plus the overlong penalty.
    pub reward: f64,
    pub correct: bool,
    /// Group-relative advantage (set once the batch is final).
    pub advantage: f64,
}

impl Sample {
    pub fn len(&self) -> usize {
        self.prompt.len() + self.response.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Serialize samples for the host exchange between data-parallel ranks.
pub fn encode_samples(samples: &[Sample]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(samples.len() as u64);
    for s in samples {
        w.u64(s.group as u64);
        w.bytes(s.data_source.as_bytes());
        w.u32s(&s.prompt);
        w.u32s(&s.response);
        w.u64((s.finish == FinishReason::Stop) as u64);
        w.f64(s.reward);
        w.u64(s.correct as u64);
        w.f64(s.advantage);
    }
    w.0
}

/// Inverse of [`encode_samples`].
pub fn decode_samples(buf: &[u8]) -> Result<Vec<Sample>, String> {
    let mut r = Reader::new(buf);
    let n = r.u64()? as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Sample {
            group: r.u64()? as usize,
            data_source: String::from_utf8_lossy(r.bytes()?).into_owned(),
            prompt: Arc::new(r.u32s()?),
            response: r.u32s()?,
            finish: if r.u64()? == 1 { FinishReason::Stop } else { FinishReason::Length },
            reward: r.f64()?,
            correct: r.u64()? == 1,
            advantage: r.f64()?,
        });
    }
    Ok(out)
}

/// How rollouts are sampled and judged.
pub struct RolloutSpec<'a> {
    pub n: usize,
    pub params: SamplingParams,
    pub max_response_len: usize,
    /// Sequences decoding at once (KV-cache slots; continuous batching refills a slot when one finishes).
    pub max_concurrent: usize,
    /// (buffer, factor) of DAPO's soft overlong penalty, when on.
    pub overlong: Option<(usize, f64)>,
    pub verifier: &'a crate::reward::VerifierFor,
}

/// splitmix64 of a few words: independent, reproducible seeds for every request and selection.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &p in parts {
        h ^= p.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(h << 6).wrapping_add(h >> 2);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

/// Generate `spec.n` responses for each prompt (groups numbered from `first_group`) and score them.
/// `seed` makes every request's sampling reproducible; `on_token` counts generated tokens.
pub fn rollout(
    model: &Qwen3,
    tok: &Tokenizer,
    prompts: &[&EncodedPrompt],
    first_group: usize,
    spec: &RolloutSpec,
    seed: u64,
    mut on_token: impl FnMut(),
) -> Result<Vec<Sample>, String> {
    if prompts.is_empty() {
        return Ok(Vec::new()); // a data-parallel rank whose share of the round is empty
    }
    check_request_count(prompts, spec.n)?;
    let mut reqs = Vec::with_capacity(prompts.len() * spec.n);
    for (g, p) in prompts.iter().enumerate() {
        for j in 0..spec.n {
            // Seeded by the group id, so a response does not depend on which rank generates it.
            reqs.push(Request {
                prompt: p.ids.to_vec(),
                max_new_tokens: spec.max_response_len,
                seed: mix_seed(&[seed, (first_group + g) as u64, j as u64]),
            });
        }
    }
    // Continuous batching: at most max_concurrent sequences hold a KV-cache slot; a finished one hands its
    // slot to the next waiting request.
    let gens = generate_batched(model, &reqs, &spec.params, tok.stop_ids(), spec.max_concurrent, |_, _| on_token())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(gens.len());
    for (i, g) in gens.into_iter().enumerate() {
        let p = prompts[i / spec.n];
        let text = tok.decode(&g.tokens, true).map_err(|e| e.to_string())?;
        let score = (spec.verifier)(&p.data_source).score(&text, &p.ground_truth);
        let penalty = spec
            .overlong
            .map_or(0.0, |(buffer, factor)| overlong_penalty(g.tokens.len(), spec.max_response_len, buffer, factor));
        out.push(Sample {
            group: first_group + i / spec.n,
            prompt: p.ids.clone(),
            data_source: p.data_source.clone(),
            response: g.tokens,
            finish: g.finish,
            reward: score.score + penalty,
            correct: score.acc,
            advantage: 0.0,
        });
    }
    Ok(out)
}

/// Refuse a rollout of more than [`MAX_ROUND_RESPONSES`] requests, or whose requests (each with its copy of
/// the prompt, its generation and its sample) do not fit the host's available memory, before any is built.
fn check_request_count(prompts: &[&EncodedPrompt], n: usize) -> Result<(), String> {
    let count = prompts.len().checked_mul(n).filter(|&c| c <= MAX_ROUND_RESPONSES).ok_or_else(|| {
        format!(
            "{} prompts × {n} responses each are more than {MAX_ROUND_RESPONSES} requests in one rollout",
            prompts.len()
        )
    })?;
    let prompt_tokens: u64 = prompts.iter().map(|p| p.ids.len() as u64).sum();
    let per_request = (std::mem::size_of::<Request>()
        + std::mem::size_of::<entrl_qwen3::Generation>()
        + std::mem::size_of::<Sample>()) as u64;
    let bytes = bytes_of(&[prompt_tokens, n as u64, 4]).saturating_add(bytes_of(&[count as u64, per_request]));
    entrl_engine::Device::Cpu
        .ensure_fits(&format!("the rollout's {count} requests ({} prompts × {n})", prompts.len()), bytes)
        .map_err(|e| e.to_string())
}

/// Prompts in a seeded order, reshuffled every epoch; its position is part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromptStream {
    pub len: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub epoch: u64,
    pub cursor: usize,
}

impl PromptStream {
    pub fn new(len: usize, seed: u64, shuffle: bool) -> Self {
        Self { len, seed, shuffle, epoch: 0, cursor: 0 }
    }

    fn order(&self) -> Vec<usize> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut v: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix_seed(&[self.seed, self.epoch])));
        }
        v
    }

    /// The next `k` prompt indices (crossing epochs as needed).
    pub fn take(&mut self, k: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        let mut order = self.order();
        while out.len() < k {
            if self.cursor == self.len {
                self.epoch += 1;
                self.cursor = 0;
                order = self.order();
            }
            out.push(order[self.cursor]);
            self.cursor += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_covers_each_epoch_once_and_resumes() {
        let mut s = PromptStream::new(7, 3, true);
        let a = s.take(7);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..7).collect::<Vec<_>>());
        let mut copy = s.clone();
        assert_eq!(s.take(10), copy.take(10));
        assert_eq!(s.epoch, 2);
        assert_ne!(mix_seed(&[1, 2]), mix_seed(&[2, 1]));
    }
}
