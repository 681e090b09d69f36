//! A stop request (what the first Ctrl-C sends) reaching a data-parallel run: every rank stops after the
//! same step, the run saves a checkpoint with every rank's optimizer shard and reports `interrupted`, and
//! it resumes from there. Its own test binary: the request is process-wide.
mod common;

use common::runs::{config, tmp};
use entrl_rl::{checkpoints, interrupt, train};

#[test]
fn every_rank_stops_after_the_same_step_and_the_run_resumes() {
    let dir = tmp("interrupt");
    let watch = dir.clone();
    let requester = std::thread::spawn(move || {
        while std::fs::read_to_string(watch.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 2 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        interrupt::request();
    });
    let o = ["train.steps=1000", "run.world_size=2", "run.eval_every=0"];
    let s = train(config(&dir, &o), None).unwrap();
    requester.join().unwrap();
    interrupt::clear();
    assert!(s.interrupted);
    let last = s.steps.last().unwrap().step;
    assert!((2..1000).contains(&last));
    let ck = s.checkpoint.expect("a checkpoint was saved");
    assert_eq!(checkpoints::latest(&dir).unwrap().unwrap(), ck);
    for rank in 0..2 {
        assert!(ck.join(format!("optimizer.rank{rank}.safetensors")).is_file());
    }
    let r = train(config(&dir, &["train.steps=3", "run.world_size=2", "run.eval_every=0"]), Some(&dir)).unwrap();
    assert!(!r.interrupted);
    assert_eq!(r.steps.first().map(|m| m.step), (last < 3).then_some(last + 1));
    let _ = std::fs::remove_dir_all(&dir);
}
