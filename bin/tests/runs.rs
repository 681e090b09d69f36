//! Runs as a user drives them from the shell: a kill during any phase of a checkpoint leaves a run that
//! resumes, Ctrl-C and SIGTERM save and print how to resume, and `--resume` continues only its own run.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn entrl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_entrl"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run entrl")
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("entrl-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `entrl train` on the built-in task, quiet, on CPU, into `dir`.
fn train(dir: &Path, extra: &[&str]) -> Command {
    let mut c = entrl();
    c.args(["train", "model.device=cpu", "run.progress=false", "run.plot=false", "run.eval_every=0"]);
    c.arg(format!("run.out_dir={:?}", dir.display().to_string()));
    c.args(extra);
    c
}

fn resume(from: &Path, extra: &[&str]) -> Command {
    let mut c = entrl();
    c.args(["train", "--resume"]).arg(from).args(["run.progress=false", "run.plot=false"]).args(extra);
    c
}

fn latest(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("checkpoints/latest")).unwrap_or_default().trim().to_string()
}

fn metric_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64())
        .filter(|&s| s > 0)
        .collect()
}

/// A kill (exit 137, no cleanup) at every phase of publishing a checkpoint, first or replacing one, leaves
/// `latest` naming a complete checkpoint, and the run then resumes to its end.
#[test]
fn a_kill_at_every_checkpoint_phase_leaves_a_resumable_run() {
    let fresh = ["written", "complete", "renamed", "published"];
    let replacing = ["written", "complete", "latest-to-temporary", "old-moved", "renamed", "published"];
    for (replace, phases) in [(false, &fresh[..]), (true, &replacing[..])] {
        for phase in phases {
            let dir = tmp(&format!("kill-{replace}-{phase}"));
            let kill = format!("run.debug_fail_at=\"0:2:kill@{phase}\"");
            let o = if replace {
                assert!(run(&mut train(&dir, &["train.steps=2", "run.save_every=1"])).status.success());
                run(&mut resume(&dir.join("checkpoints/step_000001"), &[&kill]))
            } else {
                run(&mut train(&dir, &["train.steps=2", "run.save_every=1", &kill]))
            };
            assert_eq!(o.status.code(), Some(137), "{replace} {phase}: {}", text(&o));
            let name = latest(&dir);
            assert!(name.contains("step_00000"), "{replace} {phase}: latest = {name:?}");
            let o = run(&mut resume(&dir, &[]));
            assert!(o.status.success(), "{replace} {phase}: {}", text(&o));
            assert_eq!(latest(&dir), "step_000002", "{replace} {phase}");
            assert_eq!(metric_steps(&dir), vec![1, 2], "{replace} {phase}");
            let leftovers: Vec<_> = std::fs::read_dir(dir.join("checkpoints"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{replace} {phase}: {leftovers:?}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Resuming a step folder whose run folder lost its config.toml continues that run in that folder with
/// the checkpoint's own configuration, and never touches `./runs/builtin` of the current directory.
#[test]
fn resume_continues_its_own_run_and_never_another() {
    let (a, cwd) = (tmp("own-a"), tmp("own-cwd"));
    assert!(run(&mut train(&a, &["train.steps=2", "run.save_every=1", "train.lr=2e-3"])).status.success());
    std::fs::remove_file(a.join("config.toml")).unwrap();
    let other = cwd.join("runs/builtin");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("metrics.jsonl"), "{\"step\": 1}\n{\"step\": 2}\n").unwrap();
    let o = run(resume(&a.join("checkpoints/step_000001"), &["train.steps=3"]).current_dir(&cwd));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(metric_steps(&a), vec![1, 2, 3]);
    assert_eq!(latest(&a), "step_000003");
    assert!(text(&o).contains("lr = 0.002"), "the checkpoint's configuration, not the preset's");
    assert_eq!(std::fs::read_to_string(other.join("metrics.jsonl")).unwrap(), "{\"step\": 1}\n{\"step\": 2}\n");
    assert!(!other.join("checkpoints").exists() && !other.join("config.toml").exists());
    // A checkpoint without any configuration is refused unless --config gives it.
    let ck = a.join("checkpoints/step_000003");
    std::fs::remove_file(ck.join("config.toml")).unwrap();
    std::fs::remove_file(a.join("config.toml")).unwrap();
    let o = run(&mut resume(&ck, &[]));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("give the run's configuration with --config"), "{}", text(&o));
    // A change of a key that changes training is refused, naming it.
    let o = run(&mut resume(&a.join("checkpoints/step_000002"), &["rollout.n=4"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("rollout.n: 16 → 4"), "{}", text(&o));
    for d in [a, cwd] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[cfg(unix)]
fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Wait until the run has logged `n` steps.
fn wait_for_steps(dir: &Path, n: usize) {
    let t0 = std::time::Instant::now();
    while metric_steps(dir).len() < n {
        assert!(t0.elapsed().as_secs() < 300, "the run did not reach {n} steps");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The README's first command (save_every = 0) stopped by Ctrl-C or SIGTERM: it finishes its step, saves,
/// prints the resume command and exits 130; the resumed run continues from there.
#[test]
#[cfg(unix)]
fn ctrl_c_and_sigterm_save_a_checkpoint_and_exit_130() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let dir = tmp(&format!("signal-{sig}"));
        let child = train(&dir, &["train.steps=100000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_steps(&dir, 2);
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{err}");
        assert!(err.contains("stopping after the current step"), "{err}");
        assert!(err.contains(&format!("resume with: entrl train --resume {}", dir.display())), "{err}");
        let steps = metric_steps(&dir);
        let last = *steps.last().unwrap();
        assert_eq!(latest(&dir), format!("step_{last:06}"), "the checkpoint is the last logged step");
        let o = run(&mut resume(&dir, &[&format!("train.steps={}", last + 1)]));
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(metric_steps(&dir), (1..=last + 1).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A second Ctrl-C exits at once (130) without waiting for the step.
#[test]
#[cfg(unix)]
fn a_second_ctrl_c_exits_at_once() {
    let dir = tmp("signal-twice");
    let child = train(&dir, &["train.steps=100000", "rollout.max_response_len=200", "train.micro_batch_tokens=8192"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_steps(&dir, 1);
    signal(&child, libc::SIGINT);
    std::thread::sleep(std::time::Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("second signal: exiting at once"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn out_of_range_values_are_refused_before_anything_loads() {
    for (arg, want) in [
        ("train.lr=inf", "train.lr = inf: must be finite, ≥ 0"),
        ("train.steps=\"many\"", "configuration key train.steps: invalid type"),
        ("tokens.strategy=full:0.5", "takes no argument"),
    ] {
        let o = run(entrl().args(["train", "--dry-run", arg]));
        assert_eq!(o.status.code(), Some(2), "{arg}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(want) && e.lines().count() == 1, "{arg}: {e}");
    }
    let o = run(entrl().args(["train", "--dry-run"]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("eps_low = 0.2  # in [0, 1)"));
}

/// The shipped 8B configuration loads with --dry-run (no model or data needed) and follows the paper's
/// reward and prompt handling.
#[test]
fn the_shipped_8b_config_dry_runs_with_the_papers_verifier_and_truncation() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/dapo-qwen3-8b-anchors.toml");
    let o = run(entrl().args(["train", "--config", cfg, "--dry-run"]));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("verifier = \"boxed\""), "{out}");
    assert!(out.contains("long_prompts = \"truncate-left\""), "{out}");
    assert!(out.contains("pool = \"mini-batch\""), "{out}");
}
