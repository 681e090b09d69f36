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
