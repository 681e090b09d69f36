//! Training runs in tests: a fresh temporary run directory and the built-in preset made quiet on CPU.
use entrl_rl::metrics::StepMetrics;
use entrl_rl::TrainConfig;
use std::path::{Path, PathBuf};

/// An empty temporary directory unique to this test process.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("entrl-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The built-in preset on CPU, quiet (no bars, lines or plots), writing into `dir`, plus `extra` overrides.
pub fn config(dir: &Path, extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = vec![
        format!("run.out_dir={:?}", dir.display().to_string()),
        "model.device=cpu".into(),
        "run.progress=false".into(),
        "run.log_every=0".into(),
        "run.plot=false".into(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::resolve(None, &o).unwrap()
}

/// A step's metrics without the timing fields, which differ between runs; everything else must match
/// exactly between a run and its resumed twin.
#[allow(dead_code)] // not every test binary that includes `common` compares steps
pub fn deterministic(m: &StepMetrics) -> StepMetrics {
    StepMetrics {
        time_rollout_s: 0.0,
        time_old_logprob_s: 0.0,
        time_update_s: 0.0,
        time_step_s: 0.0,
        tokens_per_s: 0.0,
        ..m.clone()
    }
}
