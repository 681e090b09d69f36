//! Runs never go silently wrong and never write into another run: a NaN is skipped, counted and stops
//! the run after `train.max_consecutive_skips` with `latest` on a finite checkpoint; a resumed run keeps
//! its own configuration and folder; a fresh run refuses an occupied folder; checkpoints carry their
//! configuration and refuse optimizer state of another step.
mod common;

use common::runs::{config, tmp};
use entrl_rl::{checkpoints, train};
use std::path::Path;

fn metric_steps(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64())
        .filter(|&s| s > 0)
        .collect()
}

fn all_finite(ck: &Path) -> bool {
    let m = entrl_qwen3::Qwen3::load(ck, entrl_engine::DType::F32, &entrl_engine::Device::Cpu).unwrap();
    m.params().iter().all(|(_, t)| t.to_vec_f64().unwrap().iter().all(|x| x.is_finite()))
}

/// The "done when": a NaN injected into a weight is skipped and counted, and after three
/// consecutive skips the run stops with an error while `latest` still names a finite checkpoint.
#[test]
fn a_nan_weight_stops_the_run_after_three_skips_with_latest_finite() {
    let dir = tmp("nan-weight");
    // Four updates per step (mini-batches of 4 prompts), so three skips come within the poisoned step.
    let o =
        ["train.steps=4", "run.save_every=1", "run.eval_every=0", "train.mini_batch_size=4", "run.debug_nan_at=\"3\""];
    let e = train(config(&dir, &o), None).unwrap_err().to_string();
    assert!(e.contains("stopping at step 3: 3 updates in a row had a non-finite loss"), "{e}");
    let latest = checkpoints::latest(&dir).unwrap().unwrap();
    assert!(latest.ends_with("step_000002"), "{}", latest.display());
    assert!(all_finite(&latest));
    assert_eq!(metric_steps(&dir), vec![1, 2], "the failed step logs no metrics line");
    // The run resumes from its last finite checkpoint (the hook removed).
    let s = train(
        config(&dir, &["train.steps=3", "run.save_every=1", "run.eval_every=0", "train.mini_batch_size=4"]),
        Some(&dir),
    );
    assert_eq!(s.unwrap().steps.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fresh_run_refuses_a_folder_holding_another_run_unless_overwrite() {
    let dir = tmp("occupied");
    train(config(&dir, &["train.steps=1", "run.eval_every=0"]), None).unwrap();
    let e = train(config(&dir, &["train.steps=1", "run.eval_every=0"]), None).unwrap_err().to_string();
    assert!(e.contains("holds an earlier run (1 metric line(s) and checkpoints up to step_000001)"), "{e}");
    assert!(e.contains("--resume") && e.contains("run.overwrite=true"), "{e}");
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    train(config(&dir, &["train.steps=2", "run.eval_every=0", "run.overwrite=true"]), None).unwrap();
    assert_eq!(metric_steps(&dir), vec![1, 2]);
    assert!(checkpoints::latest(&dir).unwrap().unwrap().ends_with("step_000002"));
    assert!(!checkpoints::root(&dir).join("step_000001").exists(), "the earlier run's checkpoints are gone");
    assert!(dir.join("notes.txt").is_file(), "files that are not the run's stay");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resumed_run_refuses_a_configuration_that_changes_training() {
    let dir = tmp("resume-conflict");
    train(config(&dir, &["train.steps=1", "run.eval_every=0"]), None).unwrap();
    let e = train(config(&dir, &["train.steps=2", "train.lr=0.5", "tokens.strategy=anchors:0.2"]), Some(&dir))
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.lr: 0.001 → 0.5") && e.contains("tokens.strategy: \"full\" → \"anchors:0.2\""), "{e}");
    assert!(e.contains("may change only") && e.contains("train.steps"), "{e}");
    // Steps, logging and evaluation may change.
    let s = train(config(&dir, &["train.steps=2", "run.eval_every=0", "run.log_every=5"]), Some(&dir)).unwrap();
    assert_eq!(s.steps.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resumed into another folder, a run leaves its origin untouched, and the new folder starts with the
/// history up to the checkpoint; a folder that holds a run is refused as a target.
#[test]
fn a_branch_into_another_folder_copies_the_history_and_leaves_the_origin_alone() {
    let (a, b) = (tmp("branch-a"), tmp("branch-b"));
    train(config(&a, &["train.steps=3", "run.save_every=1", "run.eval_every=0"]), None).unwrap();
    let before = std::fs::read(a.join("metrics.jsonl")).unwrap();
    let ck = checkpoints::root(&a).join("step_000001");
    let s = train(config(&b, &["train.steps=2", "run.save_every=1", "run.eval_every=0"]), Some(&ck)).unwrap();
    assert_eq!(s.steps.len(), 1);
    assert_eq!(metric_steps(&b), vec![1, 2]);
    assert!(checkpoints::latest(&b).unwrap().unwrap().starts_with(&b));
    assert_eq!(std::fs::read(a.join("metrics.jsonl")).unwrap(), before, "the origin's metrics are untouched");
    assert!(checkpoints::latest(&a).unwrap().unwrap().ends_with("step_000003"));
    let e = train(config(&b, &["train.steps=2", "run.eval_every=0"]), Some(&ck)).unwrap_err().to_string();
    assert!(e.contains("holds an earlier run"), "{e}");
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn checkpoints_carry_their_configuration_and_refuse_foreign_optimizer_state() {
    let dir = tmp("foreign-opt");
    train(config(&dir, &["train.steps=2", "run.save_every=1", "run.eval_every=0"]), None).unwrap();
    let (one, two) = (checkpoints::root(&dir).join("step_000001"), checkpoints::root(&dir).join("step_000002"));
    let saved = checkpoints::saved_config(&two).unwrap().unwrap();
    assert_eq!(saved.train.steps, 2);
    assert!(two.join("config.toml").is_file());
    std::fs::copy(one.join("optimizer.safetensors"), two.join("optimizer.safetensors")).unwrap();
    let e = train(config(&dir, &["train.steps=3", "run.eval_every=0"]), Some(&dir)).unwrap_err().to_string();
    assert!(e.contains("optimizer state of another checkpoint (entrl.step = 1, its state.json says 2)"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_many_cpu_ranks_are_refused_before_anything_starts() {
    let dir = tmp("ranks");
    let e = train(config(&dir, &["run.world_size=4000"]), None).unwrap_err().to_string();
    assert!(e.contains("run.world_size = 4000 CPU ranks") && e.contains("per core"), "{e}");
    assert!(!dir.exists(), "nothing was written");
}
