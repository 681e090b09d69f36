//! The built-in reasoning task `builtin:chain` end to end on CPU: the preset with a tiny warm start trains,
//! writes its metrics and the warm start's log, and a resumed run skips the warm start.
mod common;

use common::runs::tmp;
use entrl_rl::{train, TrainConfig};
use std::path::Path;

fn chain_config(dir: &Path, extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = [
        "preset=chain",
        "model.device=cpu",
        "run.progress=false",
        "run.log_every=0",
        "run.plot=false",
        "train.warmup_sft_steps=3",
        "train.warmup_sft_batch=8",
        "rollout.n=4",
        "rollout.gen_batch_size=4",
        "train.batch_size=4",
        "train.mini_batch_size=4",
        "run.eval_every=2",
        "run.eval_k=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("run.out_dir={:?}", dir.display().to_string()));
    o.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::resolve(None, &o).unwrap()
}

#[test]
fn chain_preset_warm_starts_trains_and_resumes() {
    let dir = tmp("chain");
    let s = train(chain_config(&dir, &["train.steps=2"]), None).unwrap();
    assert_eq!((s.sft.len(), s.steps.len()), (3, 2));
    assert!(s.sft.iter().all(|x| x.nll.is_finite()));
    assert_eq!(s.evals.iter().map(|e| e.0).collect::<Vec<_>>(), vec![0, 2]);
    // A barely warm-started policy may get every group wrong (dynamic sampling then trains on nothing).
    assert!(s.steps.iter().all(|m| (0.0..=1.0).contains(&m.acc_generated)));
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "step-0 eval and two steps: {metrics}");
    let sft = std::fs::read_to_string(dir.join("sft.jsonl")).unwrap();
    assert_eq!(sft.lines().count(), 3);
    assert!(sft.lines().all(|l| l.contains("\"nll\"")));
    // The checkpoint holds the chain tokenizer; resuming it skips the warm start.
    let tok = entrl_qwen3::Tokenizer::from_dir(s.checkpoint.as_ref().unwrap()).unwrap();
    assert_eq!(tok.vocab_size(), 33);
    let r = train(chain_config(&dir, &["train.steps=3"]), Some(&dir)).unwrap();
    assert_eq!((r.sft.len(), r.steps.len()), (0, 1));
    assert_eq!(std::fs::read_to_string(dir.join("sft.jsonl")).unwrap(), sft, "resume does not warm up again");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn warm_start_needs_the_chain_task() {
    let e = TrainConfig::resolve(None, &["train.warmup_sft_steps=5".into()]).unwrap_err().to_string();
    assert!(e.contains("train.warmup_sft_steps"), "{e}");
    let c = TrainConfig::resolve(None, &["data.train=builtin:chain".into(), "train.warmup_sft_steps=5".into()]);
    assert_eq!(c.unwrap().train.warmup_sft_steps, 5);
    let c = TrainConfig::resolve(None, &["preset=chain".into()]).unwrap();
    assert_eq!(
        (c.data.train.as_str(), c.data.eval.as_str(), c.train.warmup_sft_steps),
        ("builtin:chain", "builtin:chain", 200)
    );
    assert_eq!(TrainConfig::resolve(None, &[]).unwrap().train.warmup_sft_steps, 0);
}
