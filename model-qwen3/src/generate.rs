//! Generation with a paged KV cache and continuous batching: prefill the packed prompts with the fused
//! attention (writing K/V through each sequence's block table), then decode one token per running
//! request per step with decode attention through the block tables.
//!
//! Scheduling ([`generate_run`]): requests wait in order; a waiting unit (the fresh responses of one
//! prompt when prompts are shared, else one request) is admitted when the pool has its blocks, plus a
//! watermark of 1% of the pool kept for growth (none when the pool holds every request whole). Admission
//! is batched (each prefill is a pass over the weights): units are admitted when nothing is decoding, when
//! at least max(1, running / 8) requests fit, when the whole queue fits, or when a pass reaches the prefill
//! budget (`max_prefill_tokens`, 64k positions by default: a pass's activations scale with its positions).
//! The responses of a shared prompt reference its full blocks (reference counts) and take their own copy
//! of its last, partial block; the prompt is prefilled once. Before each decode step every running
//! request holds the blocks its next position needs; when the pool is dry the youngest running request
//! is preempted: its blocks are released and it waits at the front of the queue, to be recomputed (prompt
//! and tokens so far prefilled again) when blocks are free. Sampling keys depend on (seed, position) only,
//! so preemption and batch composition never change a response beyond rounding. The contiguous layout
//! is the same scheduler with one block of `prompt + max_new_tokens` positions per request.
//! Sampling (temperature, top-k, top-p; one uniform keyed by request seed and response position) is
//! `crate::sampling`: on the device on a GPU, on the host on the CPU.
use crate::blocks::BlockPool;
pub use crate::decode_graph::GraphStats;
use crate::decode_graph::{DecodeGraphs, StepRow};
use crate::error::{ModelError, Result};
use crate::model::{attention_inputs_fused, layer_output_normed, Qwen3};
pub use crate::sampling::{sample, SamplingParams};
use crate::sampling::{sample_active, SampleKey};
use entrl_engine::ops::{attention, BlockCopies, CacheIndex, CacheRows, KvCache, PoolShape, PrefixGroup, RowStats};
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

/// Paged KV-cache settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagedKv {
    /// Positions per block.
    pub block_size: usize,
    /// Blocks in the pool; 0 = auto: [`KV_MEMORY_FRACTION`] of the device's available memory, capped at
    /// what the requests can ever hold.
    pub blocks: usize,
    /// The fresh responses of one prompt share its blocks and one prefill.
    pub share_prompts: bool,
}

impl Default for PagedKv {
    fn default() -> Self {
        Self { block_size: 16, blocks: 0, share_prompts: true }
    }
}

/// The KV-cache layout of a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvLayout {
    /// One slot of the longest `prompt + max_new_tokens` per running request.
    Contiguous,
    Paged(PagedKv),
}

/// Share of the available device memory an automatic paged pool takes.
pub const KV_MEMORY_FRACTION: f64 = 0.8;

/// How a decode step is issued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodeMode {
    /// Op by op from the host (a few launches and library calls per layer).
    #[default]
    Eager,
    /// Captured once per (batch, key-capacity) bucket and replayed (`crate::decode_graph`): a CUDA
    /// graph on a GPU, the stand-in with the same contract on the CPU.
    Graph,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Most requests running at once (contiguous: the slots); 0 = no limit.
    pub max_seqs: usize,
    pub kv: KvLayout,
    pub decode: DecodeMode,
    /// Decode attention reads each shared prompt's blocks once for all its running responses (paged cache
    /// with shared prompts; `ops::CacheIndex::new_grouped`). Results are the same either way.
    pub prefix_attention: bool,
    /// Most positions one prefill pass computes (its activations scale with them); a unit longer than
    /// this is prefilled alone. 0 = no limit.
    pub max_prefill_tokens: usize,
}

/// Default [`GenerateOptions::max_prefill_tokens`]: 64k positions, about 4 GiB of the widest bf16
/// activation (fused gate/up) at the 8B shape.
pub const MAX_PREFILL_TOKENS: usize = 65_536;

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_seqs: 0,
            kv: KvLayout::Paged(PagedKv::default()),
            decode: DecodeMode::Eager,
            prefix_attention: false,
            max_prefill_tokens: MAX_PREFILL_TOKENS,
        }
    }
}

/// What the scheduler did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerateStats {
    pub pool_blocks: usize,
    pub block_size: usize,
    /// Most blocks held at once.
    pub peak_blocks: usize,
    /// Most requests running at once.
    pub peak_running: usize,
    pub preemptions: usize,
    /// Prefill passes and the positions they computed (recomputation included).
    pub prefills: usize,
    pub prefill_tokens: usize,
    pub decode_steps: usize,
    /// Prompt positions not prefilled again because a response shared its prompt's blocks.
    pub shared_prompt_tokens: usize,
    /// Decode rows that read their prompt's blocks as part of a prefix group, over all steps
    /// ([`GenerateOptions::prefix_attention`]).
    pub prefix_grouped_rows: usize,
    /// Decode graphs: buckets captured, steps replayed, padding rows computed ([`DecodeMode::Graph`]).
    pub graphs: GraphStats,
}

#[derive(Debug)]
pub struct GenerateRun {
    pub generations: Vec<Generation>,
    pub stats: GenerateStats,
}

/// Generate for every request with the default options (paged cache, shared prompts, no limit on
/// running requests); `on_token(request, token)` is called as tokens are produced.
pub fn generate(
    model: &Qwen3,
    reqs: &[Request],
    params: &SamplingParams,
    stop_ids: &[u32],
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generation>> {
    generate_with(model, reqs, params, stop_ids, &GenerateOptions::default(), on_token)
}

/// Generate with at most `slots` requests decoding at once in contiguous KV slots (continuous batching:
/// a finished request frees its slot for a waiting one). The outputs equal those of [`generate`] for any
/// `slots` (up to rounding).
pub fn generate_batched(
    model: &Qwen3,
    reqs: &[Request],
    params: &SamplingParams,
    stop_ids: &[u32],
    slots: usize,
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generation>> {
    let opts = GenerateOptions { max_seqs: slots.max(1), kv: KvLayout::Contiguous, ..GenerateOptions::default() };
    generate_with(model, reqs, params, stop_ids, &opts, on_token)
}

pub fn generate_with(
    model: &Qwen3,
    reqs: &[Request],
    params: &SamplingParams,
    stop_ids: &[u32],
    opts: &GenerateOptions,
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generation>> {
    Ok(generate_run(model, reqs, params, stop_ids, opts, on_token)?.generations)
}

/// Generate and report what the scheduler did (see the module doc).
pub fn generate_run(
    model: &Qwen3,
    reqs: &[Request],
    params: &SamplingParams,
    stop_ids: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32),
) -> Result<GenerateRun> {
    let _ng = no_grad();
    let c = &model.config;
    if let Some(msg) = params.invalid() {
        return Err(ModelError::Invalid(msg));
    }
    if let Some(r) = reqs.iter().find(|r| r.prompt.is_empty()) {
        return Err(ModelError::Invalid(format!("empty prompt (seed {})", r.seed)));
    }
    if let Some(&bad) = reqs.iter().flat_map(|r| r.prompt.iter()).find(|&&t| t as usize >= c.vocab_size) {
        return Err(ModelError::Invalid(format!("prompt token {bad} outside the vocabulary of {}", c.vocab_size)));
    }
    let plan = CachePlan::new(model, reqs, opts)?;
    let dev = &model.device;
    let layers: Vec<KvCache> = (0..c.num_hidden_layers)
        .map(|_| KvCache::new(plan.pool, c.num_key_value_heads, c.head_dim, c.num_attention_heads, model.dtype, dev))
        .collect::<std::result::Result<_, _>>()?;
    let mut graphs = match opts.decode {
        DecodeMode::Eager => None,
        DecodeMode::Graph => {
            let width = reqs.iter().map(|r| plan.pool.blocks_for(r.prompt.len() + r.max_new_tokens)).max().unwrap_or(1);
            let prefix = (opts.prefix_attention && plan.share_prompts).then(|| {
                let bs = plan.pool.block_size;
                reqs.iter().map(|r| r.prompt.len() / bs * bs).max().unwrap_or(0)
            });
            Some(DecodeGraphs::new(dev, plan.pool, width, plan.max_seqs, *params, prefix)?)
        }
    };
    let mut s = Scheduler::new(reqs, plan);
    let mut out: Vec<Generation> = reqs
        .iter()
        .map(|_| Generation { tokens: Vec::new(), logprobs: Vec::new(), finish: FinishReason::Length })
        .collect();
    let mut decoding: Vec<usize> = Vec::new(); // running requests whose next token comes from a decode step
    loop {
        // 1. admission: packed prefill of the admitted units, then each admitted request's next token
        let units = s.admit(reqs, &out, decoding.len());
        if !units.is_empty() {
            let (logits, rows) =
                profile::region("generate: prefill", dev, || prefill(model, reqs, &out, &units, &mut s, &layers))?;
            let keys = sample_keys(&rows, reqs, &out);
            let picks =
                profile::region("generate: sample", dev, || sample_active(&logits, &keys, params, c.vocab_size))?;
            check_finite_picks(&rows, &picks, reqs, &out)?;
            s.record(&rows, picks, reqs, stop_ids, &mut out, &mut on_token, &mut decoding)?;
        }
        if decoding.is_empty() {
            if s.waiting.is_empty() {
                break;
            }
            if units.is_empty() {
                // an idle scheduler admits the front request whenever its blocks are free: a hang otherwise
                let r = s.waiting[0];
                return Err(ModelError::Invalid(format!(
                    "kv cache: request {r} cannot be admitted ({} of {} blocks free, {} running)",
                    s.pool.free_blocks(),
                    s.pool.total(),
                    s.running
                )));
            }
            continue;
        }
        // 2. one decode step for every running request that still holds its blocks
        let mut step = s.reserve_step(std::mem::take(&mut decoding), reqs, &out)?;
        if step.is_empty() {
            continue;
        }
        let groups = if opts.prefix_attention && s.plan.share_prompts {
            let groups = s.group_step(&mut step, layers.first().map_or(1, |l| l.max_prefix_group_rows()));
            s.stats.prefix_grouped_rows += groups.iter().map(|g| g.rows).sum::<usize>();
            Some(groups)
        } else {
            None
        };
        let rows = step_rows(reqs, &step, &out, &s)?;
        let picks = match graphs.as_mut() {
            Some(g) => profile::region("generate: decode step (graph)", dev, || {
                g.step(model, &layers, &rows, groups.as_deref())
            })?,
            None => {
                let logits = profile::region("generate: decode step", dev, || {
                    decode_step(model, &rows, s.plan.pool, &layers, groups.as_deref())
                })?;
                let keys: Vec<SampleKey> = rows.iter().map(|r| r.key).collect();
                profile::region("generate: sample", dev, || sample_active(&logits, &keys, params, c.vocab_size))?
            }
        };
        s.stats.decode_steps += 1;
        check_finite_picks(&step, &picks, reqs, &out)?;
        s.record(&step, picks, reqs, stop_ids, &mut out, &mut on_token, &mut decoding)?;
    }
    if s.pool.in_use() != 0 {
        return Err(ModelError::Invalid(format!("kv cache: {} blocks still held after generation", s.pool.in_use())));
    }
    if let Some(g) = graphs {
        s.stats.graphs = g.stats;
    }
    Ok(GenerateRun { generations: out, stats: s.stats })
}

/// Units admitted per prefill pass while requests decode: an eighth of the running requests (at least
/// one), so each pass over the weights admits a batch.
pub fn refill_batch(running: usize) -> usize {
    (running / 8).max(1)
}

/// The pool of a generation, checked before anything is allocated.
struct CachePlan {
    pool: PoolShape,
    share_prompts: bool,
    max_seqs: usize,
    /// Free blocks kept back at admission for running requests to grow into.
    watermark: usize,
    max_prefill_tokens: usize,
}

impl CachePlan {
    fn new(model: &Qwen3, reqs: &[Request], opts: &GenerateOptions) -> Result<Self> {
        let c = &model.config;
        let n = reqs.len().max(1);
        let max_seqs = if opts.max_seqs == 0 { n } else { opts.max_seqs.min(n) };
        let longest = reqs.iter().map(|r| r.prompt.len().saturating_add(r.max_new_tokens)).max().unwrap_or(1).max(1);
        if longest > i32::MAX as usize {
            return Err(ModelError::Invalid(format!(
                "prompt + max_new_tokens = {longest} positions; positions are i32 (at most {})",
                i32::MAX
            )));
        }
        let u = |x: usize| x as u64;
        let per_position = entrl_engine::memory::bytes_of(&[
            u(c.num_hidden_layers),
            2,
            u(c.num_key_value_heads),
            u(c.head_dim),
            u(model.dtype.size_in_bytes()),
        ]);
        let (blocks, block_size, share_prompts, watermark) = match opts.kv {
            KvLayout::Contiguous => (max_seqs, longest, false, 0),
            KvLayout::Paged(p) => {
                if p.block_size == 0 {
                    return Err(ModelError::Invalid(
                        "rollout.kv_block_size: a block holds at least 1 position, got 0".into(),
                    ));
                }
                let need = |r: &Request| r.prompt.len().saturating_add(r.max_new_tokens).div_ceil(p.block_size);
                let most = reqs.iter().map(need).max().unwrap_or(1).max(1);
                let all = reqs.iter().map(need).fold(0usize, |a, b| a.saturating_add(b)).max(1);
                let blocks = if p.blocks > 0 {
                    p.blocks
                } else {
                    let avail = model.device.available_memory()? as f64 * KV_MEMORY_FRACTION;
                    let per_block = per_position.saturating_mul(u(p.block_size)).max(1) as f64;
                    ((avail / per_block) as usize).min(all)
                };
                if blocks < most {
                    let (r, req) = reqs.iter().enumerate().max_by_key(|(_, r)| need(r)).expect("a request");
                    return Err(ModelError::Invalid(format!(
                        "kv cache: request {r} (prompt {} + max_new_tokens {}) needs {most} blocks of {} positions, \
                         the pool holds {blocks}{}",
                        req.prompt.len(),
                        req.max_new_tokens,
                        p.block_size,
                        if p.blocks == 0 { " (all the memory allows)" } else { "" }
                    )));
                }
                // a pool that holds every request whole never preempts: it keeps nothing back
                let watermark = if blocks >= all { 0 } else { (blocks / 100).min(blocks - most) };
                (blocks, p.block_size, p.share_prompts, watermark)
            }
        };
        let bytes = per_position.saturating_mul(u(blocks)).saturating_mul(u(block_size));
        let unit = if matches!(opts.kv, KvLayout::Contiguous) { "slots" } else { "blocks" };
        let what = format!(
            "the KV cache ({blocks} {unit} × {block_size} positions × {} layers × K and V × {} KV heads × {} × {})",
            c.num_hidden_layers, c.num_key_value_heads, c.head_dim, model.dtype
        );
        model.device.ensure_fits(&what, bytes)?;
        let pool = PoolShape::new(blocks, block_size)?;
        let max_prefill_tokens = if opts.max_prefill_tokens == 0 { usize::MAX } else { opts.max_prefill_tokens };
        Ok(Self { pool, share_prompts, max_seqs, watermark, max_prefill_tokens })
    }
}

/// A sequence to prefill: `members` (requests) continue from the first `len` tokens of `members[0]`'s
/// prompt and tokens so far (more than the prompt only when it is recomputed after preemption).
struct Unit {
    members: Vec<usize>,
    /// Positions prefilled: prompt length, plus the tokens so far of a recomputed request.
    len: usize,
}

/// A running request's shared prompt: its group and the full blocks it shares with the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SharedPrefix {
    group: usize,
    blocks: usize,
}

struct Scheduler {
    pool: BlockPool,
    plan: CachePlan,
    /// Waiting requests in admission order (preempted ones go to the front).
    waiting: std::collections::VecDeque<usize>,
    /// Block table of each request while it runs.
    tables: Vec<Vec<i32>>,
    /// Admission order of running requests (larger = younger).
    admitted_at: Vec<u64>,
    /// The shared-prompt group of a running request and the blocks it shares (None once preempted: a
    /// recomputed request holds its own blocks).
    share: Vec<Option<SharedPrefix>>,
    next_share: usize,
    clock: u64,
    running: usize,
    stats: GenerateStats,
}

impl Scheduler {
    fn new(reqs: &[Request], plan: CachePlan) -> Self {
        Self {
            pool: BlockPool::new(plan.pool.blocks),
            waiting: (0..reqs.len()).filter(|&i| reqs[i].max_new_tokens > 0).collect(),
            tables: vec![Vec::new(); reqs.len()],
            admitted_at: vec![0; reqs.len()],
            share: vec![None; reqs.len()],
            next_share: 0,
            clock: 0,
            running: 0,
            stats: GenerateStats {
                pool_blocks: plan.pool.blocks,
                block_size: plan.pool.block_size,
                ..GenerateStats::default()
            },
            plan,
        }
    }

    /// Take admission units off the front of the queue while their blocks fit (see the module doc);
    /// none unless nothing decodes, the whole queue fits, or at least [`refill_batch`] requests fit.
    fn admit(&mut self, reqs: &[Request], out: &[Generation], decoding: usize) -> Vec<Unit> {
        let (plan, bs) = (&self.plan, self.plan.pool.block_size);
        let mut units: Vec<Unit> = Vec::new();
        let mut free = self.pool.free_blocks();
        let mut running = self.running;
        let mut taken = 0;
        let mut tokens = 0usize;
        let mut budget_full = false;
        while taken < self.waiting.len() && running < plan.max_seqs {
            let first = self.waiting[taken];
            let done = out[first].tokens.len();
            let len = reqs[first].prompt.len() + done;
            let full = plan.pool.blocks_for(len);
            let partial = usize::from(!len.is_multiple_of(bs));
            // fresh responses of the same prompt right behind `first` share its prefill and full blocks
            let mut members = vec![first];
            if plan.share_prompts && done == 0 {
                while taken + members.len() < self.waiting.len() && running + members.len() < plan.max_seqs {
                    let next = self.waiting[taken + members.len()];
                    // blocks of the members so far plus this one
                    let cost = full + partial * members.len();
                    if out[next].tokens.is_empty()
                        && reqs[next].prompt == reqs[first].prompt
                        && free >= cost + plan.watermark
                    {
                        members.push(next);
                    } else {
                        break;
                    }
                }
            }
            let cost = full + partial * (members.len() - 1);
            // the first unit of an idle scheduler ignores the watermark (a request that fits the pool runs)
            let reserve = if decoding == 0 && units.is_empty() && running == 0 { 0 } else { plan.watermark };
            if free < cost + reserve {
                break;
            }
            if !units.is_empty() && tokens + len > plan.max_prefill_tokens {
                budget_full = true;
                break;
            }
            tokens += len;
            free -= cost;
            running += members.len();
            taken += members.len();
            units.push(Unit { members, len });
        }
        let drains = taken == self.waiting.len();
        if units.is_empty() || (decoding > 0 && !drains && !budget_full && taken < refill_batch(self.running)) {
            return Vec::new();
        }
        self.waiting.drain(..taken);
        for u in &units {
            let full = self.plan.pool.blocks_for(u.len);
            let shared = u.len / bs;
            let first = u.members[0];
            self.tables[first] = (0..full).map(|_| self.pool.take().expect("counted free blocks")).collect();
            for &m in &u.members[1..] {
                let mut t: Vec<i32> = self.tables[first][..shared].to_vec();
                for &b in &t {
                    self.pool.share(b);
                }
                if shared < full {
                    t.push(self.pool.take().expect("counted free blocks"));
                }
                self.tables[m] = t;
                self.stats.shared_prompt_tokens += u.len;
            }
            let group = (u.members.len() > 1 && shared > 0).then(|| {
                self.next_share += 1;
                SharedPrefix { group: self.next_share, blocks: shared }
            });
            for &m in &u.members {
                self.clock += 1;
                self.admitted_at[m] = self.clock;
                self.share[m] = group;
            }
            self.running += u.members.len();
        }
        self.note_peak();
        units
    }

    fn note_peak(&mut self) {
        self.stats.peak_blocks = self.stats.peak_blocks.max(self.pool.in_use());
        self.stats.peak_running = self.stats.peak_running.max(self.running);
    }

    /// Give every request of `step` the block its next position needs, oldest first, preempting the
    /// youngest running requests when the pool is dry; returns the requests that decode this step.
    fn reserve_step(&mut self, mut step: Vec<usize>, reqs: &[Request], out: &[Generation]) -> Result<Vec<usize>> {
        step.sort_by_key(|&r| self.admitted_at[r]);
        let mut i = 0;
        while i < step.len() {
            let r = step[i];
            let need = self.plan.pool.blocks_for(reqs[r].prompt.len() + out[r].tokens.len());
            while self.tables[r].len() < need {
                if let Some(b) = self.pool.take() {
                    self.tables[r].push(b);
                    continue;
                }
                // preempt the youngest request not yet served this step (possibly r itself) whose release
                // returns a block; the youngest when none would (all their blocks shared)
                let j = (i..step.len()).rev().find(|&j| self.pool.frees_any(&self.tables[step[j]]));
                let victim = step.remove(j.unwrap_or(step.len() - 1));
                self.preempt(victim)?;
                if victim == r {
                    break;
                }
            }
            if step.get(i) == Some(&r) {
                i += 1;
            }
        }
        self.note_peak();
        Ok(step)
    }

    /// Order `step` so that the running members of each shared prompt are adjacent, and return their
    /// prefix groups (at most `max_rows` rows each; a lone member is no group).
    fn group_step(&self, step: &mut [usize], max_rows: usize) -> Vec<PrefixGroup> {
        step.sort_by_key(|&r| self.share[r].map_or(usize::MAX, |g| g.group));
        let mut groups = Vec::new();
        let mut i = 0;
        while i < step.len() {
            let Some(g) = self.share[step[i]] else { break };
            let run = step[i..].iter().take_while(|&&r| self.share[r] == Some(g)).count();
            for first in (i..i + run).step_by(max_rows.max(1)) {
                let rows = (i + run - first).min(max_rows.max(1));
                if rows > 1 {
                    groups.push(PrefixGroup { first, rows, prefix_len: g.blocks * self.plan.pool.block_size });
                }
            }
            i += run;
        }
        groups
    }

    fn preempt(&mut self, r: usize) -> Result<()> {
        self.share[r] = None;
        let t = std::mem::take(&mut self.tables[r]);
        self.pool.release(&t)?;
        self.running -= 1;
        self.waiting.push_front(r);
        self.stats.preemptions += 1;
        Ok(())
    }

    /// Append each request's pick; a request that stops or reaches its length releases its blocks, the
    /// others go back to `decoding`.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        rows: &[usize],
        picks: Vec<(u32, f64)>,
        reqs: &[Request],
        stop_ids: &[u32],
        out: &mut [Generation],
        on_token: &mut impl FnMut(usize, u32),
        decoding: &mut Vec<usize>,
    ) -> Result<()> {
        for (&r, (tok, lp)) in rows.iter().zip(picks) {
            out[r].tokens.push(tok);
            out[r].logprobs.push(lp);
            on_token(r, tok);
            let stop = stop_ids.contains(&tok);
            if stop {
                out[r].finish = FinishReason::Stop;
            }
            if stop || out[r].tokens.len() >= reqs[r].max_new_tokens {
                let t = std::mem::take(&mut self.tables[r]);
                self.pool.release(&t)?;
                self.running -= 1;
            } else {
                decoding.push(r);
            }
        }
        Ok(())
    }
}

/// Prefill each unit's sequence (packed) through its first member's block table, copy the last partial
/// block to the other members, and return the logits [rows, vocab] of each member's last position with
/// the member of each row.
fn prefill(
    model: &Qwen3,
    reqs: &[Request],
    out: &[Generation],
    units: &[Unit],
    s: &mut Scheduler,
    layers: &[KvCache],
) -> Result<(Tensor, Vec<usize>)> {
    let (c, dev) = (&model.config, &model.device);
    let pool = s.plan.pool;
    let lens: Vec<usize> = units.iter().map(|u| u.len).collect();
    let packing = Packing::from_lengths(&lens)?;
    let mut ids: Vec<i32> = Vec::with_capacity(packing.total());
    let mut dst: Vec<i32> = Vec::with_capacity(packing.total());
    for u in units {
        let r = u.members[0];
        let seq = reqs[r].prompt.iter().chain(&out[r].tokens).take(u.len);
        ids.extend(seq.map(|&t| t as i32));
        for p in 0..u.len {
            dst.push(pool.row(&s.tables[r], p)?);
        }
    }
    let rows = CacheRows::new(dst, pool, dev)?;
    let pos_t = Tensor::from_vec(packing.positions(), [packing.total()], dev)?;
    let (mut x, mut h) = embed_normed(model, &Tensor::from_vec(ids, [packing.total()], dev)?)?;
    for (i, (layer, cache)) in model.layers.iter().zip(layers).enumerate() {
        let (q, k, v) = attention_inputs_fused(layer, c, &h, &pos_t)?;
        cache.write(&k, &v, &rows)?;
        let a = attention(&q, &k, &v, &packing, RowStats::NONE)?;
        (x, h) = layer_output_normed(layer, c, &x, &a.out, next_norm(model, i))?;
    }
    // the last, partial prompt block of each shared unit, copied to its other members
    let (mut src, mut to) = (Vec::new(), Vec::new());
    for u in units.iter().filter(|u| !u.len.is_multiple_of(pool.block_size)) {
        let last = u.len / pool.block_size;
        for &m in &u.members[1..] {
            src.push(s.tables[u.members[0]][last]);
            to.push(s.tables[m][last]);
        }
    }
    if !src.is_empty() {
        let copies = BlockCopies::new(src, to, pool, dev)?;
        for cache in layers {
            cache.copy_blocks(&copies)?;
        }
    }
    s.stats.prefills += 1;
    s.stats.prefill_tokens += packing.total();
    let mut last = Vec::new();
    let mut members = Vec::new();
    for (u, (start, l)) in units.iter().zip(packing.spans()) {
        for &m in &u.members {
            last.push((start + l - 1) as i32);
            members.push(m);
        }
    }
    let last_t = Tensor::from_vec(last, [members.len()], dev)?;
    Ok((h.embedding(&last_t)?.linear(model.lm_head())?, members))
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

/// Feed each row its token; logits [rows.len(), vocab].
fn decode_step(
    model: &Qwen3,
    rows: &[StepRow],
    pool: PoolShape,
    layers: &[KvCache],
    groups: Option<&[PrefixGroup]>,
) -> Result<Tensor> {
    let (dev, n) = (&model.device, rows.len());
    let width = rows.iter().map(|r| r.table.len()).max().unwrap_or(1).max(1);
    let table: Vec<i32> =
        rows.iter().flat_map(|r| r.table.iter().copied().chain(std::iter::repeat(0)).take(width)).collect();
    let pos: Vec<i32> = rows.iter().map(|r| r.pos as i32).collect();
    let writes = CacheRows::new(rows.iter().map(|r| r.write_row).collect(), pool, dev)?;
    let max_rows = layers.first().map_or(1, |l| l.max_prefix_group_rows());
    let idx = CacheIndex::new_grouped(table, width, &pos, pool, groups.map(|g| (g, max_rows)), dev)?;
    let pos_t = Tensor::from_vec(pos, [n], dev)?;
    let ids_t = Tensor::from_vec(rows.iter().map(|r| r.token as i32).collect::<Vec<_>>(), [n], dev)?;
    forward_decode(model, layers, &ids_t, &pos_t, &writes, &idx)
}

/// The rows of a decode step: each request of `step` fed its last sampled token.
fn step_rows<'a>(reqs: &[Request], step: &[usize], out: &[Generation], s: &'a Scheduler) -> Result<Vec<StepRow<'a>>> {
    let pool = s.plan.pool;
    step.iter()
        .map(|&r| {
            let pos = reqs[r].prompt.len() + out[r].tokens.len() - 1;
            Ok(StepRow {
                token: *out[r].tokens.last().expect("sampled"),
                pos,
                write_row: pool.row(&s.tables[r], pos)?,
                table: &s.tables[r],
                key: SampleKey { seed: reqs[r].seed, position: out[r].tokens.len() as u64 },
            })
        })
        .collect()
}

/// One decode forward, eager or inside a step graph: tokens `ids` [B] at positions `pos` [B] (i32), their
/// K/V written at `rows` and attending through `idx`; logits [B, vocab]. Reads only its arguments.
pub(crate) fn forward_decode(
    model: &Qwen3,
    layers: &[KvCache],
    ids: &Tensor,
    pos: &Tensor,
    rows: &CacheRows,
    idx: &CacheIndex,
) -> Result<Tensor> {
    let (c, dev) = (&model.config, &model.device);
    let (mut x, mut h) = embed_normed(model, ids)?;
    for (i, (layer, cache)) in model.layers.iter().zip(layers).enumerate() {
        let (q, k, v) =
            profile::region("decode: q/k/v, q/k norm + rope", dev, || attention_inputs_fused(layer, c, &h, pos))?;
        profile::region("decode: kv-cache write", dev, || cache.write(&k, &v, rows))?;
        let o = profile::region("decode: attention (split-K)", dev, || cache.attend(&q, idx))?;
        (x, h) = profile::region("decode: o_proj, residual + norm, MLP, residual + norm", dev, || {
            layer_output_normed(layer, c, &x, &o, next_norm(model, i))
        })?;
    }
    profile::region("decode: LM head", dev, || Ok(h.linear(model.lm_head())?))
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

/// The sampling key of each request of `active` (row i of its logits): its seed and the index of the
/// response token being sampled.
fn sample_keys(active: &[usize], reqs: &[Request], out: &[Generation]) -> Vec<SampleKey> {
    active.iter().map(|&r| SampleKey { seed: reqs[r].seed, position: out[r].tokens.len() as u64 }).collect()
}
