//! `entrl train` configuration: a preset's defaults, then a TOML file, then `key=value` overrides (any
//! dotted key, e.g. `train.lr=2e-6`, `tokens.strategy="anchors:0.2"`). Unknown keys are errors, a value of
//! the wrong type names its key, and every value is checked against its documented range when the
//! configuration is resolved (so `--dry-run` refuses what training would refuse). [`RULES`] holds each
//! key's range; the printed and saved configuration carries it as a comment next to the key.
//!
//! Presets: `dapo` (verl's DAPO recipe, `shared/docs/dapo.md` §8: 512 prompts × 16 responses, mini-batches
//! of 32 prompts, lr 1e-6 with 10 warm-up steps, ε 0.2/0.28, c = 10, lengths 1024/8192, overlong buffer
//! 4096, left truncation of long prompts), `builtin` (the tiny Qwen3 learning the built-in addition
//! task on a laptop in minutes) and `chain` (the same model on the built-in reasoning task, warm-started
//! by `train.warmup_sft_steps` teacher-forced updates).
use crate::error::{Error, Result};
use crate::strategy::Strategy;
use entrl_engine::ops::{RowStat, SoftWeightSchedule};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A closed set of string choices for a configuration key: serde names, `Display`, and the list of names.
macro_rules! choice {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $var),+
        }
        impl $name {
            /// The names a configuration file or override may use.
            pub const NAMES: &'static [&'static str] = &[$($s),+];
            pub fn name(self) -> &'static str {
                match self { $(Self::$var => $s),+ }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

choice! {
    /// `model.dtype`: the training weights' type.
    DtypeChoice {
        /// bf16 on a GPU, f32 on the CPU.
        Auto = "auto",
        Bf16 = "bf16",
        F32 = "f32",
    }
}

choice! {
    /// `train.grad_dtype`: how the accumulated gradients of bf16 weights are stored (f32 weights always
    /// keep f32 gradients). `bf16` halves the gradient memory (2 bytes a parameter instead of 4); each
    /// micro-batch's contribution is still added in f32 and the sum rounded once to bf16, and the
    /// optimizer, clipping and the ZeRO-2 reduce-scatter widen the gradients to f32 where they compute.
    #[derive(Default)]
    GradDtype {
        /// f32 gradients (entrl's default).
        #[default]
        F32 = "f32",
        Bf16 = "bf16",
    }
}

impl GradDtype {
    /// The engine's storage choice for the parameters' gradients.
    pub fn storage(self) -> entrl_engine::GradStorage {
        match self {
            GradDtype::F32 => entrl_engine::GradStorage::F32,
            GradDtype::Bf16 => entrl_engine::GradStorage::Bf16,
        }
    }
}

choice! {
    /// `rollout.kv_cache`: the rollout's KV-cache layout.
    KvCacheChoice {
        /// Blocks of `rollout.kv_block_size` positions from one pool, admission by free blocks, shared
        /// prompt blocks, preemption when the pool runs dry (vLLM's layout, which verl rolls out with).
        Paged = "paged",
        /// One slot of `max_prompt_len + max_response_len` positions per running sequence.
        Contiguous = "contiguous",
    }
}

choice! {
    /// `rollout.decode`: how each decode step of a rollout is issued.
    DecodeChoice {
        /// Op by op from the host.
        Eager = "eager",
        /// Captured once per (batch, key-capacity) bucket and replayed: a CUDA graph on a GPU (the host
        /// does O(1) work a step); the same scheduling through a stand-in on the CPU.
        Graph = "graph",
    }
}

choice! {
    /// `model.checkpoint_activations`: recompute each layer in backward instead of keeping its activations.
    Checkpointing {
        /// On for sequences of 2048 tokens or more.
        Auto = "auto",
        On = "on",
        Off = "off",
    }
}

choice! {
    /// `rollout.on_short_batch`: what dynamic sampling does when `max_gen_rounds` is reached with the batch short.
    ShortBatch {
        /// Fail the run (verl).
        Error = "error",
        /// Train on the informative groups found so far (none: no update this step).
        Train = "train",
    }
}

choice! {
    /// `rollout.long_prompts`: what happens to a prompt longer than `rollout.max_prompt_len` tokens.
    LongPrompts {
        /// Skip it (verl's `filter_overlong_prompts=True`); counted and printed.
        Drop = "drop",
        /// Keep its last `max_prompt_len` tokens (verl's `data.truncation='left'`, the DAPO recipe and the
        /// seed paper, B.3); counted and printed.
        TruncateLeft = "truncate-left",
        /// Refuse the dataset, naming the prompt (verl's default `data.truncation='error'`).
        Error = "error",
    }
}

choice! {
    /// `reward.verifier`: how a response is judged against its ground truth.
    VerifierChoice {
        /// By data source, as verl's `default_compute_score`: `math_dapo`, `math`, `math_dapo_reasoning` and
        /// `aime*` → answer-line; the built-in task → its first-word check; anything else → boxed.
        Auto = "auto",
        /// The last `\boxed{…}` of the response, normalised, against the normalised ground truth (the seed
        /// paper, B.4), for every data source.
        Boxed = "boxed",
        /// verl's `math_dapo.compute_score`: the last `Answer: …` line of the final 300 characters.
        AnswerLine = "answer-line",
        /// verl's `math_dapo` with `strict_box_verify`: the last `\boxed{}` of the final 100 characters, raw.
        StrictBox = "strict-box",
    }
}

choice! {
    /// `tokens.pool`: the units a token strategy counts its fraction within.
    Pool {
        /// One forward/backward's pack (the 80/20 code's choice). Its size depends on
        /// `train.micro_batch_tokens` and, with data parallelism, on the number of GPUs.
        MicroBatch = "micro-batch",
        /// Every response token of the optimizer update, across all ranks: the same for any GPU count.
        MiniBatch = "mini-batch",
        /// Each response on its own.
        Sequence = "sequence",
    }
}

/// `tokens.score`: the per-token attention statistic the strategies rank by (anchors take the lowest,
/// explorers the highest), averaged over `tokens.entropy_layers`: any row statistic of the engine's table
/// (`entrl_engine::ops::RowStat::SPECS`) by its score name. `hnorm` is the paper's (the head-mean normalised
/// attention entropy H / ln(#keys)); `hmix` the entropy of the head-averaged distribution / ln(#keys) (one
/// reading of the paper's definition; a second pass over the keys); `max-prob` the head-mean largest
/// probability; `sink` the head-mean mass on the sequence's first `tokens.sink_keys` keys; `distance` the
/// head-mean attention-weighted relative distance to the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenScore(pub RowStat);

impl TokenScore {
    /// The paper's score.
    pub const HNORM: Self = Self(RowStat::Entropy);
    /// The names a configuration file or override may use.
    pub const NAMES: &'static [&'static str] = &RowStat::SCORE_NAMES;
    /// Its `tokens.score` name.
    pub fn score_name(self) -> &'static str {
        self.0.spec().score_name
    }
}

impl std::fmt::Display for TokenScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.score_name())
    }
}

impl Serialize for TokenScore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.score_name())
    }
}

impl<'de> Deserialize<'de> for TokenScore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RowStat::from_score_name(&s).map(Self).ok_or_else(|| serde::de::Error::unknown_variant(&s, Self::NAMES))
    }
}

choice! {
    /// `tokens.normalizer`: the divisor of the summed token losses of a mini-batch.
    Normalizer {
        /// Every valid response token of the mini-batch (DAPO's token-mean).
        All = "all",
        /// The sum of the token weights (the 80/20 code's selected-token mean).
        Selected = "selected",
    }
}

choice! {
    /// `run.comm`: collectives between data-parallel ranks.
    CommChoice {
        /// None for one rank, NCCL across GPUs, threads across CPU ranks.
        Auto = "auto",
        Nccl = "nccl",
        Threads = "threads",
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `dapo` or `builtin`: which defaults the file and overrides start from.
    pub preset: String,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub rollout: RolloutConfig,
    pub reward: RewardConfig,
    pub train: OptimConfig,
    pub tokens: TokenConfig,
    pub run: RunConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// An HF Qwen3 folder, `builtin` (random-init tiny Qwen3 with the built-in tokenizer), or
    /// `random:<shape>` (qwen3-0.6b … qwen3-8b with random weights, for benchmarks; needs `tokenizer`).
    pub path: String,
    /// Tokenizer folder when not the model folder ("" = the model folder).
    pub tokenizer: String,
    pub dtype: DtypeChoice,
    /// `auto` (the first GPU if there is one), `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub checkpoint_activations: Checkpointing,
}

impl ModelConfig {
    /// Whether a forward over sequences up to `longest` tokens checkpoints its layers (`auto`: from 2048).
    pub fn checkpoint_for(&self, longest: usize) -> bool {
        match self.checkpoint_activations {
            Checkpointing::On => true,
            Checkpointing::Off => false,
            Checkpointing::Auto => longest >= 2048,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// verl-layout prompts (`.jsonl` or `.parquet`), `builtin` (the addition task) or `builtin:chain`
    /// (multi-step arithmetic answered in a boxed chain, [`crate::task`]).
    pub train: String,
    /// Held-out prompts for `run.eval_every` ("" = none; `builtin` = the built-in task; `builtin:chain` =
    /// the chain task's 200 held-out problems).
    pub eval: String,
    /// Largest sum in the built-in task.
    pub builtin_max_sum: usize,
    /// Shuffle the prompts each epoch (seeded).
    pub shuffle: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Responses per prompt.
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    pub max_prompt_len: usize,
    pub max_response_len: usize,
    /// Prompts longer than `max_prompt_len` tokens (training and held-out sets alike).
    pub long_prompts: LongPrompts,
    /// Prompts generated per dynamic-sampling round (verl's gen_batch_size).
    pub gen_batch_size: usize,
    /// Drop prompt groups whose responses are all correct or all wrong, and refill.
    pub dynamic_sampling: bool,
    /// Cap on generation rounds per step.
    pub max_gen_rounds: usize,
    pub on_short_batch: ShortBatch,
    /// Sequences decoding at once: KV-cache slots of continuous batching (bounds the preallocated cache).
    /// 0 = auto: on a GPU 90% of what the memory plan fits (`entrl plan` prints it), on the CPU 32.
    pub max_concurrent: usize,
    /// KV-cache layout of the rollouts.
    #[serde(default = "default_kv_cache")]
    pub kv_cache: KvCacheChoice,
    /// Positions per block of the paged cache.
    #[serde(default = "default_kv_block_size")]
    pub kv_block_size: usize,
    /// Blocks in the paged pool (all layers); 0 = auto: 80% of the device's available memory.
    #[serde(default)]
    pub kv_blocks: usize,
    /// The n responses of a prompt share its prompt blocks and one prefill (paged cache).
    #[serde(default = "default_true")]
    pub share_prompts: bool,
    /// Decode steps issued op by op or replayed as graphs (either cache layout).
    #[serde(default = "default_decode")]
    pub decode: DecodeChoice,
    /// Decode attention reads each shared prompt's blocks once per group of its running responses (paged
    /// cache with shared prompts).
    #[serde(default)]
    pub prefix_attention: bool,
}

fn default_kv_cache() -> KvCacheChoice {
    KvCacheChoice::Paged
}
impl DecodeChoice {
    pub fn mode(self) -> entrl_qwen3::DecodeMode {
        match self {
            Self::Eager => entrl_qwen3::DecodeMode::Eager,
            Self::Graph => entrl_qwen3::DecodeMode::Graph,
        }
    }
}

fn default_decode() -> DecodeChoice {
    DecodeChoice::Eager
}
fn default_kv_block_size() -> usize {
    16
}
fn default_true() -> bool {
    true
}

impl RolloutConfig {
    /// Generation options of the rollouts. `contiguous_slots`: the slots of the contiguous layout
    /// (`max_concurrent`, auto resolved); with the paged cache `max_concurrent` caps the running
    /// sequences (0 = no cap: the pool's blocks bound them).
    pub fn generate_options(&self, contiguous_slots: usize) -> entrl_qwen3::GenerateOptions {
        use entrl_qwen3::{GenerateOptions, KvLayout, PagedKv};
        let opts = match self.kv_cache {
            KvCacheChoice::Contiguous => {
                GenerateOptions { max_seqs: contiguous_slots.max(1), kv: KvLayout::Contiguous, ..Default::default() }
            }
            KvCacheChoice::Paged => GenerateOptions {
                max_seqs: self.max_concurrent,
                kv: KvLayout::Paged(PagedKv {
                    block_size: self.kv_block_size,
                    blocks: self.kv_blocks,
                    share_prompts: self.share_prompts,
                }),
                ..Default::default()
            },
        };
        GenerateOptions { decode: self.decode.mode(), prefix_attention: self.prefix_attention, ..opts }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    pub verifier: VerifierChoice,
    /// DAPO's soft overlong punishment.
    pub overlong_penalty: bool,
    pub overlong_buffer: usize,
    pub overlong_factor: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Rollout steps to run.
    pub steps: u64,
    /// Prompts per rollout step (each with `rollout.n` responses).
    pub batch_size: usize,
    /// Prompts per optimizer update (mini-batch); batch_size / mini_batch_size updates per step.
    pub mini_batch_size: usize,
    pub epochs: usize,
    /// Token budget of one forward/backward (micro-batch); sequences are packed up to it.
    pub micro_batch_tokens: usize,
    pub lr: f64,
    /// Linear warm-up over this many rollout steps, starting at lr 0 (verl).
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub grad_clip: f64,
    /// Storage of the bf16 weights' accumulated gradients ([`GradDtype`]); absent in older configurations
    /// and checkpoints, which ran with f32 gradients.
    #[serde(default)]
    pub grad_dtype: GradDtype,
    pub eps_low: f64,
    pub eps_high: f64,
    /// Dual-clip ratio c for negative advantages (verl's clip_ratio_c).
    pub clip_ratio_c: f64,
    /// Divide advantages by the group's std (GRPO/DAPO); false = Dr.GRPO's R − mean.
    pub norm_adv_by_std: bool,
    pub seed: u64,
    /// An update whose loss or gradient norm is not finite is skipped (counted, one warning line); this
    /// many skipped in a row stop the run with an error, `latest` still naming the last checkpoint.
    pub max_consecutive_skips: u64,
    /// Supervised warm start before rollout step 1: this many teacher-forced updates on worked solutions
    /// (needs `data.train = "builtin:chain"`; 0 = none). Run once by a fresh run; a resumed run skips it
    /// (its checkpoint holds the warm-started weights).
    #[serde(default)]
    pub warmup_sft_steps: u64,
    /// Worked solutions per warm-start update.
    #[serde(default = "default_sft_batch")]
    pub warmup_sft_batch: usize,
    /// Learning rate of the warm start (constant).
    #[serde(default = "default_sft_lr")]
    pub warmup_sft_lr: f64,
}

fn default_score() -> TokenScore {
    TokenScore::HNORM
}

fn default_sink_keys() -> usize {
    4
}

fn default_sft_batch() -> usize {
    64
}
fn default_sft_lr() -> f64 {
    1e-3
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// full, random:K, anchors:K, explorers:K, pred-top:K, pred-bottom:K, position-random:K,
    /// position-random-explorers:K, anchors-matched:K, explorers-matched:K, soft.
    pub strategy: String,
    /// 0-based probe layers: the token score is the mean of `score` over them (and every probe layer's
    /// Hnorm is logged and traced).
    pub entropy_layers: Vec<usize>,
    /// The attention statistic the strategies rank tokens by (default: the paper's Hnorm).
    #[serde(default = "default_score")]
    pub score: TokenScore,
    /// Keys counted by `score = "sink"`: the sequence's first N (1 to 64).
    #[serde(default = "default_sink_keys")]
    pub sink_keys: usize,
    pub pool: Pool,
    pub normalizer: Normalizer,
    /// entrl's soft weighting (`soft`): w = floor + (1 − floor)·σ(d(step)·z/τ), z the pool-standardised
    /// score, d moving linearly from `soft_direction_start` to `soft_direction_end` over `soft_ramp_steps`.
    pub soft_temperature: f64,
    pub soft_direction_start: f64,
    pub soft_direction_end: f64,
    pub soft_ramp_steps: u64,
    pub soft_floor: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run directory: config.toml, metrics.jsonl, checkpoints/, plots/.
    pub out_dir: String,
    /// A fresh run refuses a `out_dir` that holds another run's metrics or checkpoints unless this is true
    /// (then that run's metrics, checkpoints and plots are deleted first).
    pub overwrite: bool,
    /// Save a checkpoint every N steps (0 = none along the way; Ctrl-C and the end of the run still save).
    pub save_every: u64,
    /// Save a checkpoint when the run ends.
    pub save_final: bool,
    /// Evaluate mean@k on `data.eval` every N steps (0 = never).
    pub eval_every: u64,
    pub eval_k: usize,
    pub eval_temperature: f64,
    pub eval_top_p: f64,
    /// Gradient geometry every N rollout steps (0 = never): on each update of a diagnosed step, the
    /// gradients of the full, anchors@k, explorers@k, random@k and trained token sets, their norms,
    /// pairwise cosines and cosines with the previous diagnosed update's (`crate::diagnose`). Costs four
    /// extra backward passes per diagnosed update; works with data parallelism (ZeRO-2 shards).
    #[serde(default)]
    pub diagnose_every: u64,
    /// The key's earlier form (`run.diagnose = true` = diagnose every step), still read so that configs
    /// and checkpoints written before `diagnose_every` load; never written.
    #[serde(default, rename = "diagnose", skip_serializing)]
    pub legacy_diagnose: bool,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Print a metrics line every N steps (0 = quiet: nothing on stdout).
    pub log_every: u64,
    /// Stop early once the held-out average (`val/average`) reaches this (0 = never); the built-in demo
    /// uses it.
    pub stop_at_accuracy: f64,
    /// Write the plots at the end of the run.
    pub plot: bool,
    /// Write a token trace (`traces/step_{step:06}.parquet`, one row per response token) every N steps
    /// (0 = never).
    #[serde(default)]
    pub trace_every: u64,
    /// Data-parallel ranks (one worker thread each): 0 = every visible GPU (1 on CPU). On a machine
    /// without GPUs, or with model.device = "cpu", N > 1 runs N CPU ranks (the CI path).
    pub world_size: usize,
    /// `nccl`/`threads` with one rank run the sharded path anyway, e.g. to check NCCL on one GPU.
    pub comm: CommChoice,
    /// A rank waiting longer than this for the others at a host exchange fails the run (seconds).
    pub comm_timeout_s: u64,
    /// Test hook: "RANK:STEP" makes that rank fail when it starts that step (1-based), "RANK:STEP:panic"
    /// makes it panic, "RANK:STEP:kill@PHASE" ends the process at once (exit 137, as `kill -9`) at that
    /// phase of the checkpoint saved after STEP (`crate::checkpoints::SavePhase`); "" = never.
    pub debug_fail_at: String,
    /// Test hook: "STEP" puts a NaN into a weight before the first update of that step (1-based), so its
    /// updates see a non-finite loss; "STEP:grad" puts one into a gradient of that step's first update
    /// only; "" = never.
    pub debug_nan_at: String,
}

/// One configuration key's documented range and its check.
pub struct Rule {
    pub key: &'static str,
    /// What the key accepts, as printed next to it and in the error for a value outside it.
    pub range: &'static str,
    ok: fn(&TrainConfig) -> bool,
}

fn finite_at_least(x: f64, lo: f64) -> bool {
    x.is_finite() && x >= lo
}

fn fraction_open_closed(x: f64) -> bool {
    x > 0.0 && x <= 1.0
}

fn unit_interval_half_open(x: f64) -> bool {
    (0.0..1.0).contains(&x)
}

/// Largest prompt or response length a configuration may ask for (tokens).
pub const MAX_SEQUENCE_PART: usize = 1 << 20;
/// Largest number of responses one generation round may ask for (`rollout.n × rollout.gen_batch_size`).
pub const MAX_ROUND_RESPONSES: usize = 1 << 24;
/// Largest number of data-parallel ranks.
pub const MAX_WORLD_SIZE: usize = 4096;

/// Every key's range. Keys not listed (booleans, seeds, step counts, free-form paths) take any value of
/// their type; enum keys take the names their type lists.
pub const RULES: &[Rule] = &[
    Rule {
        key: "model.path",
        range: "an HF Qwen3 folder, \"builtin\" or \"random:qwen3-{0.6b,1.7b,4b,8b}\"",
        ok: |c| match c.model.path.strip_prefix("random:") {
            Some(shape) => entrl_qwen3::Qwen3Config::named(shape).is_ok(),
            None => !c.model.path.is_empty(),
        },
    },
    Rule {
        key: "model.device",
        range: "auto, cpu, cuda or cuda:N",
        ok: |c| {
            let d = c.model.device.as_str();
            ["auto", "cpu", "cuda"].contains(&d)
                || d.strip_prefix("cuda:")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.len() < 6)
        },
    },
    Rule {
        key: "data.train",
        range: "a .jsonl or .parquet file, \"builtin\" or \"builtin:chain\"",
        ok: |c| !c.data.train.is_empty(),
    },
    Rule {
        key: "train.warmup_sft_steps",
        range: "0, or any with data.train = \"builtin:chain\" (the task with worked solutions)",
        ok: |c| c.train.warmup_sft_steps == 0 || c.data.train == crate::task::CHAIN_SPEC,
    },
    Rule {
        key: "train.warmup_sft_batch",
        range: "1 to 65536",
        ok: |c| (1..=65536).contains(&c.train.warmup_sft_batch),
    },
    Rule {
        key: "train.warmup_sft_lr",
        range: "finite, ≥ 0",
        ok: |c| c.train.warmup_sft_lr.is_finite() && c.train.warmup_sft_lr >= 0.0,
    },
    Rule { key: "data.builtin_max_sum", range: "0 to 9", ok: |c| c.data.builtin_max_sum <= 9 },
    Rule { key: "rollout.n", range: "1 to 1024", ok: |c| (1..=1024).contains(&c.rollout.n) },
    Rule {
        key: "rollout.temperature",
        range: "finite, > 0",
        ok: |c| c.rollout.temperature.is_finite() && c.rollout.temperature > 0.0,
    },
    Rule { key: "rollout.top_p", range: "in (0, 1]", ok: |c| fraction_open_closed(c.rollout.top_p) },
    Rule {
        key: "rollout.max_prompt_len",
        range: "1 to 1048576",
        ok: |c| (1..=MAX_SEQUENCE_PART).contains(&c.rollout.max_prompt_len),
    },
    Rule {
        key: "rollout.max_response_len",
        range: "1 to 1048576",
        ok: |c| (1..=MAX_SEQUENCE_PART).contains(&c.rollout.max_response_len),
    },
    Rule {
        key: "rollout.gen_batch_size",
        range: "≥ 1, with rollout.n × gen_batch_size ≤ 16777216",
        ok: |c| {
            c.rollout.gen_batch_size >= 1 && c.rollout.gen_batch_size.saturating_mul(c.rollout.n) <= MAX_ROUND_RESPONSES
        },
    },
    Rule {
        key: "rollout.max_gen_rounds",
        range: "1 to 100000 (verl's 0 = unlimited can loop forever on a model that solves everything)",
        ok: |c| (1..=100_000).contains(&c.rollout.max_gen_rounds),
    },
    Rule { key: "rollout.max_concurrent", range: "0 (auto) to 65536", ok: |c| c.rollout.max_concurrent <= 65_536 },
    Rule { key: "rollout.kv_block_size", range: "1 to 65536", ok: |c| (1..=65_536).contains(&c.rollout.kv_block_size) },
    Rule {
        key: "rollout.prefix_attention",
        range: "true only with rollout.kv_cache = \"paged\" and rollout.share_prompts = true",
        ok: |c| !c.rollout.prefix_attention || (c.rollout.kv_cache == KvCacheChoice::Paged && c.rollout.share_prompts),
    },
    Rule {
        key: "rollout.kv_blocks",
        range: "0 (auto) to 2147483647 / rollout.kv_block_size",
        ok: |c| c.rollout.kv_blocks.saturating_mul(c.rollout.kv_block_size.max(1)) <= i32::MAX as usize,
    },
    Rule {
        key: "reward.overlong_buffer",
        range: "with reward.overlong_penalty: 1 to rollout.max_response_len − 1",
        ok: |c| {
            !c.reward.overlong_penalty
                || (c.reward.overlong_buffer >= 1 && c.reward.overlong_buffer < c.rollout.max_response_len)
        },
    },
    Rule {
        key: "reward.overlong_factor",
        range: "finite, ≥ 0",
        ok: |c| finite_at_least(c.reward.overlong_factor, 0.0),
    },
    Rule {
        key: "train.batch_size",
        range: "1 to 1000000, a multiple of train.mini_batch_size",
        ok: |c| {
            (1..=1_000_000).contains(&c.train.batch_size)
                && c.train.mini_batch_size >= 1
                && c.train.batch_size.is_multiple_of(c.train.mini_batch_size)
        },
    },
    Rule {
        key: "train.mini_batch_size",
        range: "1 to train.batch_size",
        ok: |c| (1..=c.train.batch_size).contains(&c.train.mini_batch_size),
    },
    Rule { key: "train.epochs", range: "1 to 1000", ok: |c| (1..=1000).contains(&c.train.epochs) },
    Rule {
        key: "train.micro_batch_tokens",
        range: "rollout.max_prompt_len + rollout.max_response_len to 1073741824",
        ok: |c| (c.rollout.max_prompt_len + c.rollout.max_response_len..=1 << 30).contains(&c.train.micro_batch_tokens),
    },
    Rule { key: "train.lr", range: "finite, ≥ 0", ok: |c| finite_at_least(c.train.lr, 0.0) },
    Rule {
        key: "train.weight_decay",
        range: "finite, ≥ 0, with train.lr × weight_decay < 1",
        ok: |c| finite_at_least(c.train.weight_decay, 0.0) && c.train.lr * c.train.weight_decay < 1.0,
    },
    Rule { key: "train.beta1", range: "in [0, 1)", ok: |c| unit_interval_half_open(c.train.beta1) },
    Rule { key: "train.beta2", range: "in [0, 1)", ok: |c| unit_interval_half_open(c.train.beta2) },
    Rule {
        key: "train.grad_clip",
        range: "finite, > 0",
        ok: |c| c.train.grad_clip.is_finite() && c.train.grad_clip > 0.0,
    },
    Rule {
        key: "train.eps_low",
        range: "in [0, 1) (the ratio's lower clip 1 − eps_low stays positive)",
        ok: |c| unit_interval_half_open(c.train.eps_low),
    },
    Rule { key: "train.eps_high", range: "finite, ≥ 0", ok: |c| finite_at_least(c.train.eps_high, 0.0) },
    Rule {
        key: "train.clip_ratio_c",
        range: "finite, > 1 (verl asserts c > 1)",
        ok: |c| c.train.clip_ratio_c.is_finite() && c.train.clip_ratio_c > 1.0,
    },
    Rule { key: "train.max_consecutive_skips", range: "≥ 1", ok: |c| c.train.max_consecutive_skips >= 1 },
    Rule {
        key: "tokens.entropy_layers",
        range: "one or more distinct 0-based layers of the model",
        ok: |c| {
            let l = &c.tokens.entropy_layers;
            !l.is_empty() && l.iter().enumerate().all(|(i, x)| !l[..i].contains(x))
        },
    },
    Rule {
        key: "tokens.soft_temperature",
        range: "finite, > 0",
        ok: |c| c.tokens.soft_temperature.is_finite() && c.tokens.soft_temperature > 0.0,
    },
    Rule { key: "tokens.soft_direction_start", range: "finite", ok: |c| c.tokens.soft_direction_start.is_finite() },
    Rule { key: "tokens.soft_direction_end", range: "finite", ok: |c| c.tokens.soft_direction_end.is_finite() },
    Rule { key: "tokens.soft_floor", range: "in [0, 1)", ok: |c| unit_interval_half_open(c.tokens.soft_floor) },
    Rule { key: "tokens.sink_keys", range: "1 to 64", ok: |c| (1..=64).contains(&c.tokens.sink_keys) },
    Rule { key: "run.out_dir", range: "a folder path", ok: |c| !c.run.out_dir.is_empty() },
    Rule { key: "run.eval_k", range: "1 to 1024", ok: |c| (1..=1024).contains(&c.run.eval_k) },
    Rule {
        key: "run.eval_temperature",
        range: "finite, ≥ 0 (0 = greedy)",
        ok: |c| finite_at_least(c.run.eval_temperature, 0.0),
    },
    Rule { key: "run.eval_top_p", range: "in (0, 1]", ok: |c| fraction_open_closed(c.run.eval_top_p) },
    Rule {
        key: "run.stop_at_accuracy",
        range: "in [0, 1] (0 = never)",
        ok: |c| (0.0..=1.0).contains(&c.run.stop_at_accuracy),
    },
    Rule { key: "run.trace_every", range: "0 (never) to 1000000000", ok: |c| c.run.trace_every <= 1_000_000_000 },
    Rule { key: "run.world_size", range: "0 (every GPU) to 4096", ok: |c| c.run.world_size <= MAX_WORLD_SIZE },
    Rule { key: "run.comm_timeout_s", range: "1 to 1000000", ok: |c| (1..=1_000_000).contains(&c.run.comm_timeout_s) },
    Rule { key: "run.diagnose_every", range: "0 (never) to 1000000000", ok: |c| c.run.diagnose_every <= 1_000_000_000 },
];

/// Keys a resumed run may set differently from the run its checkpoint belongs to: they change how long it
/// runs, where and how it reports, not what it trains. Every other key must equal the checkpoint's.
pub const RESUME_FREE: &[&str] = &[
    "preset",
    "train.steps",
    "train.max_consecutive_skips",
    "model.device",
    "model.checkpoint_activations",
    "rollout.max_concurrent",
    "rollout.kv_cache",
    "rollout.kv_block_size",
    "rollout.kv_blocks",
    "rollout.share_prompts",
    "rollout.decode",
    "rollout.prefix_attention",
    "data.eval",
    "run.",
];

/// Documented ranges of keys that are not in [`RULES`] but are still checked (enums, parsed strings).
fn extra_range(key: &str) -> Option<String> {
    let names = |n: &[&str]| format!("one of {}", n.join(", "));
    Some(match key {
        "preset" => "dapo, builtin or chain".into(),
        "model.dtype" => names(DtypeChoice::NAMES),
        "train.grad_dtype" => names(GradDtype::NAMES),
        "model.checkpoint_activations" => names(Checkpointing::NAMES),
        "rollout.long_prompts" => names(LongPrompts::NAMES),
        "rollout.kv_cache" => names(KvCacheChoice::NAMES),
        "rollout.decode" => names(DecodeChoice::NAMES),
        "rollout.on_short_batch" => names(ShortBatch::NAMES),
        "reward.verifier" => names(VerifierChoice::NAMES),
        "tokens.pool" => names(Pool::NAMES),
        "tokens.score" => names(TokenScore::NAMES),
        "tokens.normalizer" => names(Normalizer::NAMES),
        "run.comm" => names(CommChoice::NAMES),
        "tokens.strategy" => {
            "full, soft, or random|anchors|explorers|pred-top|pred-bottom|position-random|position-random-explorers|\
             anchors-matched|explorers-matched:K with K in (0, 1]"
                .into()
        }
        "run.debug_fail_at" => "\"\", RANK:STEP, RANK:STEP:panic or RANK:STEP:kill@PHASE".into(),
        "run.debug_nan_at" => "\"\", STEP or STEP:grad".into(),
        _ => return None,
    })
}

/// The documented range of `key`, if it has one.
pub fn range_of(key: &str) -> Option<String> {
    RULES.iter().find(|r| r.key == key).map(|r| r.range.to_string()).or_else(|| extra_range(key))
}

impl TrainConfig {
    /// verl's DAPO recipe on a model folder the user names.
    pub fn dapo() -> Self {
        Self {
            preset: "dapo".into(),
            model: ModelConfig {
                path: String::new(),
                tokenizer: String::new(),
                dtype: DtypeChoice::Auto,
                device: "auto".into(),
                checkpoint_activations: Checkpointing::Auto,
            },
            data: DataConfig { train: String::new(), eval: String::new(), builtin_max_sum: 9, shuffle: true },
            rollout: RolloutConfig {
                n: 16,
                temperature: 1.0,
                top_p: 1.0,
                top_k: 0,
                max_prompt_len: 1024,
                max_response_len: 8192,
                long_prompts: LongPrompts::TruncateLeft,
                gen_batch_size: 1536,
                dynamic_sampling: true,
                max_gen_rounds: 10,
                on_short_batch: ShortBatch::Error,
                max_concurrent: 0,
                kv_cache: KvCacheChoice::Paged,
                decode: DecodeChoice::Eager,
                prefix_attention: false,
                kv_block_size: 16,
                kv_blocks: 0,
                share_prompts: true,
            },
            reward: RewardConfig {
                verifier: VerifierChoice::Auto,
                overlong_penalty: true,
                overlong_buffer: 4096,
                overlong_factor: 1.0,
            },
            train: OptimConfig {
                steps: 100,
                batch_size: 512,
                mini_batch_size: 32,
                epochs: 1,
                micro_batch_tokens: 18_432,
                lr: 1e-6,
                warmup_steps: 10,
                weight_decay: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                grad_clip: 1.0,
                grad_dtype: GradDtype::F32,
                eps_low: 0.2,
                eps_high: 0.28,
                clip_ratio_c: 10.0,
                norm_adv_by_std: true,
                seed: 1,
                max_consecutive_skips: 3,
                warmup_sft_steps: 0,
                warmup_sft_batch: default_sft_batch(),
                warmup_sft_lr: default_sft_lr(),
            },
            tokens: TokenConfig {
                strategy: "full".into(),
                entropy_layers: vec![20],
                score: TokenScore::HNORM,
                sink_keys: default_sink_keys(),
                pool: Pool::MiniBatch,
                normalizer: Normalizer::All,
                soft_temperature: SoftWeightSchedule::default().temperature,
                soft_direction_start: SoftWeightSchedule::default().direction_start,
                soft_direction_end: SoftWeightSchedule::default().direction_end,
                soft_ramp_steps: SoftWeightSchedule::default().ramp_steps,
                soft_floor: SoftWeightSchedule::default().floor,
            },
            run: RunConfig {
                out_dir: "runs/dapo".into(),
                overwrite: false,
                save_every: 20,
                save_final: true,
                eval_every: 0,
                eval_k: 8,
                eval_temperature: 1.0,
                eval_top_p: 0.7,
                diagnose_every: 0,
                legacy_diagnose: false,
                progress: true,
                log_every: 1,
                stop_at_accuracy: 0.0,
                plot: true,
                trace_every: 0,
                world_size: 0,
                comm: CommChoice::Auto,
                comm_timeout_s: 7200,
                debug_fail_at: String::new(),
                debug_nan_at: String::new(),
            },
        }
    }

    /// The built-in demo: tiny random-init Qwen3 learning single-digit addition on CPU in minutes.
    pub fn builtin() -> Self {
        let mut c = Self::dapo();
        c.preset = "builtin".into();
        c.model.path = "builtin".into();
        c.data = DataConfig { train: "builtin".into(), eval: "builtin".into(), builtin_max_sum: 9, shuffle: true };
        c.rollout.n = 16;
        c.rollout.max_prompt_len = 16;
        c.rollout.max_response_len = 3;
        c.rollout.gen_batch_size = 24;
        c.rollout.max_gen_rounds = 8;
        c.rollout.on_short_batch = ShortBatch::Train;
        c.rollout.max_concurrent = 1024;
        c.reward.overlong_penalty = false;
        c.train.steps = 400;
        c.train.batch_size = 16;
        c.train.mini_batch_size = 8;
        c.train.micro_batch_tokens = 4096;
        c.train.lr = 1e-3;
        c.train.warmup_steps = 5;
        c.train.weight_decay = 0.0;
        c.tokens.entropy_layers = vec![1];
        c.run.out_dir = "runs/builtin".into();
        c.run.save_every = 0;
        c.run.eval_every = 25;
        c.run.eval_k = 4;
        c.run.stop_at_accuracy = 0.9;
        c
    }

    /// The built-in reasoning task (`builtin:chain`): the tiny Qwen3 warm-started by 200 teacher-forced
    /// updates on worked solutions, then DAPO on multi-step arithmetic answered in a boxed chain.
    pub fn chain() -> Self {
        let mut c = Self::builtin();
        c.preset = "chain".into();
        c.data.train = crate::task::CHAIN_SPEC.into();
        c.data.eval = crate::task::CHAIN_SPEC.into();
        c.rollout.n = 8;
        c.rollout.max_prompt_len = 24;
        c.rollout.max_response_len = 40;
        c.rollout.gen_batch_size = 24;
        c.rollout.max_gen_rounds = 4;
        c.train.steps = 300;
        c.train.batch_size = 32;
        c.train.mini_batch_size = 16;
        c.train.lr = 1e-4;
        c.train.warmup_steps = 0;
        c.train.warmup_sft_steps = 200;
        c.train.warmup_sft_batch = 64;
        c.train.warmup_sft_lr = 1e-3;
        c.run.out_dir = "runs/chain".into();
        c.run.eval_every = 50;
        c.run.eval_k = 2;
        c.run.stop_at_accuracy = 0.0;
        c
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "dapo" => Ok(Self::dapo()),
            "builtin" => Ok(Self::builtin()),
            "chain" => Ok(Self::chain()),
            other => Err(Error::config("preset", format!("preset = {other:?}: must be dapo, builtin or chain"))),
        }
    }

    /// Resolve: the preset (from the overrides, else the file, else `builtin` without a file and `dapo`
    /// with one), then the file's keys, then the overrides; then every range is checked.
    pub fn resolve(file: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let file_value = file.map(read_table).transpose()?;
        Self::resolve_tables(file_value.map(|t| (t, file.expect("file given"))), overrides)
    }

    /// [`TrainConfig::resolve`] from an already-read file table (`(table, path for messages)`).
    pub fn resolve_tables(file: Option<(toml::Table, &Path)>, overrides: &[String]) -> Result<Self> {
        let parsed: Vec<(Vec<String>, toml::Value)> =
            overrides.iter().map(|o| parse_override(o)).collect::<Result<_, _>>()?;
        let as_name = |v: &toml::Value| {
            v.as_str().map(String::from).ok_or_else(|| Error::config("preset", "preset must be a string"))
        };
        let preset = parsed
            .iter()
            .rev()
            .find(|(k, _)| k.len() == 1 && k[0] == "preset")
            .map(|(_, v)| as_name(v))
            .or_else(|| file.as_ref().and_then(|(t, _)| t.get("preset")).map(as_name))
            .transpose()?
            .unwrap_or_else(|| if file.is_some() { "dapo".into() } else { "builtin".into() });
        let base = Self::preset(&preset)?;
        let mut tree = to_table(&base)?;
        if let Some((f, path)) = file {
            merge(&mut tree, f, "").map_err(|e| e.in_config_file(path))?;
        }
        for (path, value) in parsed {
            set_path(&mut tree, &path, value)?;
        }
        tree.insert("preset".into(), toml::Value::String(preset));
        Self::from_table(tree)
    }

    /// [`TrainConfig::resolve`] starting from a complete configuration (a checkpoint's) instead of a
    /// preset and a file; `origin` names where it came from in messages.
    pub fn resolve_on(base: &TrainConfig, origin: &Path, overrides: &[String]) -> Result<Self> {
        let table = to_table(base)?;
        Self::resolve_tables(Some((table, origin)), overrides)
    }

    /// A complete table (every key present) as a checked configuration: a wrong type names its key.
    pub fn from_table(tree: toml::Table) -> Result<Self> {
        let cfg: TrainConfig = serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let msg = format!("configuration key {key}: {}", inner.lines().next().unwrap_or_default());
            Error::config(key, msg)
        })?;
        let mut cfg = cfg;
        if std::mem::take(&mut cfg.run.legacy_diagnose) && cfg.run.diagnose_every == 0 {
            cfg.run.diagnose_every = 1;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved configuration as TOML (saved in the run directory and in every checkpoint).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serializes")
    }

    /// [`TrainConfig::to_toml`] with each key's documented range as a comment beside it (printed at start).
    pub fn to_toml_annotated(&self) -> String {
        let mut section = String::new();
        let mut out = String::new();
        for line in self.to_toml().lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = format!("{name}.");
            }
            let key = t.split_once(" = ").map(|(k, _)| format!("{section}{k}"));
            match key.as_deref().and_then(range_of) {
                Some(range) => out += &format!("{line}  # {range}\n"),
                None => out += &format!("{line}\n"),
            }
        }
        out
    }

    pub fn strategy(&self) -> Result<Strategy> {
        let s: Strategy = self.tokens.strategy.parse()?;
        Ok(match s {
            Strategy::Soft(_) => Strategy::Soft(SoftWeightSchedule {
                temperature: self.tokens.soft_temperature,
                direction_start: self.tokens.soft_direction_start,
                direction_end: self.tokens.soft_direction_end,
                ramp_steps: self.tokens.soft_ramp_steps,
                floor: self.tokens.soft_floor,
            }),
            s => s,
        })
    }

    /// Every key against its range (the first failure is the error, naming the key, its value and the range).
    pub fn validate(&self) -> Result<()> {
        let tree = to_table(self)?;
        let value = |key: &str| lookup(&tree, key).map_or_else(|| "?".into(), |v| v.to_string());
        // The key's value in front of the parser's message.
        let with_value =
            |key: &'static str, value: String| move |e: Error| Error::config(key, format!("{key} = {value}: {e}"));
        self.strategy().map_err(with_value("tokens.strategy", format!("{:?}", self.tokens.strategy)))?;
        parse_fail_at(&self.run.debug_fail_at).map_err(with_value("run.debug_fail_at", value("run.debug_fail_at")))?;
        parse_nan_at(&self.run.debug_nan_at).map_err(with_value("run.debug_nan_at", value("run.debug_nan_at")))?;
        for r in RULES {
            if !(r.ok)(self) {
                return Err(Error::config(r.key, format!("{} = {}: must be {}", r.key, value(r.key), r.range)));
            }
        }
        Ok(())
    }

    /// The keys whose values differ between `self` and `other` and may not differ on resume (see
    /// [`RESUME_FREE`]), as "key: theirs → ours" lines.
    pub fn resume_conflicts(&self, checkpoint: &TrainConfig) -> Vec<String> {
        let (a, b) = (flatten(checkpoint), flatten(self));
        let free = |k: &str| RESUME_FREE.iter().any(|f| if f.ends_with('.') { k.starts_with(f) } else { k == *f });
        let mut out = Vec::new();
        for (k, va) in &a {
            let vb = b.iter().find(|(kb, _)| kb == k).map(|(_, v)| v);
            if !free(k) && vb != Some(va) {
                out.push(format!("{k}: {va} → {}", vb.map_or("(absent)".into(), |v| v.to_string())));
            }
        }
        out
    }
}

/// Read a TOML configuration file (a regular file) into a table.
pub fn read_table(p: &Path) -> Result<toml::Table> {
    let text = entrl_qwen3::files::read_to_string(p)?;
    toml::from_str(&text).map_err(|e| Error::config("", format!("not valid TOML: {e}")).in_config_file(p))
}

/// A configuration as a TOML table (it always serializes: every field is a plain value).
fn to_table(c: &TrainConfig) -> Result<toml::Table> {
    toml::Table::try_from(c).map_err(|e| Error::config("", format!("the configuration does not serialize: {e}")))
}

/// Every leaf of the configuration as ("section.key", value).
fn flatten(c: &TrainConfig) -> Vec<(String, toml::Value)> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in t {
            let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(inner) => walk(inner, &name, out),
                v => out.push((name, v.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk(&toml::Table::try_from(c).expect("the configuration serializes"), "", &mut out);
    out
}

fn lookup<'t>(tree: &'t toml::Table, key: &str) -> Option<&'t toml::Value> {
    let mut parts = key.split('.');
    let mut v = tree.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// `a.b.c=value`: the value is read as a TOML value (number, bool, string, array), else as a bare string.
fn parse_override(s: &str) -> Result<(Vec<String>, toml::Value)> {
    let (k, v) =
        s.split_once('=').ok_or_else(|| Error::config(s.trim(), format!("override {s:?} is not key=value")))?;
    let path: Vec<String> = k.trim().split('.').map(|p| p.trim().to_string()).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(Error::config(k.trim(), format!("override {s:?}: empty key segment")));
    }
    let v = v.trim();
    let value = toml::from_str::<toml::Table>(&format!("x = {v}"))
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()));
    Ok((path, value))
}

/// The error of a key no section has (with the new name of a renamed one).
fn unknown_key(name: &str) -> Error {
    let msg = match name {
        "run.diagnose" => "unknown configuration key \"run.diagnose\": it is run.diagnose_every = N now (every N-th \
                           step; `entrl train --diagnose` = 1)"
            .into(),
        _ => format!("unknown configuration key {name:?}"),
    };
    Error::config(name, msg)
}

/// The error of a section given a value.
fn section_set(name: &str) -> Error {
    Error::config(name, format!("{name:?} is a section; set one of its keys"))
}

/// Merge `src` into `dst`; a key `dst` does not have is an error (typos must not pass silently).
fn merge(dst: &mut toml::Table, src: toml::Table, prefix: &str) -> Result<()> {
    for (k, v) in src {
        let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => merge(d, s, &name)?,
            (Some(toml::Value::Table(_)), _) => return Err(section_set(&name)),
            (Some(slot), v) => *slot = coerce(slot, v),
            (None, _) => return Err(unknown_key(&name)),
        }
    }
    Ok(())
}

/// A float key given as an integer (`lr=1`) is still a float.
fn coerce(slot: &toml::Value, value: toml::Value) -> toml::Value {
    match (slot, value) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
        (_, v) => v,
    }
}

fn set_path(tree: &mut toml::Table, path: &[String], value: toml::Value) -> Result<()> {
    let name = path.join(".");
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = tree;
    for p in parents {
        t = match t.get_mut(p) {
            Some(toml::Value::Table(inner)) => inner,
            _ => return Err(unknown_key(&name)),
        };
    }
    match t.get_mut(last) {
        Some(toml::Value::Table(_)) => Err(section_set(&name)),
        Some(slot) => {
            *slot = coerce(slot, value);
            Ok(())
        }
        None => Err(unknown_key(&name)),
    }
}

/// How `run.debug_fail_at` fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// An error at the start of the step.
    Error,
    /// A panic at the start of the step.
    Panic,
    /// Process exit 137 (no unwinding, no cleanup) at a phase of the checkpoint saved after the step.
    Kill(crate::checkpoints::SavePhase),
}

/// A parsed `run.debug_fail_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailAt {
    pub rank: usize,
    pub step: u64,
    pub kind: FailKind,
}

/// `run.debug_fail_at` = "" | "RANK:STEP" | "RANK:STEP:panic" | "RANK:STEP:kill@PHASE".
pub fn parse_fail_at(s: &str) -> Result<Option<FailAt>> {
    if s.is_empty() {
        return Ok(None);
    }
    let phases = crate::checkpoints::SavePhase::NAMES.join(", ");
    let bad = || {
        let msg = format!("expected RANK:STEP, RANK:STEP:panic or RANK:STEP:kill@PHASE (PHASE: {phases})");
        Error::config("run.debug_fail_at", msg)
    };
    let parts: Vec<&str> = s.split(':').map(str::trim).collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad());
    }
    let kind = match parts.get(2) {
        None => FailKind::Error,
        Some(&"panic") => FailKind::Panic,
        Some(k) => match k.strip_prefix("kill@") {
            Some(phase) => FailKind::Kill(phase.parse().map_err(|_| bad())?),
            None => return Err(bad()),
        },
    };
    Ok(Some(FailAt { rank: parts[0].parse().map_err(|_| bad())?, step: parts[1].parse().map_err(|_| bad())?, kind }))
}

/// A parsed `run.debug_nan_at`: the step (1-based) and whether the NaN goes into a gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NanAt {
    pub step: u64,
    pub grad: bool,
}

/// `run.debug_nan_at` = "" | "STEP" | "STEP:grad".
pub fn parse_nan_at(s: &str) -> Result<Option<NanAt>> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || Error::config("run.debug_nan_at", "expected STEP or STEP:grad (STEP ≥ 1)");
    let (step, grad) = match s.split_once(':') {
        Some((st, "grad")) => (st, true),
        Some(_) => return Err(bad()),
        None => (s, false),
    };
    let step: u64 = step.trim().parse().map_err(|_| bad())?;
    if step == 0 {
        return Err(bad());
    }
    Ok(Some(NanAt { step, grad }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(o: &[&str]) -> String {
        TrainConfig::resolve(None, &o.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err().to_string()
    }

    #[test]
    fn presets_overrides_and_errors() {
        let c = TrainConfig::resolve(None, &[]).unwrap();
        assert_eq!(c, TrainConfig::builtin());
        let c = TrainConfig::resolve(None, &["train.lr=1e-2".into(), "tokens.strategy=anchors:0.2".into()]).unwrap();
        assert_eq!(c.train.lr, 1e-2);
        assert_eq!(c.tokens.strategy, "anchors:0.2");
        for name in ["anchors-matched:0.2", "explorers-matched:30%", "position-random-explorers:0.2"] {
            let c = TrainConfig::resolve(None, &[format!("tokens.strategy={name}")]).unwrap();
            assert_eq!(c.strategy().unwrap(), name.parse().unwrap(), "{name}");
        }
        assert!(err(&["tokens.strategy=anchors-matched"]).contains("needs a fraction"));
        let c =
            TrainConfig::resolve(None, &["preset=dapo".into(), "model.path=/m".into(), "data.train=x.jsonl".into()])
                .unwrap();
        assert_eq!(c.rollout.n, 16);
        assert_eq!(c.train.lr, 1e-6);
        assert_eq!(c.rollout.long_prompts, LongPrompts::TruncateLeft, "verl's DAPO recipe truncates left");
        assert!(err(&["train.lrr=1"]).contains("unknown configuration key \"train.lrr\""));
        assert!(err(&["tokens.strategy=middle:0.2"]).contains("unknown token strategy"));
        assert!(err(&["train.batch_size=5"]).contains("multiple of train.mini_batch_size"));
        assert!(err(&["preset=dapo"]).contains("model.path = \"\": must be"));
        // prefix attention reads shared prompt blocks: it needs them
        let c = TrainConfig::resolve(None, &["rollout.prefix_attention=true".into(), "rollout.decode=graph".into()])
            .unwrap();
        let o = c.rollout.generate_options(1);
        assert!(o.prefix_attention && o.decode == entrl_qwen3::DecodeMode::Graph);
        for bad in ["rollout.kv_cache=contiguous", "rollout.share_prompts=false"] {
            let e = err(&["rollout.prefix_attention=true", bad]);
            assert!(e.contains("rollout.prefix_attention") && e.contains("paged"), "{e}");
        }
        assert!(err(&["rollout.decode=graphs"]).contains("rollout.decode"));
    }

    /// Each value the hostile-user report found accepted, or refused only after a model load, is refused
    /// at resolution with the key, the value and the range.
    #[test]
    fn every_out_of_range_value_is_refused_naming_its_key() {
        for (o, want) in [
            ("train.lr=inf", "train.lr = inf: must be finite, ≥ 0"),
            ("train.lr=nan", "train.lr = nan"),
            ("train.beta2=-1", "train.beta2 = -1.0: must be in [0, 1)"),
            ("train.beta1=2", "train.beta1 = 2.0"),
            ("train.weight_decay=-5", "train.weight_decay = -5.0"),
            ("train.eps_low=1.5", "train.eps_low = 1.5"),
            ("train.clip_ratio_c=0.5", "train.clip_ratio_c = 0.5: must be finite, > 1"),
            ("tokens.soft_temperature=0", "tokens.soft_temperature = 0.0"),
            ("rollout.max_gen_rounds=0", "rollout.max_gen_rounds = 0"),
            ("tokens.strategy=full:0.5", "strategy \"full\" takes no argument"),
            ("tokens.strategy=soft:garbage", "strategy \"soft\" takes no argument"),
            ("tokens.strategy=anchors:0", "fraction 0 outside (0, 1]"),
            ("data.builtin_max_sum=12", "data.builtin_max_sum = 12: must be 0 to 9"),
            ("rollout.top_p=0", "rollout.top_p = 0.0"),
            ("run.eval_k=0", "run.eval_k = 0"),
            ("run.trace_every=2000000000", "run.trace_every = 2000000000"),
            ("tokens.entropy_layers=[1, 1]", "tokens.entropy_layers = [1, 1]"),
            ("model.device=gpu", "model.device = \"gpu\""),
            ("model.path=random:qwen3-99b", "model.path = \"random:qwen3-99b\""),
            ("run.world_size=100000", "run.world_size = 100000"),
            ("reward.overlong_penalty=true", "reward.overlong_buffer = 4096: must be with reward.overlong_penalty"),
            ("run.debug_fail_at=0:x", "run.debug_fail_at"),
            ("run.debug_nan_at=0", "run.debug_nan_at"),
        ] {
            let e = err(&[o]);
            assert!(e.contains(want), "{o}: {e}");
        }
        // Type errors and enum names name the key.
        let e = err(&["train.steps=\"many\""]);
        assert!(e.contains("train.steps") && e.contains("invalid type"), "{e}");
        let e = err(&["train.steps=-3"]);
        assert!(e.contains("train.steps"), "{e}");
        let e = err(&["tokens.pool=everything"]);
        assert!(e.contains("tokens.pool") && e.contains("mini-batch"), "{e}");
        let e = err(&["train.grad_dtype=fp16"]);
        assert!(e.contains("train.grad_dtype") && e.contains("bf16") && e.lines().count() == 1, "{e}");
        let e = err(&["rollout.long_prompts=cut"]);
        assert!(e.contains("rollout.long_prompts") && e.contains("truncate-left"), "{e}");
        assert!(err(&["tokens=1"]).contains("\"tokens\" is a section"));
    }

    #[test]
    fn the_printed_configuration_carries_each_range_and_reads_back() {
        let c = TrainConfig::builtin();
        let text = c.to_toml_annotated();
        assert!(text.contains("lr = 0.001  # finite, ≥ 0"), "{text}");
        assert!(text.contains("pool = \"mini-batch\"  # one of micro-batch, mini-batch, sequence"), "{text}");
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(TrainConfig::from_table(t).unwrap(), c);
    }

    #[test]
    fn resume_conflicts_name_the_keys_that_change_training() {
        let a = TrainConfig::builtin();
        let mut b = a.clone();
        b.train.steps = 999;
        b.run.out_dir = "elsewhere".into();
        b.rollout.max_concurrent = 7;
        assert!(b.resume_conflicts(&a).is_empty());
        b.train.lr = 2e-3;
        b.tokens.strategy = "anchors:0.2".into();
        let c = b.resume_conflicts(&a);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c.iter().any(|l| l.starts_with("train.lr: 0.001 → 0.002")), "{c:?}");
        assert!(c.iter().any(|l| l.starts_with("tokens.strategy")), "{c:?}");
    }

    #[test]
    fn the_legacy_diagnose_key_reads_as_every_step() {
        let c = TrainConfig::builtin();
        let mut t: toml::Table = toml::from_str(&c.to_toml()).unwrap();
        assert!(!c.to_toml().contains("diagnose ="), "the legacy key is never written");
        t["run"].as_table_mut().unwrap().insert("diagnose".into(), true.into());
        let old = TrainConfig::from_table(t).unwrap();
        assert_eq!(old.run.diagnose_every, 1);
        assert!(!old.run.legacy_diagnose);
        let e = TrainConfig::resolve(None, &["run.diagnose=true".into()]).unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "run.diagnose"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("run.diagnose_every"), "{e}");
        let n = TrainConfig::resolve(None, &["run.diagnose_every=5".into()]).unwrap();
        assert_eq!(n.run.diagnose_every, 5);
    }

    #[test]
    fn file_round_trip() {
        let dir = std::env::temp_dir().join(format!("entrl-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        let mut c = TrainConfig::builtin();
        c.train.steps = 7;
        std::fs::write(&p, c.to_toml()).unwrap();
        assert_eq!(TrainConfig::resolve(Some(&p), &[]).unwrap(), c);
        std::fs::write(&p, "[train]\nsteps = 3\nbogus = 1\n").unwrap();
        let e = TrainConfig::resolve(Some(&p), &["preset=builtin".into()]).unwrap_err();
        assert!(matches!(&e, Error::Config { key, file: Some(f), .. } if key == "train.bogus" && f == &p), "{e:?}");
        assert!(e.to_string().contains("train.bogus"), "{e}");
        std::fs::write(&p, "[train]\nlr = \"fast\"\n").unwrap();
        let e = TrainConfig::resolve(Some(&p), &["preset=builtin".into()]).unwrap_err().to_string();
        assert!(e.contains("train.lr"), "{e}");
        std::fs::write(&p, "[train\n").unwrap();
        assert!(TrainConfig::resolve(Some(&p), &[]).unwrap_err().to_string().contains("not valid TOML"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
