//! `entrl plan`: per-GPU memory budget and estimated DAPO step time for data-parallel training with ZeRO-2
//! on H100s (the model and its sources: `rl/src/plan.rs`). Exit code 0 when the plan fits, 1 when not.
use entrl_qwen3::Qwen3Config;
use entrl_rl::config::GradDtype;
use entrl_rl::plan::paged::{self, DecodeMode, KvCache, PagedConfig};
use entrl_rl::plan::{self, PlanInput};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A named shape (qwen3-0.6b, qwen3-1.7b, qwen3-4b, qwen3-8b) or an HF Qwen3 folder with config.json.
    #[arg(long)]
    model: String,
    /// GPUs in the data-parallel group (ZeRO-2 shards the optimizer over them).
    #[arg(long, default_value_t = 8)]
    gpus: usize,
    /// Prompt + response tokens per sequence (max_prompt_len + max_response_len).
    #[arg(long, default_value_t = 9216)]
    seq: usize,
    /// Token budget of one forward/backward (train.micro_batch_tokens).
    #[arg(long, default_value_t = 18_432)]
    micro_batch_tokens: usize,
    /// Prompts per step (train.batch_size).
    #[arg(long, default_value_t = 512)]
    prompts: usize,
    /// Responses per prompt (rollout.n).
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Mean response length in tokens [default: 3000, dapo.md §12's example]. The paged model samples the
    /// lengths from a seeded lognormal with this mean, clipped at --max-response.
    #[arg(long, conflicts_with = "metrics")]
    mean_response: Option<usize>,
    /// A run's metrics.jsonl: the mean response length it logged (`response_len_mean`) instead of
    /// --mean-response.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Longest response (rollout.max_response_len) [default: 8192, DAPO's, at most --seq − --prompt-tokens].
    #[arg(long)]
    max_response: Option<usize>,
    /// The rollout engine the step total uses; both estimates are printed side by side.
    #[arg(long, value_enum, default_value_t = KvCacheArg::Paged)]
    kv_cache: KvCacheArg,
    /// Tokens per KV block (rollout.kv_block_size), paged model.
    #[arg(long, default_value_t = paged::DEFAULT_KV_BLOCK_SIZE)]
    kv_block_size: usize,
    /// KV blocks in the pool (rollout.kv_blocks), paged model; 0 = what the memory plan leaves.
    #[arg(long, default_value_t = 0)]
    kv_blocks: usize,
    /// The n responses of a prompt share its prompt's KV blocks and prefill (rollout.share_prompts).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    share_prompts: bool,
    /// Decode attention reads a shared prompt's blocks once per group of its responses
    /// (rollout.prefix_attention), paged model with shared prompts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    prefix_attention: bool,
    /// How the paged model's decode steps run: one CUDA graph replay a step, or kernel by kernel.
    #[arg(long, value_enum, default_value_t = DecodeArg::Graph)]
    decode: DecodeArg,
    /// Mean prompt length in tokens.
    #[arg(long, default_value_t = 300)]
    prompt_tokens: usize,
    /// Sequences decoding at once per GPU (rollout.max_concurrent); contiguous: each holds a KV slot of
    /// --seq tokens, 0 = auto as training resolves it on a GPU; paged: a cap, 0 = as many as the blocks allow.
    #[arg(long, default_value_t = 0)]
    max_concurrent: usize,
    /// Optimizer updates per step (train.batch_size / train.mini_batch_size).
    #[arg(long, default_value_t = 16)]
    updates_per_step: usize,
    /// GPU memory in GiB and the share of it that is usable.
    #[arg(long, default_value_t = 80.0)]
    gpu_mem_gib: f64,
    #[arg(long, default_value_t = 0.95)]
    usable_fraction: f64,
    /// Keep every layer's activations (no per-layer recompute).
    #[arg(long)]
    no_checkpointing: bool,
    /// Storage of the bf16 weights' accumulated gradients (train.grad_dtype): bf16 halves them.
    #[arg(long, default_value = "f32", value_parser = crate::train::choice::<GradDtype>(GradDtype::NAMES))]
    grad_dtype: GradDtype,
    /// entrl's measured `entrl bench train-step` tokens/s (qwen3-8b, 8192 tokens) instead of the torch anchor.
    #[arg(long)]
    train_tokens_per_s_8b: Option<f64>,
    /// Also plan the gradient diagnostics run every N steps (run.diagnose_every): their extra GPU and host
    /// memory and seconds per diagnosed update.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    diagnose_every: Option<u64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KvCacheArg {
    Paged,
    Contiguous,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DecodeArg {
    Graph,
    Eager,
}

/// Default mean response length: dapo.md §12's example (3,000-token responses after 300-token prompts).
const DEFAULT_MEAN_RESPONSE: usize = 3000;

fn load_model(spec: &str) -> Result<Qwen3Config, String> {
    let dir = Path::new(spec);
    if dir.is_dir() {
        return Qwen3Config::from_file(&dir.join("config.json")).map_err(|e| e.to_string());
    }
    Qwen3Config::named(spec).map_err(|e| format!("{e}; nor is {spec:?} a folder with a config.json"))
}

/// The flag that sets a [`PlanInput`] field.
fn flag(field: &'static str) -> String {
    match field {
        "prompts_per_step" => "--prompts".into(),
        "weight_bytes" => "the weight size".into(),
        f => format!("--{}", f.replace('_', "-")),
    }
}

pub fn run(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let model = load_model(&a.model)?;
    let logged = a.metrics.as_deref().map(paged::logged_lengths).transpose()?;
    let mean_response = match (&logged, a.mean_response) {
        (Some(l), _) => match l.mean.round() {
            x if x < 1.0 => {
                let path = a.metrics.as_deref().unwrap_or(Path::new("")).display();
                return Err(format!("{path}: mean response length {:.2} rounds to 0 tokens", l.mean).into());
            }
            x => x.min(usize::MAX as f64) as usize,
        },
        (None, m) => m.unwrap_or(DEFAULT_MEAN_RESPONSE),
    };
    let mut input = PlanInput {
        gpus: a.gpus,
        sharded: a.gpus > 1,
        seq: a.seq,
        micro_batch_tokens: a.micro_batch_tokens,
        prompts_per_step: a.prompts,
        n: a.n,
        prompt_tokens: a.prompt_tokens,
        mean_response,
        max_concurrent: a.max_concurrent,
        updates_per_step: a.updates_per_step,
        gpu_mem_gib: a.gpu_mem_gib,
        usable_fraction: a.usable_fraction,
        checkpointing: !a.no_checkpointing,
        grad_dtype: a.grad_dtype,
        train_tokens_per_s_8b: a.train_tokens_per_s_8b,
        ..PlanInput::new(model)
    };
    let cfg = PagedConfig {
        block_size: a.kv_block_size,
        blocks: a.kv_blocks,
        share_prompts: a.share_prompts,
        prefix_attention: a.prefix_attention,
        decode: match a.decode {
            DecodeArg::Graph => DecodeMode::Graph,
            DecodeArg::Eager => DecodeMode::Eager,
        },
        max_response: a.max_response.unwrap_or(PagedConfig::new(&input).max_response),
        max_batch: a.max_concurrent,
    };
    input.resolve_max_concurrent(true);
    input.validate_with(&flag)?;
    cfg.validate_with(&input, &flag)?;
    let (mem, time) = plan::plan(&input);
    // An explicit pool that cannot work is an input error; an auto pool that cannot (the rest of the plan
    // leaves too little memory) is a plan that does not fit.
    let new = match paged::paged_rollout(&input, &cfg) {
        Err(e) if cfg.blocks != 0 => return Err(e.to_string().into()),
        r => r,
    };
    let kv = match a.kv_cache {
        KvCacheArg::Paged => KvCache::Paged,
        KvCacheArg::Contiguous => KvCache::Contiguous,
    };
    println!(
        "entrl plan: {} ({} parameters), {} × H100 {} GiB, data-parallel + bucketed ZeRO-2, seq {}, checkpointing {}",
        a.model,
        match input.model.num_params() as f64 {
            p if p >= 1e9 => format!("{:.2} B", p / 1e9),
            p => format!("{:.2} M", p / 1e6),
        },
        input.gpus,
        input.gpu_mem_gib,
        input.seq,
        if input.checkpointing { "on" } else { "off" }
    );
    print!("{}", mem.table());
    match mem.refusal() {
        None => print!("fits"),
        Some(why) => print!("does NOT fit: {why}"),
    }
    match plan::max_concurrent_fitting(&input) {
        0 => println!(),
        c => println!(" (largest max_concurrent that fits: {c})"),
    }
    print!("{}", time.table());
    if let (Some(l), Some(path)) = (&logged, &a.metrics) {
        println!(
            "response lengths from {}: mean {:.1} over {} steps, longest logged {}",
            path.display(),
            l.mean,
            l.steps,
            l.max
        );
    }
    match &new {
        Ok(new) => print!("{}", paged::side_by_side(&input, &time, new, kv)),
        Err(e) => println!("paged rollout: not estimated: {e}"),
    }
    if let Some(every) = a.diagnose_every {
        print!("{}", plan::diagnose::diagnose_plan(&input, every).table(&time));
    }
    println!("assumptions: see `rl/src/plan.rs` and ARCHITECTURE.md");
    let paged_ok = new.is_ok() || kv == KvCache::Contiguous;
    Ok(if mem.fits() && paged_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
