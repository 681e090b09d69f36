//! Device sampling (`ops::sample_rows`) on `dev` against the f64 inverse CDF of the same logits: every pick
//! must have nonzero probability and a CDF interval holding u·total (to 1e-5 of the row mass), greedy picks
//! must be the first maximum, log-probs must match. Qwen3's vocabulary, odd sizes, masked (−inf) logits,
//! tied logits, u = 0 and u → 1, f32 and bf16.
use super::CheckRow;
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
    temperature: f64,
    masked: bool,
    ties: bool,
}

pub fn sampling_checks(dev: &Device, seed: u64) -> Vec<CheckRow> {
    let cases = [
        Case { rows: 7, vocab: 151_936, dtype: DType::BF16, temperature: 1.0, masked: false, ties: false },
        Case { rows: 9, vocab: 1001, dtype: DType::F32, temperature: 0.7, masked: true, ties: false },
        Case { rows: 5, vocab: 777, dtype: DType::F32, temperature: 1.0, masked: false, ties: true },
        Case { rows: 6, vocab: 151_936, dtype: DType::BF16, temperature: 0.0, masked: false, ties: false },
        Case { rows: 5, vocab: 5003, dtype: DType::BF16, temperature: 0.0, masked: true, ties: true },
    ];
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let shape = format!(
                "{} rows x {}, T={}{}{}",
                c.rows,
                c.vocab,
                c.temperature,
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

/// The worst of (CDF miss, log-prob error); infinity for an impossible pick.
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
    let u: Vec<f64> = (0..c.rows)
        .map(|i| match i {
            0 => 0.0,
            1 => 0.999_999_9,
            _ => rng.random::<f64>(),
        })
        .collect();
    let picks = sample_rows(&logits.to_device(dev)?, &rows, &u, c.temperature)?;
    let inv_t = if c.temperature == 0.0 { 1.0 } else { 1.0 / c.temperature };
    let mut worst = 0f64;
    for ((&row, &ui), &(tok, logp)) in rows.iter().zip(&u).zip(&picks) {
        let z: Vec<f64> = z_all[row * c.vocab..(row + 1) * c.vocab].iter().map(|x| x * inv_t).collect();
        let tok = tok as usize;
        if tok >= c.vocab {
            return Ok(f64::INFINITY);
        }
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let p: Vec<f64> = z.iter().map(|&x| (x - m).exp()).collect();
        let total: f64 = p.iter().sum();
        worst = worst.max((logp - (z[tok] - m - total.ln())).abs());
        if c.temperature == 0.0 {
            if z.iter().position(|&x| x == m) != Some(tok) {
                return Ok(f64::INFINITY);
            }
            continue;
        }
        let before: f64 = p[..tok].iter().sum();
        let target = ui * total;
        let miss = (before - target).max(target - (before + p[tok])).max(0.0) / total;
        if p[tok] == 0.0 && !(ui == 0.0 && tok == 0) {
            return Ok(f64::INFINITY);
        }
        worst = worst.max(miss);
    }
    Ok(worst)
}
