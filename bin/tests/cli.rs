//! The `entrl` binary as a user runs it.
use std::process::Command;

fn entrl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_entrl")).args(args).output().expect("run entrl")
}

#[test]
fn selftest_runs_the_cpu_checks_and_passes() {
    let out = entrl(&["selftest", "--seed", "7", "--cpu-only"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "selftest failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("rms_norm grad (fd)"), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
}

#[test]
fn selftest_verifies_the_fixtures_when_asked() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
    let out = entrl(&["selftest", "--seed", "9", "--cpu-only", "--fixtures", fixtures]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("verify-reference qwen3-tiny (cpu)") && text.contains("verify-reference qwen3-tiny-mha (cpu)")
    );
    // a folder without models is a clear error, not a silent pass
    let out = entrl(&["selftest", "--cpu-only", "--fixtures", env!("CARGO_MANIFEST_DIR")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no model folder"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[cfg(unix)]
fn a_closed_pipe_ends_the_output_quietly() {
    // `entrl ... | head` must not panic with "failed printing to stdout: Broken pipe".
    let cmd = format!("{} selftest --seed 3 --cpu-only | head -n 1", env!("CARGO_BIN_EXE_entrl"));
    let out = Command::new("sh").args(["-c", &cmd]).output().expect("run sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("entrl selftest"));
}

#[test]
fn selftest_without_a_gpu_says_so() {
    let out = entrl(&["selftest", "--seed", "8"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    if !text.contains("CUDA kernels vs CPU reference") {
        assert!(text.contains("no GPU checks: "), "{text}");
    }
}

#[test]
fn bench_without_a_gpu_is_a_clear_error() {
    let out = entrl(&["bench", "matmul", "--m", "64", "--n", "64", "--k", "64", "--reps", "1"]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error: CUDA is not available") || err.contains("no CUDA kernels"), "{err}");
    }
}

#[test]
fn train_then_eval_and_plot_the_run() {
    let dir = std::env::temp_dir().join(format!("entrl-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out_dir = format!("run.out_dir={:?}", dir.display().to_string());
    let out = entrl(&[
        "train",
        "--strategy",
        "anchors:0.2",
        "train.steps=2",
        "run.eval_every=1",
        "model.device=cpu",
        &out_dir,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("strategy = \"anchors:0.2\""), "the resolved config is printed first:\n{text}");
    assert!(text.contains("step    2: acc"), "{text}");
    let ckpt = dir.join("checkpoints/step_000002");
    let out =
        entrl(&["eval", "--model", ckpt.to_str().unwrap(), "--data", "builtin", "--k", "2", "--max-response-len", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("mean@2") && text.contains("entrl/add"), "{text}");
    assert!(text.contains("average (unweighted)") && text.contains("pooled (every response)"), "{text}");
    // --verifier boxed judges the built-in task by \boxed{}, which the model never writes: mean@2 is 0.
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--model", ckpt.to_str().unwrap(), "--data", "builtin", "--k", "2"];
        args.extend(["--max-response-len", "3"]);
        args.extend(extra);
        entrl(&args)
    };
    let out = eval(&["--verifier", "boxed", "--long-prompts", "error"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let row = text.lines().find(|l| l.starts_with("entrl/add")).unwrap_or_else(|| panic!("{text}"));
    assert!(row.ends_with(" 0.0000"), "{text}");
    let out = eval(&["--verifier", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'nope'") && err.contains("answer-line"), "{err}");
    // Prompts over --max-prompt-len: a note with the counts, or a refusal naming the row.
    let out = eval(&["--max-prompt-len", "8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("prompts longer than 8 tokens: 55 truncated on the left"), "{err}");
    let out = eval(&["--max-prompt-len", "8", "--long-prompts", "error"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("prompt row 1 (data source \"entrl/add\"): 9 tokens"), "{err}");
    let out = entrl(&["plot", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("summary.svg") && text.contains("heldout.svg"), "{text}");
    // Resume with more steps continues from step 2.
    let out = entrl(&["train", "--resume", dir.to_str().unwrap(), "train.steps=3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("step    3: acc") && !text.contains("step    1: acc"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_rejects_bad_configuration_clearly() {
    let out = entrl(&["train", "--strategy", "middle:0.2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown token strategy \"middle\""));
    let out = entrl(&["train", "train.lrr=1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown configuration key \"train.lrr\""));
    let out = entrl(&["train", "--config", "/nonexistent/x.toml"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.toml"));
}

#[test]
fn plan_budgets_memory_and_time_for_a_node() {
    let out = entrl(&["plan", "--model", "qwen3-8b", "--gpus", "8", "--seq", "9216"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for item in ["optimizer shard", "KV cache", "fits", "rollout", "old log-probs", "update", "communication"] {
        assert!(text.contains(item), "{item} missing:\n{text}");
    }
    let out = entrl(&["plan", "--model", "qwen3-8b", "--gpus", "1"]);
    assert_eq!(out.status.code(), Some(1), "qwen3-8b does not fit one GPU");
    assert!(String::from_utf8_lossy(&out.stdout).contains("optimizer"));
    let out = entrl(&["plan", "--model", "qwen3-99b"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model shape"));
    // The gradient diagnostics at node scale: their memory and cost per diagnosed update.
    let out = entrl(&["plan", "--model", "qwen3-8b", "--gpus", "8", "--diagnose-every", "10"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for item in ["diagnostics every 10 step(s)", "host per rank", "peak unchanged", "per update", "per step"] {
        assert!(text.contains(item), "{item} missing:\n{text}");
    }
    let out = entrl(&["plan", "--model", "qwen3-8b", "--diagnose-every", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--diagnose-every"));
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("entrl-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A model folder with the built-in tiny Qwen3 (random weights) and the built-in tokenizer.
fn tiny_model(name: &str) -> std::path::PathBuf {
    use entrl_engine::{DType, Device};
    let d = scratch(name);
    let cfg = entrl_rl::task::builtin_model_config(19);
    entrl_qwen3::Qwen3::random(cfg, DType::F32, &Device::Cpu, 3).unwrap().save(&d).unwrap();
    entrl_rl::task::builtin_tokenizer().save(&d).unwrap();
    d
}

/// rc 2 and one error line containing every one of `want`.
fn assert_clear_error(out: &std::process::Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked") && !err.contains("memory allocation"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
    for w in want {
        assert!(line.contains(w), "{w:?} missing from: {err}");
    }
}

#[test]
fn untrusted_sizes_are_clear_errors_not_aborts() {
    let d = tiny_model("sizes");
    let model = d.to_str().unwrap();
    let generate = |new_tokens: &str| {
        entrl(&["generate", "--model", model, "--prompt", "1 + 2 =", "--device", "cpu", "--max-new-tokens", new_tokens])
    };
    // 10^12 new tokens aborted with "memory allocation of … failed"
    assert_clear_error(&generate("1000000000000"), &["positions are i32"]);
    let out = generate("2000000000");
    // the paged cache is sized by the memory: a request it cannot hold alone is refused before allocating
    assert_clear_error(&out, &["needs 125000001 blocks of 16 positions", "all the memory allows"]);
    // a billion samples per prompt aborted building the requests
    let out = entrl(&["eval", "--model", model, "--data", "builtin", "--device", "cpu", "--k", "1000000000"]);
    assert_clear_error(&out, &["--k 1000000000", "1 to 1024"]);
    // the model runs: a short generation still works
    let out = entrl(&["generate", "--model", model, "--prompt", "1 + 2 =", "--device", "cpu", "--max-new-tokens", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn training_a_model_the_host_cannot_hold_is_refused_naming_model_path() {
    // random:qwen3-8b on the CPU aborted allocating its weights. 16 CPU ranks × 8.2 B parameters × (4 + 4)
    // bytes + 8 bytes of AdamW state per parameter is over 1 TB: no test machine holds it.
    let d = tiny_model("cpu-footprint");
    let tok = format!("model.tokenizer={:?}", d.display().to_string());
    let out_dir = format!("run.out_dir={:?}", d.join("run").display().to_string());
    let out =
        entrl(&["train", "model.path=\"random:qwen3-8b\"", &tok, "model.device=cpu", "run.world_size=16", &out_dir]);
    assert_clear_error(
        &out,
        &["model.path \"random:qwen3-8b\"", "training this model on the CPU", "16 rank(s)", "available"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn plan_refuses_absurd_models_and_flags_by_name() {
    // config.json says vocab 2^62: usize arithmetic wrapped and the plan "fit"
    let d = scratch("plan-vocab");
    let mut cfg = entrl_rl::task::builtin_model_config(19);
    cfg.vocab_size = 1 << 62;
    std::fs::write(d.join("config.json"), cfg.to_hf_json()).unwrap();
    let out = entrl(&["plan", "--model", d.to_str().unwrap()]);
    assert_clear_error(&out, &["config.json", "vocab_size 4611686018427387904 is above the limit"]);
    let out = entrl(&["plan", "--model", "qwen3-8b", "--prompts", "1000000000000000000"]);
    assert_clear_error(&out, &["--prompts 1000000000000000000 must be 1 to 1000000"]);
    let out = entrl(&["plan", "--model", "qwen3-8b", "--seq", "100000000000", "--micro-batch-tokens", "200000000000"]);
    assert_clear_error(&out, &["--seq 100000000000"]);
    let out = entrl(&["plan", "--model", "qwen3-8b", "--gpu-mem-gib", "inf"]);
    assert_clear_error(&out, &["--gpu-mem-gib inf"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn plan_prints_the_old_and_the_paged_rollout_side_by_side() {
    let out = entrl(&["plan", "--model", "qwen3-8b", "--gpus", "8", "--seq", "9216"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for item in ["contiguous + eager (old)", "paged + graph-replayed (new)", "blocks × 16 tokens", "% of old"] {
        assert!(text.contains(item), "{item} missing:\n{text}");
    }
    assert!(text.contains("mean response 3000 tokens") && text.contains("step total with the paged rollout"));
    let out = entrl(&["plan", "--model", "qwen3-8b", "--kv-cache", "contiguous", "--decode", "eager"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("paged + eager (new)") && text.contains("step total with the contiguous rollout"), "{text}");
    // a run's metrics.jsonl sets the mean response length
    let d = scratch("plan-metrics");
    let metrics = d.join("metrics.jsonl");
    std::fs::write(&metrics, "{\"step\":1,\"response_len_mean\":1200.4,\"response_len_max\":8192}\n").unwrap();
    let out = entrl(&["plan", "--model", "qwen3-8b", "--metrics", metrics.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("mean response 1200 tokens"), "{text}");
    assert!(text.contains("mean 1200.4 over 1 steps, longest logged 8192"), "{text}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn plan_refuses_bad_rollout_input_in_one_line() {
    let out = entrl(&["plan", "--model", "qwen3-8b", "--mean-response", "0"]);
    assert_clear_error(&out, &["--mean-response 0 must be 1 to"]);
    let out = entrl(&["plan", "--model", "qwen3-8b", "--kv-block-size", "0"]);
    assert_clear_error(&out, &["--kv-block-size 0 must be 1 to"]);
    let out = entrl(&["plan", "--model", "qwen3-8b", "--kv-blocks", "10"]);
    assert_clear_error(&out, &["KV pool of 10 blocks cannot hold one sequence"]);
    let out = entrl(&["plan", "--model", "qwen3-8b", "--max-response", "100"]);
    assert_clear_error(&out, &["--max-response 100 must be at least --mean-response 3000"]);
    let d = scratch("plan-bad-metrics");
    let metrics = d.join("metrics.jsonl");
    std::fs::write(&metrics, "{\"step\":1,\"response_len_mean\":10}\n{\"step\":2,\"response_len_mean\":null}\n")
        .unwrap();
    let out = entrl(&["plan", "--model", "qwen3-8b", "--metrics", metrics.to_str().unwrap()]);
    assert_clear_error(&out, &[metrics.to_str().unwrap(), "line 2", "response_len_mean"]);
    std::fs::write(&metrics, "{\"step\":1,\"response_len_mean\":0.2}\n").unwrap();
    let out = entrl(&["plan", "--model", "qwen3-8b", "--metrics", metrics.to_str().unwrap()]);
    assert_clear_error(&out, &[metrics.to_str().unwrap(), "rounds to 0 tokens"]);
    let out = entrl(&["plan", "--model", "qwen3-8b", "--metrics", d.join("none.jsonl").to_str().unwrap()]);
    assert_clear_error(&out, &["cannot read", "none.jsonl"]);
    let out = entrl(&["plan", "--model", "qwen3-8b", "--metrics", "m.jsonl", "--mean-response", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    // choices are enums: clap names the flag and the values
    let out = entrl(&["plan", "--model", "qwen3-8b", "--kv-cache", "dense"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kv-cache") && err.contains("paged") && err.contains("contiguous"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn analyze_reads_the_traces_of_a_run_or_says_there_are_none() {
    let empty = scratch("analyze-empty");
    assert_clear_error(&entrl(&["analyze", empty.to_str().unwrap()]), &["no token traces", "run.trace_every"]);
    let dir = scratch("analyze-run");
    let out_dir = format!("run.out_dir={:?}", dir.display().to_string());
    let out = entrl(&[
        "train",
        "train.steps=2",
        "run.eval_every=0",
        "run.trace_every=1",
        "run.overwrite=true",
        "model.device=cpu",
        &out_dir,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = entrl(&["analyze", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("## Partial correlation of Hnorm with the gradient-signal magnitude"), "{text}");
    assert!(dir.join("analysis.md").is_file() && dir.join("analysis_hnorm_grad.svg").is_file());
    for d in [empty, dir] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn a_bad_kernel_choice_in_the_environment_is_one_clear_error() {
    for (var, value, names) in [
        ("ENTRL_SELECT_HIST", "keys", "plain, wide"),
        ("ENTRL_GEMM", "blas", "cublas, lt"),
        ("ENTRL_SORT_SCATTER", "x", "match, local"),
        ("ENTRL_ATTENTION", "fa3", "mma, hopper"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_entrl")).arg("info").env(var, value).output().expect("run entrl");
        assert_clear_error(&out, &[&format!("{var}={value}"), names]);
    }
}
