//! KV-cache writes and decode attention on `dev` against the f64 CPU path (bf16 and f32, GQA, ragged
//! lengths including a single key).
use super::{max_rel_err, CheckRow};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{CacheIndex, KvCache};
use crate::tensor::Tensor;

pub fn decode_checks(dev: &Device, seed: u64) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for (dtype, hq, hkv, d, tol) in
        [(DType::F32, 8, 2, 64, 1e-5), (DType::BF16, 32, 8, 128, 2e-2), (DType::BF16, 6, 1, 64, 2e-2)]
    {
        let label = format!("Hq {hq} Hkv {hkv} d {d}");
        match run(dev, dtype, hq, hkv, d, seed) {
            Ok(err) => rows.push(CheckRow::new("kv cache + decode attention", &label, dtype.suffix(), err, tol)),
            Err(e) => rows.push(CheckRow::failed("kv cache + decode attention", &label, dtype.suffix(), e.to_string())),
        }
    }
    rows
}

fn run(dev: &Device, dtype: DType, hq: usize, hkv: usize, d: usize, seed: u64) -> Result<f64> {
    let (slots, max_len) = (5usize, 300usize);
    let lens = [1usize, 37, 300, 129, 64];
    let cpu = Device::Cpu;
    let cache = KvCache::new(slots, max_len, hkv, d, hq, dtype, dev)?;
    let reference = KvCache::new(slots, max_len, hkv, d, hq, DType::F64, &cpu)?;
    // 1. fill each slot up to its length with one prefill-style write
    let (mut slot, mut pos) = (Vec::new(), Vec::new());
    for (s, &l) in lens.iter().enumerate() {
        slot.extend(std::iter::repeat_n(s as i32, l));
        pos.extend(0..l as i32);
    }
    let n = slot.len();
    let k = Tensor::randn([n, hkv, d], 1.0, dtype, dev, seed)?;
    let v = Tensor::randn([n, hkv, d], 1.0, dtype, dev, seed + 1)?;
    cache.write(&k, &v, &CacheIndex::new(slot.clone(), pos.clone(), slots, max_len, dev)?)?;
    let f64_of = |t: &Tensor| Tensor::from_f64(&t.to_vec_f64()?, t.shape().clone(), DType::F64, &cpu);
    reference.write(&f64_of(&k)?, &f64_of(&v)?, &CacheIndex::new(slot, pos, slots, max_len, &cpu)?)?;
    // 2. one query per request at its last position (attends to keys 0..len)
    let q_slot: Vec<i32> = (0..slots as i32).rev().collect();
    let q_pos: Vec<i32> = q_slot.iter().map(|&s| lens[s as usize] as i32 - 1).collect();
    let q = Tensor::randn([slots, hq, d], 1.0, dtype, dev, seed + 2)?;
    let o = cache.attend(&q, &CacheIndex::new(q_slot.clone(), q_pos.clone(), slots, max_len, dev)?)?;
    let o_ref = reference.attend(&f64_of(&q)?, &CacheIndex::new(q_slot, q_pos, slots, max_len, &cpu)?)?;
    dev.synchronize()?;
    Ok(max_rel_err(&o.to_vec_f64()?, &o_ref.to_vec_f64()?))
}

/// The counter-based generator on `dev` against the CPU formula, and its moments.
pub fn randn_check(dev: &Device, seed: u64) -> CheckRow {
    let run = || -> Result<(f64, f64)> {
        let n = 100_003;
        let t = Tensor::randn_hashed([n], 0.5, DType::F32, dev, seed)?.to_vec_f64()?;
        let c = Tensor::randn_hashed([n], 0.5, DType::F32, &Device::Cpu, seed)?.to_vec_f64()?;
        let mean = t.iter().sum::<f64>() / n as f64;
        let var = t.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let moments = (mean.abs() / 0.5).max((var.sqrt() / 0.5 - 1.0).abs());
        Ok((max_rel_err(&t, &c), moments))
    };
    match run() {
        Ok((err, moments)) if moments < 0.02 => CheckRow::new("randn_hashed vs CPU", "[100003]", "f32", err, 1e-6),
        Ok((_, moments)) => {
            CheckRow::failed("randn_hashed vs CPU", "[100003]", "f32", format!("moments off by {moments:.3}"))
        }
        Err(e) => CheckRow::failed("randn_hashed vs CPU", "[100003]", "f32", e.to_string()),
    }
}
