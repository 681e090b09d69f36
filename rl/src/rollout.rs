//! Rollouts: n responses per prompt from the policy's KV-cache generator, decoded and scored by the
//! prompt's verifier (plus DAPO's soft overlong penalty), and the seeded prompt stream that feeds them.
use crate::codec::{Reader, Writer};
use crate::config::{LongPrompts, MAX_ROUND_RESPONSES};
use crate::data::PromptRow;
use crate::error::{Error, Result};
use crate::reward::overlong_penalty;
use entrl_engine::memory::bytes_of;
use entrl_qwen3::{
    generate_run, FinishReason, GenerateOptions, GenerateStats, Qwen3, Request, SamplingParams, Tokenizer,
};
use std::cell::OnceCell;
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

/// What happened to the prompts of a dataset that did not fit as they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromptCounts {
    /// Longer than the limit and skipped (`drop`).
    pub dropped: usize,
    /// Longer than the limit and cut to their last `max_prompt_len` tokens (`truncate-left`).
    pub truncated: usize,
    /// No tokens at all after the chat template (always skipped).
    pub empty: usize,
}

impl std::fmt::Display for PromptCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} truncated on the left, {} dropped as too long", self.truncated, self.dropped)?;
        if self.empty > 0 {
            write!(f, ", {} empty", self.empty)?;
        }
        Ok(())
    }
}

/// The prompts of a dataset ready for generation, and what the length limit did to the others.
#[derive(Clone, Debug)]
pub struct EncodedPrompts {
    pub prompts: Vec<EncodedPrompt>,
    pub counts: PromptCounts,
}

/// Render every row with the chat template (generation prompt open) and tokenize it, applying `policy` to
/// prompts longer than `max_prompt_len` tokens ([`PromptEncoder`]).
pub fn encode_prompts(
    rows: &[PromptRow],
    tok: &Tokenizer,
    max_prompt_len: usize,
    policy: LongPrompts,
) -> Result<EncodedPrompts> {
    PromptEncoder::new(tok, max_prompt_len, policy).encode(rows)
}

/// Encodes datasets for one tokenizer and length limit; the tokenizer's byte bound (below) is worked out
/// once, on the first prompt long enough to need it, and reused for every dataset encoded with it.
///
/// A prompt is rendered with the chat template and tokenized; one longer than `max_prompt_len` tokens is
/// skipped (`drop`, verl's `filter_overlong_prompts`), cut to its last `max_prompt_len` ids (`truncate-left`,
/// verl's `input_ids[:, -max_length:]`), or refused naming its row (`error`).
///
/// **Byte bound.** Tokenizing a multi-megabyte prompt whole costs seconds and gigabytes (with Qwen3's
/// tokenizer an 8 MiB prompt takes 18 s and 2 GB; a 50 MB line peaked at 8.7 GB), so a rendered prompt of more than `max_prompt_len × L × 4` bytes, L the longest
/// token of the vocabulary in bytes (each id decoded on its own), is known to be too long without
/// tokenizing it. That holds for a tokenizer whose tokens spell out every byte of the (normalised) text,
/// as byte-level BPE does: n tokens span at most n·L bytes of normalised text, and Qwen3's NFC shrinks
/// UTF-8 text at most 3× (a Hangul syllable from three jamo), so more than 3·N·L bytes are more than N
/// tokens.
/// A tokenizer that fails the check of [`ByteBound::of`] (the built-in word-level tokenizer drops
/// whitespace and maps an unknown word of any length to one `<unk>`) gets no bound: its prompts are
/// always tokenized whole. `drop` and `error` decide such a prompt without tokenizing it; `truncate-left`
/// tokenizes only a suffix of it ([`PromptEncoder::tail_ids`]).
pub struct PromptEncoder<'a> {
    tok: &'a Tokenizer,
    max_prompt_len: usize,
    policy: LongPrompts,
    bound: OnceCell<Option<ByteBound>>,
}

/// A tokenizer's longest token in bytes, known to bound its token counts (see [`PromptEncoder`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteBound {
    pub longest_token_bytes: usize,
}

/// Text whose exact round trip through a tokenizer shows that its tokens spell out every byte: runs of
/// spaces, tabs, line breaks, words, digits, punctuation, non-Latin scripts, a combining accent (already
/// composed, so NFC keeps it) and an emoji.
const ROUND_TRIP_PROBE: &str = "Solve:  x² + 3x = 10.\n\nLet’s try\t— 数学 ∑ é 😀 ok\r\n   end 1234567 (a+b)!";

/// Pairs (a, b) at whose junction [`PromptEncoder::tail_ids`] may cut: the tokens of a + b must be those
/// of a followed by those of b.
const CUT_PROBES: [(&str, &str); 4] =
    [("Let x be", " the answer"), ("so 12", "  apples"), ("x = 3.\n", "Then"), ("数学\n", "问题 é")];

impl ByteBound {
    /// The bound of `tok`, or `None` when its tokens do not spell out their text (the round trip of
    /// [`ROUND_TRIP_PROBE`] differs) or it does not split at the cut points of [`PromptEncoder::tail_ids`]
    /// ([`CUT_PROBES`]). Decodes every id once (under half a second for Qwen3's 151,669).
    pub fn of(tok: &Tokenizer) -> Option<ByteBound> {
        let enc = |t: &str| tok.encode(t).ok();
        let ids = enc(ROUND_TRIP_PROBE)?;
        if tok.decode(&ids, false).ok()? != ROUND_TRIP_PROBE {
            return None;
        }
        for (a, b) in CUT_PROBES {
            let mut split = enc(a)?;
            split.extend(enc(b)?);
            if enc(&format!("{a}{b}"))? != split {
                return None;
            }
        }
        let longest = (0..tok.vocab_size() as u32)
            .map(|id| tok.decode(&[id], false).map_or(0, |t| t.len()))
            .max()
            .filter(|&l| l > 0)?;
        Some(ByteBound { longest_token_bytes: longest })
    }
}

impl<'a> PromptEncoder<'a> {
    pub fn new(tok: &'a Tokenizer, max_prompt_len: usize, policy: LongPrompts) -> Self {
        Self { tok, max_prompt_len, policy, bound: OnceCell::new() }
    }

    /// The tokenizer's byte bound, worked out on first use.
    pub fn bound(&self) -> Option<ByteBound> {
        *self.bound.get_or_init(|| ByteBound::of(self.tok))
    }

    /// Bytes of rendered prompt beyond which it has more than `max_prompt_len` tokens for certain (`None`:
    /// no bound for this tokenizer): max_prompt_len × L × 4.
    pub fn byte_limit(&self) -> Option<usize> {
        let b = self.bound()?;
        Some(self.max_prompt_len.saturating_mul(b.longest_token_bytes).saturating_mul(4))
    }

    /// Encode every row (see [`PromptEncoder`]); an error names the row (1-based) and its data source.
    pub fn encode(&self, rows: &[PromptRow]) -> Result<EncodedPrompts> {
        let max = self.max_prompt_len;
        let mut out = Vec::with_capacity(rows.len());
        let mut counts = PromptCounts::default();
        for (i, r) in rows.iter().enumerate() {
            let what = || format!("prompt row {} (data source {:?})", i + 1, r.data_source);
            let in_row = |e: Error| e.context(what());
            let text = self.tok.apply_chat_template(&r.messages, true).map_err(|e| in_row(e.into()))?;
            // A token is at least one byte, so the bound is only worked out for a prompt that could exceed it.
            let certainly_long =
                text.len() > max.saturating_mul(4) && self.byte_limit().is_some_and(|limit| text.len() > limit);
            // Whether a too-long prompt is kept (truncated), counted either way, or the error.
            let mut keep_long = |size: String| -> Result<bool> {
                match self.policy {
                    LongPrompts::Drop => counts.dropped += 1,
                    LongPrompts::TruncateLeft => counts.truncated += 1,
                    LongPrompts::Error => {
                        let msg =
                            format!("{size}, more than max_prompt_len = {max} tokens (rollout.long_prompts = error)");
                        return Err(in_row(Error::Data { file: None, line: None, msg }));
                    }
                }
                Ok(self.policy == LongPrompts::TruncateLeft)
            };
            let ids = if certainly_long {
                if !keep_long(format!("{} bytes after the chat template", text.len()))? {
                    continue;
                }
                self.tail_ids(&text).map_err(in_row)?
            } else {
                let mut ids = self.tok.encode(&text).map_err(|e| in_row(e.into()))?;
                if ids.is_empty() {
                    counts.empty += 1;
                    continue;
                }
                if ids.len() > max {
                    if !keep_long(format!("{} tokens", ids.len()))? {
                        continue;
                    }
                    ids.drain(..ids.len() - max);
                }
                ids
            };
            out.push(EncodedPrompt {
                index: i,
                ids: Arc::new(ids),
                ground_truth: r.ground_truth.clone(),
                data_source: r.data_source.clone(),
            });
        }
        if out.is_empty() {
            let msg = format!("no prompt fits max_prompt_len = {max} tokens ({counts})");
            return Err(Error::config("rollout.max_prompt_len", msg));
        }
        Ok(EncodedPrompts { prompts: out, counts })
    }

    /// The last `max_prompt_len` ids of a rendered prompt longer than [`Self::byte_limit`], from a
    /// suffix of at most 4·N·L bytes (N = max_prompt_len, L the longest token).
    ///
    /// The suffix starts at the first cut point p that leaves at most 4·N·L and more than 3·N·L bytes after
    /// it: a character boundary right after a line break and before a non-whitespace character, or right
    /// after an ASCII letter or digit and before a space. Why the ids of text[p..]
    /// are exactly the ids of the whole text from p on, for Qwen3's tokenizer (HF tokenizers: added
    /// tokens split out of the raw text, NFC, then a GPT-4-style regex split and byte-level BPE run on
    /// each piece):
    /// - no added token of Qwen3 contains a line break or a space, so none straddles p;
    /// - neither a line break nor a space composes under NFC with a neighbour, so the normalised text
    ///   from p on is the normalised text[p..];
    /// - the regex ends a piece at p — no alternative continues a line break with a non-whitespace
    ///   character (line breaks only end pieces), nor a letter or digit with a space (letters run on only
    ///   through letters, digits are single pieces) — and it has no look-behind, so the pieces from p on
    ///   are the same whether the scan began at 0 or at p; BPE then works on each piece alone.
    ///
    /// The more than 3·N·L bytes after p hold more than N tokens (the byte bound), so the last N ids of
    /// the suffix are the last N of the whole text. A cut anywhere else could change them: inside one
    /// long word, BPE's leftmost-first merges depend on where the word starts (a run of `a`s pairs up
    /// from its first letter). [`ByteBound::of`] checks that the tokenizer splits at both kinds of cut
    /// point and spells out its text. A prompt with no cut point in the window (no line break and no
    /// space after a letter or digit in N·L bytes) is refused rather than tokenized whole.
    fn tail_ids(&self, text: &str) -> Result<Vec<u32>> {
        let n = self.max_prompt_len;
        let span = n.saturating_mul(self.bound().map_or(1, |b| b.longest_token_bytes));
        let (from, to) =
            (text.len().saturating_sub(span.saturating_mul(4)), text.len().saturating_sub(span.saturating_mul(3)));
        let bytes = text.as_bytes();
        let cut = (from.max(1)..to).find(|&p| {
            text.is_char_boundary(p)
                && match bytes[p - 1] {
                    b'\n' => text[p..].chars().next().is_some_and(|c| !c.is_whitespace()),
                    b if b.is_ascii_alphanumeric() => bytes[p] == b' ',
                    _ => false,
                }
        });
        let Some(p) = cut else {
            let msg = format!(
                "{} bytes after the chat template, too long to tokenize whole, and no line break or space \
                 after a letter or digit between bytes {from} and {to} to cut it at exactly; shorten it or \
                 use rollout.long_prompts = drop",
                text.len()
            );
            return Err(Error::Data { file: None, line: None, msg });
        };
        let mut ids = self.tok.encode(&text[p..])?;
        if ids.len() < n {
            // The byte bound failed for this tokenizer after all: the exact answer is the whole text's.
            ids = self.tok.encode(text)?;
        }
        ids.drain(..ids.len().saturating_sub(n));
        Ok(ids)
    }
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
pub fn decode_samples(buf: &[u8]) -> Result<Vec<Sample>> {
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
    /// KV-cache layout and the cap on sequences decoding at once (continuous batching either way).
    pub generate: GenerateOptions,
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

/// A rollout's scored samples and what the KV-cache scheduler did.
#[derive(Debug)]
pub struct RolloutOutput {
    pub samples: Vec<Sample>,
    pub cache: GenerateStats,
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
) -> Result<RolloutOutput> {
    if prompts.is_empty() {
        // a data-parallel rank whose share of the round is empty
        return Ok(RolloutOutput { samples: Vec::new(), cache: GenerateStats::default() });
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
    // Continuous batching: a finished sequence hands its KV cache (slot or blocks) to waiting requests.
    let run = generate_run(model, &reqs, &spec.params, tok.stop_ids(), &spec.generate, |_, _| on_token())?;
    let (gens, cache) = (run.generations, run.stats);
    let mut out = Vec::with_capacity(gens.len());
    for (i, g) in gens.into_iter().enumerate() {
        let p = prompts[i / spec.n];
        let text = tok.decode(&g.tokens, true)?;
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
    Ok(RolloutOutput { samples: out, cache })
}

/// Refuse a rollout of more than [`MAX_ROUND_RESPONSES`] requests, or whose requests (each with its copy of
/// the prompt, its generation and its sample) do not fit the host's available memory, before any is built.
fn check_request_count(prompts: &[&EncodedPrompt], n: usize) -> Result<()> {
    let count = prompts.len().checked_mul(n).filter(|&c| c <= MAX_ROUND_RESPONSES).ok_or_else(|| {
        Error::invalid(format!(
            "{} prompts × {n} responses each are more than {MAX_ROUND_RESPONSES} requests in one rollout",
            prompts.len()
        ))
    })?;
    let prompt_tokens: u64 = prompts.iter().map(|p| p.ids.len() as u64).sum();
    let per_request = (std::mem::size_of::<Request>()
        + std::mem::size_of::<entrl_qwen3::Generation>()
        + std::mem::size_of::<Sample>()) as u64;
    let bytes = bytes_of(&[prompt_tokens, n as u64, 4]).saturating_add(bytes_of(&[count as u64, per_request]));
    entrl_engine::Device::Cpu
        .ensure_fits(&format!("the rollout's {count} requests ({} prompts × {n})", prompts.len()), bytes)?;
    Ok(())
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
    use crate::task::{builtin_prompts, builtin_tokenizer};
    use entrl_qwen3::Message;

    fn row(content: &str, source: &str) -> PromptRow {
        PromptRow {
            messages: vec![Message::new("user", content)],
            ground_truth: "1".into(),
            data_source: source.into(),
        }
    }

    /// A prompt over the limit is dropped, cut to its last max_prompt_len ids, or refused naming its row,
    /// its data source and its token count; prompts within the limit are untouched.
    #[test]
    fn long_prompts_follow_the_policy() {
        let tok = builtin_tokenizer();
        let long = (0..20).map(|i| (i % 10).to_string()).collect::<Vec<_>>().join(" + ");
        let rows = vec![builtin_prompts(2)[0].clone(), row(&long, "set/b"), builtin_prompts(2)[1].clone()];
        let full: Vec<Vec<u32>> =
            rows.iter().map(|r| tok.encode(&tok.apply_chat_template(&r.messages, true).unwrap()).unwrap()).collect();
        assert!(full[0].len() <= 16 && full[2].len() <= 16 && full[1].len() > 16, "{full:?}");

        let drop = encode_prompts(&rows, &tok, 16, LongPrompts::Drop).unwrap();
        assert_eq!(drop.counts, PromptCounts { dropped: 1, truncated: 0, empty: 0 });
        assert_eq!(drop.prompts.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(*drop.prompts[1].ids, full[2]);

        let cut = encode_prompts(&rows, &tok, 16, LongPrompts::TruncateLeft).unwrap();
        assert_eq!(cut.counts, PromptCounts { dropped: 0, truncated: 1, empty: 0 });
        assert_eq!(cut.prompts.len(), 3);
        assert_eq!(*cut.prompts[1].ids, full[1][full[1].len() - 16..], "the last 16 ids, as verl's [:, -16:]");
        assert_eq!(*cut.prompts[0].ids, full[0]);

        let e = encode_prompts(&rows, &tok, 16, LongPrompts::Error).unwrap_err().to_string();
        let want =
            format!("prompt row 2 (data source \"set/b\"): {} tokens, more than max_prompt_len = 16", full[1].len());
        assert!(e.starts_with(&want), "{e}");
        // Within the limit, every policy keeps every prompt as it is.
        for policy in [LongPrompts::Drop, LongPrompts::TruncateLeft, LongPrompts::Error] {
            let all = encode_prompts(&rows, &tok, 64, policy).unwrap();
            assert_eq!(all.counts, PromptCounts::default());
            assert_eq!(all.prompts.iter().map(|p| p.ids.to_vec()).collect::<Vec<_>>(), full);
        }
    }

    /// A prompt that renders to nothing is skipped under every policy; a set with nothing left is an error.
    #[test]
    fn empty_prompts_are_skipped_and_counted() {
        use tokenizers::models::wordlevel::WordLevel;
        let vocab = [("<unk>".to_string(), 0), ("a".to_string(), 1)].into_iter().collect();
        let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().unwrap();
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::WhitespaceSplit));
        let template = "{% for m in messages %}{{ m.content }}{% endfor %}".to_string();
        let tok = Tokenizer::from_parts(inner, Some(template), None);
        for policy in [LongPrompts::Drop, LongPrompts::TruncateLeft, LongPrompts::Error] {
            let set = encode_prompts(&[row("  ", "s"), row("a a", "s")], &tok, 4, policy).unwrap();
            assert_eq!(set.counts, PromptCounts { dropped: 0, truncated: 0, empty: 1 });
            assert_eq!((set.prompts.len(), set.prompts[0].index), (1, 1));
            let e = encode_prompts(&[row(" ", "s")], &tok, 4, policy).unwrap_err();
            assert!(matches!(&e, Error::Config { key, .. } if key == "rollout.max_prompt_len"), "{e:?}");
            let e = e.to_string();
            assert!(e.contains("no prompt fits max_prompt_len = 4 tokens") && e.contains("1 empty"), "{e}");
        }
    }

    /// The built-in word-level tokenizer maps an unknown word of any length to one `<unk>` and drops
    /// whitespace, so it has no byte bound: a long prompt is tokenized, not judged by its bytes.
    #[test]
    fn a_tokenizer_that_does_not_spell_out_its_text_has_no_byte_bound() {
        let tok = builtin_tokenizer();
        assert_eq!(ByteBound::of(&tok), None);
        let rows = vec![row(&"x".repeat(10_000), "s")];
        let set = encode_prompts(&rows, &tok, 16, LongPrompts::Error).unwrap();
        assert_eq!(
            set.prompts[0].ids.len(),
            tok.encode(&tok.apply_chat_template(&rows[0].messages, true).unwrap()).unwrap().len()
        );
    }

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
