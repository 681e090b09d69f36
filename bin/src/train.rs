//! `entrl train` (the DAPO loop; with no arguments the built-in demo), `entrl eval` (mean@k of a model
//! folder on a dataset) and `entrl plot` (charts of a run's metrics).
use entrl_rl::config::{DecodeChoice, LongPrompts, VerifierChoice};
use entrl_rl::eval::evaluate;
use entrl_rl::rollout::encode_prompts;
use entrl_rl::session::resolve_device;
use entrl_rl::TrainConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// TOML configuration (defaults: the `dapo` preset with a file, the built-in demo without).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue a run exactly: a run directory (its latest checkpoint) or a checkpoint folder. The run
    /// continues with the configuration saved in the checkpoint (overrides may change only train.steps,
    /// run.* and a few other keys that do not change training), in the run folder the checkpoint belongs
    /// to unless run.out_dir=DIR is given (a new folder that then starts with the run's history).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Token strategy (same as tokens.strategy=...): full, random:K, anchors:K, explorers:K, pred-top:K,
    /// pred-bottom:K, position-random:K, soft, and entrl's controls (not the paper's)
    /// position-random-explorers:K, anchors-matched:K, explorers-matched:K (lowest / highest attention
    /// entropy within relative-position × predictive-entropy decile strata, matching the pool). `soft` is entrl's own weighting family, not the seed
    /// paper's formula (the paper gives none): per pool, z = (s − μ)/(σ + 1e-6) over the valid tokens'
    /// attention entropy s, weight = floor + (1 − floor)·sigmoid(d·z/τ), d moving linearly from
    /// d_start to d_end over ramp_steps rollout steps (tokens.soft_*; defaults τ 1, d −1 → 0.5 over 200
    /// steps, floor 0.1).
    #[arg(long)]
    strategy: Option<String>,
    /// Gradient geometry (norms and cosines of the full, anchor, explorer, random and trained gradients)
    /// on every update of every N-th rollout step (run.diagnose_every=N); a bare `--diagnose` is N = 1.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1")]
    diagnose: Option<u64>,
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
    if let Some(n) = a.diagnose {
        overrides.push(format!("run.diagnose_every={n}"));
    }
    if let Some(n) = a.gpus {
        overrides.push(format!("run.world_size={n}"));
    }
    let (cfg, checkpoint) = match &a.resume {
        None => (TrainConfig::resolve(a.config.as_deref(), &overrides)?, None),
        Some(r) => {
            let (cfg, ck) = resume_config(r, a.config.as_deref(), &overrides)?;
            (cfg, Some(ck))
        }
    };
    if a.dry_run {
        print!("{}", cfg.to_toml_annotated());
        return Ok(ExitCode::SUCCESS);
    }
    crate::signals::stop_on_first_signal();
    let summary = entrl_rl::train(cfg, checkpoint.as_deref())?;
    if let (Some(first), Some(last)) = (summary.evals.first(), summary.evals.last()) {
        println!("held-out average: {:.3} at step {} → {:.3} at step {}", first.1, first.0, last.1, last.0);
    }
    Ok(if summary.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

/// The configuration of a resumed run and its checkpoint: the checkpoint's own configuration (or, for a
/// checkpoint that carries none, its run folder's, else `--config`), then the overrides; the run folder is
/// the checkpoint's unless `run.out_dir` is overridden. Never a preset: a checkpoint whose configuration
/// cannot be found is refused.
fn resume_config(path: &Path, file: Option<&Path>, overrides: &[String]) -> entrl_rl::Result<(TrainConfig, PathBuf)> {
    let ck = entrl_rl::run::find_checkpoint(path)?;
    let saved = entrl_rl::checkpoints::saved_config(&ck)?;
    let mut cfg = match (file, saved) {
        (Some(f), _) => TrainConfig::resolve(Some(f), overrides)?,
        (None, Some(mut saved)) => {
            // The test hooks and run.overwrite act on the invocation that sets them, not on its resumptions.
            saved.run.debug_fail_at.clear();
            saved.run.debug_nan_at.clear();
            saved.run.overwrite = false;
            TrainConfig::resolve_on(&saved, &ck.join("config.toml"), overrides)?
        }
        (None, None) => {
            return Err(entrl_rl::Error::checkpoint(
                &ck,
                "the checkpoint carries no config.toml and sits in no run folder that has one; give the run's \
                 configuration with --config",
            ))
        }
    };
    let explicit_out = overrides.iter().any(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == "run.out_dir"));
    if !explicit_out {
        let dir = entrl_rl::checkpoints::run_dir_of(&ck).ok_or_else(|| {
            entrl_rl::Error::checkpoint(
                &ck,
                "this checkpoint is not inside a run folder's checkpoints/; give run.out_dir=DIR for the continued run",
            )
        })?;
        cfg.run.out_dir = dir.display().to_string();
    }
    Ok((cfg, ck))
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
    /// Sequences decoding at once: the slots of the contiguous cache (0 = 256), a cap for the paged one
    /// (0 = none: the pool's blocks bound them).
    #[arg(long, default_value_t = 0)]
    max_concurrent: usize,
    /// KV-cache layout (rollout.kv_cache).
    #[arg(long, value_enum, default_value_t = KvCacheArg::Paged)]
    kv_cache: KvCacheArg,
    /// Decode steps issued op by op or replayed as graphs (rollout.decode).
    #[arg(long, default_value = "eager", value_parser = choice::<DecodeChoice>(DecodeChoice::NAMES))]
    decode: DecodeChoice,
    /// Read each prompt's shared KV blocks once per group of its responses (rollout.prefix_attention).
    #[arg(long)]
    prefix_attention: bool,
    /// Positions per block of the paged cache (rollout.kv_block_size), 1 to 65536.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=65536))]
    kv_block_size: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or cuda:N (default: the first GPU if there is one).
    #[arg(long, default_value = "auto")]
    device: String,
    /// How responses are judged (reward.verifier): auto (by data source, verl's dispatch), or for every
    /// source boxed (the content of the last \boxed{}, normalised: the seed paper's verifier), answer-line
    /// (verl's math_dapo "Answer:" line) or strict-box (verl's math_dapo strict mode).
    #[arg(long, default_value = "auto", value_parser = choice::<VerifierChoice>(VerifierChoice::NAMES))]
    verifier: VerifierChoice,
    /// Prompts longer than --max-prompt-len tokens (rollout.long_prompts): truncate-left (keep the last
    /// tokens, verl's DAPO recipe and the seed paper), drop, or error.
    #[arg(long, default_value = "truncate-left", value_parser = choice::<LongPrompts>(LongPrompts::NAMES))]
    long_prompts: LongPrompts,
}

/// A command-line parser for a configuration enum: one of `names`, read as the configuration file reads it.
pub(crate) fn choice<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    use serde::de::IntoDeserializer;
    PossibleValuesParser::new(names).try_map(|s: String| {
        T::deserialize(s.as_str().into_deserializer()).map_err(|e: serde::de::value::Error| e.to_string())
    })
}

pub fn eval(a: &EvalArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use entrl_qwen3::{Qwen3, SamplingParams, Tokenizer};
    if !(1..=entrl_rl::eval::MAX_K).contains(&a.k) {
        return Err(format!("--k {}: mean@k takes 1 to {} samples per prompt", a.k, entrl_rl::eval::MAX_K).into());
    }
    if a.prefix_attention && matches!(a.kv_cache, KvCacheArg::Contiguous) {
        return Err("--prefix-attention needs --kv-cache paged (shared prompt blocks)".into());
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
    let set = encode_prompts(&rows, &tok, a.max_prompt_len, a.long_prompts)?;
    let (prompts, counts) = (set.prompts, set.counts);
    if counts != Default::default() {
        eprintln!("note: prompts longer than {} tokens: {counts}", a.max_prompt_len);
    }
    let params = SamplingParams { temperature: a.temperature, top_p: a.top_p, top_k: 0 };
    let choice = a.verifier;
    let verifier = move |source: &str| entrl_rl::reward::verifier_by_choice(choice, source);
    let t0 = std::time::Instant::now();
    let rep =
        evaluate(&model, &tok, &prompts, 0, a.k, params, a.max_response_len, a.generate_options(), &verifier, a.seed)?;
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum KvCacheArg {
    Paged,
    Contiguous,
}

impl EvalArgs {
    fn generate_options(&self) -> entrl_qwen3::GenerateOptions {
        use entrl_qwen3::{GenerateOptions, KvLayout, PagedKv};
        let opts = match self.kv_cache {
            KvCacheArg::Contiguous => GenerateOptions {
                max_seqs: if self.max_concurrent == 0 { 256 } else { self.max_concurrent },
                kv: KvLayout::Contiguous,
                ..Default::default()
            },
            KvCacheArg::Paged => GenerateOptions {
                max_seqs: self.max_concurrent,
                kv: KvLayout::Paged(PagedKv {
                    block_size: self.kv_block_size as usize,
                    blocks: 0,
                    share_prompts: true,
                }),
                ..Default::default()
            },
        };
        GenerateOptions { decode: self.decode.mode(), prefix_attention: self.prefix_attention, ..opts }
    }
}
