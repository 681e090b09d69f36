//! End-to-end DAPO on the built-in task, on CPU: the default run learns, every strategy selects what it
//! claims, dynamic sampling refills, resume is exact, non-finite updates are skipped, bad input errors.
mod common;

use common::runs::{config, deterministic, tmp};
use entrl_engine::ops::RowStat;
use entrl_rl::config::{LongPrompts, Pool, VerifierChoice};
use entrl_rl::{train, Session, TrainConfig};

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn builtin_run_learns_and_writes_everything() {
    let dir = tmp("learn");
    let cfg = config(&dir, &["train.steps=60", "run.eval_every=30", "run.plot=true"]);
    let s = train(cfg, None).unwrap();
    assert_eq!(s.steps.len(), 60);
    let first = mean(s.steps[..10].iter().map(|m| m.acc_generated));
    let last = mean(s.steps[50..].iter().map(|m| m.acc_generated));
    assert!(last > first + 0.1, "accuracy of generated responses did not rise: {first:.3} → {last:.3}");
    let r0 = mean(s.steps[..10].iter().map(|m| m.reward_mean));
    let r1 = mean(s.steps[50..].iter().map(|m| m.reward_mean));
    assert!(r1 > r0, "reward did not rise: {r0:.3} → {r1:.3}");
    let (e0, e1) = (s.evals.first().unwrap(), s.evals.last().unwrap());
    assert_eq!((e0.0, e1.0), (0, 60));
    assert!(e0.1 < 0.15, "chance accuracy should be about 1/19, got {}", e0.1);
    assert!(e1.1 > e0.1 + 0.1, "held-out accuracy did not rise: {e0:?} → {e1:?}");
    // Warm-up starts at lr 0 (verl) and reaches the configured lr.
    assert_eq!(s.steps[0].lr, 0.0);
    assert_eq!(s.steps[10].lr, 1e-3);
    assert!(dir.join("metrics.jsonl").is_file() && dir.join("config.toml").is_file());
    assert!(dir.join("plots/summary.svg").is_file() && dir.join("plots/reward.svg").is_file());
    assert!(dir.join("plots/heldout.svg").is_file());
    let ck = s.checkpoint.unwrap();
    for f in ["model.safetensors", "optimizer.safetensors", "state.json", "config.json", "tokenizer.json"] {
        assert!(ck.join(f).is_file(), "checkpoint lacks {f}");
    }
    // The checkpoint is an HF model folder: it loads and generates with its own tokenizer.
    let tok = entrl_qwen3::Tokenizer::from_dir(&ck).unwrap();
    let m = entrl_qwen3::Qwen3::load(&ck, entrl_engine::DType::F32, &entrl_engine::Device::Cpu).unwrap();
    assert_eq!(m.config.vocab_size, tok.vocab_size());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_continues_exactly() {
    let (a, b) = (tmp("resume-a"), tmp("resume-b"));
    let extra = ["train.steps=4", "run.eval_every=0", "tokens.strategy=soft", "run.diagnose_every=1"];
    let full = train(config(&a, &extra), None).unwrap();
    let mut first = extra.to_vec();
    first[0] = "train.steps=2";
    let ck = train(config(&b, &first), None).unwrap().checkpoint.unwrap();
    // The optimizer state is keyed by HF names, as the weights: the fused projections are split.
    let ost = entrl_qwen3::checkpoint::Checkpoint::open_file(&ck.join("optimizer.safetensors")).unwrap();
    let names: Vec<String> = ost.shapes().unwrap().into_iter().map(|(n, _)| n).collect();
    for hf in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"] {
        assert!(names.contains(&format!("model.layers.0.{hf}.weight.exp_avg")), "{hf}: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("qkv_proj") || n.contains("gate_up_proj")), "{names:?}");
    let resumed = train(config(&b, &extra), Some(&b)).unwrap();
    assert_eq!(resumed.steps.len(), 2);
    for (x, y) in full.steps[2..].iter().zip(&resumed.steps) {
        assert_eq!(deterministic(x), deterministic(y), "step {} differs after resume", x.step);
    }
    // The metrics file continues where the checkpoint was taken: steps 1..=4, once each.
    let text = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    for d in [a, b] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn dynamic_sampling_fills_every_batch_with_informative_groups() {
    let dir = tmp("ds");
    // One round draws exactly one batch of prompts, so any all-equal group forces a refill.
    let s = train(config(&dir, &["train.steps=3", "run.eval_every=0", "rollout.gen_batch_size=16"]), None).unwrap();
    for m in &s.steps {
        assert_eq!((m.prompts, m.responses), (16, 256));
        // An informative group has both outcomes, so the kept batch is never all right or all wrong.
        assert!(m.acc_mean > 0.0 && m.acc_mean < 1.0);
    }
    // Chance accuracy is ~5%, so many groups are all-wrong and refills are needed.
    assert!(s.steps.iter().all(|m| m.gen_rounds > 1), "{:?}", s.steps.iter().map(|m| m.gen_rounds).collect::<Vec<_>>());
    assert!(s.steps.iter().all(|m| m.acc_mean > m.acc_generated));
    // the paged rollout's scheduler is reported per step: each round decodes its 256 responses together
    for m in &s.steps {
        assert!(m.rollout_peak_running >= 256 && m.rollout_decode_steps >= m.gen_rounds, "{m:?}");
        assert_eq!(m.rollout_preemptions, 0, "an ample pool never preempts");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    // A cap that cannot be met is a clear error (verl), or a short batch when asked for.
    let dir = tmp("ds-cap");
    let cap = ["train.steps=1", "rollout.max_gen_rounds=1", "rollout.gen_batch_size=2", "rollout.on_short_batch=error"];
    let e = train(config(&dir, &cap), None).unwrap_err().to_string();
    assert!(e.contains("dynamic sampling") && e.contains("max_gen_rounds"), "{e}");
    let short =
        ["train.steps=2", "rollout.max_gen_rounds=1", "rollout.gen_batch_size=2", "rollout.on_short_batch=train"];
    let dir = tmp("ds-short");
    let s = train(config(&dir, &short), None).unwrap();
    for m in &s.steps {
        assert!(m.prompts <= 2 && m.responses == 16 * m.prompts, "{m:?}");
        assert_eq!(m.updates, m.prompts.div_ceil(8), "one update per started mini-batch of 8 prompts");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sorted (score, weight) pairs of valid tokens per pool.
fn pools_of(v: &entrl_rl::trainer::TokenView, score: &[f32]) -> Vec<Vec<(f32, f32)>> {
    let mut out = Vec::new();
    let mut start = 0;
    for &len in &v.pools {
        let mut p: Vec<(f32, f32)> =
            (start..start + len).filter(|&i| v.valid[i] != 0.0).map(|i| (score[i], v.weights[i])).collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.push(p);
        start += len;
    }
    out
}

#[test]
fn every_strategy_selects_what_it_claims() {
    let dir = tmp("strategies");
    for (name, pool) in [
        ("full", "micro-batch"),
        ("random:0.2", "sequence"),
        ("anchors:0.2", "micro-batch"),
        ("explorers:0.3", "mini-batch"),
        ("pred-top:0.2", "sequence"),
        ("pred-bottom:0.2", "micro-batch"),
        ("position-random:0.2", "micro-batch"),
        ("position-random-explorers:0.2", "mini-batch"),
        ("anchors-matched:0.2", "micro-batch"),
        ("explorers-matched:0.3", "sequence"),
        ("soft", "micro-batch"),
    ] {
        let strat = format!("tokens.strategy={name:?}");
        let pool = format!("tokens.pool={pool:?}");
        let mut s = Session::new(config(&dir, &[&strat, &pool, "rollout.max_response_len=6"])).unwrap();
        let views = s.preview().unwrap();
        assert_eq!(views.len(), 2, "{name}: 16 prompts in mini-batches of 8");
        for v in &views {
            assert!(
                v.weights.iter().zip(&v.valid).all(|(&w, &m)| m != 0.0 || w == 0.0),
                "{name}: weight off the response"
            );
            let kept = |p: &[(f32, f32)]| p.iter().filter(|x| x.1 != 0.0).count();
            match name {
                "full" => assert!(v.weights.iter().zip(&v.valid).all(|(w, m)| w == m)),
                "soft" => {
                    // Direction starts negative: lower entropy, higher weight; all weights in [floor, 1].
                    for p in pools_of(v, &v.attn) {
                        assert!(p.iter().all(|x| (0.1..=1.0).contains(&x.1)));
                        assert!(p.windows(2).all(|w| w[0].0 == w[1].0 || w[0].1 >= w[1].1), "{name}: not monotone");
                    }
                }
                _ => {
                    let k: f64 = name.split(':').nth(1).unwrap().parse().unwrap();
                    let score = if name.starts_with("pred") { &v.pred } else { &v.attn };
                    for p in pools_of(v, score) {
                        let want = (k * p.len() as f64).ceil() as usize;
                        assert!(p.iter().all(|x| x.1 == 0.0 || x.1 == 1.0));
                        assert_eq!(kept(&p), want, "{name}: exact-k per pool");
                        // The matched strategies take tails within strata, not of the pool (unit tests).
                        let low = name.starts_with("anchors:") || name == "pred-bottom:0.2";
                        let high = name.starts_with("explorers:") || name == "pred-top:0.2";
                        if low {
                            assert!(
                                p[..want].iter().all(|x| x.1 == 1.0 || x.0 == p[want - 1].0),
                                "{name}: not the lowest"
                            );
                        }
                        if high {
                            let n = p.len();
                            assert!(
                                p[n - want..].iter().all(|x| x.1 == 1.0 || x.0 == p[n - want].0),
                                "{name}: not the highest"
                            );
                        }
                    }
                }
            }
        }
        // And a full training step runs with it (diagnostics on).
        let m = s.step(&entrl_rl::progress::Progress::new(1, 0, false, false)).unwrap();
        assert!(m.kept_frac > 0.0 && m.kept_frac <= 1.0, "{name}: kept {}", m.kept_frac);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diagnostics_measure_gradient_geometry() {
    use entrl_rl::diagnose::DiagGrad::{Anchors, Explorers, Full, Random, Selected};
    let dir = tmp("diag");
    let s = train(
        config(&dir, &["train.steps=3", "run.eval_every=0", "tokens.strategy=anchors:0.2", "run.diagnose_every=2"]),
        None,
    )
    .unwrap();
    // Every second step is diagnosed.
    assert!(s.steps[0].diag.is_none() && s.steps[2].diag.is_none());
    let m = &s.steps[1];
    let d = m.diag.as_ref().expect("step 2 is diagnosed");
    let g = &d.geometry;
    for k in [Full, Anchors, Explorers, Random, Selected] {
        assert!(g.norm[k as usize] > 0.0, "{k:?}: {d:?}");
        for j in [Full, Anchors, Explorers, Random, Selected] {
            let c = g.cos[k as usize][j as usize];
            assert!((-1.0..=1.0).contains(&c), "cos({k:?}, {j:?}) = {c}");
        }
    }
    // anchors:0.2 trains exactly the anchor set: the same gradient, the same bf16 shard.
    assert!((g.cos[Anchors as usize][Selected as usize] - 1.0).abs() < 1e-9, "{d:?}");
    assert!((g.norm[Anchors as usize] - g.norm[Selected as usize]).abs() <= 1e-9 * g.norm[Selected as usize]);
    // Disjoint tails are not the same direction; the subsets are part of the full loss.
    assert!(g.cos[Anchors as usize][Explorers as usize] < 0.999, "{d:?}");
    assert!(g.cos[Full as usize][Random as usize] > 0.0, "{d:?}");
    // Every update of the step is diagnosed and the step's second one has a previous update.
    assert!(m.updates >= 2, "{}", m.updates);
    assert!(g.cos_prev.iter().all(|c| c.is_some_and(|c| (-1.0..=1.0).contains(&c))), "{d:?}");
    assert!(d.tails.anchor_hnorm <= d.tails.explorer_hnorm, "{d:?}");
    // Written as flat diag_* keys.
    let line: serde_json::Value = serde_json::from_str(&m.to_json_line()).unwrap();
    assert!(line["diag_norm_explorers"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line["diag_cos_anchors_selected"].as_f64().is_some(), "{line}");
    assert!(line.get("diag").is_none(), "{line}");
    let _ = std::fs::remove_dir_all(&dir);

    // With the full strategy the selected loss is the full loss: cosine 1, equal norms; one update only
    // (one mini-batch), so no previous gradient.
    let dir = tmp("diag-full");
    let f = train(
        config(&dir, &["train.steps=1", "run.eval_every=0", "train.mini_batch_size=16", "run.diagnose_every=1"]),
        None,
    )
    .unwrap();
    let d = f.steps[0].diag.as_ref().unwrap();
    let g = &d.geometry;
    assert!((g.cos[Full as usize][Selected as usize] - 1.0).abs() < 1e-9, "{d:?}");
    assert!((g.norm[Full as usize] - g.norm[Selected as usize]).abs() <= 1e-9 * g.norm[Full as usize]);
    if f.steps[0].updates == 1 {
        assert!(g.cos_prev.iter().all(Option::is_none), "{d:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A NaN in one update's gradient (test hook) skips that update only: it is counted, nothing of it is
/// applied, and the run goes on.
#[test]
fn a_non_finite_gradient_is_skipped_and_the_run_goes_on() {
    let dir = tmp("nan-grad");
    let s = train(config(&dir, &["train.steps=3", "run.eval_every=0", "run.debug_nan_at=\"2:grad\""]), None).unwrap();
    let skipped: Vec<usize> = s.steps.iter().map(|m| m.skipped_updates).collect();
    assert_eq!(skipped, vec![0, 1, 0]);
    assert_eq!(s.steps[2].skipped_total, 1);
    let ck = entrl_qwen3::Qwen3::load(&s.checkpoint.unwrap(), entrl_engine::DType::F32, &entrl_engine::Device::Cpu);
    for (name, t) in ck.unwrap().params() {
        assert!(t.to_vec_f64().unwrap().iter().all(|x| x.is_finite()), "{name} received a non-finite update");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A learning rate that blows the weights up ends the run with a clear error about non-finite values
/// (skipped updates, or non-finite logits in the next rollout), never with rc 0 and NaN weights.
#[test]
fn a_diverging_run_stops_with_an_error() {
    let dir = tmp("nan-lr");
    let o = [
        "run.eval_every=0",
        "train.lr=1e30",
        "train.warmup_steps=0",
        "rollout.dynamic_sampling=false",
        "train.steps=5",
    ];
    let e = train(config(&dir, &o), None).unwrap_err().to_string();
    assert!(e.contains("non-finite"), "{e}");
    assert!(entrl_rl::checkpoints::latest(&dir).unwrap().is_none(), "nothing was saved");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": [{\"role\": \"user\", \"content\": \"1 + 1 =\"}], \"reward_model\": {\"ground_truth\": \"2\"}}\n{oops\n",
    )
    .unwrap();
    let e = Session::new(config(&dir, &[&format!("data.train={:?}", data.display().to_string())]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("line 2"), "{e}");

    let e = TrainConfig::resolve(None, &["tokens.strategy=middle:0.2".into()]).unwrap_err().to_string();
    assert!(e.contains("unknown token strategy \"middle\""), "{e}");

    let empty = dir.join("model");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("config.json"), entrl_rl::task::builtin_model_config(19).to_hf_json()).unwrap();
    entrl_rl::task::builtin_tokenizer().save(&empty).unwrap();
    let e = Session::new(config(&dir, &[&format!("model.path={:?}", empty.display().to_string())]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model.safetensors"), "{e}");

    let e = Session::new(config(&dir, &["tokens.entropy_layers=[5]"])).err().unwrap().to_string();
    assert!(e.contains("layer 5 does not exist"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shipped_configs_resolve() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let c = TrainConfig::resolve(Some(&p), &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(c.preset, "dapo", "{}", p.display());
        c.strategy().unwrap();
        // The shipped example follows the seed paper: boxed verifier, left truncation (B.3, B.4).
        assert_eq!(c.reward.verifier, VerifierChoice::Boxed, "{}", p.display());
        assert_eq!(c.rollout.long_prompts, LongPrompts::TruncateLeft, "{}", p.display());
        assert_eq!(c.tokens.pool, Pool::MiniBatch, "{}", p.display());
    }
}

/// Two held-out sources of 55 and 1 prompts: metrics.jsonl carries each source's mean@k and their
/// unweighted average at every evaluation (step 0 included), and the run reports that average. With two
/// probe layers, every step's line also carries the entropy dynamics of each (`hnorm_l{layer}_*`), in range.
#[test]
fn evaluations_report_each_source_and_their_average() {
    let dir = tmp("heldout");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("eval.jsonl");
    let row = |q: &str, truth: &str, source: &str| {
        format!(
            "{{\"prompt\": {q:?}, \"reward_model\": {{\"ground_truth\": {truth:?}}}, \"data_source\": {source:?}}}\n"
        )
    };
    let mut text: String = entrl_rl::task::builtin_prompts(9)
        .iter()
        .map(|r| row(&r.messages[0].content, &r.ground_truth, entrl_rl::task::BUILTIN_SOURCE))
        .collect();
    // The boxed verifier judges this source (auto): the built-in model never writes a box, so 0.
    text += &row("1 + 1 =", "2", "other");
    std::fs::write(&data, text).unwrap();
    let eval = format!("data.eval={:?}", data.display().to_string());
    let extra = ["train.steps=2", "run.eval_every=1", &eval, "run.plot=true", "tokens.entropy_layers=[0, 1]"];
    let s = train(config(&dir, &extra), None).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "step 0 and two steps");
    assert_eq!(s.evals.len(), 3);
    for (v, (step, average)) in lines.iter().zip(&s.evals) {
        assert_eq!(v["step"].as_u64(), Some(*step));
        let (add, other) = (v["val/entrl/add/mean@4"].as_f64().unwrap(), v["val/other/mean@4"].as_f64().unwrap());
        assert_eq!(other, 0.0);
        assert_eq!(v["val/average"].as_f64(), Some((add + other) / 2.0), "{v}");
        assert_eq!(v["val/average"].as_f64(), Some(*average), "the summary reports the average");
        let pooled = v["eval_acc"].as_f64().unwrap();
        assert!((pooled - add * 55.0 / 56.0).abs() < 1e-12, "eval_acc pools every response: {v}");
    }
    assert!(dir.join("plots/heldout.svg").is_file());
    for v in &lines[1..] {
        for layer in [0, 1] {
            let num = |s: &str| {
                let x = v[format!("hnorm_l{layer}_{s}")].as_f64();
                x.unwrap_or_else(|| panic!("hnorm_l{layer}_{s} is not a number: {v}"))
            };
            let q = ["q05", "q25", "q50", "q75", "q95"].map(num);
            assert!(q.iter().all(|x| (0.0..=1.0).contains(x)), "quantiles in [0, 1]: {q:?}");
            assert!(q.windows(2).all(|w| w[0] <= w[1]), "quantiles ordered: {q:?}");
            let (a, e) = (num("anchor_mean"), num("explorer_mean"));
            assert!(q[0] - 1e-12 <= a && a <= q[2] && q[2] <= e && e <= q[4] + 1e-12, "tails {a} {e}, {q:?}");
            for rho in ["rho_pred", "rho_relpos"] {
                assert!((-1.0..=1.0).contains(&num(rho)), "{rho}: {v}");
            }
        }
        assert!(v.get("hnorm_l2_q50").is_none(), "only the probe layers: {v}");
    }
    assert!(lines[0].get("hnorm_l0_q50").is_none(), "the step-0 evaluation line has no step statistics");
    let svg = std::fs::read_to_string(dir.join("plots/entropy_dynamics.svg")).unwrap();
    assert!(svg.contains("Layer 0:") && svg.contains("Layer 1:"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `reward.verifier` and `rollout.long_prompts` reach the session: its verifier, and its training and
/// held-out prompts with their counts (or the refusal naming the file and the row).
#[test]
fn session_applies_the_verifier_and_long_prompt_choices() {
    let dir = tmp("choices");
    std::fs::create_dir_all(&dir).unwrap();
    let s = Session::new(config(&dir, &[])).unwrap();
    assert_eq!(s.verifier()(entrl_rl::task::BUILTIN_SOURCE).name(), "first_word", "auto: the built-in task's own");
    let s = Session::new(config(&dir, &["reward.verifier=boxed"])).unwrap();
    assert_eq!(s.verifier()(entrl_rl::task::BUILTIN_SOURCE).name(), "boxed_math");
    assert_eq!(s.verifier()("math_dapo").name(), "boxed_math");

    let line = |content: &str| {
        format!("{{\"prompt\": [{{\"role\": \"user\", \"content\": {content:?}}}], \"reward_model\": {{\"ground_truth\": \"2\"}}}}\n")
    };
    let data = dir.join("long.jsonl");
    let long = (0..30).map(|i| (i % 10).to_string()).collect::<Vec<_>>().join(" + ");
    std::fs::write(&data, line("1 + 1 =") + &line(&long) + &line("2 + 2 =")).unwrap();
    let path = format!("{:?}", data.display().to_string());
    let with = |policy: &str| {
        config(
            &dir,
            &[&format!("data.train={path}"), &format!("data.eval={path}"), &format!("rollout.long_prompts={policy}")],
        )
    };
    let s = Session::new(with("truncate-left")).unwrap();
    assert_eq!(s.prompts.len(), 3);
    assert_eq!(s.prompts[1].ids.len(), s.cfg.rollout.max_prompt_len);
    assert_eq!((s.prompt_counts.truncated, s.prompt_counts.dropped), (1, 0));
    assert_eq!(s.eval_prompt_counts, s.prompt_counts);
    let s = Session::new(with("drop")).unwrap();
    assert_eq!(s.prompts.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 2]);
    assert_eq!((s.prompt_counts.truncated, s.prompt_counts.dropped), (0, 1));
    let e = Session::new(with("error")).err().unwrap().to_string();
    assert!(
        e.contains("long.jsonl: prompt row 2 (data source \"math_dapo\"): ") && e.contains(" tokens, more than"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Set the first value of the first f32 tensor of safetensors `file` whose name contains `part` to NaN.
fn poison_safetensors(file: &std::path::Path, part: &str) -> String {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (name, info) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, v)| k.contains(part) && v["dtype"] == "F32")
        .unwrap_or_else(|| panic!("no f32 tensor named *{part}* in {}", file.display()));
    let start = 8 + n + info["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
    name.clone()
}

#[test]
fn a_checkpoint_holding_nan_is_not_resumed() {
    let dir = tmp("nan-ckpt");
    let run = train(config(&dir, &["train.steps=1", "run.eval_every=0"]), None).unwrap();
    let ck = run.checkpoint.unwrap();
    let copy = |to: &str| {
        let d = dir.join(to);
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&ck).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
        }
        d
    };
    // a NaN weight: refused naming the tensor
    let w = copy("weights");
    let name = poison_safetensors(&w.join("model.safetensors"), "mlp");
    let e = Session::resume(config(&dir, &["train.steps=2"]), &w).err().unwrap().to_string();
    assert!(e.contains(&format!("tensor {name}")) && e.contains("non-finite value (NaN at element 0)"), "{e}");
    // a NaN AdamW moment: the optimizer state is not loaded
    let o = copy("optimizer");
    poison_safetensors(&o.join("optimizer.safetensors"), "exp_avg");
    let e = Session::resume(config(&dir, &["train.steps=2"]), &o).err().unwrap().to_string();
    assert!(e.contains("optimizer.safetensors") && e.contains("non-finite value"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every `tokens.score` (every row statistic of the engine's table) trains the built-in task on CPU, and
/// its scores are what it says: hmix and Hnorm in [0, 1], the max probability in (0, 1], the sink mass in
/// [0, 1] (1 at the first response position only when the prompt is shorter than the sink).
#[test]
fn every_token_score_trains_and_ranks_by_its_statistic() {
    for score in RowStat::SCORE_NAMES {
        let dir = tmp(&format!("score-{score}"));
        let sc = format!("tokens.score={score}");
        let cfg = config(&dir, &["train.steps=2", "run.eval_every=0", "tokens.strategy=anchors:0.2", &sc]);
        let mut s = Session::new(cfg.clone()).unwrap();
        let views = s.preview().unwrap();
        let attn: Vec<f32> = views.iter().flat_map(|v| v.attn.iter().copied()).collect();
        assert!(!attn.is_empty());
        assert!(attn.iter().all(|x| x.is_finite() && (0.0..=1.0 + 1e-5).contains(x)), "{score}: {attn:?}");
        if score == "max-prob" {
            assert!(attn.iter().all(|&x| x > 0.0), "{score}");
        }
        let r = train(cfg, None).unwrap();
        assert_eq!(r.steps.len(), 2, "{score}");
        assert!(r.steps.iter().all(|m| m.loss.is_finite() && m.kept_frac > 0.0), "{score}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    // hmix and Hnorm are different statistics: on the same batch they rank differently.
    let dir = tmp("score-diff");
    let views = |score: &str| {
        let sc = format!("tokens.score={score}");
        let mut s = Session::new(config(&dir, &["run.eval_every=0", &sc])).unwrap();
        s.preview().unwrap().into_iter().flat_map(|v| v.attn).collect::<Vec<f32>>()
    };
    let (h, m) = (views("hnorm"), views("hmix"));
    assert_eq!(h.len(), m.len());
    assert!(h.iter().zip(&m).any(|(a, b)| (a - b).abs() > 1e-4), "hmix equals Hnorm everywhere");
    // Concavity: the mixture's entropy is at least the heads' mean entropy (same ln(#keys) divisor).
    assert!(h.iter().zip(&m).all(|(a, b)| *b + 1e-5 >= *a), "hmix < mean Hnorm somewhere");
    let _ = std::fs::remove_dir_all(&dir);
}
