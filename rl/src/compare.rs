//! `entrl compare`: runs grouped into arms (runs that differ only in their seed), each arm's final and
//! best held-out average (`val/average` in metrics.jsonl) over seeds, and paired statistics against a
//! baseline arm; written as `comparison.md` and `comparison.svg` (the arms' held-out curves).
use crate::error::{Error, Result};
use crate::stats::{bootstrap_ci, mean, paired_t_p, sign_flip_p, std_dev};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The held-out key compared: the unweighted average over data sources of mean@k.
pub const HELD_OUT_KEY: &str = "val/average";
/// Resamples of the bootstrap interval and draws of a Monte Carlo sign-flip test.
pub const RESAMPLES: usize = 10_000;
/// The seed of every resampling, so a comparison is the same each time.
pub const STATS_SEED: u64 = 0x5eed;

/// One run to compare: its folder, seed, arm and held-out curve (step, average).
#[derive(Clone, Debug)]
pub struct Run {
    pub dir: PathBuf,
    pub seed: u64,
    pub arm: String,
    pub curve: Vec<(u64, f64)>,
}

/// The held-out curve of a run folder: (step, `val/average`) of every metrics line that has it.
pub fn held_out_curve(dir: &Path) -> Result<Vec<(u64, f64)>> {
    let file = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&file).map_err(Error::io("read", &file))?;
    let mut curve = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| Error::data(&file, Some(i + 1), e.to_string()))?;
        if let (Some(step), Some(x)) = (v["step"].as_u64(), v[HELD_OUT_KEY].as_f64()) {
            curve.push((step, x));
        }
    }
    if curve.is_empty() {
        let msg = format!("no held-out line ({HELD_OUT_KEY}); train with data.eval set and run.eval_every > 0");
        return Err(Error::data(&file, None, msg));
    }
    Ok(curve)
}

/// A run folder's saved configuration (`config.toml`) flattened to `key = value` strings.
fn flat_config(dir: &Path) -> Result<BTreeMap<String, String>> {
    let file = dir.join("config.toml");
    let table = crate::config::read_table(&file)?;
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(inner) => walk(&key, inner, out),
                toml::Value::String(s) => {
                    out.insert(key, s.clone());
                }
                other => {
                    out.insert(key, other.to_string());
                }
            }
        }
    }
    walk("", &table, &mut out);
    Ok(out)
}

/// Keys that never define an arm: the seed, and `run.*` (folders, logging, evaluation cadence).
fn arm_key(k: &str) -> bool {
    k != crate::sweep::SEED_KEY && !k.starts_with("run.")
}

/// The runs of `dirs`: a sweep folder (with a manifest) stands for its cells, armed by their overrides
/// without the seed; plain run folders are armed by the keys of their saved configurations that differ
/// between them (seed and `run.*` excluded).
pub fn collect_runs(dirs: &[PathBuf]) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut plain = Vec::new();
    for d in dirs {
        if let Some(m) = crate::sweep::Manifest::read(d)? {
            for c in &m.cells {
                let dir = d.join(&c.dir);
                let arm = c.arm_label();
                runs.push(Run { curve: held_out_curve(&dir)?, dir, seed: c.seed, arm });
            }
        } else {
            let cfg = flat_config(d)?;
            plain.push((d.clone(), cfg));
        }
    }
    let differing: Vec<String> = {
        let keys: std::collections::BTreeSet<&String> = plain.iter().flat_map(|(_, c)| c.keys()).collect();
        keys.into_iter()
            .filter(|k| arm_key(k))
            .filter(|k| plain.iter().any(|(_, c)| c.get(*k) != plain[0].1.get(*k)))
            .cloned()
            .collect()
    };
    for (dir, cfg) in plain {
        let seed = cfg.get(crate::sweep::SEED_KEY).and_then(|s| s.parse().ok()).ok_or_else(|| {
            let key = crate::sweep::SEED_KEY;
            Error::Config {
                key: key.into(),
                file: Some(dir.join("config.toml")),
                msg: format!("no {key} in config.toml"),
            }
        })?;
        let parts: Vec<String> =
            differing.iter().map(|k| format!("{k}={}", cfg.get(k).map_or("(unset)", |s| s.as_str()))).collect();
        let arm = if parts.is_empty() { "all runs".to_string() } else { parts.join(" ") };
        runs.push(Run { curve: held_out_curve(&dir)?, dir, seed, arm });
    }
    if runs.is_empty() {
        return Err(Error::invalid("no runs to compare"));
    }
    Ok(runs)
}

/// An arm: its label and its runs' (seed, final, best) held-out averages, by seed.
struct Arm {
    label: String,
    by_seed: BTreeMap<u64, (f64, f64)>,
    runs: Vec<Run>,
}

fn arms_of(runs: &[Run]) -> Result<Vec<Arm>> {
    let mut arms: Vec<Arm> = Vec::new();
    for r in runs {
        let fin = r.curve.last().map(|p| p.1).unwrap_or(f64::NAN);
        let best = r.curve.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let i = match arms.iter().position(|a| a.label == r.arm) {
            Some(i) => i,
            None => {
                arms.push(Arm { label: r.arm.clone(), by_seed: BTreeMap::new(), runs: Vec::new() });
                arms.len() - 1
            }
        };
        if arms[i].by_seed.insert(r.seed, (fin, best)).is_some() {
            return Err(Error::invalid(format!(
                "{}: arm {:?} has two runs with seed {} (give each run once)",
                r.dir.display(),
                r.arm,
                r.seed
            )));
        }
        arms[i].runs.push(r.clone());
    }
    Ok(arms)
}

/// Which arm is the baseline: the one named by `baseline` (its whole label, or one of its `key=value`
/// parts, or a part's value), else the one with `tokens.strategy=full`, else the first.
fn baseline_index(arms: &[Arm], baseline: Option<&str>) -> Result<usize> {
    let matches = |a: &Arm, want: &str| {
        a.label == want || a.label.split(' ').any(|p| p == want || p.split_once('=').is_some_and(|(_, v)| v == want))
    };
    match baseline {
        Some(b) => arms.iter().position(|a| matches(a, b)).ok_or_else(|| {
            Error::invalid(format!(
                "--baseline {b:?}: no arm matches (arms: {})",
                arms.iter().map(|a| format!("{:?}", a.label)).collect::<Vec<_>>().join(", ")
            ))
        }),
        None => Ok(arms.iter().position(|a| matches(a, "tokens.strategy=full")).unwrap_or(0)),
    }
}

fn fmt_p(p: Option<f64>) -> String {
    p.map_or("—".into(), |p| format!("{p:.4}"))
}

fn fmt_ci(x: &[f64]) -> String {
    bootstrap_ci(x, RESAMPLES, STATS_SEED).map_or("—".into(), |(lo, hi)| format!("[{lo:.4}, {hi:.4}]"))
}

/// The comparison as Markdown: a table of every arm, and one of each arm against the baseline.
fn markdown(arms: &[Arm], base: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Comparison of held-out average ({HELD_OUT_KEY})\n");
    let _ = writeln!(
        s,
        "Final: the last evaluation; best: the highest. Mean ± sample std over seeds; 95% CI: percentile \
         bootstrap of the mean ({RESAMPLES} resamples, seeded).\n"
    );
    let _ = writeln!(s, "| arm | seeds | final mean ± std | final 95% CI | best mean ± std | best 95% CI |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for a in arms {
        let fin: Vec<f64> = a.by_seed.values().map(|v| v.0).collect();
        let best: Vec<f64> = a.by_seed.values().map(|v| v.1).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} ± {:.4} | {} | {:.4} ± {:.4} | {} |",
            a.label,
            fin.len(),
            mean(&fin),
            std_dev(&fin),
            fmt_ci(&fin),
            mean(&best),
            std_dev(&best),
            fmt_ci(&best)
        );
    }
    let b = &arms[base];
    let _ = writeln!(
        s,
        "\n## Against the baseline `{}`\n\nPaired by seed (arm − baseline) over the seeds both arms have; \
         p-values two-sided: paired t-test (Student t, n − 1 df) and sign-flip permutation test (exact for \
         n ≤ {}, else {RESAMPLES} seeded draws).\n",
        b.label,
        crate::stats::EXACT_SIGN_FLIP_MAX
    );
    let _ = writeln!(s, "| arm | paired seeds | Δ final | t p | sign-flip p | Δ best | t p | sign-flip p |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (i, a) in arms.iter().enumerate().filter(|(i, _)| *i != base) {
        let common: Vec<u64> = a.by_seed.keys().filter(|k| b.by_seed.contains_key(k)).copied().collect();
        let note = if common.len() < a.by_seed.len().max(b.by_seed.len()) {
            format!(" (common seeds only; arm has {}, baseline {})", a.by_seed.len(), b.by_seed.len())
        } else {
            String::new()
        };
        let diff = |f: fn(&(f64, f64)) -> f64| -> Vec<f64> {
            common.iter().map(|k| f(&a.by_seed[k]) - f(&b.by_seed[k])).collect()
        };
        let (df, db) = (diff(|v| v.0), diff(|v| v.1));
        let seed = STATS_SEED + i as u64;
        let _ = writeln!(
            s,
            "| {} | {}{note} | {} | {} | {} | {} | {} | {} |",
            a.label,
            common.len(),
            if df.is_empty() { "—".into() } else { format!("{:+.4}", mean(&df)) },
            fmt_p(paired_t_p(&df)),
            fmt_p(sign_flip_p(&df, RESAMPLES, seed)),
            if db.is_empty() { "—".into() } else { format!("{:+.4}", mean(&db)) },
            fmt_p(paired_t_p(&db)),
            fmt_p(sign_flip_p(&db, RESAMPLES, seed)),
        );
    }
    s
}

/// Each arm's held-out curve: at every step its first run evaluated, the mean and min–max over the runs
/// that evaluated it.
fn curves(arms: &[Arm]) -> Vec<crate::plot::ArmCurve> {
    arms.iter()
        .map(|a| {
            let steps: Vec<u64> = a.runs[0].curve.iter().map(|p| p.0).collect();
            let pts = steps
                .iter()
                .map(|&st| {
                    let v: Vec<f64> =
                        a.runs.iter().filter_map(|r| r.curve.iter().find(|p| p.0 == st).map(|p| p.1)).collect();
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (st as f64, mean(&v), lo, hi)
                })
                .collect();
            (a.label.clone(), pts)
        })
        .collect()
}

/// What [`compare`] wrote.
#[derive(Debug)]
pub struct Comparison {
    pub markdown: String,
    pub markdown_file: PathBuf,
    pub chart_file: PathBuf,
    pub arms: Vec<String>,
}

/// Compare the runs of `dirs` (see [`collect_runs`]) against `baseline` (see `baseline_index`) and write
/// `comparison.md` and `comparison.svg` into `out`.
pub fn compare(dirs: &[PathBuf], baseline: Option<&str>, out: &Path) -> Result<Comparison> {
    let runs = collect_runs(dirs)?;
    let arms = arms_of(&runs)?;
    let base = baseline_index(&arms, baseline)?;
    let md = markdown(&arms, base);
    let svg = crate::plot::arms_chart("held-out average by arm (mean, min–max band)", "val/average", &curves(&arms))?;
    std::fs::create_dir_all(out).map_err(Error::io("create", out))?;
    let (markdown_file, chart_file) = (out.join("comparison.md"), out.join("comparison.svg"));
    for (file, text) in [(&markdown_file, &md), (&chart_file, &svg)] {
        entrl_qwen3::save::write_atomic(file, text.as_bytes())?;
    }
    Ok(Comparison { markdown: md, markdown_file, chart_file, arms: arms.iter().map(|a| a.label.clone()).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, strategy: &str, seed: u64, curve: &[(u64, f64)]) {
        std::fs::create_dir_all(dir).unwrap();
        let lines: String = curve.iter().map(|(s, x)| format!("{{\"step\":{s},\"val/average\":{x}}}\n")).collect();
        std::fs::write(dir.join("metrics.jsonl"), format!("{{\"step\":1,\"loss\":0.5}}\n{lines}")).unwrap();
        let toml = format!(
            "[train]\nseed = {seed}\nlr = 1e-6\n[tokens]\nstrategy = {strategy:?}\n[run]\nout_dir = {:?}\n",
            dir.display().to_string()
        );
        std::fs::write(dir.join("config.toml"), toml).unwrap();
    }

    #[test]
    fn plain_runs_group_into_arms_by_config_without_seed() {
        let root = std::env::temp_dir().join(format!("entrl-compare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut dirs = Vec::new();
        for (i, (strategy, seed, fin)) in [
            ("full", 1, 0.5),
            ("full", 2, 0.6),
            ("anchors:0.2", 1, 0.7),
            ("anchors:0.2", 2, 0.9),
            ("anchors:0.2", 3, 0.8),
        ]
        .iter()
        .enumerate()
        {
            let d = root.join(format!("r{i}"));
            run(&d, strategy, *seed, &[(0, 0.1), (5, 0.95), (10, *fin)]);
            dirs.push(d);
        }
        let c = compare(&dirs, None, &root).unwrap();
        assert_eq!(c.arms, vec!["tokens.strategy=full", "tokens.strategy=anchors:0.2"]);
        assert!(c.markdown.contains("Against the baseline `tokens.strategy=full`"), "{}", c.markdown);
        // Final: full 0.55 ± 0.0707; anchors 0.8 ± 0.1; best 0.95 everywhere.
        assert!(c.markdown.contains("| tokens.strategy=full | 2 | 0.5500 ± 0.0707 |"), "{}", c.markdown);
        assert!(c.markdown.contains("| tokens.strategy=anchors:0.2 | 3 | 0.8000 ± 0.1000 |"), "{}", c.markdown);
        // Paired over seeds 1 and 2: Δ = 0.2, 0.3 → +0.25; said to be the common seeds only.
        assert!(c.markdown.contains("| 2 (common seeds only; arm has 3, baseline 2) | +0.2500 |"), "{}", c.markdown);
        assert!(c.markdown_file.is_file() && c.chart_file.is_file());
        let svg = std::fs::read_to_string(&c.chart_file).unwrap();
        assert!(svg.contains("anchors:0.2"));
        // An explicit baseline by value.
        let c = compare(&dirs, Some("anchors:0.2"), &root).unwrap();
        assert!(c.markdown.contains("Against the baseline `tokens.strategy=anchors:0.2`"));
        let e = compare(&dirs, Some("nope"), &root).unwrap_err().to_string();
        assert!(e.contains("--baseline \"nope\": no arm matches"), "{e}");
        // A folder without metrics names its file.
        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::copy(dirs[0].join("config.toml"), empty.join("config.toml")).unwrap();
        let e = compare(std::slice::from_ref(&empty), None, &root).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl"), "{e}");
        std::fs::write(empty.join("metrics.jsonl"), "{\"step\":1}\n").unwrap();
        assert!(compare(&[empty], None, &root).unwrap_err().to_string().contains("no held-out line (val/average)"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
