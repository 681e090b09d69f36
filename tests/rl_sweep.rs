//! `entrl sweep` on the built-in task: a partial cell resumes, a cell never started starts, finished cells
//! are skipped on a rerun (their metrics untouched), and `compare` writes the arms' table.
mod common;

use common::runs::tmp;
use entrl_rl::compare::compare;
use entrl_rl::sweep::{run_sweep, CellOutcome, Manifest, DONE};

/// Quiet CPU settings applied to every cell without entering the manifest.
fn quiet() -> Vec<String> {
    ["model.device=cpu", "run.progress=false", "run.log_every=0", "run.plot=false"].map(String::from).to_vec()
}

#[test]
fn a_sweep_resumes_skips_finished_cells_and_compares_its_arms() {
    let out = tmp("sweep");
    let grid = ["tokens.strategy=full,anchors:0.2".to_string()];
    let m = Manifest::plan(None, &grid, 1, &["train.steps=2".into(), "run.eval_every=1".into()]).unwrap();
    assert_eq!(m.cells.len(), 2);
    // Cell 1 was interrupted after one step: its run folder holds a checkpoint at step 1.
    let mut partial = quiet();
    partial.push("train.steps=1".into());
    let first = entrl_rl::train(m.cell_config(&out, &m.cells[1], &partial).unwrap(), None).unwrap();
    assert_eq!(first.steps.len(), 1);

    let s = run_sweep(&out, &m, 1, &quiet()).unwrap();
    assert!(!s.interrupted);
    let outcomes: Vec<CellOutcome> = s.outcomes.iter().map(|o| o.1).collect();
    assert_eq!(outcomes, [CellOutcome::Started, CellOutcome::Resumed]);
    let metrics = |i: usize| std::fs::read_to_string(out.join(&m.cells[i].dir).join("metrics.jsonl")).unwrap();
    let before = [metrics(0), metrics(1)];
    for text in &before {
        let steps: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [0, 1, 2], "an evaluation line at 0 and a line per step, resumed without a gap");
    }
    assert!(out.join("sweep.json").is_file());

    // A rerun skips both; without its completion marker a finished cell only resumes at its last step.
    let s = run_sweep(&out, &m, 1, &quiet()).unwrap();
    assert!(s.outcomes.iter().all(|o| o.1 == CellOutcome::Skipped));
    std::fs::remove_file(out.join(&m.cells[0].dir).join(DONE)).unwrap();
    let s = run_sweep(&out, &m, 1, &quiet()).unwrap();
    assert_eq!(s.outcomes.iter().map(|o| o.1).collect::<Vec<_>>(), [CellOutcome::Resumed, CellOutcome::Skipped]);
    assert_eq!([metrics(0), metrics(1)], before, "finished cells are not rerun");

    let c = compare(std::slice::from_ref(&out), None, &out).unwrap();
    assert_eq!(c.arms, ["tokens.strategy=full", "tokens.strategy=anchors:0.2"]);
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(md.contains("| tokens.strategy=anchors:0.2 | 1 |"), "{md}");
    assert!(md.contains("Against the baseline `tokens.strategy=full`"), "{md}");
    assert!(out.join("comparison.svg").is_file());
    let _ = std::fs::remove_dir_all(&out);
}
