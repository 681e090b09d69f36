//! `entrl sweep` (every cell of a grid × seeds, each in its own run folder, resumable) and `entrl compare`
//! (arms, statistics over seeds and paired tests against a baseline; comparison.md and comparison.svg).
use entrl_rl::compare::compare;
use entrl_rl::sweep::{run_sweep, CellOutcome, Manifest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct SweepArgs {
    /// TOML configuration shared by every cell (default: the built-in preset).
    #[arg(long)]
    config: Option<PathBuf>,
    /// KEY=V1,V2,... of one configuration key; several --grid: their Cartesian product.
    #[arg(long, required = true)]
    grid: Vec<String>,
    /// Seeds per grid value: train.seed, train.seed + 1, ...
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Cells trained at once, on CPU cores only (model.device = cpu).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// The sweep folder (default runs/sweep-<config file name, or builtin>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The arm compared against at the end (default: tokens.strategy=full if swept, else the first).
    #[arg(long)]
    baseline: Option<String>,
    /// Overrides of any configuration key for every cell, e.g. train.steps=200.
    #[arg(value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Run folders, or sweep folders (their cells).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// The baseline arm: its label, one of its KEY=VALUE parts, or a value (e.g. full).
    #[arg(long)]
    baseline: Option<String>,
    /// Where comparison.md and comparison.svg go (default: the folder given when one, else .).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn sweep(a: &SweepArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let m = Manifest::plan(a.config.as_deref(), &a.grid, a.seeds, &a.overrides)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let name = a.config.as_deref().and_then(Path::file_stem).map_or("builtin".into(), |s| s.to_string_lossy());
        PathBuf::from(format!("runs/sweep-{name}"))
    });
    eprintln!("sweep {}: {} cell(s)", out.display(), m.cells.len());
    crate::signals::stop_on_first_signal();
    let s = run_sweep(&out, &m, a.jobs, &[])?;
    for (dir, o) in &s.outcomes {
        let what = match o {
            CellOutcome::Skipped => "finished before: skipped",
            CellOutcome::Resumed => "resumed and finished",
            CellOutcome::Started => "finished",
        };
        eprintln!("  {dir}: {what}");
    }
    if s.interrupted {
        eprintln!("sweep interrupted; run the same command again to resume it");
        return Ok(ExitCode::from(130));
    }
    let c = compare(std::slice::from_ref(&out), a.baseline.as_deref(), &out)?;
    print!("{}", c.markdown);
    println!("\n{}\n{}", c.markdown_file.display(), c.chart_file.display());
    Ok(ExitCode::SUCCESS)
}

pub fn compare_cmd(a: &CompareArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let out = a.out.clone().unwrap_or_else(|| match a.dirs.as_slice() {
        [one] => one.clone(),
        _ => PathBuf::from("."),
    });
    let c = compare(&a.dirs, a.baseline.as_deref(), &out)?;
    print!("{}", c.markdown);
    println!("\n{}\n{}", c.markdown_file.display(), c.chart_file.display());
    Ok(ExitCode::SUCCESS)
}
