//! `entrl plan`: per-GPU memory budget and estimated DAPO step time for data-parallel training with ZeRO-2
//! on H100s (the model and its sources: `rl/src/plan.rs`). Exit code 0 when the plan fits, 1 when not.
use entrl_qwen3::Qwen3Config;
use entrl_rl::plan::{self, PlanInput};
use std::path::Path;
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
    /// Mean response length in tokens.
    #[arg(long, default_value_t = 3000)]
    mean_response: usize,
    /// Mean prompt length in tokens.
    #[arg(long, default_value_t = 300)]
    prompt_tokens: usize,
    /// Sequences decoding at once per GPU (rollout.max_concurrent); each holds a KV slot of --seq tokens.
    /// 0 = auto, as training resolves it on a GPU.
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
    /// entrl's measured `entrl bench train-step` tokens/s (qwen3-8b, 8192 tokens) instead of the torch anchor.
    #[arg(long)]
    train_tokens_per_s_8b: Option<f64>,
}

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
    let mut input = PlanInput {
        gpus: a.gpus,
        sharded: a.gpus > 1,
        seq: a.seq,
        micro_batch_tokens: a.micro_batch_tokens,
        prompts_per_step: a.prompts,
        n: a.n,
        prompt_tokens: a.prompt_tokens,
        mean_response: a.mean_response,
        max_concurrent: a.max_concurrent,
        updates_per_step: a.updates_per_step,
        gpu_mem_gib: a.gpu_mem_gib,
        usable_fraction: a.usable_fraction,
        checkpointing: !a.no_checkpointing,
        train_tokens_per_s_8b: a.train_tokens_per_s_8b,
        ..PlanInput::new(model)
    };
    input.resolve_max_concurrent(true);
    input.validate_with(&flag)?;
    let (mem, time) = plan::plan(&input);
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
    println!("assumptions: see `rl/src/plan.rs` and ARCHITECTURE.md");
    Ok(if mem.fits() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
