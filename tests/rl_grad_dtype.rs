//! `train.grad_dtype = "bf16"` against f32 gradients on the built-in task, on CPU with bf16 weights: the
//! same seed trained 50 steps each way (about 12 s a run in release on 2 cores). Micro-batches of 512
//! tokens make every update accumulate several micro-batches into the stored gradients.
//!
//! What is asserted, and why it can fail: the option is in force (bf16 parameters hold bf16 gradients,
//! f32 ones stay f32) and changes the numerics (step 1, whose rollouts and loss are the same in both
//! runs, has a different gradient norm, by less than 1e-3 relative); the runs then learn alike: both raise
//! the held-out accuracy by more than 0.1, their held-out accuracy at step 50 differs by at most 0.1, the
//! mean reward of every 10-step window by at most 0.08 and the mean loss over the 50 steps by at most
//! 0.005. For scale: the same comparison with seed 2 differed by up to 0.064 in a window, and seeds 1 and
//! 2 of f32 gradients by up to 0.123 (BENCHMARKS.md, "bf16 gradient storage (CPU, built-in task)").
mod common;

use common::runs::{config, tmp};
use entrl_engine::DType;
use entrl_rl::metrics::StepMetrics;
use entrl_rl::{train, Session};

const STEPS: usize = 50;

fn overrides(grad_dtype: &str) -> Vec<String> {
    vec![
        format!("train.steps={STEPS}"),
        "model.dtype=bf16".into(),
        format!("train.grad_dtype={grad_dtype}"),
        "train.micro_batch_tokens=512".into(),
        "train.seed=1".into(),
        "run.eval_every=25".into(),
        "run.stop_at_accuracy=0".into(),
    ]
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn the_session_sets_the_gradient_storage_of_bf16_weights_only() {
    for (dtype, grad, want) in [("bf16", "bf16", DType::BF16), ("bf16", "f32", DType::F32), ("f32", "bf16", DType::F32)]
    {
        let dir = tmp(&format!("grad-dtype-{dtype}-{grad}"));
        let o = [format!("model.dtype={dtype}"), format!("train.grad_dtype={grad}"), "run.eval_every=0".into()];
        let o: Vec<&str> = o.iter().map(String::as_str).collect();
        let s = Session::new(config(&dir, &o)).unwrap();
        for (name, p) in s.model.params() {
            assert_eq!(p.grad_dtype(), Some(want), "{dtype} weights, grad_dtype {grad}: {name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn run(grad_dtype: &str) -> (Vec<StepMetrics>, Vec<(u64, f64)>, f64) {
    let dir = tmp(&format!("grad-dtype-{grad_dtype}"));
    let o = overrides(grad_dtype);
    let o: Vec<&str> = o.iter().map(String::as_str).collect();
    let s = train(config(&dir, &o), None).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (s.steps, s.evals, s.seconds)
}

#[test]
fn bf16_gradients_train_the_builtin_task_like_f32_gradients() {
    let (f, f_evals, f_s) = run("f32");
    let (h, h_evals, h_s) = run("bf16");
    assert_eq!((f.len(), h.len()), (STEPS, STEPS));
    println!("step  loss_f32   loss_bf16  |g|_f32  |g|_bf16  reward_f32 reward_bf16");
    for (a, b) in f.iter().zip(&h) {
        println!(
            "{:>4} {:>+9.5} {:>+9.5} {:>8.4} {:>8.4} {:>+9.4} {:>+9.4}",
            a.step, a.loss, b.loss, a.grad_norm, b.grad_norm, a.reward_mean, b.reward_mean
        );
    }
    println!("held-out f32 {f_evals:?} ({f_s:.1} s)\nheld-out bf16 {h_evals:?} ({h_s:.1} s)");

    // Step 1 trains at lr 0 on the same rollouts: the same loss, a gradient norm within bf16 rounding.
    assert_eq!(f[0].loss, h[0].loss);
    let rel = (f[0].grad_norm - h[0].grad_norm).abs() / f[0].grad_norm;
    println!("step 1: |g| relative difference {rel:.2e}");
    assert!(rel > 0.0, "bf16 gradients should round the norm: the option had no effect");
    assert!(rel < 1e-3, "step 1 gradient norms {} vs {}", f[0].grad_norm, h[0].grad_norm);

    let (f_end, h_end) = (f_evals.last().unwrap(), h_evals.last().unwrap());
    assert_eq!((f_end.0, h_end.0), (STEPS as u64, STEPS as u64));
    for (what, e) in [("f32", &f_evals), ("bf16", &h_evals)] {
        assert!(e.last().unwrap().1 > e[0].1 + 0.1, "{what} gradients: held-out accuracy did not rise: {e:?}");
    }
    let d_eval = h_end.1 - f_end.1;
    println!("held-out at step {STEPS}: f32 {:.3}, bf16 {:.3}, difference {d_eval:+.3}", f_end.1, h_end.1);
    assert!(d_eval.abs() <= 0.1, "held-out accuracy at step {STEPS}: f32 {} vs bf16 {}", f_end.1, h_end.1);
    for w in 0..STEPS / 10 {
        let r = |s: &[StepMetrics]| mean(s[w * 10..(w + 1) * 10].iter().map(|m| m.reward_mean));
        let (rf, rh) = (r(&f), r(&h));
        println!(
            "steps {:>2}-{:>2}: mean reward f32 {rf:+.3}, bf16 {rh:+.3}, difference {:+.3}",
            w * 10 + 1,
            w * 10 + 10,
            rh - rf
        );
        assert!((rh - rf).abs() <= 0.08, "steps {}-{}: mean reward f32 {rf} vs bf16 {rh}", w * 10 + 1, w * 10 + 10);
    }
    let (lf, lh) = (mean(f.iter().map(|m| m.loss)), mean(h.iter().map(|m| m.loss)));
    let d_loss = mean(f.iter().zip(&h).map(|(a, b)| (a.loss - b.loss).abs()));
    println!("mean loss f32 {lf:+.5}, bf16 {lh:+.5}; mean |loss difference| per step {d_loss:.5}");
    assert!((lf - lh).abs() <= 0.005, "mean loss over {STEPS} steps: f32 {lf} vs bf16 {lh}");
    assert!(h.iter().all(|m| m.skipped_updates == 0 && m.loss.is_finite()), "a bf16-gradient update was skipped");
}
