//! `entrl`: one binary for the whole engine. Subcommands: train, eval, plot, generate, selftest,
//! verify-reference, bench, info, sweep, compare, analyze.
mod analyze;
mod bench;
mod bench_model;
mod bench_rollout;
mod bench_select;
mod env_choice;
mod generate;
mod plan;
mod selftest;
mod selftest_graph;
mod signals;
mod sweep;
mod train;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "entrl",
    version,
    about = "Attention-entropy-aware RL post-training of LLMs on a from-scratch GPU engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// DAPO training with attention-entropy token strategies (no arguments: the built-in demo).
    Train(train::TrainArgs),
    /// mean@k accuracy of a model folder on a dataset, per data source.
    Eval(train::EvalArgs),
    /// SVG charts of a run's metrics.jsonl into RUN_DIR/plots/.
    Plot(train::PlotArgs),
    /// Per-GPU memory budget and estimated DAPO step time for data-parallel training on H100s.
    Plan(plan::Args),
    /// Check every CUDA kernel against the CPU reference (and the CPU backend by finite differences).
    Selftest(selftest::Args),
    /// Benchmarks on the GPU.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Generate text from a Qwen3 model folder with a KV cache, printing as it goes.
    Generate(generate::Args),
    /// Run a model folder in the format of shared/fixtures/ and compare with its HF references.
    VerifyReference(verify::Args),
    /// Train every cell of a grid of configuration values × seeds, each in its own run folder under a sweep
    /// folder (resumable), then compare the arms.
    Sweep(sweep::SweepArgs),
    /// Compare runs grouped into arms (all keys but the seed): final and best held-out average over seeds,
    /// bootstrap intervals, paired tests against a baseline; comparison.md and comparison.svg.
    Compare(sweep::CompareArgs),
    /// Partial correlation of attention entropy with the gradient signal, the entropy relation and matched
    /// subsets from a run's token traces (run.trace_every); analysis.md and SVG charts in the run folder.
    Analyze(analyze::AnalyzeArgs),
    /// What this build and machine provide (kernels compiled in, CUDA devices).
    Info,
}

pub const COMMIT: &str = env!("ENTRL_COMMIT");

fn main() -> ExitCode {
    // NCCL connects every pair of ranks at init rather than in the first collective, so issuing a collective
    // never blocks on a peer (what the communicators' abort relies on; engine/src/dist/nccl.rs). Set here,
    // before any thread exists (setenv races with getenv on other threads); a user's value is kept.
    if std::env::var_os("NCCL_RUNTIME_CONNECT").is_none() {
        std::env::set_var("NCCL_RUNTIME_CONNECT", "0");
    }
    // `entrl ... | head` closes stdout early: end quietly on SIGPIPE, as command-line tools do, instead of
    // panicking in println! (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // The engine reads no environment: the kernel versions and the profiler's mode come from here.
    match env_choice::kernel_choices() {
        Ok(c) => entrl_engine::cuda::set_default_kernel_choices(c),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    entrl_engine::profile::set_mode(env_choice::profile_mode());
    let result = match cli.command {
        Command::Train(a) => train::train(&a),
        Command::Eval(a) => train::eval(&a),
        Command::Plot(a) => train::plot(&a),
        Command::Plan(a) => plan::run(&a),
        Command::Selftest(a) => selftest::run(&a),
        Command::Bench(b) => bench::run(&b),
        Command::VerifyReference(a) => verify::run(&a),
        Command::Generate(a) => generate::run(&a),
        Command::Sweep(a) => sweep::sweep(&a),
        Command::Compare(a) => sweep::compare_cmd(&a),
        Command::Analyze(a) => analyze::run(&a),
        Command::Info => info(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn info() -> Result<ExitCode, Box<dyn std::error::Error>> {
    println!("entrl {} (commit {COMMIT})", env!("CARGO_PKG_VERSION"));
    let fams: Vec<_> = entrl_kernels::families().collect();
    if entrl_kernels::COMPILED {
        println!("CUDA kernels compiled in: {}", fams.join(", "));
    } else {
        println!("CUDA kernels: not compiled into this build (nvcc was not found at build time)");
    }
    match entrl_engine::Device::cuda(0) {
        Ok(entrl_engine::Device::Cuda(d)) => {
            let (maj, min) = d.compute_capability()?;
            println!("GPU 0: {} (sm_{maj}{min}), {} visible", d.name(), entrl_engine::Device::cuda_count());
        }
        Ok(_) => {}
        Err(e) => println!("GPU: none usable ({e})"),
    }
    Ok(ExitCode::SUCCESS)
}
