//! Next-token sampling for the decode loop: temperature (or greedy), top-k and top-p sampling of chosen
//! rows of a logits matrix, with one keyed uniform per row ([`sample_uniform`] of the request's seed and
//! the response position), the pick by the inverse CDF over the kept candidates in id order and the
//! log-prob under the full temperature-scaled distribution. On a GPU everything runs on the device and only
//! (token, log-prob) per row come back (`kernels-cu/cuda/sample.cu`); the CPU path is the f64 reference
//! (`cpu::sampling::sample_row`).
use crate::cpu::sampling::sample_row;
pub use crate::cpu::sampling::{sample_uniform, Sample, SampleKey, SamplingParams};
use crate::cuda::sampling as cuda_sampling;
use crate::error::{EngineError, Result};
use crate::storage::Storage;
use crate::tensor::Tensor;

/// For each (row, key) pair: the sample of softmax(logits[row] / temperature) cut by top-k / top-p, drawn
/// with the key's uniform; `temperature` 0 is greedy (the first maximum, log-prob under temperature 1).
/// logits [R, vocab] (f32 or bf16 on a GPU).
pub fn sample_rows(
    logits: &Tensor,
    rows: &[usize],
    keys: &[SampleKey],
    params: &SamplingParams,
) -> Result<Vec<Sample>> {
    let bad = |msg: String| EngineError::invalid("sample_rows", msg);
    if logits.rank() != 2 || !logits.dtype().is_float() {
        return Err(bad(format!(
            "logits must be a float [rows, vocab] matrix, got {} {}",
            logits.dtype(),
            logits.shape()
        )));
    }
    let (r, vocab) = (logits.dims()[0], logits.dims()[1]);
    if vocab == 0 || vocab >= 1 << 24 {
        return Err(bad(format!("vocabulary of {vocab} (need 1 ..= 2^24 - 1)")));
    }
    if rows.len() != keys.len() {
        return Err(bad(format!("{} rows but {} keys", rows.len(), keys.len())));
    }
    if let Some(&bad_row) = rows.iter().find(|&&i| i >= r) {
        return Err(bad(format!("row {bad_row} outside the {r} rows of the logits")));
    }
    if let Some(msg) = params.invalid() {
        return Err(bad(msg));
    }
    let greedy = params.temperature == 0.0;
    let inv_t = if greedy { 1.0 } else { 1.0 / params.temperature };
    let dev = logits.device();
    let g = logits.storage();
    match &*g {
        Storage::Cpu(s) => {
            let z = s.to_f64_vec();
            Ok(rows
                .iter()
                .zip(keys)
                .map(|(&row, key)| {
                    let zr: Vec<f64> = z[row * vocab..(row + 1) * vocab].iter().map(|x| x * inv_t).collect();
                    sample_row(&zr, key.uniform(), params)
                })
                .collect())
        }
        Storage::Cuda(s) => {
            let rows_t = Tensor::from_vec(rows.iter().map(|&i| i as i32).collect::<Vec<_>>(), [rows.len()], dev)?;
            // each key as four u32 words (seed lo, seed hi, position lo, position hi), carried as i32
            let words: Vec<i32> = keys
                .iter()
                .flat_map(|k| [k.seed as u32, (k.seed >> 32) as u32, k.position as u32, (k.position >> 32) as u32])
                .map(|w| w as i32)
                .collect();
            let keys_t = Tensor::from_vec(words, [keys.len(), 4], dev)?;
            let (rg, kg) = (rows_t.storage(), keys_t.storage());
            let (Storage::Cuda(rc), Storage::Cuda(kc)) = (&*rg, &*kg) else { unreachable!("uploaded to the device") };
            // top-k at or past the vocabulary keeps everything: 0 (off) for the kernel's i32
            let top_k = if params.top_k >= vocab { 0 } else { params.top_k };
            let cfg = cuda_sampling::DeviceSampling {
                vocab,
                inv_t: inv_t as f32,
                greedy,
                top_k,
                top_p: if params.top_p >= 1.0 { 1.0 } else { params.top_p as f32 },
            };
            let picks = cuda_sampling::sample_rows(s, rc, kc, &cfg)?;
            let n = rows.len();
            let tokens = Tensor::from_storage(Storage::Cuda(picks.tokens), [n].into(), dev).to_vec_i32()?;
            let logps = Tensor::from_storage(Storage::Cuda(picks.logprobs), [n].into(), dev).to_vec_f32()?;
            Ok(tokens.into_iter().zip(logps).map(|(t, l)| Sample { token: t as u32, logprob: l as f64 }).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    fn key(position: u64) -> SampleKey {
        SampleKey { seed: 5, position }
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_sampling_follows_the_cdf() {
        let logits = Tensor::from_vec(vec![0.0f32, 2.0, 2.0, -1.0, 1.0, 1.0, 1.0, 1.0], [2, 4], &Device::Cpu).unwrap();
        let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
        let g = sample_rows(&logits, &[0, 1], &[key(0), key(1)], &greedy).unwrap();
        assert_eq!((g[0].token, g[1].token), (1, 0));
        // row 1 is uniform: u in (k/4, (k+1)/4] picks k
        let keys: Vec<SampleKey> = (0..64).map(key).collect();
        let s = sample_rows(&logits, &[1; 64], &keys, &SamplingParams::default()).unwrap();
        for (k, p) in keys.iter().zip(&s) {
            assert_eq!(p.token, (k.uniform() * 4.0).ceil().max(1.0) as u32 - 1);
            assert!((p.logprob - 0.25f64.ln()).abs() < 1e-12);
        }
        // a -inf logit is never drawn
        let masked = Tensor::from_vec(vec![0.0f32, 0.0, f32::NEG_INFINITY], [1, 3], &Device::Cpu).unwrap();
        let m = sample_rows(&masked, &[0; 64], &keys, &SamplingParams::default()).unwrap();
        assert!(m.iter().all(|p| p.token < 2));
    }

    #[test]
    fn bad_input_is_an_error() {
        let logits = Tensor::from_vec(vec![0.0f32; 6], [2, 3], &Device::Cpu).unwrap();
        let p = SamplingParams::default();
        assert!(sample_rows(&logits, &[2], &[key(0)], &p).is_err());
        assert!(sample_rows(&logits, &[0, 1], &[key(0)], &p).is_err());
        for bad in [
            SamplingParams { temperature: -1.0, ..p },
            SamplingParams { temperature: f64::NAN, ..p },
            SamplingParams { top_p: 0.0, ..p },
            SamplingParams { top_p: 1.5, ..p },
            SamplingParams { top_p: f64::NAN, ..p },
        ] {
            let e = sample_rows(&logits, &[0], &[key(0)], &bad).unwrap_err().to_string();
            assert!(e.contains("temperature"), "{e}");
        }
    }
}
