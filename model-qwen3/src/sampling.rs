//! Next-token sampling for generation: temperature (0 = greedy), top-k and top-p, with one keyed uniform
//! per response token, `sample_uniform(request seed, response position)`, so a request's response is the
//! same alone, inside any batch, or after being preempted and recomputed. On a GPU every row is sampled on
//! the device (`entrl_engine::ops::sample_rows`, only (token, log-prob) per row come back); on the CPU with
//! [`sample`], the host sampler. Both keep the same candidates (the first top-k by logit, ties by smaller
//! id, then the shortest prefix of them reaching mass top-p) and pick by the inverse CDF over the kept
//! candidates in id order, so for the same key they agree up to rounding.
use crate::error::{ModelError, Result};
use entrl_engine::cpu::sampling::pick_by_cdf;
use entrl_engine::ops::sample_rows;
pub use entrl_engine::ops::{sample_uniform, Sample, SampleKey, SamplingParams};
use entrl_engine::Tensor;

/// One (token, log-prob) per row of `logits` [keys.len(), vocab], row i sampled with `keys[i]`: on the
/// device on a GPU, with [`sample`] on the CPU.
pub fn sample_active(
    logits: &Tensor,
    keys: &[SampleKey],
    params: &SamplingParams,
    vocab: usize,
) -> Result<Vec<(u32, f64)>> {
    if let Some(msg) = params.invalid() {
        return Err(ModelError::Invalid(msg));
    }
    if logits.rank() != 2 || logits.dims() != [keys.len(), vocab] {
        return Err(ModelError::Invalid(format!(
            "sampling: logits {} for {} keys and a vocabulary of {vocab}",
            logits.shape(),
            keys.len()
        )));
    }
    if logits.device().is_cuda() {
        let rows: Vec<usize> = (0..keys.len()).collect();
        let picks = sample_rows(logits, &rows, keys, params)?;
        return Ok(picks.into_iter().map(|s| (s.token, s.logprob)).collect());
    }
    let host = logits.to_vec_f32()?;
    // Sample every row in parallel (each has its own key, so results are independent of the thread split).
    let work: Vec<(&[f32], &SampleKey)> = host.chunks(vocab.max(1)).zip(keys).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(work.len()).max(1);
    let chunk = work.len().div_ceil(threads).max(1);
    Ok(std::thread::scope(|sc| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                sc.spawn(move || {
                    part.iter()
                        .map(|(row, key)| {
                            let s = sample(row, params, key);
                            (s.token, s.logprob)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("sampling thread")).collect()
    }))
}

/// Sample one token from a row of logits with the uniform of `key`: temperature, then the candidates by
/// logit (ties by id) cut to the first top-k, then to the shortest prefix with probability mass >= top-p
/// (the boundary candidate included), then the inverse CDF over the kept candidates in id order. The
/// log-prob is under the full softmax(logits / T) (T = 1 when greedy, the first maximum).
pub fn sample(logits: &[f32], p: &SamplingParams, key: &SampleKey) -> Sample {
    let t = if p.temperature > 0.0 { p.temperature } else { 1.0 };
    let z: Vec<f64> = logits.iter().map(|&x| x as f64 / t).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    let logp = |i: usize| z[i] - lse;
    let done = |i: usize| Sample { token: i as u32, logprob: logp(i) };
    if p.temperature == 0.0 {
        return done((0..z.len()).fold(0, |b, i| if z[i] > z[b] { i } else { b }));
    }
    let mut order: Vec<usize> = (0..z.len()).collect();
    if p.truncates() {
        order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
        if p.top_k > 0 {
            order.truncate(p.top_k.min(order.len()));
        }
        if p.top_p < 1.0 {
            let mut mass = 0.0;
            let mut keep = 0;
            for &i in &order {
                mass += logp(i).exp();
                keep += 1;
                if mass >= p.top_p {
                    break;
                }
            }
            order.truncate(keep.max(1));
        }
        order.sort_unstable(); // the pick walks the kept candidates in id order, as the device does
    }
    let weights: Vec<f64> = order.iter().map(|&i| logp(i).exp()).collect();
    done(order[pick_by_cdf(&weights, key.uniform())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use entrl_engine::Device;
    use rand::{Rng, SeedableRng};

    /// The device sampler's rule (`ops::sample_rows`, here its f64 reference: a threshold search over the
    /// value bits) and the host sampler (sorting) draw the same tokens for the same keys, for greedy,
    /// temperature, top-k, top-p and both, on random and on heavily tied logits.
    #[test]
    fn device_rule_and_host_sampler_agree_for_the_same_keys() {
        let (rows, vocab) = (64, 301);
        let mut g = rand::rngs::StdRng::seed_from_u64(7);
        for ties in [false, true] {
            let host: Vec<f32> = (0..rows * vocab)
                .map(|_| {
                    let x = (g.random::<f32>() - 0.5) * 8.0;
                    if ties {
                        x.round()
                    } else {
                        x
                    }
                })
                .collect();
            let logits = Tensor::from_vec(host.clone(), [rows, vocab], &Device::Cpu).unwrap();
            let keys: Vec<SampleKey> = (0..rows).map(|r| SampleKey { seed: 40 + r as u64, position: 3 }).collect();
            let all: Vec<usize> = (0..rows).collect();
            let mut distinct = 0;
            for (temperature, top_k, top_p) in [
                (0.0, 0, 1.0),
                (0.7, 0, 1.0),
                (1.0, 0, 1.0),
                (1.0, 5, 1.0),
                (1.0, 1, 1.0),
                (1.0, 1000, 1.0),
                (0.8, 0, 0.5),
                (1.0, 0, 0.9),
                (1.0, 0, 1e-9),
                (1.3, 10, 0.7),
            ] {
                let params = SamplingParams { temperature, top_p, top_k };
                let rule = sample_rows(&logits, &all, &keys, &params).unwrap();
                let mut tokens = std::collections::HashSet::new();
                for (r, d) in rule.iter().enumerate() {
                    let h = sample(&host[r * vocab..(r + 1) * vocab], &params, &keys[r]);
                    assert_eq!(d.token, h.token, "row {r}, {params:?}, ties {ties}");
                    assert!((d.logprob - h.logprob).abs() < 1e-9);
                    tokens.insert(h.token);
                }
                distinct += tokens.len();
            }
            assert!(distinct > 100, "the cases should draw varied tokens");
        }
    }

    #[test]
    fn truncation_keeps_the_right_candidates() {
        // logits 3, 3, 2, 1, 0 (ids 0..5): top-k 1 is id 0 for every key; top-k 2 only ids 0 and 1
        let z = [3.0f32, 3.0, 2.0, 1.0, 0.0];
        let keys: Vec<SampleKey> = (0..200).map(|i| SampleKey { seed: 9, position: i }).collect();
        let draw = |p: SamplingParams| keys.iter().map(|k| sample(&z, &p, k).token).collect::<Vec<_>>();
        assert!(draw(SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 1 }).iter().all(|&t| t == 0));
        let k2 = draw(SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 2 });
        assert!(k2.iter().all(|&t| t < 2) && k2.contains(&0) && k2.contains(&1));
        // p(3) = 0.392 each: top-p 0.5 needs both tied maxima, top-p 0.3 only the first
        let p5 = draw(SamplingParams { temperature: 1.0, top_p: 0.5, top_k: 0 });
        assert!(p5.iter().all(|&t| t < 2) && p5.contains(&1));
        assert!(draw(SamplingParams { temperature: 1.0, top_p: 0.3, top_k: 0 }).iter().all(|&t| t == 0));
        // untruncated: every id appears
        let all = draw(SamplingParams::default());
        assert!((0..5).all(|i| all.contains(&i)));
        // the log-prob is under the full distribution
        let lse = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        let s = sample(&z, &SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 1 }, &keys[0]);
        assert!((s.logprob - (3.0 - lse)).abs() < 1e-12);
    }

    #[test]
    fn bad_params_are_one_error() {
        let logits = Tensor::from_vec(vec![0.0f32; 6], [2, 3], &Device::Cpu).unwrap();
        let keys = [SampleKey { seed: 0, position: 0 }; 2];
        let bad = SamplingParams { temperature: 1.0, top_p: 0.0, top_k: 0 };
        let e = sample_active(&logits, &keys, &bad, 3).unwrap_err().to_string();
        assert!(e.contains("top_p"), "{e}");
        assert!(sample_active(&logits, &keys[..1], &SamplingParams::default(), 3).is_err());
        assert_eq!(sample_active(&logits, &keys, &SamplingParams::default(), 3).unwrap().len(), 2);
    }
}
