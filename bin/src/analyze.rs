//! `entrl analyze RUN_DIR`: partial correlations, the entropy relation and matched subsets from a run's
//! token traces (`run.trace_every`); `analysis.md` (also printed) and SVG charts in the run folder.
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// A run folder with token traces (traces/step_*.parquet).
    run_dir: PathBuf,
}

pub fn run(a: &AnalyzeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let r = entrl_rl::analyze::analyze(&a.run_dir)?;
    print!("{}", r.markdown);
    println!();
    for f in &r.files {
        println!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
