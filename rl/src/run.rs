//! `entrl train`: the run loop around [`Session::step`]: resolved config printed and saved, progress bars,
//! a JSONL metrics line per step, periodic mean@k evaluation, atomic checkpoints, exact resume, plots.
use crate::config::TrainConfig;
use crate::eval::{evaluate, EvalReport};
use crate::metrics::{append_line, truncate_after, StepMetrics};
use crate::plot::plot_run;
use crate::progress::Progress;
use crate::session::{latest_checkpoint, Session};
use entrl_qwen3::save::write_atomic;
use entrl_qwen3::SamplingParams;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub steps: Vec<StepMetrics>,
    /// (step, mean@k) of every evaluation, the initial one at step 0 included.
    pub evals: Vec<(u64, f64)>,
    pub checkpoint: Option<PathBuf>,
    pub plots: Vec<PathBuf>,
    pub seconds: f64,
}

/// Where to resume from: a checkpoint folder, or a run directory (its latest checkpoint).
pub fn find_checkpoint(path: &Path) -> Result<PathBuf, String> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    latest_checkpoint(path).ok_or_else(|| {
        format!(
            "{}: neither a checkpoint folder (state.json) nor a run directory with checkpoints/latest",
            path.display()
        )
    })
}

/// Evaluate the session's held-out prompts (mean@k with the eval sampling settings).
pub fn evaluate_session(s: &Session) -> Result<EvalReport, String> {
    let r = &s.cfg.run;
    let params = SamplingParams { temperature: r.eval_temperature, top_p: r.eval_top_p, top_k: 0 };
    let verifier = s.verifier();
    evaluate(
        &s.model,
        &s.tok,
        &s.eval_prompts,
        r.eval_k,
        params,
        s.cfg.rollout.max_response_len,
        s.cfg.rollout.max_concurrent,
        &verifier,
        s.cfg.train.seed ^ s.step,
    )
}

/// Train as configured; `resume` continues a run exactly where its checkpoint left it.
pub fn train(cfg: TrainConfig, resume: Option<&Path>) -> Result<RunSummary, String> {
    let t0 = Instant::now();
    let run_dir = PathBuf::from(&cfg.run.out_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let metrics_path = run_dir.join("metrics.jsonl");
    let mut s = match resume {
        Some(p) => {
            let ckpt = find_checkpoint(p)?;
            let s = Session::resume(cfg, &ckpt)?;
            truncate_after(&metrics_path, s.step).map_err(|e| format!("{}: {e}", metrics_path.display()))?;
            eprintln!("resuming from {} (step {})", ckpt.display(), s.step);
            s
        }
        None => {
            if metrics_path.exists() {
                eprintln!("note: {} held an earlier run; starting its metrics afresh", run_dir.display());
                std::fs::remove_file(&metrics_path).map_err(|e| format!("{}: {e}", metrics_path.display()))?;
                let _ = std::fs::remove_file(run_dir.join("checkpoints").join("latest"));
            }
            Session::new(cfg)?
        }
    };
    let cfg = s.cfg.clone();
    write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes()).map_err(|e| e.to_string())?;
    let verbose = cfg.run.log_every > 0;
    if verbose {
        println!("# entrl train: resolved configuration\n{}", cfg.to_toml());
        println!(
            "# model: {} layers, hidden {}, {} parameters, {} on {}; {} training prompts ({} dropped as too long), {} eval prompts",
            s.model.config.num_hidden_layers,
            s.model.config.hidden_size,
            s.model.config.num_params(),
            s.model.dtype,
            s.device,
            s.prompts.len(),
            s.dropped_prompts,
            s.eval_prompts.len()
        );
    }
    let progress = Progress::new(cfg.train.steps, s.step, cfg.run.progress, verbose);
    let mut summary = RunSummary {
        run_dir: run_dir.clone(),
        steps: Vec::new(),
        evals: Vec::new(),
        checkpoint: None,
        plots: Vec::new(),
        seconds: 0.0,
    };
    let has_eval = cfg.run.eval_every > 0 && !s.eval_prompts.is_empty();
    if has_eval && s.step == 0 {
        let rep = evaluate_session(&s)?;
        progress.println(&format!("step 0: eval mean@{} = {:.3} (before training)", cfg.run.eval_k, rep.mean()));
        append_line(&metrics_path, &serde_json::json!({"step": 0, "eval_acc": rep.mean()}).to_string())
            .map_err(|e| format!("{}: {e}", metrics_path.display()))?;
        summary.evals.push((0, rep.mean()));
    }
    let mut saved_at = None;
    while s.step < cfg.train.steps {
        let mut m = s.step(&progress)?;
        if has_eval && m.step.is_multiple_of(cfg.run.eval_every) {
            let acc = evaluate_session(&s)?.mean();
            m.eval_acc = Some(acc);
            summary.evals.push((m.step, acc));
        }
        append_line(&metrics_path, &m.to_json_line()).map_err(|e| format!("{}: {e}", metrics_path.display()))?;
        progress.steps.set_position(m.step);
        progress.steps.set_message(format!("acc {:.2} reward {:+.2}", m.acc_generated, m.reward_mean));
        if m.step.is_multiple_of(cfg.run.log_every.max(1)) {
            progress.println(&step_line(&m));
        }
        if m.skipped_updates > 0 {
            progress.println(&format!(
                "step {}: skipped {} update(s) with a non-finite loss or gradient ({} in this run)",
                m.step, m.skipped_updates, m.skipped_total
            ));
        }
        let stop = cfg.run.stop_at_accuracy > 0.0 && m.eval_acc.is_some_and(|a| a >= cfg.run.stop_at_accuracy);
        summary.steps.push(m);
        if cfg.run.save_every > 0 && s.step.is_multiple_of(cfg.run.save_every) {
            summary.checkpoint = Some(s.save()?);
            saved_at = Some(s.step);
        }
        if stop {
            progress.println(&format!("step {}: eval accuracy reached run.stop_at_accuracy; stopping", s.step));
            break;
        }
    }
    progress.finish();
    if cfg.run.save_final && saved_at != Some(s.step) {
        summary.checkpoint = Some(s.save()?);
    }
    if cfg.run.plot && metrics_path.exists() {
        summary.plots = plot_run(&run_dir)?;
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    if verbose {
        if let Some(c) = &summary.checkpoint {
            println!("checkpoint: {}", c.display());
        }
        if let Some(p) = summary.plots.first() {
            println!("plots: {}", p.parent().unwrap_or(p).display());
        }
        println!("metrics: {}  ({:.1} s)", metrics_path.display(), summary.seconds);
    }
    Ok(summary)
}

fn step_line(m: &StepMetrics) -> String {
    let eval = m.eval_acc.map(|a| format!(" eval {a:.3}")).unwrap_or_default();
    format!(
        "step {:>4}: acc {:.3} (gen {:.3}) reward {:+.3} len {:.1} kept {:.2} loss {:+.4} |g| {:.3} clip {:.3} kl {:+.4} lr {:.2e} \
         rounds {} | {:.2}s (roll {:.2} old {:.2} upd {:.2}) {:.0} tok/s{eval}",
        m.step,
        m.acc_mean,
        m.acc_generated,
        m.reward_mean,
        m.response_len_mean,
        m.kept_frac,
        m.loss,
        m.grad_norm,
        m.clip_frac,
        m.approx_kl,
        m.lr,
        m.gen_rounds,
        m.time_step_s,
        m.time_rollout_s,
        m.time_old_logprob_s,
        m.time_update_s,
        m.tokens_per_s
    )
}
