//! `entrl analyze RUN_DIR`: what the token traces (`run.trace_every`) say about attention entropy and the
//! gradient signal. Over every traced step (and per step when there are few):
//! - per probe layer, the partial correlation (Pearson and Spearman, [`crate::regress`]) of Hnorm with the
//!   gradient-signal magnitude `grad_norm` controlling for position, relative position and predictive
//!   entropy, with n and a Fisher-z 95% interval;
//! - Hnorm against predictive entropy: Spearman ρ per layer and a table of predictive-entropy deciles;
//! - matched subsets: the anchors / explorers tails (lowest / highest 20% Hnorm per step, `anchors:0.2` /
//!   `explorers:0.2`) against the stratum-matched selections of the same size (`anchors-matched:0.2` /
//!   `explorers-matched:0.2`: relative-position decile × predictive-entropy decile, the training strategies'
//!   own code), by mean gradient magnitude, mean |advantage| and mean |ratio − 1|.
//!
//! Writes `analysis.md` and two SVG charts into the run folder (atomically). Rows whose gradient magnitude
//! is NaN (a mini-batch with nothing selected ran no backward) or with any non-finite score are left out.
use crate::entropy_stats::{average_ranks, quantile, spearman};
use crate::error::{Error, Result};
use crate::plot::{curves_chart, ArmCurve};
use crate::regress::{partial_pearson, partial_spearman, Correlation};
use crate::strategy::{Strategy, TokenScores};
use crate::trace;
use entrl_engine::{Device, Packing, Tensor};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The tail fraction of the matched comparison (the paper's k).
pub const TAIL: f64 = 0.2;
/// Steps up to which the report also has a per-step table.
pub const PER_STEP_MAX: usize = 20;
/// Bins of the decile tables and charts.
const DECILES: usize = 10;

/// The traced response tokens of a run, rows in (step, rank) file order.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub step: Vec<i64>,
    /// Per probe layer: the layer and its Hnorm per token.
    pub hnorm: Vec<(usize, Vec<f64>)>,
    pub grad: Vec<f64>,
    pub position: Vec<f64>,
    pub rel_position: Vec<f64>,
    pub response_len: Vec<f64>,
    pub pred: Vec<f64>,
    pub advantage: Vec<f64>,
    pub ratio: Vec<f64>,
    /// Rows read before the non-finite ones were left out.
    pub rows_read: usize,
    pub files: usize,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.grad.len()
    }
    pub fn is_empty(&self) -> bool {
        self.grad.is_empty()
    }
    /// The rows `idx`, as a new table.
    fn subset(&self, idx: &[usize]) -> Tokens {
        let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        Tokens {
            step: idx.iter().map(|&i| self.step[i]).collect(),
            hnorm: self.hnorm.iter().map(|(l, h)| (*l, pick(h))).collect(),
            grad: pick(&self.grad),
            position: pick(&self.position),
            rel_position: pick(&self.rel_position),
            response_len: pick(&self.response_len),
            pred: pick(&self.pred),
            advantage: pick(&self.advantage),
            ratio: pick(&self.ratio),
            rows_read: idx.len(),
            files: self.files,
        }
    }
    /// Contiguous runs of equal step: (step, first row, rows).
    fn steps(&self) -> Vec<(i64, usize, usize)> {
        let mut out: Vec<(i64, usize, usize)> = Vec::new();
        for (i, &s) in self.step.iter().enumerate() {
            match out.last_mut() {
                Some(last) if last.0 == s => last.2 += 1,
                _ => out.push((s, i, 1)),
            }
        }
        out
    }
}

/// Read every trace file of `run_dir`. An error (one line) when there is none, a file is unreadable or
/// lacks a column, or the files disagree on the probe layers.
pub fn load(run_dir: &Path) -> Result<Tokens> {
    let files = trace::list(run_dir)?;
    if files.is_empty() {
        let msg = "no token traces (traces/step_*.parquet); train with run.trace_every=N first";
        return Err(Error::data(run_dir, None, msg));
    }
    let mut t = Tokens { files: files.len(), ..Default::default() };
    for (k, path) in files.iter().enumerate() {
        let table = trace::read(path)?;
        let col = |name: &str| table.f64s(name).map_err(|e| e.in_data_file(path));
        let layers: Vec<usize> =
            table.columns.iter().filter_map(|(n, _)| n.strip_prefix("hnorm_l").and_then(|l| l.parse().ok())).collect();
        if layers.is_empty() {
            return Err(Error::data(path, None, "no hnorm_l{layer} column"));
        }
        if k == 0 {
            t.hnorm = layers.iter().map(|&l| (l, Vec::new())).collect();
        } else if t.hnorm.iter().map(|h| h.0).collect::<Vec<_>>() != layers {
            return Err(Error::data(path, None, format!("probe layers {layers:?} differ from the other trace files'")));
        }
        let step = col("step")?;
        let (grad, pos, rel, len) = (col("grad_norm")?, col("position")?, col("rel_position")?, col("response_len")?);
        let (pred, adv, ratio) = (col("pred_entropy")?, col("advantage")?, col("ratio")?);
        let h: Vec<Vec<f64>> = layers.iter().map(|l| col(&format!("hnorm_l{l}"))).collect::<Result<_>>()?;
        t.rows_read += table.rows();
        for i in 0..table.rows() {
            let vals = [grad[i], pos[i], rel[i], len[i], pred[i], adv[i], ratio[i]];
            if vals.iter().chain(h.iter().map(|c| &c[i])).any(|v| !v.is_finite()) {
                continue;
            }
            t.step.push(step[i] as i64);
            t.grad.push(grad[i]);
            t.position.push(pos[i]);
            t.rel_position.push(rel[i]);
            t.response_len.push(len[i]);
            t.pred.push(pred[i]);
            t.advantage.push(adv[i]);
            t.ratio.push(ratio[i]);
            for ((_, dst), src) in t.hnorm.iter_mut().zip(&h) {
                dst.push(src[i]);
            }
        }
    }
    Ok(t)
}

/// The report and the files written.
pub struct Analysis {
    pub markdown: String,
    pub files: Vec<PathBuf>,
}

/// Analyse `run_dir`'s traces and write `analysis.md`, `analysis_hnorm_grad.svg` and
/// `analysis_hnorm_pred.svg` there.
pub fn analyze(run_dir: &Path) -> Result<Analysis> {
    let t = load(run_dir)?;
    if t.is_empty() {
        return Err(Error::data(run_dir, None, "the token traces hold no rows with finite values"));
    }
    let mut md = String::new();
    let steps = t.steps();
    let w = |md: &mut String, s: String| md.push_str(&s);
    w(&mut md, format!("# Token-trace analysis: {}\n\n", run_dir.display()));
    w(
        &mut md,
        format!(
            "## Data\n\n{} trace file(s), {} traced step(s), {} response tokens ({} read; rows with a non-finite value \
             left out). Probe layers: {}. Gradient-signal magnitude: `grad_norm` = ‖∂ℓ/∂logits‖ before the token \
             weight and normaliser.\n\n",
            t.files,
            steps.len(),
            t.len(),
            t.rows_read,
            t.hnorm.iter().map(|h| h.0.to_string()).collect::<Vec<_>>().join(", ")
        ),
    );
    partial_section(&mut md, &t, &steps);
    pred_section(&mut md, &t);
    matched_section(&mut md, &t, &steps)?;

    let mut files = Vec::new();
    let charts =
        [("analysis_hnorm_grad.svg", hnorm_grad_chart(&t)?), ("analysis_hnorm_pred.svg", hnorm_pred_chart(&t)?)];
    w(&mut md, "## Plots\n\n".into());
    for (name, svg) in charts {
        let path = run_dir.join(name);
        entrl_qwen3::save::write_atomic(&path, svg.as_bytes())?;
        w(&mut md, format!("- [{name}]({name})\n"));
        files.push(path);
    }
    let path = run_dir.join("analysis.md");
    entrl_qwen3::save::write_atomic(&path, md.as_bytes())?;
    files.insert(0, path);
    Ok(Analysis { markdown: md, files })
}

fn fmt_corr(c: Option<Correlation>) -> String {
    match c {
        None => "undefined".into(),
        Some(c) => match c.ci {
            Some(ci) => format!("{:+.4} [{:+.4}, {:+.4}]", c.r, ci.lo, ci.hi),
            None => format!("{:+.4}", c.r),
        },
    }
}

/// Partial correlations of each layer's Hnorm with `grad_norm` given (position, relative position,
/// predictive entropy), over all steps and, for few steps, per step.
fn partial_section(md: &mut String, t: &Tokens, steps: &[(i64, usize, usize)]) {
    let controls = |t: &Tokens| [t.position.clone(), t.rel_position.clone(), t.pred.clone()];
    let of = |t: &Tokens, h: &[f64]| {
        let c = controls(t);
        let refs: Vec<&[f64]> = c.iter().map(Vec::as_slice).collect();
        (partial_pearson(h, &t.grad, &refs), partial_spearman(h, &t.grad, &refs))
    };
    md.push_str(
        "## Partial correlation of Hnorm with the gradient-signal magnitude\n\nControlling for position, relative \
         position and predictive entropy (OLS residuals with an intercept; Spearman: the same on ranks), 95% \
         Fisher-z intervals. `raw` is the Pearson correlation without controls.\n\n\
         | layer | n | raw Pearson r | partial Pearson r [95% CI] | partial Spearman ρ [95% CI] |\n|---|---|---|---|---|\n",
    );
    for (l, h) in &t.hnorm {
        let (p, s) = of(t, h);
        let raw = crate::entropy_stats::pearson(h, &t.grad).map_or("undefined".into(), |r| format!("{r:+.4}"));
        let _ = writeln!(md, "| {l} | {} | {raw} | {} | {} |", t.len(), fmt_corr(p), fmt_corr(s));
    }
    md.push('\n');
    if steps.len() > 1 && steps.len() <= PER_STEP_MAX {
        md.push_str("### Per step (partial Pearson r)\n\n| step | n |");
        for (l, _) in &t.hnorm {
            let _ = write!(md, " layer {l} |");
        }
        md.push_str("\n|---|---|");
        md.push_str(&"---|".repeat(t.hnorm.len()));
        md.push('\n');
        for &(s, start, n) in steps {
            let sub = t.subset(&(start..start + n).collect::<Vec<_>>());
            let _ = write!(md, "| {s} | {n} |");
            for (_, h) in &sub.hnorm {
                let _ = write!(md, " {} |", fmt_corr(of(&sub, h).0));
            }
            md.push('\n');
        }
        md.push('\n');
    }
}

/// Decile (0..10) of each value by rank (ascending, ties by index): ⌊10·rank/n⌋, the matched strategies'
/// rule.
fn deciles(x: &[f64]) -> Vec<usize> {
    let n = x.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]).then(a.cmp(&b)));
    let mut d = vec![0; n];
    for (rank, &i) in order.iter().enumerate() {
        d[i] = rank * DECILES / n;
    }
    d
}

fn mean(x: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = x.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| s / n as f64)
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.4}"))
}

/// Hnorm against predictive entropy: Spearman ρ per layer and the predictive-entropy decile table.
fn pred_section(md: &mut String, t: &Tokens) {
    md.push_str(
        "## Attention entropy vs predictive entropy\n\n| layer | Spearman ρ (Hnorm, predictive entropy) |\n|---|---|\n",
    );
    for (l, h) in &t.hnorm {
        let _ = writeln!(md, "| {l} | {} |", spearman(h, &t.pred).map_or("undefined".into(), |r| format!("{r:+.4}")));
    }
    md.push_str("\nMean Hnorm per predictive-entropy decile (by rank over all tokens):\n\n| decile | n | mean predictive entropy |");
    for (l, _) in &t.hnorm {
        let _ = write!(md, " mean Hnorm l{l} |");
    }
    md.push_str("\n|---|---|---|");
    md.push_str(&"---|".repeat(t.hnorm.len()));
    md.push('\n');
    let d = deciles(&t.pred);
    for b in 0..DECILES {
        let idx: Vec<usize> = (0..t.len()).filter(|&i| d[i] == b).collect();
        let _ = write!(md, "| {} | {} | {} |", b + 1, idx.len(), fmt_opt(mean(idx.iter().map(|&i| t.pred[i]))));
        for (_, h) in &t.hnorm {
            let _ = write!(md, " {} |", fmt_opt(mean(idx.iter().map(|&i| h[i]))));
        }
        md.push('\n');
    }
    md.push('\n');
}

/// The rows a strategy selects, with one pool per traced step and layer `h` as the attention entropy.
fn selection(t: &Tokens, h: &[f64], steps: &[(i64, usize, usize)], strategy: Strategy) -> Result<Vec<usize>> {
    let dev = Device::Cpu;
    let n = t.len();
    let up = |v: Vec<f32>| Tensor::from_vec(v, [n], &dev);
    let valid = up(vec![1.0; n])?;
    let attn = up(h.iter().map(|&x| x as f32).collect())?;
    let pred = up(t.pred.iter().map(|&x| x as f32).collect())?;
    let position: Vec<usize> = t.position.iter().map(|&x| x as usize).collect();
    let response_len: Vec<usize> = t.response_len.iter().map(|&x| x as usize).collect();
    let scores = TokenScores {
        valid: &valid,
        attn_entropy: Some(&attn),
        pred_entropy: Some(&pred),
        position: &position,
        response_len: &response_len,
    };
    let pools = Packing::from_lengths(&steps.iter().map(|s| s.2).collect::<Vec<_>>())?;
    let w = strategy.weights(&scores, &pools, 0, 0).and_then(|w| w.to_vec_f32())?;
    Ok((0..n).filter(|&i| w[i] != 0.0).collect())
}

/// Tails against their stratum-matched twins, per layer.
fn matched_section(md: &mut String, t: &Tokens, steps: &[(i64, usize, usize)]) -> Result<()> {
    let _ = write!(
        md,
        "## Matched subsets\n\nPer traced step: the anchors / explorers tails (lowest / highest {p}% Hnorm) against \
         the stratum-matched selections of the same size (lowest / highest Hnorm within relative-position decile × \
         predictive-entropy decile strata, apportioned to the step's strata: `anchors-matched` / \
         `explorers-matched`). A difference that survives matching is not explained by position or predictive \
         entropy.\n\n",
        p = TAIL * 100.0
    );
    for (l, h) in &t.hnorm {
        let _ = write!(
            md,
            "### Layer {l}\n\n| subset | n | mean Hnorm | mean grad_norm | mean \\|advantage\\| | mean \\|ratio − 1\\| |\n\
             |---|---|---|---|---|---|\n"
        );
        let all: Vec<usize> = (0..t.len()).collect();
        let subsets = [
            ("all tokens", all),
            ("anchors (tail)", selection(t, h, steps, Strategy::Anchors(TAIL))?),
            ("anchors-matched", selection(t, h, steps, Strategy::AnchorsMatched(TAIL))?),
            ("explorers (tail)", selection(t, h, steps, Strategy::Explorers(TAIL))?),
            ("explorers-matched", selection(t, h, steps, Strategy::ExplorersMatched(TAIL))?),
        ];
        for (name, idx) in subsets {
            let m = |f: &dyn Fn(usize) -> f64| fmt_opt(mean(idx.iter().map(|&i| f(i))));
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} |",
                idx.len(),
                m(&|i| h[i]),
                m(&|i| t.grad[i]),
                m(&|i| t.advantage[i].abs()),
                m(&|i| (t.ratio[i] - 1.0).abs())
            );
        }
        md.push('\n');
    }
    Ok(())
}

/// Per decile of `x` (by rank): (mean x, mean y, 25% and 75% quantiles of y).
fn binned(x: &[f64], y: &[f64]) -> Vec<(f64, f64, f64, f64)> {
    let d = deciles(x);
    (0..DECILES)
        .filter_map(|b| {
            let idx: Vec<usize> = (0..x.len()).filter(|&i| d[i] == b).collect();
            let mx = mean(idx.iter().map(|&i| x[i]))?;
            let mut ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
            ys.sort_by(f64::total_cmp);
            Some((mx, mean(ys.iter().copied())?, quantile(&ys, 0.25)?, quantile(&ys, 0.75)?))
        })
        .collect()
}

/// Hnorm deciles against the gradient magnitude's residual after the controls (rank scale, as the partial
/// Spearman ρ sees it: residual of rank(grad_norm) on the ranks of position, relative position and
/// predictive entropy).
fn hnorm_grad_chart(t: &Tokens) -> Result<String> {
    let ranked = [average_ranks(&t.position), average_ranks(&t.rel_position), average_ranks(&t.pred)];
    let refs: Vec<&[f64]> = ranked.iter().map(Vec::as_slice).collect();
    let res = crate::regress::residuals(&average_ranks(&t.grad), &refs).unwrap_or_else(|| vec![0.0; t.len()]);
    let n = t.len().max(1) as f64;
    let scaled: Vec<f64> = res.iter().map(|r| r / n).collect();
    let curves: Vec<ArmCurve> = t.hnorm.iter().map(|(l, h)| (format!("layer {l}"), binned(h, &scaled))).collect();
    curves_chart(
        "Hnorm vs gradient-signal magnitude (rank residual after position, rel. position, pred. entropy)",
        "Hnorm (decile mean)",
        "grad_norm rank residual / n (decile mean, IQR band)",
        &curves,
    )
}

/// Predictive-entropy deciles against Hnorm, per layer.
fn hnorm_pred_chart(t: &Tokens) -> Result<String> {
    let curves: Vec<ArmCurve> = t.hnorm.iter().map(|(l, h)| (format!("layer {l}"), binned(&t.pred, h))).collect();
    curves_chart(
        "Attention entropy vs predictive entropy",
        "predictive entropy (decile mean)",
        "Hnorm (decile mean, IQR band)",
        &curves,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_by_rank_have_near_equal_sizes() {
        let x: Vec<f64> = (0..23).map(|i| ((i * 7) % 23) as f64).collect();
        let d = deciles(&x);
        let mut counts = [0usize; DECILES];
        d.iter().for_each(|&b| counts[b] += 1);
        assert!(counts.iter().all(|&c| c == 2 || c == 3), "{counts:?}");
        // monotone: a larger value never has a lower decile
        for i in 0..x.len() {
            for j in 0..x.len() {
                if x[i] < x[j] {
                    assert!(d[i] <= d[j]);
                }
            }
        }
    }

    #[test]
    fn a_folder_without_traces_is_one_clear_error() {
        let dir = std::env::temp_dir().join(format!("entrl-analyze-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = analyze(&dir).err().unwrap().to_string();
        assert!(e.contains("no token traces") && e.contains("run.trace_every") && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
