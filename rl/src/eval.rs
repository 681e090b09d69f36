//! mean@k evaluation: k sampled responses per held-out prompt, accuracy per data source and overall
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

impl EvalReport {
    /// Accuracy over every response (= mean over prompts of mean@k, prompts weighing equally).
    pub fn mean(&self) -> f64 {
        let (c, n) = self.per_source.values().fold((0, 0), |(c, n), &(a, b)| (c + a, n + b));
        c as f64 / n.max(1) as f64
    }

    /// Add another report's counts (the shares of data-parallel ranks).
    pub fn merge(&mut self, other: &EvalReport) {
        for (src, &(c, n)) in &other.per_source {
            let e = self.per_source.entry(src.clone()).or_insert((0, 0));
            e.0 += c;
            e.1 += n;
        }
    }

    /// A small table: source, prompts, mean@k.
    pub fn table(&self) -> String {
        let mut s = format!("{:<24} {:>8} {:>10}\n", "data_source", "prompts", format!("mean@{}", self.k));
        for (src, &(c, n)) in &self.per_source {
            s += &format!("{:<24} {:>8} {:>10.4}\n", src, n / self.k.max(1), c as f64 / n.max(1) as f64);
        }
        s + &format!(
            "{:<24} {:>8} {:>10.4}\n",
            "all",
            self.per_source.values().map(|v| v.1).sum::<usize>() / self.k.max(1),
            self.mean()
        )
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
    max_concurrent: usize,
    verifier: &crate::reward::VerifierFor,
    seed: u64,
) -> Result<EvalReport, String> {
    if !(1..=MAX_K).contains(&k) {
        return Err(format!("mean@k takes 1 to {MAX_K} samples per prompt, not k = {k}"));
    }
    let spec = RolloutSpec { n: k, params, max_response_len, max_concurrent, overlong: None, verifier };
    let refs: Vec<&EncodedPrompt> = prompts.iter().collect();
    let samples = rollout(model, tok, &refs, first_group, &spec, mix_seed(&[seed, 0xE7A1]), || {})?;
    let mut report = EvalReport { per_source: BTreeMap::new(), k };
    for s in &samples {
        let e = report.per_source.entry(s.data_source.clone()).or_insert((0, 0));
        e.0 += s.correct as usize;
        e.1 += 1;
    }
    Ok(report)
}
