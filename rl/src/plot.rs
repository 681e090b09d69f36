//! SVG charts of a training run's per-step metrics.
//!
//! [`plot_run`] reads `RUN_DIR/metrics.jsonl` (one JSON object per step, each with a numeric `"step"`)
//! and writes one SVG per chart in `CHARTS` into `RUN_DIR/plots/`, `heldout.svg` (one curve per `val/` key:
//! each data source's mean@k and `val/average`, their unweighted mean), `entropy_dynamics.svg` (one row per
//! probe layer of the `hnorm_l{layer}_*` keys: the Hnorm quantile bands 5–95% and 25–75% with the median and
//! the anchor / explorer means, and the Spearman correlations with predictive entropy and relative position),
//! plus a 2×2 `summary.svg` (`SUMMARY_PANELS`).
//! Metrics that are absent, null or non-numeric in a row are skipped; a chart with no data is not written.
//! Every file is rendered in memory and written atomically (`name.svg.tmp`, then renamed).

use crate::error::{Error, Result};
use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{Map, Value};

/// One set of series drawn on shared axes.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    keys: &'static [&'static str],
}

/// A chart written to its own file.
struct Chart {
    file: &'static str,
    panel: Panel,
}

const fn chart(file: &'static str, title: &'static str, y_desc: &'static str, keys: &'static [&'static str]) -> Chart {
    Chart { file, panel: Panel { title, y_desc, keys } }
}

/// Chart file → title → y-axis label → metric keys.
const CHARTS: [Chart; 11] = [
    chart(
        "reward.svg",
        "Reward and accuracy",
        "value",
        &["reward_mean", "acc_generated", "acc_mean", "val/average", "eval_acc"],
    ),
    chart("response_length.svg", "Response length", "tokens", &["response_len_mean", "response_len_max"]),
    chart("fractions.svg", "Fractions", "fraction", &["kept_frac", "overlong_frac", "clip_frac", "clip_frac_lower"]),
    chart("optim.svg", "Optimisation", "value", &["grad_norm", "loss", "approx_kl"]),
    chart("lr.svg", "Learning rate", "lr", &["lr"]),
    chart(
        "timing.svg",
        "Step timing",
        "seconds",
        &["time_rollout_s", "time_old_logprob_s", "time_update_s", "time_step_s"],
    ),
    chart("throughput.svg", "Throughput", "tokens/s", &["tokens_per_s"]),
    chart(
        "diagnostics.svg",
        "Gradient norms (diagnosed updates)",
        "norm",
        &["diag_norm_full", "diag_norm_anchors", "diag_norm_explorers", "diag_norm_random", "diag_norm_selected"],
    ),
    chart(
        "gradient_cosines.svg",
        "Gradient cosines",
        "cosine",
        &[
            "diag_cos_full_anchors",
            "diag_cos_full_explorers",
            "diag_cos_full_random",
            "diag_cos_full_selected",
            "diag_cos_anchors_explorers",
        ],
    ),
    chart(
        "gradient_volatility.svg",
        "Cosine with the previous diagnosed update",
        "cosine",
        &[
            "diag_cos_prev_full",
            "diag_cos_prev_anchors",
            "diag_cos_prev_explorers",
            "diag_cos_prev_random",
            "diag_cos_prev_selected",
        ],
    ),
    chart(
        "entropy_groups.svg",
        "Entropy groups",
        "value",
        &["diag_anchor_hnorm", "diag_explorer_hnorm", "diag_anchor_pred_entropy", "diag_explorer_pred_entropy"],
    ),
];

const SUMMARY_FILE: &str = "summary.svg";

/// The entropy-dynamics chart: the probe layers are those with a `hnorm_l{layer}_` key.
const DYNAMICS_FILE: &str = "entropy_dynamics.svg";
const DYNAMICS_PREFIX: &str = "hnorm_l";
/// Its size per probe layer (one row of two panels each).
const DYNAMICS_ROW: (u32, u32) = (1400, 450);

/// The held-out chart: every key starting with [`HELD_OUT_PREFIX`], the average last.
const HELD_OUT_FILE: &str = "heldout.svg";
const HELD_OUT_PREFIX: &str = "val/";
const HELD_OUT_AVERAGE: &str = "val/average";

/// Panels of the 2×2 `summary.svg`, row by row.
const SUMMARY_PANELS: [Panel; 4] = [
    Panel { title: "Reward / accuracy", y_desc: "value", keys: &["reward_mean", "acc_generated", "val/average"] },
    Panel { title: "Response length", y_desc: "tokens", keys: &["response_len_mean", "response_len_max"] },
    Panel { title: "Kept / clip fraction", y_desc: "fraction", keys: &["kept_frac", "clip_frac"] },
    Panel { title: "Grad norm", y_desc: "norm", keys: &["grad_norm"] },
];

/// Distinct series colours (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const CHART_SIZE: (u32, u32) = (900, 540);
const SUMMARY_SIZE: (u32, u32) = (1400, 900);
/// Series with fewer points than this get point markers.
const MARKER_LIMIT: usize = 50;

/// One parsed metrics row: its step and all its fields.
struct Row {
    step: f64,
    fields: Map<String, Value>,
}

/// Write SVG charts of `run_dir/metrics.jsonl` into `run_dir/plots/`; returns the files written.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let rows = read_metrics(run_dir)?;
    let out_dir = run_dir.join("plots");
    fs::create_dir_all(&out_dir).map_err(Error::io("create", &out_dir))?;

    let mut written = Vec::new();
    for chart in &CHARTS {
        let series = collect_series(&rows, chart.panel.keys);
        if series.is_empty() {
            continue;
        }
        let svg = render(CHART_SIZE, |root| draw_panel(root, &chart.panel, &series))?;
        written.push(write_atomic(&out_dir, chart.file, &svg)?);
    }

    let mut held_out: Vec<&str> = rows
        .iter()
        .flat_map(|r| r.fields.keys())
        .map(String::as_str)
        .filter(|k| k.starts_with(HELD_OUT_PREFIX) && *k != HELD_OUT_AVERAGE)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    held_out.push(HELD_OUT_AVERAGE);
    let series = collect_series(&rows, &held_out);
    if !series.is_empty() {
        let panel = Panel { title: "Held-out mean@k per data source", y_desc: "accuracy", keys: &[] };
        let svg = render(CHART_SIZE, |root| draw_panel(root, &panel, &series))?;
        written.push(write_atomic(&out_dir, HELD_OUT_FILE, &svg)?);
    }

    let layers = probe_layers(&rows);
    if !layers.is_empty() {
        let size = (DYNAMICS_ROW.0, DYNAMICS_ROW.1 * layers.len() as u32);
        let svg = render(size, |root| {
            for (row, &layer) in root.split_evenly((layers.len(), 2)).chunks(2).zip(&layers) {
                draw_dynamics_row(&row[0], &row[1], &rows, layer)?;
            }
            Ok(())
        })?;
        written.push(write_atomic(&out_dir, DYNAMICS_FILE, &svg)?);
    }

    let panels: Vec<_> = SUMMARY_PANELS.iter().map(|p| (p, collect_series(&rows, p.keys))).collect();
    if panels.iter().any(|(_, s)| !s.is_empty()) {
        let svg = render(SUMMARY_SIZE, |root| {
            let root = root.titled("Run summary", ("sans-serif", 28)).map_err(draw_err)?;
            for (area, (panel, series)) in root.split_evenly((2, 2)).iter().zip(&panels) {
                draw_panel(area, panel, series)?;
            }
            Ok(())
        })?;
        written.push(write_atomic(&out_dir, SUMMARY_FILE, &svg)?);
    }
    Ok(written)
}

/// Parse `run_dir/metrics.jsonl`, skipping blank lines.
fn read_metrics(run_dir: &Path) -> Result<Vec<Row>> {
    let path = run_dir.join("metrics.jsonl");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let msg = format!("no metrics.jsonl in {}: has this run logged a step yet?", run_dir.display());
            return Err(Error::Data { file: None, line: None, msg });
        }
        Err(e) => return Err(Error::io("read", &path)(e)),
    };
    let mut rows = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| Error::data(&path, Some(idx + 1), msg);
        let fields = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(at("expected a JSON object".into())),
            Err(e) => return Err(at(format!("malformed JSON: {e}"))),
        };
        let step = fields
            .get("step")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite())
            .ok_or_else(|| at("missing numeric \"step\"".into()))?;
        rows.push(Row { step, fields });
    }
    if rows.is_empty() {
        return Err(Error::data(&path, None, "has no rows"));
    }
    Ok(rows)
}

/// `(key, points)` for each key with at least one finite numeric value.
fn collect_series<'k>(rows: &[Row], keys: &[&'k str]) -> Vec<(&'k str, Vec<(f64, f64)>)> {
    keys.iter()
        .map(|&key| {
            let points = rows
                .iter()
                .filter_map(|r| r.fields.get(key)?.as_f64().filter(|v| v.is_finite()).map(|v| (r.step, v)))
                .collect::<Vec<_>>();
            (key, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect()
}

/// Render an SVG of `size` into a string with `draw` on a white background.
fn render(size: (u32, u32), draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Draw one titled line chart of `series` into `area`; an empty `series` leaves just the title.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    let all = || series.iter().flat_map(|(_, points)| points.iter());
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (bounds(all().map(|p| p.0)), bounds(all().map(|p| p.1))) else {
        area.titled(panel.title, ("sans-serif", 22)).map_err(draw_err)?;
        return Ok(());
    };
    let mut chart = step_chart(area, panel.title, ("step", panel.y_desc), (x_lo, x_hi), (y_lo, y_hi))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let markers = if points.len() < MARKER_LIMIT { 2 } else { 0 };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(markers))
            .map_err(draw_err)?
            .label(legend(name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// The layers `l` of every `hnorm_l{l}_…` key, ascending.
fn probe_layers(rows: &[Row]) -> Vec<usize> {
    rows.iter()
        .flat_map(|r| r.fields.keys())
        .filter_map(|k| k.strip_prefix(DYNAMICS_PREFIX)?.split_once('_')?.0.parse().ok())
        .collect::<std::collections::BTreeSet<usize>>()
        .into_iter()
        .collect()
}

/// A shaded band: its legend and `(step, lo, hi)` points.
type Band<'a> = (&'a str, Vec<(f64, f64, f64)>);

/// `(step, lo, hi)` of the rows where both keys are finite numbers.
fn band(rows: &[Row], lo: &str, hi: &str) -> Vec<(f64, f64, f64)> {
    let num = |r: &Row, k: &str| r.fields.get(k)?.as_f64().filter(|v| v.is_finite());
    rows.iter().filter_map(|r| Some((r.step, num(r, lo)?, num(r, hi)?))).collect()
}

/// One probe layer's row of `entropy_dynamics.svg`: quantile bands, median and tail means on the left, the
/// two rank correlations (axis fixed to [-1, 1]) on the right.
fn draw_dynamics_row(
    left: &DrawingArea<SVGBackend<'_>, Shift>,
    right: &DrawingArea<SVGBackend<'_>, Shift>,
    rows: &[Row],
    layer: usize,
) -> Result<()> {
    let key = |s: &str| format!("{DYNAMICS_PREFIX}{layer}_{s}");
    let bands = [("5–95%", band(rows, &key("q05"), &key("q95"))), ("25–75%", band(rows, &key("q25"), &key("q75")))];
    let line_keys = [key("q50"), key("anchor_mean"), key("explorer_mean")];
    let lines = collect_series(rows, &line_keys.iter().map(String::as_str).collect::<Vec<_>>());
    draw_dynamics_panel(left, &format!("Layer {layer}: Hnorm over response tokens"), "Hnorm", &bands, &lines, None)?;
    let rho_keys = [key("rho_pred"), key("rho_relpos")];
    let rho = collect_series(rows, &rho_keys.iter().map(String::as_str).collect::<Vec<_>>());
    draw_dynamics_panel(right, &format!("Layer {layer}: Spearman ρ of Hnorm"), "ρ", &[], &rho, Some((-1.0, 1.0)))
}

/// A titled chart of shaded `bands` under line `series`, in [`draw_panel`]'s style; `fixed_y` pins the value
/// axis. Empty data leaves just the title.
fn draw_dynamics_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    bands: &[Band<'_>],
    series: &[(&str, Vec<(f64, f64)>)],
    fixed_y: Option<(f64, f64)>,
) -> Result<()> {
    let xs = || {
        bands.iter().flat_map(|b| b.1.iter().map(|p| p.0)).chain(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)))
    };
    let ys = || {
        bands
            .iter()
            .flat_map(|b| b.1.iter().flat_map(|p| [p.1, p.2]))
            .chain(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)))
    };
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (bounds(xs()), bounds(ys())) else {
        area.titled(title, ("sans-serif", 22)).map_err(draw_err)?;
        return Ok(());
    };
    let (y_lo, y_hi) = fixed_y.map_or((y_lo, y_hi), |(lo, hi)| (lo.min(y_lo), hi.max(y_hi)));
    let mut chart = step_chart(area, title, ("step", y_desc), (x_lo, x_hi), (y_lo, y_hi))?;
    let base = PALETTE[0];
    for (i, (name, points)) in bands.iter().enumerate().filter(|(_, b)| !b.1.is_empty()) {
        let fill = base.mix(0.15 + 0.15 * i as f64);
        let outline: Vec<(f64, f64)> =
            points.iter().map(|p| (p.0, p.2)).chain(points.iter().rev().map(|p| (p.0, p.1))).collect();
        chart
            .draw_series(std::iter::once(Polygon::new(outline, fill.filled())))
            .map_err(draw_err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], fill.filled()));
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[(i + 1) % PALETTE.len()];
        let markers = if points.len() < MARKER_LIMIT { 2 } else { 0 };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(markers))
            .map_err(draw_err)?
            .label(legend(name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// The frame every chart here shares: a caption, ranges padded around (lo, hi), tick labels sized to the
/// span, `x_desc` on x ("step" for the run charts).
fn step_chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    (x_lo, x_hi): (f64, f64),
    (y_lo, y_hi): (f64, f64),
) -> Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range(x_lo, x_hi), y_range(y_lo, y_hi))
        .map_err(draw_err)?;
    let x_label = |v: &f64| tick_label(*v, x_hi - x_lo);
    let y_label = |v: &f64| tick_label(*v, y_hi - y_lo);
    chart
        .configure_mesh()
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// A series' legend: its metrics.jsonl key, with what `eval_acc` measures spelled out.
fn legend(key: &str) -> String {
    match key {
        "eval_acc" => "eval_acc (pooled)".into(),
        "val/average" => "val/average (over sources)".into(),
        k => k.into(),
    }
}

/// `(min, max)` of `values`, or `None` when empty.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
    })
}

/// The step axis: exactly `lo..hi`, or `lo - 1..hi + 1` for a single step.
fn x_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if hi > lo {
        lo..hi
    } else {
        lo - 1.0..hi + 1.0
    }
}

/// The value axis: `lo..hi` padded by 5% of the span; a constant gets ±10% of its value (±1 at zero).
fn y_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else if lo != 0.0 {
        lo.abs() * 0.1
    } else {
        1.0
    };
    lo - pad..hi + pad
}

/// A short tick label: trailing zeros trimmed, scientific notation for tiny or huge magnitudes, and float noise
/// (relative to the axis `span`) shown as 0.
fn tick_label(v: f64, span: f64) -> String {
    fn trim(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    let a = v.abs();
    if a <= span * 1e-9 {
        "0".to_string()
    } else if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.3e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{exp}", trim(mantissa))
    } else {
        trim(&format!("{v:.6}")).to_string()
    }
}

/// An arm's curve for [`arms_chart`]: its name and (step, mean, low, high) points.
pub(crate) type ArmCurve = (String, Vec<(f64, f64, f64, f64)>);

/// One chart of several arms' curves, each a mean line over a shaded low–high band in the arm's colour
/// (`entrl compare`'s held-out chart), as an SVG string.
pub(crate) fn arms_chart(title: &str, y_desc: &str, arms: &[ArmCurve]) -> Result<String> {
    curves_chart(title, "step", y_desc, arms)
}

/// [`arms_chart`] with `x_desc` on x instead of the step (`entrl analyze`'s binned relations: x the bin's
/// mean, the line the bin's mean of y, the band its interquartile range).
pub(crate) fn curves_chart(title: &str, x_desc: &str, y_desc: &str, arms: &[ArmCurve]) -> Result<String> {
    render(CHART_SIZE, |root| {
        let pts = || arms.iter().flat_map(|(_, p)| p.iter());
        let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) =
            (bounds(pts().map(|p| p.0)), bounds(pts().flat_map(|p| [p.2, p.3])))
        else {
            root.titled(title, ("sans-serif", 22)).map_err(draw_err)?;
            return Ok(());
        };
        let mut chart = step_chart(root, title, (x_desc, y_desc), (x_lo, x_hi), (y_lo, y_hi))?;
        for (i, (name, points)) in arms.iter().enumerate().filter(|(_, a)| !a.1.is_empty()) {
            let color = PALETTE[i % PALETTE.len()];
            let outline: Vec<(f64, f64)> =
                points.iter().map(|p| (p.0, p.3)).chain(points.iter().rev().map(|p| (p.0, p.2))).collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.2).filled()))).map_err(draw_err)?;
            let markers = if points.len() < MARKER_LIMIT { 2 } else { 0 };
            chart
                .draw_series(
                    LineSeries::new(points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)).point_size(markers),
                )
                .map_err(draw_err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(draw_err)?;
        Ok(())
    })
}

/// A chart library error (its error types are generic over the backend) as [`Error::Plot`].
fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Write `contents` to `dir/name` atomically (the model crate's writer: `name.tmp`, fsync, rename).
fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    entrl_qwen3::save::write_atomic(&path, contents.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let dir = std::env::temp_dir().join(format!("entrl-plot-{tag}-{}-{nanos}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write_metrics(&self, text: &str) {
            fs::write(self.0.join("metrics.jsonl"), text).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn full_row(step: usize) -> String {
        let s = step as f64;
        let mut row = serde_json::json!({
            "step": step,
            "reward_mean": 0.1 + 0.02 * s,
            "acc_mean": (0.05 * s).min(1.0),
            "response_len_mean": 200.0 + 3.0 * s,
            "response_len_max": 512,
            "kept_frac": 0.8,
            "overlong_frac": 0.01 * s,
            "clip_frac": 0.002 * s,
            "clip_frac_lower": 0.001,
            "grad_norm": 1.0 / (1.0 + s),
            "loss": -0.01 * s,
            "approx_kl": 1e-4 * s,
            "lr": 1e-6,
            "time_rollout_s": 10.0 + s,
            "time_old_logprob_s": 2.0,
            "time_update_s": 5.0,
            "time_step_s": 17.0 + s,
            "tokens_per_s": 1234.5,
        });
        if matches!(step, 10 | 20 | 30) {
            row["eval_acc"] = serde_json::json!(0.3 + 0.01 * s);
        }
        row.to_string()
    }

    #[test]
    fn writes_charts_for_a_run() {
        let dir = TempDir::new("run");
        dir.write_metrics(&(1..=30).map(full_row).collect::<Vec<_>>().join("\n"));
        let files = plot_run(&dir.0).unwrap();
        let plots = dir.0.join("plots");
        for name in [
            "reward.svg",
            "response_length.svg",
            "fractions.svg",
            "optim.svg",
            "lr.svg",
            "timing.svg",
            "throughput.svg",
            "summary.svg",
        ] {
            assert!(files.contains(&plots.join(name)), "{name} not in {files:?}");
            assert!(plots.join(name).is_file(), "{name} missing");
            assert!(!plots.join(format!("{name}.tmp")).exists(), "{name}.tmp left behind");
        }
        assert!(!plots.join("diagnostics.svg").exists());
        assert!(!plots.join("heldout.svg").exists(), "no val/ keys, no held-out chart");
        assert!(!plots.join("entropy_groups.svg").exists());
        assert!(!plots.join("entropy_dynamics.svg").exists(), "no hnorm_l keys, no dynamics chart");

        let reward = fs::read_to_string(plots.join("reward.svg")).unwrap();
        for text in ["reward_mean", "acc_mean", "eval_acc", "Reward and accuracy", "step"] {
            assert!(reward.contains(text), "reward.svg lacks {text:?}");
        }
        assert!(reward.contains("<polyline") || reward.contains("<path"));
        let summary = fs::read_to_string(plots.join("summary.svg")).unwrap();
        assert!(summary.contains("grad_norm") && summary.contains("kept_frac"));
    }

    /// One curve per data source plus the unweighted average, the step-0 evaluation included.
    #[test]
    fn held_out_chart_has_a_curve_per_source_and_the_average() {
        let dir = TempDir::new("heldout");
        let eval = |step: u64, a: f64, b: f64| {
            serde_json::json!({"step": step, "eval_acc": (500.0 * a + 30.0 * b) / 530.0,
                "val/math500/mean@8": a, "val/aime24/mean@8": b, "val/average": (a + b) / 2.0})
            .to_string()
        };
        let lines = [eval(0, 0.5, 0.0), full_row(1), full_row(2), eval(3, 0.6, 0.1), eval(6, 0.7, 0.3)];
        dir.write_metrics(&lines.join("\n"));
        let files = plot_run(&dir.0).unwrap();
        let path = dir.0.join("plots").join("heldout.svg");
        assert!(files.contains(&path), "{files:?}");
        let svg = fs::read_to_string(&path).unwrap();
        for text in ["val/math500/mean@8", "val/aime24/mean@8", "val/average (over sources)", "Held-out mean@k"] {
            assert!(svg.contains(text), "heldout.svg lacks {text:?}");
        }
        // Legends in series order: the sources by name, the average last.
        let at = |t: &str| svg.find(t).unwrap();
        assert!(at("val/aime24/mean@8") < at("val/math500/mean@8") && at("val/math500/mean@8") < at("val/average"));
        let reward = fs::read_to_string(dir.0.join("plots").join("reward.svg")).unwrap();
        assert!(reward.contains("eval_acc (pooled)") && reward.contains("val/average"), "reward.svg");
    }

    /// One row per probe layer: bands, median, tails and both correlations; null values are skipped.
    #[test]
    fn entropy_dynamics_has_a_row_per_probe_layer() {
        let dir = TempDir::new("dynamics");
        let row = |step: u64, layer: usize, rho: Option<f64>| {
            let s = step as f64 * 0.01;
            let mut v = serde_json::json!({"step": step});
            for (k, x) in [("q05", 0.1), ("q25", 0.3), ("q50", 0.5), ("q75", 0.7), ("q95", 0.9)] {
                v[format!("hnorm_l{layer}_{k}")] = serde_json::json!(x + s);
            }
            v[format!("hnorm_l{layer}_anchor_mean")] = serde_json::json!(0.05 + s);
            v[format!("hnorm_l{layer}_explorer_mean")] = serde_json::json!(0.95);
            v[format!("hnorm_l{layer}_rho_pred")] = serde_json::json!(rho);
            v[format!("hnorm_l{layer}_rho_relpos")] = serde_json::json!(-0.3);
            v
        };
        let lines: Vec<String> = (1..=5)
            .map(|s| {
                let mut v = row(s, 3, Some(0.4));
                let w = row(s, 12, (s > 1).then_some(-0.2));
                v.as_object_mut().unwrap().extend(w.as_object().unwrap().clone());
                v.to_string()
            })
            .collect();
        dir.write_metrics(&lines.join("\n"));
        let files = plot_run(&dir.0).unwrap();
        let path = dir.0.join("plots").join("entropy_dynamics.svg");
        assert_eq!(files, vec![path.clone()]);
        let svg = fs::read_to_string(&path).unwrap();
        for text in [
            "Layer 3: Hnorm",
            "Layer 12: Spearman",
            "5–95%",
            "25–75%",
            "hnorm_l3_q50",
            "hnorm_l12_explorer_mean",
            "hnorm_l12_rho_pred",
            "hnorm_l3_rho_relpos",
        ] {
            assert!(svg.contains(text), "entropy_dynamics.svg lacks {text:?}");
        }
        assert!(svg.find("Layer 3:").unwrap() < svg.find("Layer 12:").unwrap(), "layers in numeric order");
    }

    #[test]
    fn diagnostics_written_when_present() {
        let dir = TempDir::new("diag");
        dir.write_metrics("{\"step\": 1, \"diag_norm_full\": 0.5}\n");
        let files = plot_run(&dir.0).unwrap();
        assert_eq!(files, vec![dir.0.join("plots").join("diagnostics.svg")]);
    }

    #[test]
    fn malformed_line_names_line_number() {
        let dir = TempDir::new("bad");
        dir.write_metrics("{\"step\": 1, \"loss\": 0.5}\n{\"step\": 2, \"loss\": \n");
        let err = plot_run(&dir.0).unwrap_err();
        assert!(matches!(&err, Error::Data { line: Some(2), .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("line 2") && err.contains("metrics.jsonl"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let dir = TempDir::new("missing");
        let err = plot_run(&dir.0).unwrap_err().to_string();
        assert!(err.contains("no metrics.jsonl in") && err.contains("has this run logged a step yet?"), "{err}");
    }

    #[test]
    fn empty_file_is_an_error() {
        let dir = TempDir::new("empty");
        dir.write_metrics("\n\n");
        assert!(plot_run(&dir.0).unwrap_err().to_string().contains("no rows"));
    }

    #[test]
    fn null_values_are_skipped() {
        let dir = TempDir::new("nulls");
        dir.write_metrics(
            "{\"step\": 1, \"reward_mean\": null, \"lr\": null}\n\n\
             {\"step\": 2, \"reward_mean\": 0.5, \"lr\": null}\n\
             {\"step\": 3, \"reward_mean\": 0.5, \"grad_norm\": null}\n",
        );
        let files = plot_run(&dir.0).unwrap();
        let plots = dir.0.join("plots");
        assert!(files.contains(&plots.join("reward.svg")));
        assert!(files.contains(&plots.join("summary.svg")));
        assert!(!plots.join("lr.svg").exists());
        assert!(!plots.join("optim.svg").exists());
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(bounds([3.0, -1.0, 2.0].into_iter()), Some((-1.0, 3.0)));
        assert_eq!(bounds(std::iter::empty()), None);
        assert_eq!(x_range(3.0, 3.0), 2.0..4.0);
        assert_eq!(x_range(1.0, 5.0), 1.0..5.0);
        assert_eq!(y_range(0.0, 0.0), -1.0..1.0);
        assert_eq!(y_range(2.0, 2.0), 1.8..2.2);
        assert_eq!(y_range(0.0, 10.0), -0.5..10.5);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(20.0, 100.0), "20");
        assert_eq!(tick_label(0.30000000000000004, 1.0), "0.3");
        assert_eq!(tick_label(1.5e-7, 1e-6), "1.5e-7");
        assert_eq!(tick_label(2.0e6, 1e6), "2e6");
        assert_eq!(tick_label(1e-17, 2.0), "0");
        assert_eq!(tick_label(-0.25, 1.0), "-0.25");
    }
}
