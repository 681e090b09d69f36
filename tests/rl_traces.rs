//! Token traces (`run.trace_every`) from a short CPU run on the built-in task, read back with the parquet
//! crate's reader: one row per response token, the documented columns and types, values that agree with
//! the step's metrics, and the gradient-signal magnitude's zeros where the surrogate is flat.
mod common;

use common::runs::{config, tmp};
use entrl_rl::trace::{self, Column};
use entrl_rl::train;
use std::collections::BTreeMap;

#[test]
fn traced_steps_write_one_row_per_response_token_agreeing_with_the_metrics() {
    let dir = tmp("traces");
    let extra = [
        "train.steps=3",
        "run.eval_every=0",
        "run.trace_every=2",
        "tokens.entropy_layers=[0, 1]",
        "tokens.strategy=\"anchors:0.5\"",
    ];
    let s = train(config(&dir, &extra), None).unwrap();
    let files = trace::list(&dir).unwrap();
    assert_eq!(files, vec![dir.join("traces/step_000002.parquet")], "only step 2 of 3 is traced");
    let m = &s.steps[1];
    let t = trace::read(&files[0]).unwrap();

    // Columns and their types, in the documented order.
    let kinds: Vec<(&str, &str)> = t
        .columns
        .iter()
        .map(|(n, c)| {
            let k = match c {
                Column::I32(_) => "i32",
                Column::I64(_) => "i64",
                Column::F32(_) => "f32",
                Column::F64(_) => "f64",
                Column::Bool(_) => "bool",
                Column::Utf8(_) => "utf8",
            };
            (n.as_str(), k)
        })
        .collect();
    let want = [
        ("step", "i64"),
        ("sample", "i32"),
        ("prompt", "i64"),
        ("data_source", "utf8"),
        ("position", "i32"),
        ("rel_position", "f32"),
        ("response_len", "i32"),
        ("hnorm_l0", "f32"),
        ("hnorm_l1", "f32"),
        ("pred_entropy", "f32"),
        ("old_logp", "f32"),
        ("new_logp", "f32"),
        ("ratio", "f32"),
        ("advantage", "f32"),
        ("reward", "f64"),
        ("selected", "bool"),
        ("token_weight", "f32"),
        ("grad_norm", "f32"),
        ("grad_norm_applied", "f32"),
    ];
    assert_eq!(kinds, want);

    // One row per response token; per sample, rows = its response length, positions 0..len.
    assert_eq!(t.rows(), m.response_tokens);
    let col = |n: &str| t.f64s(n).unwrap();
    let (sample, pos, len, reward) = (col("sample"), col("position"), col("response_len"), col("reward"));
    assert!(col("step").iter().all(|&x| x == 2.0));
    let mut per_sample: BTreeMap<i64, (usize, f64, f64)> = BTreeMap::new();
    for i in 0..t.rows() {
        let e = per_sample.entry(sample[i] as i64).or_insert((0, len[i], reward[i]));
        assert_eq!(pos[i] as usize, e.0, "row {i}: positions run 0.. within a sample");
        assert_eq!((len[i], reward[i]), (e.1, e.2), "row {i}: per-sample values are constant");
        e.0 += 1;
    }
    assert_eq!(per_sample.len(), m.responses);
    assert!(per_sample.values().all(|&(n, l, _)| n as f64 == l));
    let mean_reward = per_sample.values().map(|v| v.2).sum::<f64>() / per_sample.len() as f64;
    assert!((mean_reward - m.reward_mean).abs() < 1e-9, "{mean_reward} vs {}", m.reward_mean);

    // Selection: the mean token weight is the logged kept fraction; selected ⇔ weight ≠ 0.
    let (w, sel) = (col("token_weight"), col("selected"));
    let kept = w.iter().sum::<f64>() / t.rows() as f64;
    assert!((kept - m.kept_frac).abs() < 1e-6, "{kept} vs {}", m.kept_frac);
    assert!(w.iter().zip(&sel).all(|(&w, &s)| (w != 0.0) == (s == 1.0)));
    assert!(kept > 0.3 && kept < 0.7, "anchors:0.5 keeps about half: {kept}");

    // Scores: Hnorm in [0, 1], relative position = position / length, ratio = e^(new − old).
    for l in ["hnorm_l0", "hnorm_l1"] {
        assert!(col(l).iter().all(|&h| (0.0..=1.0 + 1e-6).contains(&h)), "{l}");
    }
    let (rel, old, new, ratio) = (col("rel_position"), col("old_logp"), col("new_logp"), col("ratio"));
    for i in 0..t.rows() {
        assert!((rel[i] - pos[i] / len[i]).abs() < 1e-6);
        assert!((ratio[i] - (new[i] - old[i]).exp()).abs() < 1e-5 * ratio[i].max(1.0), "row {i}");
    }
    // The first mini-batch (8 prompts × 16 responses) is updated with the weights its old log-probs were
    // taken with: ratio 1.
    let first_mb = (0..t.rows()).take_while(|&i| sample[i] < 128.0).count();
    assert!(first_mb > 0 && (0..first_mb).all(|i| (ratio[i] - 1.0).abs() < 1e-4), "ratio 1 in mini-batch 1");

    // Gradient-signal magnitude: 0 exactly where A = 0; the applied one is 0 off the selection and
    // c_t = w / Z times the magnitude on it.
    let (adv, g, ga) = (col("advantage"), col("grad_norm"), col("grad_norm_applied"));
    assert!(g.iter().all(|&x| x.is_finite() && x >= 0.0));
    for i in 0..t.rows() {
        if adv[i] == 0.0 {
            assert_eq!(g[i], 0.0, "row {i}: A = 0");
        }
        if sel[i] == 0.0 {
            assert_eq!(ga[i], 0.0, "row {i}: not selected");
        }
    }
    assert!(g.iter().filter(|&&x| x > 0.0).count() > t.rows() / 4, "most tokens carry signal");
    assert!(g.iter().zip(&sel).any(|(&x, &s)| x > 0.0 && s == 0.0), "unselected tokens keep their magnitude");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tracing_is_off_by_default() {
    let dir = tmp("traces-off");
    train(config(&dir, &["train.steps=1", "run.eval_every=0"]), None).unwrap();
    assert!(trace::list(&dir).unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rows of a trace keyed by (sample, position), with the reward and token weight.
fn keyed(t: &trace::Table) -> Vec<(i64, i64, f64, f64)> {
    let (s, p, r, w) = (
        t.f64s("sample").unwrap(),
        t.f64s("position").unwrap(),
        t.f64s("reward").unwrap(),
        t.f64s("token_weight").unwrap(),
    );
    let mut v: Vec<(i64, i64, f64, f64)> = (0..t.rows()).map(|i| (s[i] as i64, p[i] as i64, r[i], w[i])).collect();
    v.sort_by_key(|a| (a.0, a.1));
    v
}

/// With two data-parallel ranks each writes its own rows; together they are the one-process trace.
#[test]
fn each_rank_writes_its_own_rows_and_together_they_are_the_step() {
    let (one, two) = (tmp("traces-w1"), tmp("traces-w2"));
    let base = ["train.steps=1", "run.eval_every=0", "run.trace_every=1", "tokens.strategy=\"anchors:0.3\""];
    train(config(&one, &base), None).unwrap();
    let mut extra = base.to_vec();
    extra.extend(["run.world_size=2", "run.comm=threads"]);
    train(config(&two, &extra), None).unwrap();
    let files = trace::list(&two).unwrap();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["step_000001_rank0.parquet", "step_000001_rank1.parquet"]);
    let (a, b) = (trace::read(&files[0]).unwrap(), trace::read(&files[1]).unwrap());
    assert!(a.rows() > 0 && b.rows() > 0, "both ranks hold rows");
    let single = keyed(&trace::read(&trace::list(&one).unwrap()[0]).unwrap());
    let mut both = keyed(&a);
    both.extend(keyed(&b));
    both.sort_by_key(|a| (a.0, a.1));
    assert_eq!(single.len(), both.len());
    for (x, y) in single.iter().zip(&both) {
        assert_eq!((x.0, x.1, x.2), (y.0, y.1, y.2));
        assert!((x.3 - y.3).abs() < 1e-6, "{x:?} vs {y:?}");
    }
    for d in [one, two] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A resumed run traces its steps again into the same folder: the file of a traced step is replaced whole
/// (atomic rename), and no temporary file is left.
#[test]
fn a_resumed_run_replaces_the_trace_of_a_step_it_repeats() {
    let dir = tmp("traces-resume");
    let first = ["train.steps=1", "run.eval_every=0", "run.trace_every=1", "run.save_every=1"];
    train(config(&dir, &first), None).unwrap();
    let step1 = trace::read(&dir.join("traces/step_000001.parquet")).unwrap();
    // A stale file for step 2 (as an interrupted earlier attempt could leave) is replaced.
    std::fs::write(dir.join("traces/step_000002.parquet"), b"stale").unwrap();
    let mut more = first.to_vec();
    more[0] = "train.steps=2";
    train(config(&dir, &more), Some(&dir)).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["step_000001.parquet", "step_000002.parquet"]);
    assert_eq!(trace::read(&dir.join("traces/step_000001.parquet")).unwrap(), step1, "step 1 untouched");
    let step2 = trace::read(&dir.join("traces/step_000002.parquet")).unwrap();
    assert!(step2.rows() > 0 && step2.f64s("step").unwrap().iter().all(|&s| s == 2.0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `entrl analyze` end to end: a short traced run, then the report's sections, its numbers' shape and the
/// charts in the run folder.
#[test]
fn analyze_reports_partial_correlations_entropy_relation_and_matched_subsets() {
    let dir = tmp("traces-analyze");
    let extra = ["train.steps=2", "run.eval_every=0", "run.trace_every=1", "tokens.entropy_layers=[0, 1]"];
    train(config(&dir, &extra), None).unwrap();
    let a = entrl_rl::analyze::analyze(&dir).unwrap();
    let md = std::fs::read_to_string(dir.join("analysis.md")).unwrap();
    assert_eq!(md, a.markdown);
    for section in [
        "## Data",
        "## Partial correlation of Hnorm with the gradient-signal magnitude",
        "### Per step (partial Pearson r)",
        "## Attention entropy vs predictive entropy",
        "## Matched subsets",
        "### Layer 0",
        "### Layer 1",
        "| anchors-matched |",
        "| explorers (tail) |",
        "## Plots",
    ] {
        assert!(md.contains(section), "{section} missing:\n{md}");
    }
    // Both layers have a defined partial correlation with an interval inside [-1, 1].
    for l in [0, 1] {
        let row = md.lines().find(|r| r.starts_with(&format!("| {l} | "))).unwrap_or_else(|| panic!("{md}"));
        assert!(row.contains('[') && !row.contains("undefined"), "{row}");
    }
    // The tails hold ⌈0.2·n⌉ tokens per step, as many as their matched twins.
    let count = |name: &str| -> usize {
        let row = md.lines().find(|r| r.starts_with(&format!("| {name} |"))).unwrap();
        row.split('|').nth(2).unwrap().trim().parse().unwrap()
    };
    assert_eq!(count("anchors (tail)"), count("anchors-matched"));
    assert_eq!(count("explorers (tail)"), count("explorers-matched"));
    let all = count("all tokens");
    assert!(count("anchors (tail)") * 5 >= all && count("anchors (tail)") * 5 < all + 10);
    for f in ["analysis_hnorm_grad.svg", "analysis_hnorm_pred.svg"] {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("layer 1"), "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
