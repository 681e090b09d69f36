//! Per-step metrics, one JSON object per line in `RUN_DIR/metrics.jsonl` (the keys `entrl plot` draws).
//! An evaluation adds `eval_acc` (every response pooled), `val/<source>/mean@<k>` per data source and
//! `val/average` (their unweighted mean, what `run.stop_at_accuracy` compares with).
use crate::diagnose::Diagnostics;
use crate::entropy_stats::LayerStats;
use crate::eval::EvalReport;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    /// Mean reward (score + overlong penalty) and accuracy of the trained batch.
    pub reward_mean: f64,
    pub acc_mean: f64,
    /// Accuracy over every generated response of the step, before dynamic sampling filtered groups.
    pub acc_generated: f64,
    pub response_len_mean: f64,
    pub response_len_max: usize,
    /// Responses that hit max_response_len without a stop token.
    pub overlong_frac: f64,
    /// Σ weights over response tokens / response tokens: the realised kept fraction of the strategy.
    pub kept_frac: f64,
    pub loss: f64,
    pub grad_norm: f64,
    pub clip_frac: f64,
    pub clip_frac_lower: f64,
    pub approx_kl: f64,
    pub lr: f64,
    pub prompts: usize,
    pub responses: usize,
    pub response_tokens: usize,
    pub gen_rounds: usize,
    pub updates: usize,
    /// Updates skipped for a non-finite loss or gradient (this step, and since the run began).
    pub skipped_updates: usize,
    pub skipped_total: u64,
    pub time_rollout_s: f64,
    pub time_old_logprob_s: f64,
    pub time_update_s: f64,
    pub time_step_s: f64,
    /// (prompt + response tokens generated, scored and trained) / step time.
    pub tokens_per_s: f64,
    /// This rank's KV-cache scheduler over the step's rounds: sequences preempted (and recomputed), the
    /// most sequences decoding at once, decode steps.
    #[serde(default)]
    pub rollout_preemptions: usize,
    #[serde(default)]
    pub rollout_peak_running: usize,
    #[serde(default)]
    pub rollout_decode_steps: usize,
    /// At an evaluation step: held-out accuracy over every response pooled ([`EvalReport::pooled`]). The
    /// line also carries `val/<source>/mean@<k>` and `val/average` ([`StepMetrics::to_json_line_with`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_acc: Option<f64>,
    /// Gradient geometry of a diagnosed step (`run.diagnose_every`), flattened into the JSON line as
    /// `diag_*` keys ([`Diagnostics::fields`]; undefined values are null).
    #[serde(skip)]
    pub diag: Option<Diagnostics>,
    /// Entropy dynamics per probe layer ([`crate::entropy_stats`]), flattened into the JSON line as
    /// `hnorm_l{layer}_*` keys ([`LayerStats::fields`]; undefined values are null).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub hnorm: Vec<LayerStats>,
}

impl StepMetrics {
    /// The JSON line (diagnostics flattened to top-level `diag_*` keys, entropy dynamics to `hnorm_l*`).
    pub fn to_json_line(&self) -> String {
        self.to_json_line_with(None)
    }

    /// The JSON line with the held-out keys of `eval` ([`EvalReport::val_metrics`]) when the step evaluated.
    pub fn to_json_line_with(&self, eval: Option<&EvalReport>) -> String {
        let mut v = serde_json::to_value(self).expect("metrics serialize");
        let o = v.as_object_mut().expect("metrics serialize to an object");
        for (k, x) in self.diag.iter().flat_map(Diagnostics::fields) {
            o.insert(k, x.into());
        }
        o.remove("hnorm");
        for (k, x) in self.hnorm.iter().flat_map(LayerStats::fields) {
            o.insert(k, x.into());
        }
        o.extend(eval.map(val_fields).unwrap_or_default());
        v.to_string()
    }
}

/// The line of an evaluation outside a training step (the one before training, `step` 0): `eval_acc`
/// (pooled) and the `val/` keys.
pub fn eval_json_line(step: u64, eval: &EvalReport) -> String {
    let mut o = serde_json::Map::new();
    o.insert("step".into(), step.into());
    o.insert("eval_acc".into(), eval.pooled().into());
    o.extend(val_fields(eval));
    serde_json::Value::Object(o).to_string()
}

fn val_fields(eval: &EvalReport) -> serde_json::Map<String, serde_json::Value> {
    eval.val_metrics().into_iter().map(|(k, x)| (k, x.into())).collect()
}

/// Append one line to `path` (created if missing).
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    f.flush()
}

/// Keep only the lines whose `step` is ≤ `last_step` (rewritten atomically), so a resumed run continues
/// the file exactly where its checkpoint was taken.
pub fn truncate_after(path: &Path, last_step: u64) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= last_step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    entrl_qwen3::save::write_atomic(path, kept.as_bytes()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> EvalReport {
        EvalReport { per_source: [("big".to_string(), (90, 100)), ("small".to_string(), (1, 10))].into(), k: 2 }
    }

    #[test]
    fn evaluation_lines_carry_the_val_keys() {
        let m = StepMetrics { step: 7, eval_acc: Some(report().pooled()), ..Default::default() };
        let v: serde_json::Value = serde_json::from_str(&m.to_json_line_with(Some(&report()))).unwrap();
        assert_eq!(v["step"], 7);
        assert_eq!(v["val/big/mean@2"], 0.9);
        assert_eq!(v["val/small/mean@2"], 0.1);
        assert_eq!(v["val/average"], 0.5);
        assert_eq!(v["eval_acc"], 91.0 / 110.0);
        let plain: serde_json::Value = serde_json::from_str(&m.to_json_line()).unwrap();
        assert!(plain.as_object().unwrap().keys().all(|k| !k.starts_with("val/")), "{plain}");
        assert!(plain.as_object().unwrap().keys().all(|k| !k.starts_with("hnorm")), "{plain}");
        let v: serde_json::Value = serde_json::from_str(&eval_json_line(0, &report())).unwrap();
        assert_eq!((v["step"].as_u64(), v["val/average"].as_f64()), (Some(0), Some(0.5)));
        assert_eq!(v["eval_acc"], 91.0 / 110.0);
    }

    #[test]
    fn entropy_dynamics_are_flat_keys_with_nulls() {
        let layer = LayerStats {
            layer: 2,
            quantiles: [Some(0.1), Some(0.2), Some(0.3), Some(0.4), Some(0.5)],
            anchor_mean: Some(0.05),
            explorer_mean: Some(0.6),
            rho_pred: Some(-0.25),
            rho_relpos: None,
        };
        let m = StepMetrics { step: 1, hnorm: vec![layer], ..Default::default() };
        let v: serde_json::Value = serde_json::from_str(&m.to_json_line()).unwrap();
        let o = v.as_object().unwrap();
        assert!(!o.contains_key("hnorm"), "{v}");
        assert_eq!((v["hnorm_l2_q05"].as_f64(), v["hnorm_l2_q95"].as_f64()), (Some(0.1), Some(0.5)));
        assert_eq!(v["hnorm_l2_explorer_mean"].as_f64(), Some(0.6));
        assert_eq!(v["hnorm_l2_rho_pred"].as_f64(), Some(-0.25));
        assert!(o["hnorm_l2_rho_relpos"].is_null(), "undefined is null, never NaN: {v}");
        assert_eq!(o.keys().filter(|k| k.starts_with("hnorm_l2_")).count(), 9);
    }
}
