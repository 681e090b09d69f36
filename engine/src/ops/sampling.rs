//! Next-token sampling for the decode loop: temperature (or greedy), top-k and top-p sampling of chosen
//! rows of a logits matrix, with one keyed uniform per row ([`sample_uniform`] of the request's seed and
//! the response position), the pick by the inverse CDF over the kept candidates in id order and the
//! log-prob under the full temperature-scaled distribution. On a GPU everything runs on the device and only
//! (token, log-prob) per row come back (`kernels-cu/cuda/sample.cu`); the CPU path is the f64 reference
//! (`cpu::sampling::sample_row`).
use crate::cpu::sampling::sample_row;
pub use crate::cpu::sampling::{sample_uniform, Sample, SampleKey, SamplingParams};
use crate::cpu::CpuStorage;
use crate::cuda::sampling as cuda_sampling;
use crate::dtype::DType;
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
    let Checked { rows: r, vocab, greedy: _, inv_t } = check(logits, params)?;
    if rows.len() != keys.len() {
        return Err(bad(format!("{} rows but {} keys", rows.len(), keys.len())));
    }
    if let Some(&bad_row) = rows.iter().find(|&&i| i >= r) {
        return Err(bad(format!("row {bad_row} outside the {r} rows of the logits")));
    }
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
        Storage::Cuda(_) => {
            drop(g);
            let rows_t = Tensor::from_vec(rows.iter().map(|&i| i as i32).collect::<Vec<_>>(), [rows.len()], dev)?;
            let keys_t = Tensor::from_vec(key_words(keys), [keys.len(), 4], dev)?;
            let picks = sample_keyed(logits, &rows_t, &keys_t, params)?;
            let (tokens, logps) = (picks.tokens.to_vec_i32()?, picks.logprobs.to_vec_f32()?);
            Ok(tokens.into_iter().zip(logps).map(|(t, l)| Sample { token: t as u32, logprob: l as f64 }).collect())
        }
    }
}

fn bad(msg: String) -> EngineError {
    EngineError::invalid("sample_rows", msg)
}

/// The checked shape and temperature of a sampling call.
struct Checked {
    rows: usize,
    vocab: usize,
    greedy: bool,
    /// 1 / temperature (1 when greedy).
    inv_t: f64,
}

fn check(logits: &Tensor, params: &SamplingParams) -> Result<Checked> {
    if logits.rank() != 2 || !logits.dtype().is_float() {
        return Err(bad(format!(
            "logits must be a float [rows, vocab] matrix, got {} {}",
            logits.dtype(),
            logits.shape()
        )));
    }
    let (rows, vocab) = (logits.dims()[0], logits.dims()[1]);
    if vocab == 0 || vocab >= 1 << 24 {
        return Err(bad(format!("vocabulary of {vocab} (need 1 ..= 2^24 - 1)")));
    }
    if let Some(msg) = params.invalid() {
        return Err(bad(msg));
    }
    let greedy = params.temperature == 0.0;
    Ok(Checked { rows, vocab, greedy, inv_t: if greedy { 1.0 } else { 1.0 / params.temperature } })
}

/// Each key as four u32 words carried as i32: seed lo, seed hi, position lo, position hi (the layout of
/// [`sample_keyed`]'s key buffer and of `sample.cu`).
pub fn key_words(keys: &[SampleKey]) -> Vec<i32> {
    keys.iter()
        .flat_map(|k| [k.seed as u32, (k.seed >> 32) as u32, k.position as u32, (k.position >> 32) as u32])
        .map(|w| w as i32)
        .collect()
}

fn key_of(w: &[i32]) -> SampleKey {
    let word = |i: usize| w[i] as u32 as u64;
    SampleKey { seed: word(0) | word(1) << 32, position: word(2) | word(3) << 32 }
}

/// Picks that stay where they were made: tokens i32 [m] and log-probs f32 [m].
pub struct SampledRows {
    pub tokens: Tensor,
    pub logprobs: Tensor,
}

/// [`sample_rows`] over buffers: `rows` i32 [m] and `keys` i32 [m, 4] ([`key_words`]), results left in
/// tensors on the logits' device (nothing moves between host and device: a step graph's sampler).
pub fn sample_keyed(logits: &Tensor, rows: &Tensor, keys: &Tensor, params: &SamplingParams) -> Result<SampledRows> {
    let Checked { rows: r, vocab, greedy, inv_t } = check(logits, params)?;
    let m = rows.numel();
    if rows.dtype() != DType::I32 || keys.dtype() != DType::I32 || rows.rank() != 1 || keys.dims() != [m, 4] {
        return Err(bad(format!(
            "rows {} {} and keys {} {} (need i32 [m] and [m, 4])",
            rows.shape(),
            rows.dtype(),
            keys.shape(),
            keys.dtype()
        )));
    }
    let dev = logits.device();
    let (g, rg, kg) = (logits.storage(), rows.storage(), keys.storage());
    match (&*g, &*rg, &*kg) {
        (Storage::Cpu(z), Storage::Cpu(CpuStorage::I32(rows)), Storage::Cpu(CpuStorage::I32(words))) => {
            if let Some(&bad_row) = rows.iter().find(|&&i| i < 0 || i as usize >= r) {
                return Err(bad(format!("row {bad_row} outside the {r} rows of the logits")));
            }
            let z = z.to_f64_vec();
            let picks: Vec<Sample> = rows
                .iter()
                .zip(words.chunks(4))
                .map(|(&row, w)| {
                    let row = row as usize;
                    let zr: Vec<f64> = z[row * vocab..(row + 1) * vocab].iter().map(|x| x * inv_t).collect();
                    sample_row(&zr, key_of(w).uniform(), params)
                })
                .collect();
            let tokens = CpuStorage::I32(picks.iter().map(|p| p.token as i32).collect());
            let logprobs = CpuStorage::F32(picks.iter().map(|p| p.logprob as f32).collect());
            Ok(SampledRows {
                tokens: Tensor::from_storage(Storage::Cpu(tokens), [m].into(), dev),
                logprobs: Tensor::from_storage(Storage::Cpu(logprobs), [m].into(), dev),
            })
        }
        (Storage::Cuda(s), Storage::Cuda(rc), Storage::Cuda(kc)) => {
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
            Ok(SampledRows {
                tokens: Tensor::from_storage(Storage::Cuda(picks.tokens), [m].into(), dev),
                logprobs: Tensor::from_storage(Storage::Cuda(picks.logprobs), [m].into(), dev),
            })
        }
        _ => Err(bad("logits, rows and keys on different devices, or rows/keys not i32".into())),
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
    fn keyed_buffers_sample_like_host_keys() {
        let cpu = Device::Cpu;
        let logits = Tensor::randn([3, 50], 2.0, DType::F32, &cpu, 9).unwrap();
        let keys =
            [SampleKey { seed: u64::MAX - 3, position: 7 }, key(1), SampleKey { seed: 1 << 40, position: 1 << 33 }];
        let params = SamplingParams { temperature: 0.8, top_k: 20, top_p: 0.9 };
        let want = sample_rows(&logits, &[2, 0, 1], &keys, &params).unwrap();
        let rows = Tensor::from_vec(vec![2i32, 0, 1], [3], &cpu).unwrap();
        let words = Tensor::from_vec(key_words(&keys), [3, 4], &cpu).unwrap();
        let got = sample_keyed(&logits, &rows, &words, &params).unwrap();
        let tokens: Vec<u32> = got.tokens.to_vec_i32().unwrap().into_iter().map(|t| t as u32).collect();
        assert_eq!(tokens, want.iter().map(|s| s.token).collect::<Vec<_>>());
        for (l, s) in got.logprobs.to_vec_f32().unwrap().iter().zip(&want) {
            assert_eq!(*l, s.logprob as f32);
        }
        let outside = Tensor::from_vec(vec![3i32, 0, 1], [3], &cpu).unwrap();
        assert!(sample_keyed(&logits, &outside, &words, &params).is_err());
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
