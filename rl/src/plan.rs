//! Capacity plan for DAPO on `g` H100s: data-parallel training with ZeRO-2 sharding (`entrl plan`). Pure
//! arithmetic, no device, in saturating u64 and f64 (an absurd size gives a plan that does not fit, never a
//! wrapped one); this module doc is the documentation of the model and its assumptions.
//!
//! Symbols: P parameters (`Qwen3Config::num_params`), N the parameters that multiply activations (P less the
//! input embedding table when it is untied: a lookup costs no FLOPs and reads one row per token), g GPUs,
//! b bytes per weight (2 for bf16), L layers, h hidden, i intermediate, H query heads, Hkv KV heads, d head
//! dim, V vocabulary, T `micro_batch_tokens`, S sequence length.
//!
//! # Setting
//! Every GPU holds a full bf16 copy of the weights, generates the rollouts of its 1/g share of the step's
//! sequences, computes their old log-probs and trains on its share of every mini-batch. After a mini-batch's
//! backward the f32 gradients are reduce-scattered; each GPU updates its 1/g shard of the f32 masters and
//! moments and the new weights are all-gathered (ZeRO-2: `engine/src/optim/sharded.rs`; one GPU runs the
//! plain `engine/src/optim/adamw.rs`).
//!
//! # Memory per GPU ([`MemoryPlan`])
//! | item | bytes | why |
//! |---|---|---|
//! | weights | b·P | full working copy (bf16) |
//! | gradients | c·P | entrl accumulates the gradients of every parameter over the mini-batch's micro-batches (ARCHITECTURE.md, "gradients of trainable leaves accumulate in f32"), so the full gradients exist before the reduce-scatter: ZeRO-2 shards what is kept after it, not this peak. c = 4 (f32, `train.grad_dtype = "f32"`, the default) or 2 with `train.grad_dtype = "bf16"` and bf16 weights (f32 weights keep f32 gradients) |
//! | optimizer shard | (4 + 4 + 4)·P / g | f32 master + m + v (`adamw.rs`; no master when b = 4) |
//! | activations | L·T·h·b + T·(10h + 3i + 4·H·d)·b | with per-layer checkpointing: one hidden state per layer per token kept, plus one layer's activations while it is recomputed. Without: L·T·(10h + 3i + 4·H·d)·b. The constant counts the tensors a layer saves per token: ~10 of width h (residual in and out, two RMSNorm outputs, o_proj and down_proj outputs, K/V before and after norm/RoPE ≈ 2h for Qwen3-8B's GQA, slack), 3 of width i (gate, up, silu(gate)·up) and 4 of width H·d (q before and after norm/RoPE, attention output, its gradient); an estimate to replace by the peak `entrl bench train-step` measures |
//! | logits chunk | 1024·V·4 | the fused LM-head + loss works on 1024-row chunks of f32 logits (BENCHMARKS.md, `bench loss`) |
//! | step buffers | see below | what the ZeRO-2 step allocates while the full gradients are still held |
//! | KV cache | L·2·class(c·S·Hkv·d·b) | rollout: `generate` preallocates K and V per layer for c = `max_concurrent` slots of S = `seq` positions (`model-qwen3/src/generate.rs`) |
//! | workspace | 2 GiB | cuBLAS workspace, temporaries, the size-class rounding of the model's own tensors (≈ 0.2 GB for Qwen3-8B's two embedding tables) |
//!
//! class() is the caching allocator's size class (`engine/src/cuda/alloc.rs`: ≤ 25% rounding), applied to
//! every item that is one allocation (the KV tensors, the flat step buffers, the optimizer shards when g > 1).
//!
//! Step buffers, g > 1. `ShardedAdamW::step` (`engine/src/optim/sharded.rs`) works bucket by bucket: it
//! packs one bucket of BUCKET_ELEMENTS flat f32 gradients, releases every parameter gradient that ends in
//! it, and reduce-scatters into this rank's piece; then all-gathers the updated weights bucket by bucket
//! into the parameters in place. Besides the gradients it holds the f32 shard gradient (class(4P/g)), the
//! cast shard (class(b·P/g)) and about two buckets (2·class(4·BUCKET_ELEMENTS)). One GPU: 0.
//!
//! The phases do not coexist: activations are freed when backward ends, entrl drops the gradients after
//! each update (`Tensor::zero_grad` sets them to `None`), `generate` frees its KV cache when it returns, and
//! the caching allocator returns cached blocks to the driver before failing an allocation. So the peak is
//! `weights + optimizer + workspace + max(gradients + max(activations + logits, step buffers), KV cache)`.
//! Capacity is `gpu_mem_gib × usable_fraction`: 80 GiB nominal (the H100 80GB reports 79.6 GiB) × 0.95
//! leaves ~3.6 GiB for the CUDA context, NCCL buffers and fragmentation (the device machine's notes give
//! "about 78 GiB" usable). A dense K/V slot per sequence is what bounds `max_concurrent`: Qwen3-8B stores
//! 144 KiB of K/V per token (dapo.md §12), so 64 slots of 9216 tokens are 81 GiB, more than the card.
//!
//! # Time per DAPO step ([`TimePlan`]), no overlap between phases (entrl runs them in sequence)
//! Tokens per step = prompts × n × (prompt_tokens + mean_response), spread evenly over the g GPUs.
//! FLOPs per token of a sequence of S tokens (causal attention: query p sees p + 1 keys, S/2 on average):
//! forward 2N + 2·S·L·H·d (QKᵀ and PV, 2 FLOPs per multiply-add); training = 3 × forward (backward = 2 ×
//! forward), i.e. 6N + 6·S·L·H·d, plus one more forward when checkpointing recomputes each layer: 8N + 8·S·L·H·d.
//! (verl's MFU counter uses the full S², dapo.md §12; the causal half is the work actually done.)
//!
//! * Rate: one effective FLOP/s per H100 derived from a measured tokens/s of Qwen3-8B fwd+bwd with
//!   checkpointing at S = 8192: entrl's own `entrl bench train-step`, 6,077 tokens/s (H100 80GB HBM3,
//!   2026-11-27, BENCHMARKS.md; HF + SDPA measured 6,631 in the same call), or
//!   [`PlanInput::train_tokens_per_s_8b`] when given. Other shapes are scaled by FLOPs at the same rate
//!   (optimistic for small models, whose GEMMs run below peak).
//! * Update: tokens per GPU × training FLOPs (S = prompt_tokens + mean_response) / rate.
//! * Old log-probs: tokens per GPU × forward FLOPs / rate.
//! * Rollout, the old model (`rollout.kv_cache = "contiguous"`, eager decode; [`TimePlan`]): decode is
//!   memory-bound. Each GPU keeps c = min(max_concurrent, sequences per GPU) sequences
//!   decoding (continuous batching: a finished sequence's slot takes the next waiting one), so its
//!   sequences × mean_response tokens take that many / c full steps, plus a drain at the end while the
//!   last ones finish: the longest response, taken as 1.5 × mean_response for the long tail of response
//!   lengths (capped at seq − prompt_tokens), minus one mean response. Per decode step the GPU reads the
//!   weights (b·N bytes) and the K/V of the active
//!   sequences (c × (prompt_tokens + mean_response / 2) × L·2·Hkv·d·b) at 3.35 TB/s (H100 SXM HBM3
//!   datasheet) × 0.43, measured: qwen3-8b at batch 16 takes 10.57 ms a step (H100, 2026-11-27,
//!   BENCHMARKS.md) for 15.1 GB of matmul weights, 1.43 TB/s (skinny cuBLAS GEMMs, ~18 small kernels a
//!   layer and the sampling round trip, against 2.94 TB/s for a plain device copy, h100.md). A step costs max(memory time, compute time, host time) with compute =
//!   c × (2N + 4·ctx·L·H·d) at the rate and host time = L × 0.187 ms, the measured cost of enqueueing one
//!   layer's ~18 launches (`ENTRL_PROFILE=host`, qwen3-0.6b at batch 32: 5.24 ms of a 5.60 ms step, so
//!   small models decode launch-bound: raise `rollout.max_concurrent` for them, each step costs the same). Prefill of the prompts runs at the rate, plus one weight
//!   read per admission pass (freed slots are refilled c/8 at a time, `generate::refill_batch`).
//!   Dynamic sampling's extra generation rounds are not included (multiply the rollout by the rounds).
//! * Rollout, the new model (`rollout.kv_cache = "paged"`, CUDA-graph decode; [`paged::paged_rollout`]):
//!   see the next section. `entrl plan` prints both side by side and totals the step with `--kv-cache`'s.
//! * Communication per update (ZeRO-2): reduce-scatter of the f32 gradients (4P bytes) + all-gather of the
//!   weights (b·P bytes); a ring moves bytes × (g − 1)/g per GPU at the bus bandwidth, assumed 400 GB/s
//!   (NVLink 4 on H100 SXM is 900 GB/s bidirectional per GPU; NCCL's large all-reduce reaches ~370–450 GB/s
//!   bus bandwidth on 8×H100). One GPU communicates nothing.
//!
//! # Rollout, paged and graph-replayed ([`paged::paged_rollout`], `plan_rollout.rs`)
//! A seeded simulation of one GPU's share of the step, decode step by decode step:
//! * Response lengths: a lognormal with σ = 0.8 of the log (assumed; ~5% of the responses clipped at the
//!   maximum at mean 3000 of 8192), clipped at `max_response` (default DAPO's 8192, at most seq −
//!   prompt_tokens), its location solved so the sampled lengths have the requested mean: `--mean-response`
//!   (default 3000, dapo.md §12's example) or the mean `response_len_mean` of a run's `metrics.jsonl`
//!   (`--metrics`, steps weighted by `responses`). Seeded: the estimate is a function of its input. Every
//!   prompt has the same `prompt_tokens`.
//! * KV blocks of B = `kv_block_size` tokens (16). The pool: the KV budget the memory plan leaves in the
//!   rollout phase, capacity − (weights + optimizer shard + workspace), / (B · L·2·Hkv·d·b) bytes, or
//!   `kv_blocks` when given (more than the budget is an error). A sequence of context p + t holds
//!   ceil((p + t + 1)/B) blocks; with shared prompts the floor(p/B) full prompt blocks are held once per
//!   prompt group while any of its responses is live and each response holds the rest (its copy of the
//!   partial prompt block and its own tokens). Never more than the pool is held.
//! * Scheduling (the paged engine's): sequences admitted in order, a group's n responses together, while
//!   the free blocks less a 1% watermark (none when nothing decodes) hold the new sequence's blocks and the
//!   batch is under `max_concurrent` (paged: 0 = no cap); when a growing sequence finds the pool dry the
//!   youngest live sequence is preempted: its blocks freed, requeued first, its prompt + generated tokens
//!   recomputed (prefilled) when readmitted.
//! * Prefill: the prompt once per group when shared (else once per sequence) plus recomputed tokens, at the
//!   effective rate, plus one weight read (eager bandwidth) per step that admits any sequence.
//! * Decode step, graph-replayed: max(bytes / (3.35 TB/s × 0.75), FLOPs / rate) + L × 26 µs of device
//!   time + 60 µs of host between replays (picks read, next inputs packed and uploaded, launch), plus 50 ms
//!   per (batch, key-capacity) bucket the simulation visits (its capture; the buckets of
//!   `model-qwen3/src/decode_graph.rs`). Bytes = b·N weights + the K/V of every live sequence's whole context (the shared prompt read once
//!   per sequence: no reuse across sequences assumed); FLOPs = batch × 2N + 4·Σctx·L·H·d. 0.75 of the
//!   datasheet is 85% of a plain device copy (h100.md, assumed); 26 µs a layer is ~13 kernels at ~2 µs of
//!   gap and small-kernel latency (assumed). `--decode eager` uses the old step (0.43, host floor) instead.
//!   The constants await `entrl bench generate --decode graph` on a GPU.
//! * The rollout = Σ step times + prefill; it is at least `longest response` steps (the last sequence).
//! * Bounded work: above 2^25 simulated tokens a thinned copy runs (1/f of the sequences, 1/f of the pool;
//!   the batch, KV read and prefill scaled back by f).
//!
//! For verl's recipe (qwen3-8b, 8 GPUs, seq 9216, 512 × 16, mean 3000) the pool is ~21,300 blocks (46.7
//! GiB); ~124 sequences decode at once against 31 dense slots, but each step reads their ~3,000-token
//! contexts (≈ 3× the weights): ~26 ms a step against 16 ms, so the rollout falls to ~42% of the old
//! model's, not further: past this point the KV read, not the weights or the host, bounds decode.
use crate::config::GradDtype;
use crate::error::{Error, Result};
use entrl_engine::cuda::alloc::size_class;
use entrl_engine::memory::bytes_of;
use entrl_engine::DType;
use entrl_qwen3::Qwen3Config;

#[path = "plan_diagnose.rs"]
pub mod diagnose;
#[path = "plan_rollout.rs"]
pub mod paged;
pub use paged::{paged_rollout, DecodeMode, KvCache, PagedConfig, PagedRollout};

const GIB: f64 = (1u64 << 30) as f64;
/// Rows of the fused LM-head + loss chunk (BENCHMARKS.md `bench loss`: "chunk 1024").
pub const LOSS_CHUNK_ROWS: u64 = 1024;
/// cuBLAS workspace + allocator slack.
pub const WORKSPACE_BYTES: u64 = 2 << 30;
/// entrl's `bench train-step` at that shape: 6,077 tokens/s (H100 80GB HBM3, 2026-11-27, BENCHMARKS.md).
pub const ENTRL_TRAIN_TOKENS_PER_S_8B: f64 = 6077.0;
/// Host time to enqueue one layer of a decode step (`ENTRL_PROFILE=host`: 5.24 ms per 28-layer qwen3-0.6b
/// step at batch 32, H100 host, 2026-11-27): the floor of a decode step however small the model.
pub const HOST_DECODE_S_PER_LAYER: f64 = 0.187e-3;
/// Sequence length of that anchor (and of `entrl bench train-step`).
pub const ANCHOR_SEQ: usize = 8192;
/// Dense bf16 peak of an H100 SXM (dapo.md §12), for the utilisation printed next to the rate.
pub const H100_BF16_PEAK_FLOPS: f64 = 989e12;
/// HBM3 bandwidth of an H100 SXM (datasheet).
pub const H100_HBM_BYTES_PER_S: f64 = 3.35e12;
/// Share of the HBM bandwidth decode achieves (measured on qwen3-8b at batch 16; see the module doc).
pub const DECODE_EFFICIENCY: f64 = 0.43;
/// Longest response of a wave relative to the mean (assumed long tail).
pub const TAIL_FACTOR: f64 = 1.5;
/// NCCL bus bandwidth for large collectives on 8×H100 SXM (assumed, within the measured ~370–450 GB/s).
pub const NCCL_BUS_BYTES_PER_S: f64 = 400e9;

/// Upper bounds of [`PlanInput::validate`]: those of the training configuration's keys (`run.world_size`,
/// `rollout.max_prompt_len + max_response_len`, `train.micro_batch_tokens`, `train.batch_size`,
/// `rollout.n`, `rollout.max_concurrent`, batch / mini-batch × epochs) and 1 PiB of memory per GPU.
pub const MAX_PLAN_GPUS: usize = crate::config::MAX_WORLD_SIZE;
pub const MAX_PLAN_SEQ: usize = 2 * crate::config::MAX_SEQUENCE_PART;
pub const MAX_PLAN_MICRO_BATCH_TOKENS: usize = 1 << 30;
pub const MAX_PLAN_PROMPTS: usize = 1_000_000;
pub const MAX_PLAN_N: usize = 1024;
pub const MAX_PLAN_CONCURRENT: usize = 65_536;
pub const MAX_PLAN_UPDATES: usize = 1_000_000_000;
pub const MAX_PLAN_GPU_MEM_GIB: f64 = (1u64 << 20) as f64;

/// What is planned: the model, the cluster and the DAPO step's shape.
#[derive(Clone, Debug)]
pub struct PlanInput {
    pub model: Qwen3Config,
    pub gpus: usize,
    /// The ZeRO-2 sharded optimizer runs (any data parallelism, or `run.comm` forcing it at one rank).
    pub sharded: bool,
    /// Prompt + response tokens per sequence (max_prompt_len + max_response_len): the KV slot length.
    pub seq: usize,
    /// Token budget of one forward/backward (must hold one sequence).
    pub micro_batch_tokens: usize,
    /// Prompts per step, each with `n` responses.
    pub prompts_per_step: usize,
    pub n: usize,
    /// Mean prompt and response lengths of the step's sequences.
    pub prompt_tokens: usize,
    pub mean_response: usize,
    /// Sequences decoding at once per GPU (`rollout.max_concurrent`).
    pub max_concurrent: usize,
    /// Optimizer updates per step (prompts_per_step / mini-batch prompts × epochs).
    pub updates_per_step: usize,
    pub gpu_mem_gib: f64,
    pub usable_fraction: f64,
    pub checkpointing: bool,
    /// Bytes per weight: 2 (bf16) or 4 (f32).
    pub weight_bytes: usize,
    /// Storage of the accumulated gradients (`train.grad_dtype`): bf16 halves them for bf16 weights.
    pub grad_dtype: GradDtype,
    /// entrl's measured `bench train-step` tokens/s (Qwen3-8B, 8192 tokens, checkpointed); None = torch anchor.
    pub train_tokens_per_s_8b: Option<f64>,
}

impl PlanInput {
    /// verl's DAPO recipe (dapo.md §8: 512 prompts × 16 responses, 16 updates per step) at 9216 tokens per
    /// sequence on 8 H100s, with 3,000-token responses after 300-token prompts (dapo.md §12's example), and
    /// 32 sequences decoding per GPU (64 dense KV slots of 9216 tokens do not fit an H100 for Qwen3-8B).
    pub fn new(model: Qwen3Config) -> Self {
        Self {
            model,
            gpus: 8,
            sharded: true,
            seq: 9216,
            micro_batch_tokens: 18_432,
            prompts_per_step: 512,
            n: 16,
            prompt_tokens: 300,
            mean_response: 3000,
            max_concurrent: 32,
            updates_per_step: 16,
            gpu_mem_gib: 80.0,
            usable_fraction: 0.95,
            checkpointing: true,
            weight_bytes: 2,
            grad_dtype: GradDtype::F32,
            train_tokens_per_s_8b: None,
        }
    }

    /// Bytes per accumulated gradient: 2 for bf16 gradients of bf16 weights, else 4.
    pub fn grad_bytes(&self) -> usize {
        grad_bytes(self.weight_bytes, self.grad_dtype)
    }

    /// The plan of a training configuration on `gpus` GPUs (checkpointing `auto` = on from 2048 tokens, as
    /// the trainer decides; dtype `f32` = 4-byte weights, otherwise bf16; mean lengths capped by the maxima).
    pub fn from_config(model: Qwen3Config, cfg: &crate::TrainConfig, gpus: usize) -> Self {
        let (r, t) = (&cfg.rollout, &cfg.train);
        let seq = r.max_prompt_len + r.max_response_len;
        Self {
            gpus,
            sharded: gpus > 1 || cfg.run.comm != crate::config::CommChoice::Auto,
            seq,
            micro_batch_tokens: t.micro_batch_tokens,
            prompts_per_step: t.batch_size,
            n: r.n,
            prompt_tokens: r.max_prompt_len.min(300),
            mean_response: r.max_response_len.min(3000),
            max_concurrent: r.max_concurrent,
            updates_per_step: (t.batch_size / t.mini_batch_size.max(1)).max(1) * t.epochs.max(1),
            checkpointing: cfg.model.checkpoint_for(seq),
            weight_bytes: if cfg.model.dtype == crate::config::DtypeChoice::F32 { 4 } else { 2 },
            grad_dtype: t.grad_dtype,
            ..Self::new(model)
        }
    }

    /// Why the input cannot be planned, if it cannot (naming the field).
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&|field| field.to_string())
    }

    /// [`PlanInput::validate`] with each field named by `name(field)` (`entrl plan` names its flags). Every
    /// count has an upper bound (those of the training configuration's keys), so a plan of valid input is
    /// a plan of something that could run.
    pub fn validate_with(&self, name: &dyn Fn(&'static str) -> String) -> Result<()> {
        let counts = [
            ("gpus", self.gpus, MAX_PLAN_GPUS),
            ("seq", self.seq, MAX_PLAN_SEQ),
            ("micro_batch_tokens", self.micro_batch_tokens, MAX_PLAN_MICRO_BATCH_TOKENS),
            ("prompts_per_step", self.prompts_per_step, MAX_PLAN_PROMPTS),
            ("n", self.n, MAX_PLAN_N),
            ("mean_response", self.mean_response, MAX_PLAN_SEQ),
            ("max_concurrent", self.max_concurrent, MAX_PLAN_CONCURRENT),
            ("updates_per_step", self.updates_per_step, MAX_PLAN_UPDATES),
        ];
        for (k, v, max) in counts {
            if !(1..=max).contains(&v) {
                return Err(Error::invalid(format!("{} {v} must be 1 to {max}", name(k))));
            }
        }
        if self.prompt_tokens > MAX_PLAN_SEQ || self.prompt_tokens + self.mean_response > self.seq {
            return Err(Error::invalid(format!(
                "{} {} + {} {} exceed {} {}",
                name("prompt_tokens"),
                self.prompt_tokens,
                name("mean_response"),
                self.mean_response,
                name("seq"),
                self.seq
            )));
        }
        if self.micro_batch_tokens < self.seq {
            return Err(Error::invalid(format!(
                "{} {} must hold one whole sequence ({} {})",
                name("micro_batch_tokens"),
                self.micro_batch_tokens,
                name("seq"),
                self.seq
            )));
        }
        if !(self.gpu_mem_gib.is_finite() && self.gpu_mem_gib > 0.0 && self.gpu_mem_gib <= MAX_PLAN_GPU_MEM_GIB) {
            return Err(Error::invalid(format!(
                "{} {} must be in (0, {MAX_PLAN_GPU_MEM_GIB}]",
                name("gpu_mem_gib"),
                self.gpu_mem_gib
            )));
        }
        if !(self.usable_fraction > 0.0 && self.usable_fraction <= 1.0) {
            return Err(Error::invalid(format!(
                "{} {} must be in (0, 1]",
                name("usable_fraction"),
                self.usable_fraction
            )));
        }
        if ![2, 4].contains(&self.weight_bytes) {
            return Err(Error::invalid(format!(
                "{} {} must be 2 (bf16) or 4 (f32)",
                name("weight_bytes"),
                self.weight_bytes
            )));
        }
        match self.train_tokens_per_s_8b {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                Err(Error::invalid(format!("{} {r} must be finite and positive", name("train_tokens_per_s_8b"))))
            }
            _ => Ok(()),
        }
    }

    pub fn seqs_per_gpu(&self) -> usize {
        self.prompts_per_step.saturating_mul(self.n).div_ceil(self.gpus.max(1))
    }
}

/// Per-GPU memory, in bytes. `total` is the peak over the phases, which never coexist (module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    pub weights: u64,
    pub grads: u64,
    pub optimizer_shard: u64,
    pub activations: u64,
    pub logits_chunk: u64,
    /// What the ZeRO-2 optimizer step allocates on top of the gradients.
    pub step_buffers: u64,
    pub kv_cache: u64,
    pub workspace: u64,
    pub total: u64,
    pub capacity: u64,
    /// Whether `activations` assumes per-layer checkpointing (for the table's note).
    pub checkpointing: bool,
    /// Bytes per accumulated gradient (4 for f32, 2 for `train.grad_dtype = "bf16"` with bf16 weights).
    pub grad_bytes: usize,
}

/// When a memory item is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Always,
    /// Backward and optimizer step (the gradients).
    Update,
    Backward,
    Step,
    Rollout,
}

impl MemoryPlan {
    /// Bytes held in every phase: weights, optimizer shard, workspace.
    pub fn persistent(&self) -> u64 {
        self.weights.saturating_add(self.optimizer_shard).saturating_add(self.workspace)
    }
    /// Peak bytes of the update beyond the persistent ones: gradients + the larger of backward and step.
    pub fn update_phase(&self) -> u64 {
        self.grads.saturating_add(self.activations.saturating_add(self.logits_chunk).max(self.step_buffers))
    }

    pub fn fits(&self) -> bool {
        self.total <= self.capacity
    }

    /// The phase at the peak.
    fn peak(&self) -> Phase {
        if self.kv_cache > self.update_phase() {
            Phase::Rollout
        } else if self.step_buffers > self.activations.saturating_add(self.logits_chunk) {
            Phase::Step
        } else {
            Phase::Backward
        }
    }

    /// Name, bytes, formula and phase of each item.
    fn items(&self) -> [(&'static str, u64, &'static str, Phase); 8] {
        let act = if self.checkpointing {
            "L·T·h·b kept + T·(10h+3i+4Hd)·b for the layer being recomputed"
        } else {
            "L·T·(10h+3i+4Hd)·b, no checkpointing"
        };
        let grads_note = if self.grad_bytes == 2 {
            "2·P: all bf16 gradients exist before the reduce-scatter (train.grad_dtype = bf16)"
        } else {
            "4·P: all f32 gradients exist before the reduce-scatter"
        };
        [
            ("weights", self.weights, "b·P, a full copy", Phase::Always),
            ("gradients", self.grads, grads_note, Phase::Update),
            ("optimizer shard", self.optimizer_shard, "(f32 master + m + v)·P/g = 12·P/g", Phase::Always),
            ("activations", self.activations, act, Phase::Backward),
            ("logits chunk", self.logits_chunk, "1024·V·4 of the fused loss", Phase::Backward),
            ("step buffers", self.step_buffers, "ZeRO-2 step: shard gradient, cast shard, two buckets", Phase::Step),
            ("KV cache", self.kv_cache, "L·2·class(c·S·Hkv·d·b)", Phase::Rollout),
            ("workspace", self.workspace, "cuBLAS + allocator slack", Phase::Always),
        ]
    }

    /// One line per item in GiB with its formula, then the peak and the capacity.
    pub fn table(&self) -> String {
        let line =
            |name: &str, bytes: u64, note: &str| format!("  {name:<16} {:>7.2} GiB  {note}\n", bytes as f64 / GIB);
        let mut s = String::from("per-GPU memory\n");
        for (name, bytes, note, phase) in self.items() {
            let tag = match phase {
                Phase::Always => "",
                Phase::Update => "  [backward + step]",
                Phase::Backward => "  [backward]",
                Phase::Step => "  [step]",
                Phase::Rollout => "  [rollout]",
            };
            s += &line(name, bytes, &format!("{note}{tag}"));
        }
        let phases = format!(
            "weights + optimizer + workspace + max(backward {:.2}, step {:.2}, rollout {:.2})",
            (self.grads as f64 + self.activations as f64 + self.logits_chunk as f64) / GIB,
            (self.grads as f64 + self.step_buffers as f64) / GIB,
            self.kv_cache as f64 / GIB
        );
        s += &line("peak", self.total, &phases);
        s += &line("capacity", self.capacity, "usable share of the card");
        s
    }

    /// Why this configuration cannot run, naming the biggest items of the peak phase; None when it fits.
    pub fn refusal(&self) -> Option<String> {
        if self.fits() {
            return None;
        }
        let peak = self.peak();
        let held = |p: Phase| p == Phase::Always || p == peak || (p == Phase::Update && peak != Phase::Rollout);
        let mut items: Vec<_> = self.items().into_iter().filter(|it| held(it.3)).collect();
        items.sort_by_key(|it| std::cmp::Reverse(it.1));
        let biggest: Vec<String> =
            items.iter().take(3).map(|(name, b, ..)| format!("{name} {:.1} GiB", *b as f64 / GIB)).collect();
        let hint = match items[0].0 {
            "optimizer shard" => "shard the optimizer over more GPUs (12·P/g)",
            "gradients" if self.grad_bytes == 2 => "the full bf16 gradients (2·P) do not shrink with more GPUs",
            "gradients" => {
                "the full f32 gradients (4·P) do not shrink with more GPUs (train.grad_dtype = \"bf16\" halves them \
                 for bf16 weights)"
            }
            "step buffers" => {
                "ShardedAdamW::step copies the gradients into a flat buffer and gathers into a new one; in place it \
                 would need 4·P/g"
            }
            "KV cache" => "lower rollout.max_concurrent",
            "activations" => "turn checkpointing on or lower train.micro_batch_tokens",
            _ => "the weights alone do not fit one GPU",
        };
        let phase = match peak {
            Phase::Rollout => "rollout",
            Phase::Step => "optimizer step",
            _ => "backward",
        };
        Some(format!(
            "needs {:.1} GiB per GPU at the {phase} but {:.1} GiB are usable; biggest: {}; {hint}",
            self.total as f64 / GIB,
            self.capacity as f64 / GIB,
            biggest.join(", "),
        ))
    }
}

/// Estimated seconds of one DAPO step on `gpus` GPUs, and the numbers behind them.
#[derive(Clone, Debug, PartialEq)]
pub struct TimePlan {
    pub rollout_s: f64,
    pub old_logprob_s: f64,
    pub update_s: f64,
    pub comm_s: f64,
    pub total_s: f64,
    /// Prompt + response tokens of the step (all GPUs).
    pub tokens_per_step: f64,
    pub gpus: usize,
    /// Effective FLOP/s per GPU, and whether its train-step rate was given (else entrl's measured one).
    pub flops: f64,
    pub rate_given: bool,
    /// Decode: sequences per GPU, KV-cache slots (sequences decoding at once), decode steps per GPU,
    /// seconds per step; prefill seconds.
    pub seqs: usize,
    pub slots: usize,
    pub decode_steps: usize,
    pub decode_step_s: f64,
    pub prefill_s: f64,
    /// Generated tokens per second per GPU during the rollout.
    pub generated_per_s_per_gpu: f64,
    pub updates: usize,
    pub checkpointing: bool,
}

impl TimePlan {
    /// verl's throughput metric: tokens / (step time × GPUs).
    pub fn tokens_per_s_per_gpu(&self) -> f64 {
        self.tokens_per_step / (self.total_s * self.gpus as f64)
    }

    pub fn table(&self) -> String {
        let line = |name: &str, t: f64, note: String| format!("  {name:<16} {t:>7.1} s    {note}\n");
        let tf = self.flops / 1e12;
        let train = if self.checkpointing { "8N + 8·S·L·H·d (checkpointed)" } else { "6N + 6·S·L·H·d" };
        let g = self.gpus;
        let gpus = if g == 1 { "1 GPU".to_string() } else { format!("{g} GPUs") };
        let mut s = format!("DAPO step on {gpus}: {:.1} M tokens, phases in sequence\n", self.tokens_per_step / 1e6);
        let rollout = format!(
            "{} seqs through {} slots: {} decode steps × {:.1} ms + prefill {:.1} s; {:.0} generated tok/s/GPU",
            self.seqs,
            self.slots,
            self.decode_steps,
            self.decode_step_s * 1e3,
            self.prefill_s,
            self.generated_per_s_per_gpu
        );
        s += &line("rollout", self.rollout_s, rollout);
        s += &line("old log-probs", self.old_logprob_s, format!("2N + 2·S·L·H·d per token at {tf:.0} TF/s"));
        s += &line("update", self.update_s, format!("{train} per token at {tf:.0} TF/s"));
        let comm = format!("{} updates × (reduce-scatter 4P + all-gather b·P) × ({g}−1)/{g} at 400 GB/s", self.updates);
        s += &line("communication", self.comm_s, comm);
        s += &line("total", self.total_s, format!("{:.0} tok/s/GPU (verl's throughput)", self.tokens_per_s_per_gpu()));
        s += &format!(
            "  rate: {tf:.0} TF/s per GPU ({:.0}% of the 989 TF bf16 peak) from {}\n",
            100.0 * self.flops / H100_BF16_PEAK_FLOPS,
            if self.rate_given {
                "the given train-step rate (qwen3-8b, 8192 tokens)"
            } else {
                "entrl's `bench train-step`, 6,077 tok/s (qwen3-8b, 8192 tokens, checkpointed; H100, BENCHMARKS.md)"
            }
        );
        s
    }
}

/// Parameters that multiply activations: P less an untied input embedding table.
pub fn matmul_params(m: &Qwen3Config) -> f64 {
    let embed = if m.tie_word_embeddings { 0.0 } else { m.vocab_size as f64 * m.hidden_size as f64 };
    params(m) - embed
}

/// P in f64 (the same sum as `Qwen3Config::num_params`, without its saturation at 2^64).
pub(crate) fn params(m: &Qwen3Config) -> f64 {
    let f = |x: usize| x as f64;
    let (h, hd) = (f(m.hidden_size), f(m.head_dim));
    let (q, kv) = (f(m.num_attention_heads) * hd, f(m.num_key_value_heads) * hd);
    let layer = 2.0 * h * q + 2.0 * h * kv + 3.0 * h * f(m.intermediate_size) + 2.0 * h + 2.0 * hd;
    let tables = if m.tie_word_embeddings { 1.0 } else { 2.0 };
    tables * f(m.vocab_size) * h + f(m.num_hidden_layers) * layer + h
}

/// L·H·d: the attention FLOPs per token and key, over all layers, are a multiple of it.
fn attn_width(m: &Qwen3Config) -> f64 {
    m.num_hidden_layers as f64 * m.num_attention_heads as f64 * m.head_dim as f64
}

/// Forward FLOPs per token of an S-token sequence: 2N + 2·S·L·H·d (causal: S/2 keys on average).
pub fn forward_flops_per_token(m: &Qwen3Config, s: usize) -> f64 {
    2.0 * matmul_params(m) + 2.0 * s as f64 * attn_width(m)
}

/// Training FLOPs per token: forward + backward (2 × forward), + the recomputed forward when checkpointing.
pub fn train_flops_per_token(m: &Qwen3Config, s: usize, checkpointing: bool) -> f64 {
    forward_flops_per_token(m, s) * if checkpointing { 4.0 } else { 3.0 }
}

/// Effective FLOP/s of one H100 from a Qwen3-8B training throughput at 8192 tokens with checkpointing.
pub fn effective_flops(train_tokens_per_s_8b: Option<f64>) -> f64 {
    let q8 = Qwen3Config::named("qwen3-8b").expect("qwen3-8b is a known shape");
    train_tokens_per_s_8b.unwrap_or(ENTRL_TRAIN_TOKENS_PER_S_8B) * train_flops_per_token(&q8, ANCHOR_SEQ, true)
}

/// K and V bytes per token over all layers: L·2·Hkv·d·b (saturating).
pub fn kv_bytes_per_token(m: &Qwen3Config, weight_bytes: usize) -> u64 {
    let u = |x: usize| x as u64;
    bytes_of(&[u(m.num_hidden_layers), 2, u(m.num_key_value_heads), u(m.head_dim), u(weight_bytes)])
}

/// Bytes per accumulated gradient of `weight_bytes`-byte weights under `grad_dtype`: bf16 gradients only
/// for bf16 weights (f32 weights keep f32 gradients).
pub fn grad_bytes(weight_bytes: usize, grad_dtype: GradDtype) -> usize {
    let weights = if weight_bytes == 2 { DType::BF16 } else { DType::F32 };
    grad_dtype.storage().grad_dtype(weights).size_in_bytes()
}

/// Host bytes of training on the CPU with `ranks` ranks in this process (each with its own model): per
/// rank the weights in the run dtype (b·P) and the gradients (c·P, [`grad_bytes`]), plus AdamW's two f32 moments and,
/// for weights below f32, the f32 master (8·P or 12·P), which the ranks hold once between them (whole in
/// one rank, sharded by ZeRO-2 over several). Activations and the rollout's KV cache come on top, so this is
/// a floor: a run it does not fit cannot fit. Saturating arithmetic.
pub fn cpu_training_bytes(m: &Qwen3Config, weight_bytes: usize, grad_dtype: GradDtype, ranks: usize) -> u64 {
    let p = m.checked_num_params().unwrap_or(u64::MAX);
    let per_rank = bytes_of(&[p, (weight_bytes + grad_bytes(weight_bytes, grad_dtype)) as u64]);
    let states = if weight_bytes < 4 { 12 } else { 8 };
    bytes_of(&[per_rank, ranks.max(1) as u64]).saturating_add(bytes_of(&[p, states]))
}

/// Bytes the caching allocator reserves for one allocation of `bytes` (sizes beyond any device as they are).
fn class(bytes: u64) -> u64 {
    if bytes >= 1 << 60 {
        bytes
    } else {
        size_class(bytes as usize) as u64
    }
}

/// Bytes held in every phase (weights + optimizer shard + workspace): what the KV cache cannot use.
pub fn persistent_bytes(input: &PlanInput) -> u64 {
    memory(input, 0).persistent()
}

/// The memory plan with `max_concurrent` KV slots, in saturating arithmetic (an absurd input gives a plan
/// that does not fit, never a wrapped small one).
fn memory(input: &PlanInput, max_concurrent: usize) -> MemoryPlan {
    let m = &input.model;
    let u = |x: usize| x as u64;
    let (p, g, b) = (m.checked_num_params().unwrap_or(u64::MAX), u(input.gpus.max(1)), u(input.weight_bytes));
    let (h, t, layers) = (u(m.hidden_size), u(input.micro_batch_tokens), u(m.num_hidden_layers));
    let heads_width = bytes_of(&[u(m.num_attention_heads), u(m.head_dim)]);
    let width = bytes_of(&[10, h])
        .saturating_add(bytes_of(&[3, u(m.intermediate_size)]))
        .saturating_add(bytes_of(&[4, heads_width]));
    let layer_act = bytes_of(&[t, width, b]);
    let activations = if input.checkpointing {
        bytes_of(&[layers, t, h, b]).saturating_add(layer_act)
    } else {
        bytes_of(&[layers, layer_act])
    };
    // f32 master (only for bf16 weights) + m + v; the sharded optimizer keeps each as one flat shard.
    let states = if b < 4 { 3 } else { 2 };
    let shard = p.div_ceil(g); // elements of one rank's shard of the flat layout (`dist/flat.rs`)
    let optimizer_shard =
        if g == 1 { bytes_of(&[states, 4, p]) } else { bytes_of(&[states, class(bytes_of(&[4, shard]))]) };
    let bucket = class(4 * entrl_engine::dist::BUCKET_ELEMENTS as u64);
    let step_buffers = if !input.sharded {
        0
    } else {
        class(bytes_of(&[4, shard])).saturating_add(class(bytes_of(&[b, shard]))).saturating_add(2 * bucket)
    };
    let kv_tensor =
        bytes_of(&[u(max_concurrent), u(input.seq), u(m.num_key_value_heads), u(m.head_dim), u(input.weight_bytes)]);
    let mut plan = MemoryPlan {
        weights: bytes_of(&[b, p]),
        grads: bytes_of(&[u(input.grad_bytes()), p]),
        optimizer_shard,
        activations,
        logits_chunk: bytes_of(&[LOSS_CHUNK_ROWS, u(m.vocab_size), 4]),
        step_buffers,
        kv_cache: bytes_of(&[layers, 2, class(kv_tensor)]),
        workspace: WORKSPACE_BYTES,
        total: 0,
        capacity: (input.gpu_mem_gib * input.usable_fraction * GIB) as u64,
        checkpointing: input.checkpointing,
        grad_bytes: input.grad_bytes(),
    };
    plan.total = plan.persistent().saturating_add(plan.update_phase().max(plan.kv_cache));
    plan
}

/// The largest `max_concurrent` (up to the sequences per GPU) whose plan fits; 0 when none does.
pub fn max_concurrent_fitting(input: &PlanInput) -> usize {
    let (mut lo, mut hi) = (0, input.seqs_per_gpu());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if memory(input, mid).fits() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// KV-cache slots for `rollout.max_concurrent = 0` (auto). On a GPU: every sequence of the step when the
/// memory plan fits them all, else 90% of the most it fits (headroom for the allocator's rounding and
/// fragmentation), at least 1. Decode steps cost about the same
/// at any batch for small models (launch-bound: 5.24 of 5.60 ms a step is host time for qwen3-0.6b on an
/// H100, BENCHMARKS.md), so more slots mean proportionally fewer steps. On the CPU: 32.
pub fn auto_max_concurrent(input: &PlanInput, on_gpu: bool) -> usize {
    if !on_gpu {
        return 32;
    }
    let fit = max_concurrent_fitting(input);
    if fit >= input.seqs_per_gpu() {
        fit // every sequence of the step at once: not memory-bound, no headroom needed
    } else {
        (fit * 9 / 10).max(1)
    }
}

impl PlanInput {
    /// `max_concurrent = 0` (auto) replaced by [`auto_max_concurrent`]; a value the user set is kept.
    pub fn resolve_max_concurrent(&mut self, on_gpu: bool) {
        if self.max_concurrent == 0 {
            self.max_concurrent = auto_max_concurrent(self, on_gpu);
        }
    }
}

fn time(input: &PlanInput) -> TimePlan {
    let m = &input.model;
    let g = input.gpus.max(1);
    let flops = effective_flops(input.train_tokens_per_s_8b);
    let seq_len = input.prompt_tokens.saturating_add(input.mean_response);
    let tokens_per_step = input.prompts_per_step as f64 * input.n as f64 * seq_len as f64;
    let tokens_per_gpu = tokens_per_step / g as f64;

    let update_s = tokens_per_gpu * train_flops_per_token(m, seq_len, input.checkpointing) / flops;
    let old_logprob_s = tokens_per_gpu * forward_flops_per_token(m, seq_len) / flops;

    // Rollout: c slots kept full (continuous batching), then the drain of the longest responses; a step
    // costs max(memory, compute).
    let seqs = input.seqs_per_gpu();
    let wave_size = input.max_concurrent.min(seqs).max(1);
    let max_response = input.seq.saturating_sub(input.prompt_tokens);
    let mean = input.mean_response.min(max_response);
    let longest = ((mean as f64 * TAIL_FACTOR).ceil() as usize).min(max_response);
    let decode_steps = seqs.saturating_mul(mean).div_ceil(wave_size).saturating_add(longest.saturating_sub(mean));
    let ctx = input.prompt_tokens as f64 + mean as f64 / 2.0;
    // Bytes: weights + the K/V of c contexts; a decode query sees all ctx keys: 4·ctx·L·H·d FLOPs (QKᵀ and
    // PV), no causal half; eager: max(memory, compute, host enqueue).
    let batch = wave_size as f64;
    let decode_step_s =
        paged::decode_step_cost(m, input.weight_bytes, batch, batch * ctx, flops, DecodeMode::Eager).step_s;
    // Prefill: the prompts' FLOPs at the rate, plus one weight read per admission pass (freed slots are
    // refilled in batches of refill_batch(c); the first pass fills all c).
    let passes = 1 + seqs.saturating_sub(wave_size).div_ceil(entrl_qwen3::generate::refill_batch(wave_size));
    let weight_read_s = input.weight_bytes as f64 * matmul_params(m) / (H100_HBM_BYTES_PER_S * DECODE_EFFICIENCY);
    let prefill_s = seqs as f64 * input.prompt_tokens as f64 * forward_flops_per_token(m, input.prompt_tokens) / flops
        + passes as f64 * weight_read_s;
    let rollout_s = decode_steps as f64 * decode_step_s + prefill_s;

    // ZeRO-2 per update: reduce-scatter the f32 gradients + all-gather the weights, ring factor (g − 1)/g.
    let p = params(m);
    let ring = (g - 1) as f64 / g as f64;
    let comm_s = input.updates_per_step as f64 * (4.0 + input.weight_bytes as f64) * p * ring / NCCL_BUS_BYTES_PER_S;

    TimePlan {
        rollout_s,
        old_logprob_s,
        update_s,
        comm_s,
        total_s: rollout_s + old_logprob_s + update_s + comm_s,
        tokens_per_step,
        gpus: g,
        flops,
        rate_given: input.train_tokens_per_s_8b.is_some(),
        seqs,
        slots: wave_size,
        decode_steps,
        decode_step_s,
        prefill_s,
        generated_per_s_per_gpu: seqs as f64 * mean as f64 / rollout_s,
        updates: input.updates_per_step,
        checkpointing: input.checkpointing,
    }
}

/// Memory budget and step-time estimate of `input` (check [`PlanInput::validate`] first: zero counts are
/// treated as one so nothing divides by zero).
pub fn plan(input: &PlanInput) -> (MemoryPlan, TimePlan) {
    (memory(input, input.max_concurrent), time(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q8(gpus: usize) -> PlanInput {
        PlanInput { gpus, sharded: gpus > 1, ..PlanInput::new(Qwen3Config::named("qwen3-8b").unwrap()) }
    }

    #[test]
    fn qwen3_8b_fits_on_8_gpus_with_checkpointing() {
        let (mem, _) = plan(&q8(8));
        assert!(mem.fits(), "{}", mem.table());
        assert!(mem.refusal().is_none());
        assert!(mem.capacity <= 80 << 30);
    }

    #[test]
    fn bucketed_step_buffers_are_a_shard_and_two_buckets() {
        let (mem, _) = plan(&q8(8));
        let p = Qwen3Config::named("qwen3-8b").unwrap().num_params() as u64;
        assert!(mem.step_buffers < (4 + 2) * p / 8 + (3 << 30), "{}", mem.table());
        assert!(mem.step_buffers > 4 * p / 8);
    }

    #[test]
    fn qwen3_8b_does_not_fit_on_1_gpu_and_names_the_optimizer() {
        let (mem, _) = plan(&q8(1));
        let p = Qwen3Config::named("qwen3-8b").unwrap().num_params() as u64;
        assert_eq!(mem.optimizer_shard, 12 * p);
        assert!(mem.optimizer_shard as f64 > 98e9, "12P is about 98 GB");
        assert_eq!(mem.step_buffers, 0, "one GPU runs the plain AdamW");
        assert!(!mem.fits());
        let msg = mem.refusal().unwrap();
        assert!(msg.contains("optimizer"), "{msg}");
    }

    #[test]
    fn weights_are_two_bytes_per_parameter() {
        for name in ["qwen3-0.6b", "qwen3-8b"] {
            let m = Qwen3Config::named(name).unwrap();
            let (mem, _) = plan(&PlanInput::new(m.clone()));
            assert_eq!(mem.weights, 2 * m.num_params() as u64);
            assert_eq!(mem.grads, 4 * m.num_params() as u64);
        }
    }

    #[test]
    fn bf16_gradients_halve_the_gradient_bytes_of_bf16_weights_only() {
        let m = Qwen3Config::named("qwen3-8b").unwrap();
        let p = m.num_params() as u64;
        let f32_grads = plan(&q8(8)).0;
        let bf16_grads = plan(&PlanInput { grad_dtype: GradDtype::Bf16, ..q8(8) }).0;
        assert_eq!((f32_grads.grads, bf16_grads.grads), (4 * p, 2 * p));
        assert_eq!(f32_grads.update_phase() - bf16_grads.update_phase(), 2 * p, "only the gradients change");
        assert_eq!((f32_grads.persistent(), f32_grads.kv_cache), (bf16_grads.persistent(), bf16_grads.kv_cache));
        assert!(bf16_grads.table().contains("bf16 gradients"), "{}", bf16_grads.table());
        let f32_weights = PlanInput { grad_dtype: GradDtype::Bf16, weight_bytes: 4, ..q8(8) };
        assert_eq!(plan(&f32_weights).0.grads, 4 * p, "f32 weights keep f32 gradients");
        let mut cfg = crate::TrainConfig::dapo();
        cfg.train.grad_dtype = GradDtype::Bf16;
        assert_eq!(PlanInput::from_config(m, &cfg, 8).grad_bytes(), 2);
    }

    #[test]
    fn communication_grows_with_parameters_and_ring_factor() {
        let comm = |name: &str, gpus: usize| {
            plan(&PlanInput { gpus, ..PlanInput::new(Qwen3Config::named(name).unwrap()) }).1.comm_s
        };
        assert_eq!(comm("qwen3-8b", 1), 0.0);
        assert!(comm("qwen3-8b", 8) > comm("qwen3-4b", 8));
        assert!(comm("qwen3-4b", 8) > comm("qwen3-0.6b", 8));
        let (c2, c8) = (comm("qwen3-8b", 2), comm("qwen3-8b", 8));
        assert!((c8 / c2 - (7.0 / 8.0) / (1.0 / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn total_is_the_sum_of_the_parts() {
        for gpus in [1, 8, 64] {
            let (mem, t) = plan(&q8(gpus));
            assert_eq!(t.total_s, t.rollout_s + t.old_logprob_s + t.update_s + t.comm_s);
            assert!(t.rollout_s > 0.0 && t.update_s > 0.0 && t.old_logprob_s > 0.0);
            assert_eq!(mem.total, mem.persistent() + mem.update_phase().max(mem.kv_cache));
        }
    }

    #[test]
    fn the_anchor_reproduces_its_own_throughput() {
        // At the anchor's shape the update runs at the anchor's tokens/s per GPU.
        let m = Qwen3Config::named("qwen3-8b").unwrap();
        let rate = effective_flops(None) / train_flops_per_token(&m, ANCHOR_SEQ, true);
        assert!((rate - ENTRL_TRAIN_TOKENS_PER_S_8B).abs() < 1e-9);
        let faster = effective_flops(Some(2.0 * ENTRL_TRAIN_TOKENS_PER_S_8B));
        assert!((faster / effective_flops(None) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn auto_slots_are_ninety_percent_of_what_fits_and_fit() {
        // verl's recipe on 8 H100s for Qwen3-8B: 35 slots of 9216 tokens fit, auto takes 31.
        let input = PlanInput::new(Qwen3Config::named("qwen3-8b").unwrap());
        let fit = max_concurrent_fitting(&input);
        let auto = auto_max_concurrent(&input, true);
        assert_eq!(auto, fit * 9 / 10);
        assert!(plan(&PlanInput { max_concurrent: auto, ..input.clone() }).0.fits());
        // a small model at short sequences gets far more than the old default of 32 (capped by the step's
        // sequences per GPU)
        let mut small = PlanInput::new(Qwen3Config::named("qwen3-0.6b").unwrap());
        small.seq = 1536;
        small.prompt_tokens = 256;
        small.mean_response = 512;
        let auto_small = auto_max_concurrent(&small, true);
        assert!(auto_small > 32 * 8, "{auto_small}");
        assert!(plan(&PlanInput { max_concurrent: auto_small, ..small.clone() }).0.fits());
        // when every sequence of the step fits, auto takes them all (no headroom needed)
        small.prompts_per_step = 16;
        assert_eq!(auto_max_concurrent(&small, true), small.seqs_per_gpu());
        // the CPU keeps 32
        assert_eq!(auto_max_concurrent(&small, false), 32);
    }

    #[test]
    fn decode_steps_cost_at_least_the_host_time_of_their_layers() {
        // qwen3-0.6b decodes launch-bound: its step is the measured host floor, not its tiny weight read.
        // (the measured shape: 32 sequences, 128 prompt + 128 new tokens)
        let mut input = PlanInput::new(Qwen3Config::named("qwen3-0.6b").unwrap());
        input.gpus = 1;
        input.prompt_tokens = 128;
        input.mean_response = 128;
        let (_, t) = plan(&input);
        assert!((t.decode_step_s - 28.0 * HOST_DECODE_S_PER_LAYER).abs() < 1e-12, "{}", t.decode_step_s);
        // qwen3-8b at batch 16 is memory-bound: measured 10.57 ms a step; the model stays within 15%.
        let mut input = PlanInput::new(Qwen3Config::named("qwen3-8b").unwrap());
        input.gpus = 1;
        input.max_concurrent = 16;
        input.prompt_tokens = 256;
        input.mean_response = 128;
        let (_, t) = plan(&input);
        assert!(t.decode_step_s > 36.0 * HOST_DECODE_S_PER_LAYER);
        assert!((t.decode_step_s / 10.57e-3 - 1.0).abs() < 0.15, "{}", t.decode_step_s);
    }

    #[test]
    fn kv_cache_bounds_max_concurrent() {
        // 64 dense slots of 9216 tokens at 144 KiB per token are 81 GiB: more than the card.
        let m = Qwen3Config::named("qwen3-8b").unwrap();
        assert_eq!(kv_bytes_per_token(&m, 2), 144 << 10);
        let (mem, _) = plan(&PlanInput { max_concurrent: 64, ..q8(8) });
        assert!(mem.refusal().unwrap().contains("KV cache"));
        let c = max_concurrent_fitting(&q8(8));
        assert!(c >= 32 && memory(&q8(8), c).fits() && !memory(&q8(8), c + 1).fits());
    }

    #[test]
    fn without_checkpointing_activations_grow_by_layers() {
        let (on, t_on) = plan(&q8(8));
        let (off, t_off) = plan(&PlanInput { checkpointing: false, ..q8(8) });
        assert!(off.activations > 10 * on.activations);
        assert!(t_off.update_s < t_on.update_s, "no recompute");
        assert!(off.refusal().unwrap().contains("activations"));
    }

    #[test]
    fn absurd_sizes_give_a_plan_that_does_not_fit_never_a_wrapped_one() {
        // vocab 2^62 (config.json refuses it; a config built in code is not validated): usize arithmetic
        // wrapped (or panicked in debug builds) and the plan "fit"
        let mut m = Qwen3Config::named("qwen3-8b").unwrap();
        m.vocab_size = 1 << 62;
        let input = PlanInput::new(m.clone());
        let (mem, time) = plan(&input);
        assert!(!mem.fits() && mem.refusal().is_some(), "{}", mem.table());
        assert_eq!(mem.weights, u64::MAX);
        assert!(time.total_s > 0.0);
        // inputs beyond the validated bounds are still computed without wrapping
        let huge = PlanInput {
            seq: usize::MAX / 2,
            micro_batch_tokens: usize::MAX / 2,
            prompts_per_step: usize::MAX / 4,
            n: 1 << 20,
            max_concurrent: usize::MAX / 3,
            ..PlanInput::new(Qwen3Config::named("qwen3-0.6b").unwrap())
        };
        let (mem, time) = plan(&huge);
        assert!(!mem.fits() && time.total_s.is_finite());
        assert_eq!(max_concurrent_fitting(&huge), 0);
        // the CPU training footprint saturates too
        assert_eq!(cpu_training_bytes(&m, 4, GradDtype::F32, 8), u64::MAX);
        let q8 = Qwen3Config::named("qwen3-8b").unwrap();
        let p = q8.num_params() as u64;
        assert_eq!(cpu_training_bytes(&q8, 4, GradDtype::F32, 1), 16 * p, "f32 weights + f32 gradients + two moments");
        assert_eq!(cpu_training_bytes(&q8, 4, GradDtype::Bf16, 1), 16 * p, "f32 weights keep f32 gradients");
        assert_eq!(
            cpu_training_bytes(&q8, 2, GradDtype::F32, 4),
            4 * 6 * p + 12 * p,
            "per rank b + 4, optimizer state once"
        );
        assert_eq!(cpu_training_bytes(&q8, 2, GradDtype::Bf16, 4), 4 * 4 * p + 12 * p, "bf16 gradients: b + 2");
    }

    #[test]
    fn parameters_in_f64_are_the_configs_count() {
        for name in ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b"] {
            let m = Qwen3Config::named(name).unwrap();
            assert_eq!(params(&m), m.num_params() as f64, "{name}");
        }
    }

    #[test]
    fn validation_bounds_every_count_and_names_it() {
        let q = q8(8);
        let cases: Vec<(PlanInput, &str)> = vec![
            (PlanInput { gpus: 5000, ..q.clone() }, "gpus 5000 must be 1 to 4096"),
            (PlanInput { prompts_per_step: 1 << 60, ..q.clone() }, "prompts_per_step"),
            (PlanInput { n: 2000, ..q.clone() }, "n 2000 must be 1 to 1024"),
            (PlanInput { seq: 1 << 40, micro_batch_tokens: 1 << 41, ..q.clone() }, "seq"),
            (PlanInput { max_concurrent: 1 << 20, ..q.clone() }, "max_concurrent"),
            (PlanInput { updates_per_step: usize::MAX, ..q.clone() }, "updates_per_step"),
            (PlanInput { gpu_mem_gib: f64::INFINITY, ..q.clone() }, "gpu_mem_gib"),
            (PlanInput { gpu_mem_gib: 1e300, ..q.clone() }, "gpu_mem_gib"),
            (PlanInput { usable_fraction: f64::NAN, ..q.clone() }, "usable_fraction"),
            (PlanInput { prompt_tokens: usize::MAX, ..q.clone() }, "prompt_tokens"),
        ];
        for (input, want) in cases {
            let e = input.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let e =
            PlanInput { prompts_per_step: 1 << 60, ..q }.validate_with(&|f| format!("--{f}")).unwrap_err().to_string();
        assert!(e.starts_with("--prompts_per_step "), "{e}");
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(q8(0).validate().unwrap_err().to_string().contains("gpus"));
        let short = PlanInput { micro_batch_tokens: 4096, ..q8(8) };
        assert!(short.validate().unwrap_err().to_string().contains("micro_batch_tokens"));
        assert!(q8(8).validate().is_ok());
    }
}
