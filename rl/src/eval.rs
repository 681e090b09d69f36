//! mean@k evaluation: k sampled responses per held-out prompt, accuracy per data source, their
//! unweighted average over sources (the held-out average), and the pooled accuracy of every response
//! (the seed paper reports mean@8; DAPO evaluates with temperature 1.0, top-p 0.7).
use crate::rollout::{mix_seed, rollout, EncodedPrompt, RolloutSpec};
use entrl_qwen3::{Qwen3, SamplingParams, Tokenizer};
use std::collections::BTreeMap;

/// Samples per prompt mean@k takes at most (the range of `run.eval_k` and `entrl eval --k`).
pub const MAX_K: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// data_source → (correct responses, responses).
    pub per_source: BTreeMap<String, (usize, usize)>,
    pub k: usize,
}

/// One data source's held-out score.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceScore {
    pub source: String,
    pub prompts: usize,
    /// Correct responses / responses: the mean over the source's prompts of their mean@k.
    pub mean_at_k: f64,
}

/// Label of the table row with the unweighted mean over data sources.
pub const AVERAGE_LABEL: &str = "average (unweighted)";
/// Label of the table row with every response pooled.
pub const POOLED_LABEL: &str = "pooled (every response)";

impl EvalReport {
    /// mean@k of each data source, in name order.
    pub fn sources(&self) -> Vec<SourceScore> {
        self.per_source
            .iter()
            .map(|(src, &(c, n))| SourceScore {
                source: src.clone(),
                prompts: n / self.k.max(1),
                mean_at_k: c as f64 / n.max(1) as f64,
            })
            .collect()
    }

    /// The held-out average: the unweighted mean over data sources of their mean@k, so every benchmark
    /// counts the same whatever its size (the seed paper's "held-out average", read as in
    /// `shared/docs/dapo.md` §11; verl logs each source's mean@k). 0 for an empty report.
    pub fn average(&self) -> f64 {
        let s = self.sources();
        s.iter().map(|x| x.mean_at_k).sum::<f64>() / s.len().max(1) as f64
    }

    /// Accuracy over every response pooled: a large source outweighs a small one (`eval_acc` in
    /// metrics.jsonl).
    pub fn pooled(&self) -> f64 {
        let (c, n) = self.per_source.values().fold((0, 0), |(c, n), &(a, b)| (c + a, n + b));
        c as f64 / n.max(1) as f64
    }

    /// The report as metrics.jsonl keys, as verl names its validation metrics: `val/<source>/mean@<k>`
    /// for each data source and `val/average` ([`EvalReport::average`]).
    pub fn val_metrics(&self) -> BTreeMap<String, f64> {
        let mut m: BTreeMap<String, f64> =
            self.sources().into_iter().map(|s| (format!("val/{}/mean@{}", s.source, self.k), s.mean_at_k)).collect();
        m.insert("val/average".into(), self.average());
        m
    }

    /// Whether the held-out average reaches `run.stop_at_accuracy` (0 = never).
    pub fn reaches(&self, stop_at_accuracy: f64) -> bool {
        stop_at_accuracy > 0.0 && self.average() >= stop_at_accuracy
    }

    /// Add another report's counts (the shares of data-parallel ranks).
    pub fn merge(&mut self, other: &EvalReport) {
        for (src, &(c, n)) in &other.per_source {
            let e = self.per_source.entry(src.clone()).or_insert((0, 0));
            e.0 += c;
            e.1 += n;
        }
    }

    /// A small table: source, prompts, mean@k; then the unweighted average over sources (its prompts
    /// column counts the sources' prompts) and the pooled accuracy of every response.
    pub fn table(&self) -> String {
        let sources = self.sources();
        let w = sources.iter().map(|s| s.source.chars().count()).chain([24, POOLED_LABEL.len()]).max().unwrap_or(24);
        let total: usize = sources.iter().map(|s| s.prompts).sum();
        let mut out = format!("{:<w$} {:>8} {:>10}\n", "data_source", "prompts", format!("mean@{}", self.k));
        for s in &sources {
            out += &format!("{:<w$} {:>8} {:>10.4}\n", s.source, s.prompts, s.mean_at_k);
        }
        out += &format!("{:<w$} {:>8} {:>10.4}\n", AVERAGE_LABEL, total, self.average());
        out + &format!("{:<w$} {:>8} {:>10.4}\n", POOLED_LABEL, total, self.pooled())
    }
}

/// Evaluate `prompts` with `k` samples each (1 to [`MAX_K`]); `first_group` numbers the prompts for the sampling seeds (a
/// data-parallel rank evaluating a share passes the share's start, so results do not depend on the split).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Qwen3,
    tok: &Tokenizer,
    prompts: &[EncodedPrompt],
    first_group: usize,
    k: usize,
    params: SamplingParams,
    max_response_len: usize,
    generate: entrl_qwen3::GenerateOptions,
    verifier: &crate::reward::VerifierFor,
    seed: u64,
) -> crate::Result<EvalReport> {
    if !(1..=MAX_K).contains(&k) {
        return Err(crate::Error::invalid(format!("mean@k takes 1 to {MAX_K} samples per prompt, not k = {k}")));
    }
    let spec = RolloutSpec { n: k, params, max_response_len, generate, overlong: None, verifier };
    let refs: Vec<&EncodedPrompt> = prompts.iter().collect();
    let samples = rollout(model, tok, &refs, first_group, &spec, mix_seed(&[seed, 0xE7A1]), || {})?.samples;
    let mut report = EvalReport { per_source: BTreeMap::new(), k };
    for s in &samples {
        let e = report.per_source.entry(s.data_source.clone()).or_insert((0, 0));
        e.0 += s.correct as usize;
        e.1 += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 500-prompt source at 0.6 and a 30-prompt one at 0.1: the average is 0.35, not the pooled 0.572
    /// that the large source dominates.
    #[test]
    fn the_average_weighs_sources_equally() {
        let k = 8;
        let rep = EvalReport {
            per_source: [("math500".to_string(), (2400, 500 * k)), ("aime24".to_string(), (24, 30 * k))].into(),
            k,
        };
        assert!((rep.average() - 0.35).abs() < 1e-12, "{}", rep.average());
        assert!((rep.pooled() - 2424.0 / 4240.0).abs() < 1e-12, "{}", rep.pooled());
        let s = rep.sources();
        assert_eq!((s[0].source.as_str(), s[0].prompts), ("aime24", 30));
        assert!((s[1].mean_at_k - 0.6).abs() < 1e-12);
        let m = rep.val_metrics();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["val/aime24/mean@8", "val/average", "val/math500/mean@8"]);
        assert_eq!(m["val/average"], rep.average());
        assert!((m["val/aime24/mean@8"] - 0.1).abs() < 1e-12);
        let t = rep.table();
        let row = |label: &str| t.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{t}")).to_string();
        assert!(row("average (unweighted)").ends_with("530     0.3500"), "{t}");
        assert!(row("pooled (every response)").ends_with("530     0.5717"), "{t}");
        assert!(row("aime24").ends_with("30     0.1000") && t.starts_with("data_source"), "{t}");
        assert_eq!(EvalReport::default().average(), 0.0);
        // run.stop_at_accuracy compares the average: 0.5 is reached by the pooled 0.57 but not by it.
        assert!(!rep.reaches(0.5) && rep.reaches(0.35) && !rep.reaches(0.0));
    }
}
