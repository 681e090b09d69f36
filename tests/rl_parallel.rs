//! Data-parallel DAPO on CPU ranks (threads + the in-process communicator, ZeRO-2 sharded AdamW): world
//! sizes 2 and 4 reach the parameters of one process, a failing rank stops everyone without a partial
//! checkpoint, and a sharded run resumes exactly.
use entrl_engine::{DType, Device};
use entrl_qwen3::Qwen3;
use entrl_rl::{train, TrainConfig};
mod common;

use common::runs::{deterministic, tmp};
use std::path::Path;

fn config(dir: &Path, extra: &[&str]) -> TrainConfig {
    let mut all = vec!["run.eval_every=0"];
    all.extend_from_slice(extra);
    common::runs::config(dir, &all)
}

fn weights(ckpt: &Path) -> Vec<(String, Vec<f64>)> {
    let m = Qwen3::load(ckpt, DType::F32, &Device::Cpu).unwrap();
    m.params().iter().map(|(n, t)| (n.clone(), t.to_vec_f64().unwrap())).collect()
}

#[test]
fn world_sizes_2_and_4_match_one_process() {
    let base = tmp("single");
    let one = train(
        config(
            &base,
            &[
                "train.steps=3",
                "run.world_size=1",
                "tokens.strategy=anchors:0.3",
                "tokens.pool=mini-batch",
                "run.eval_every=3",
            ],
        ),
        None,
    )
    .unwrap();
    let want = weights(one.checkpoint.as_ref().unwrap());
    for world in [1, 2, 4] {
        let dir = tmp(&format!("w{world}"));
        // World 1 through the communicator: the sharded path with a single rank.
        let ws = format!("run.world_size={world}");
        let s = train(
            config(
                &dir,
                &[
                    "train.steps=3",
                    &ws,
                    "run.comm=threads",
                    "tokens.strategy=anchors:0.3",
                    "tokens.pool=mini-batch",
                    "run.eval_every=3",
                ],
            ),
            None,
        )
        .unwrap();
        // Evaluation is split across the ranks and gives the same mean@k.
        assert_eq!(one.evals, s.evals, "world {world}");
        for (a, b) in one.steps.iter().zip(&s.steps) {
            assert_eq!((a.responses, a.response_tokens), (b.responses, b.response_tokens), "world {world}");
            assert_eq!(a.kept_frac, b.kept_frac, "world {world}: mini-batch pools are global, selection is too");
            assert!((a.loss - b.loss).abs() < 1e-6, "world {world}: loss {} vs {}", a.loss, b.loss);
        }
        let got = weights(s.checkpoint.as_ref().unwrap());
        let shard = if world == 1 {
            "optimizer.safetensors".to_string()
        } else {
            format!("optimizer.rank{}.safetensors", world - 1)
        };
        assert!(dir.join("checkpoints/step_000003").join(shard).is_file());
        let mut worst = 0f64;
        for ((n, w), (_, g)) in want.iter().zip(&got) {
            for (x, y) in w.iter().zip(g) {
                worst = worst.max((x - y).abs());
                assert!((x - y).abs() < 1e-4, "world {world}: {n} differs: {x} vs {y}");
            }
        }
        eprintln!("world {world}: max |Δw| = {worst:e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_failing_rank_stops_all_ranks_without_a_partial_checkpoint() {
    let dir = tmp("fail");
    let e = train(
        config(&dir, &["train.steps=3", "run.world_size=2", "run.save_every=1", "run.debug_fail_at=\"1:2\""]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rank 1") && e.contains("injected failure"), "{e}");
    let ck = dir.join("checkpoints");
    let mut names: Vec<String> =
        std::fs::read_dir(&ck).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, vec!["latest".to_string(), "step_000001".to_string()], "only the complete step-1 checkpoint");
    assert_eq!(std::fs::read_to_string(ck.join("latest")).unwrap(), "step_000001");
    let _ = std::fs::remove_dir_all(&dir);

    // A panicking rank aborts the group too: the others stop at once, not after the exchange timeout.
    let t0 = std::time::Instant::now();
    let panicky = ["train.steps=2", "run.world_size=2", "run.debug_fail_at=\"0:2:panic\"", "run.comm_timeout_s=600"];
    let e = train(config(&dir, &panicky), None).unwrap_err().to_string();
    assert!(e.contains("rank 0") && e.contains("panicked") && e.contains("injected failure"), "{e}");
    assert!(t0.elapsed().as_secs() < 120, "took {:?}", t0.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sharded_run_resumes_exactly() {
    let (a, b) = (tmp("resume-a"), tmp("resume-b"));
    // Diagnostics on: each rank's previous gradient shards travel in the checkpoint (cos_prev resumes too).
    let d = "run.diagnose_every=1";
    let full = train(config(&a, &["train.steps=4", "run.world_size=2", d]), None).unwrap();
    train(config(&b, &["train.steps=2", "run.world_size=2", d]), None).unwrap();
    assert!(b.join("checkpoints/step_000002/diag_prev.rank1.safetensors").is_file());
    let resumed = train(config(&b, &["train.steps=4", "run.world_size=2", d]), Some(&b)).unwrap();
    assert!(resumed.steps[0].diag.as_ref().unwrap().geometry.cos_prev.iter().all(Option::is_some));
    for (x, y) in full.steps[2..].iter().zip(&resumed.steps) {
        assert_eq!((x.step, x.loss, x.grad_norm, x.reward_mean), (y.step, y.loss, y.grad_norm, y.reward_mean));
        assert_eq!(deterministic(x), deterministic(y), "step {} differs after a sharded resume", x.step);
    }
    assert_eq!(weights(full.checkpoint.as_ref().unwrap()), weights(resumed.checkpoint.as_ref().unwrap()));
    // A checkpoint of 2 ranks cannot be resumed by 1.
    let e = train(config(&b, &["train.steps=5", "run.world_size=1", d]), Some(&b)).unwrap_err().to_string();
    assert!(e.contains("optimizer state for 2 rank(s)"), "{e}");
    for d in [a, b] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// The diagnostics under ZeRO-2 (each rank reduce-scatters its own shard of each gradient, dot products
/// are sums over shards) equal one process's, at world sizes 2 and 4.
#[test]
fn sharded_diagnostics_match_one_process() {
    let run = |world: usize| {
        let dir = tmp(&format!("diag-w{world}"));
        let ws = format!("run.world_size={world}");
        let comm = if world == 1 { "run.comm=auto" } else { "run.comm=threads" };
        let s = train(
            config(&dir, &["train.steps=2", &ws, comm, "tokens.strategy=explorers:0.3", "run.diagnose_every=1"]),
            None,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        s.steps.into_iter().map(|m| m.diag.expect("diagnosed")).collect::<Vec<_>>()
    };
    let one = run(1);
    assert!(one[1].geometry.cos_prev.iter().all(Option::is_some));
    for world in [2, 4] {
        let got = run(world);
        for (a, b) in one.iter().zip(&got) {
            let (x, y) = (&a.geometry, &b.geometry);
            for k in 0..5 {
                let rel = (x.norm[k] - y.norm[k]).abs() / x.norm[k];
                assert!(rel < 2e-3, "world {world}: norm {k}: {} vs {}", x.norm[k], y.norm[k]);
                for j in 0..5 {
                    assert!((x.cos[k][j] - y.cos[k][j]).abs() < 2e-3, "world {world}: cos {k} {j}: {a:?} vs {b:?}");
                }
                match (x.cos_prev[k], y.cos_prev[k]) {
                    (None, None) => {}
                    (Some(p), Some(q)) => assert!((p - q).abs() < 2e-3, "world {world}: cos_prev {k}: {p} vs {q}"),
                    other => panic!("world {world}: cos_prev {k}: {other:?}"),
                }
            }
            assert_eq!(a.tails, b.tails, "world {world}: the tails are chosen from the gathered mini-batch");
        }
    }
}
