//! `entrl train` (the DAPO loop; with no arguments the built-in demo), `entrl eval` (mean@k of a model
//! folder on a dataset) and `entrl plot` (charts of a run's metrics).
use entrl_rl::eval::evaluate;
use entrl_rl::rollout::encode_prompts;
use entrl_rl::session::resolve_device;
use entrl_rl::TrainConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// TOML configuration (defaults: the `dapo` preset with a file, the built-in demo without).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue a run exactly: a run directory (its latest checkpoint) or a checkpoint folder. Without
    /// --config the run directory's saved config.toml is used.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Token strategy (same as tokens.strategy=...): full, random:K, anchors:K, explorers:K, pred-top:K,
    /// pred-bottom:K, position-random:K, soft.
    #[arg(long)]
    strategy: Option<String>,
    /// Gradient geometry and anchor/explorer statistics per update (run.diagnose=true).
    #[arg(long)]
    diagnose: bool,
    /// Data-parallel GPUs, one worker thread each (run.world_size; default: every visible GPU).
    #[arg(long)]
    gpus: Option<usize>,
    /// Print the resolved configuration and exit.
    #[arg(long)]
    dry_run: bool,
    /// Overrides of any configuration key, e.g. train.lr=2e-6 rollout.n=8 run.out_dir=runs/x.
    #[arg(value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn train(a: &TrainArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut overrides = a.overrides.clone();
    if let Some(s) = &a.strategy {
        overrides.push(format!("tokens.strategy={s:?}"));
    }
    if a.diagnose {
        overrides.push("run.diagnose=true".into());
    }
    if let Some(n) = a.gpus {
        overrides.push(format!("run.world_size={n}"));
    }
    // The resumed run's own config (run_dir/config.toml, beside checkpoints/step_N) unless --config is given.
    let saved = a.resume.as_ref().and_then(|r| {
        let ck = entrl_rl::run::find_checkpoint(r).ok()?;
        Some(ck.parent()?.parent()?.join("config.toml")).filter(|p| p.is_file())
    });
    let file = a.config.clone().or(saved);
    let cfg = TrainConfig::resolve(file.as_deref(), &overrides)?;
    if a.dry_run {
        print!("{}", cfg.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let summary = entrl_rl::train(cfg, a.resume.as_deref())?;
    if let (Some(first), Some(last)) = (summary.evals.first(), summary.evals.last()) {
        println!("eval accuracy: {:.3} at step {} → {:.3} at step {}", first.1, first.0, last.1, last.0);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// HF Qwen3 folder (a training checkpoint folder works too).
    #[arg(long)]
    model: PathBuf,
    /// verl-layout .jsonl prompts, or `builtin` (the built-in addition task).
    #[arg(long)]
    data: String,
    /// Samples per prompt (mean@k), 1 to 1024.
    #[arg(long, default_value_t = 8)]
    k: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0.7)]
    top_p: f64,
    #[arg(long, default_value_t = 8192)]
    max_response_len: usize,
    #[arg(long, default_value_t = 1024)]
    max_prompt_len: usize,
    #[arg(long, default_value_t = 256)]
    max_concurrent: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or cuda:N (default: the first GPU if there is one).
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn eval(a: &EvalArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use entrl_qwen3::{Qwen3, SamplingParams, Tokenizer};
    if !(1..=entrl_rl::eval::MAX_K).contains(&a.k) {
        return Err(format!("--k {}: mean@k takes 1 to {} samples per prompt", a.k, entrl_rl::eval::MAX_K).into());
    }
    let device = resolve_device(&a.device)?;
    let dtype = device.default_dtype();
    let tok = Tokenizer::from_dir(&a.model)?;
    let model = Qwen3::load(&a.model, dtype, &device)?;
    let rows = if a.data == "builtin" {
        entrl_rl::task::builtin_prompts(9)
    } else {
        entrl_rl::data::read_prompts(std::path::Path::new(&a.data))?
    };
    let (prompts, dropped) = encode_prompts(&rows, &tok, a.max_prompt_len)?;
    if dropped > 0 {
        eprintln!("note: {dropped} prompts longer than {} tokens were skipped", a.max_prompt_len);
    }
    let params = SamplingParams { temperature: a.temperature, top_p: a.top_p, top_k: 0 };
    let verifier = entrl_rl::reward::verifier_for;
    let t0 = std::time::Instant::now();
    let rep =
        evaluate(&model, &tok, &prompts, 0, a.k, params, a.max_response_len, a.max_concurrent, &verifier, a.seed)?;
    print!("{}", rep.table());
    eprintln!("[{} prompts × {} samples in {:.1} s on {device}]", prompts.len(), a.k, t0.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct PlotArgs {
    /// A run directory (with metrics.jsonl).
    run_dir: PathBuf,
}

pub fn plot(a: &PlotArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    for p in entrl_rl::plot::plot_run(&a.run_dir)? {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
