//! Device sampling (`ops::sample_rows`: temperature, top-k, top-p, keyed uniforms) on `dev` against the f64
//! reference (`cpu::sampling::sample_row`) of the same logits and keys: every pick must be a candidate the
//! reference keeps, with a CDF interval (over the kept weights in id order) holding u·Σ kept to 1e-5 of the
//! kept mass; greedy picks must be the first maximum; log-probs (under the full distribution) must match.
//! Qwen3's vocabulary, odd sizes, masked (−inf) logits, tied logits, top-k only, top-p only, both, k = 1,
//! k past the vocabulary, a tiny top-p; f32 and bf16.
use super::CheckRow;
use crate::cpu::sampling::{sample_row, SampleKey, SamplingParams};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::sample_rows;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};

struct Case {
    rows: usize,
    vocab: usize,
    dtype: DType,
    params: SamplingParams,
    masked: bool,
    ties: bool,
}

fn p(temperature: f64, top_k: usize, top_p: f64) -> SamplingParams {
    SamplingParams { temperature, top_p, top_k }
}

pub fn sampling_checks(dev: &Device, seed: u64) -> Vec<CheckRow> {
    let case = |rows, vocab, dtype, params, masked, ties| Case { rows, vocab, dtype, params, masked, ties };
    let cases = [
        case(7, 151_936, DType::BF16, p(1.0, 0, 1.0), false, false),
        case(9, 1001, DType::F32, p(0.7, 0, 1.0), true, false),
        case(5, 777, DType::F32, p(1.0, 0, 1.0), false, true),
        case(6, 151_936, DType::BF16, p(0.0, 0, 1.0), false, false),
        case(5, 5003, DType::BF16, p(0.0, 0, 1.0), true, true),
        case(6, 151_936, DType::BF16, p(1.0, 50, 1.0), false, false),
        case(6, 151_936, DType::BF16, p(0.8, 0, 0.9), false, false),
        case(6, 151_936, DType::F32, p(1.0, 20, 0.95), false, false),
        case(8, 777, DType::F32, p(1.0, 7, 0.8), false, true),
        case(5, 1001, DType::BF16, p(1.2, 3, 1.0), true, true),
        case(4, 19, DType::F32, p(1.0, 1000, 1.0), false, false),
        case(5, 301, DType::F32, p(0.9, 1, 1.0), false, false),
        case(5, 4097, DType::BF16, p(1.0, 0, 1e-6), false, false),
    ];
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let q = &c.params;
            let shape = format!(
                "{} rows x {}, T={} top-k {} top-p {}{}{}",
                c.rows,
                c.vocab,
                q.temperature,
                q.top_k,
                q.top_p,
                if c.masked { ", masked" } else { "" },
                if c.ties { ", ties" } else { "" }
            );
            match run(dev, c, seed.wrapping_add(i as u64)) {
                Ok(err) => CheckRow::new("sample_rows", &shape, c.dtype.suffix(), err, 1e-5),
                Err(e) => CheckRow::failed("sample_rows", &shape, c.dtype.suffix(), e.to_string()),
            }
        })
        .collect()
}

/// The worst of (CDF miss, log-prob error); infinity for a pick the reference does not keep.
fn run(dev: &Device, c: &Case, seed: u64) -> Result<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let r = c.rows + 2;
    let host: Vec<f32> = (0..r * c.vocab)
        .map(|i| {
            let x = (rng.random::<f32>() - 0.5) * 12.0;
            let x = if c.ties { (x / 3.0).round() } else { x };
            if c.masked && (i % 7 == 3 || i % c.vocab > c.vocab - c.vocab / 5) {
                f32::NEG_INFINITY
            } else {
                x
            }
        })
        .collect();
    let logits = Tensor::from_vec(host, [r, c.vocab], &Device::Cpu)?.to_dtype(c.dtype)?;
    let z_all = logits.to_vec_f64()?; // the values the device sees (bf16-rounded when bf16)
    let rows: Vec<usize> = (0..c.rows).map(|i| (5 * i + 1) % r).collect();
    let keys: Vec<SampleKey> = (0..c.rows).map(|i| SampleKey { seed: rng.random(), position: i as u64 }).collect();
    let picks = sample_rows(&logits.to_device(dev)?, &rows, &keys, &c.params)?;
    let t = c.params.temperature;
    let inv_t = if t == 0.0 { 1.0 } else { 1.0 / t };
    let mut worst = 0f64;
    for ((&row, key), pick) in rows.iter().zip(&keys).zip(&picks) {
        let z: Vec<f64> = z_all[row * c.vocab..(row + 1) * c.vocab].iter().map(|x| x * inv_t).collect();
        let tok = pick.token as usize;
        if tok >= c.vocab {
            return Ok(f64::INFINITY);
        }
        let reference = sample_row(&z, key.uniform(), &c.params);
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = z.iter().map(|&x| (x - m).exp()).sum();
        worst = worst.max((pick.logprob - (z[tok] - m - total.ln())).abs());
        if tok == reference.token as usize {
            continue;
        }
        if t == 0.0 {
            return Ok(f64::INFINITY);
        }
        // a different pick: it must lie next to the reference's in the kept CDF (rounding at a boundary)
        let kept = kept_weights(&z, &c.params);
        if kept[tok] == 0.0 {
            return Ok(f64::INFINITY);
        }
        let kept_total: f64 = kept.iter().sum();
        let before: f64 = kept[..tok].iter().sum();
        let target = key.uniform() * kept_total;
        worst = worst.max((before - target).max(target - (before + kept[tok])).max(0.0) / kept_total);
    }
    Ok(worst)
}

/// e^(z − m) of the candidates the f64 reference keeps, 0 elsewhere: the first `top_k` by z descending
/// (ties by id), then the shortest prefix reaching mass top_p (by sorting, independently of the threshold
/// search under test).
fn kept_weights(z: &[f64], q: &SamplingParams) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = z.iter().map(|&x| (x - m).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    if q.top_k > 0 {
        order.truncate(q.top_k);
    }
    let mut keep = 0;
    let mut mass = 0.0;
    for &i in &order {
        keep += 1;
        mass += w[i];
        if q.top_p < 1.0 && mass >= q.top_p * total {
            break;
        }
    }
    order.truncate(keep);
    let mut kept = vec![0.0; z.len()];
    for i in order {
        kept[i] = w[i];
    }
    kept
}
