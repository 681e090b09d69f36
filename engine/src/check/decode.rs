//! Paged KV-cache writes, block copies and decode attention on `dev` against the f64 CPU path (bf16 and
//! f32, GQA, ragged lengths including a single key, block sizes from 1 to one block per request, blocks
//! scattered over the pool).
use super::{max_rel_err, CheckRow};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{BlockCopies, CacheIndex, CacheRows, KvCache, PoolShape, PrefixGroup};
use crate::tensor::Tensor;

const NAME: &str = "paged kv cache + decode attention";

pub fn decode_checks(dev: &Device, seed: u64) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for (dtype, hq, hkv, d, block_size, tol) in [
        (DType::F32, 8, 2, 64, 16, 1e-5),
        (DType::BF16, 32, 8, 128, 16, 2e-2),
        (DType::BF16, 6, 1, 64, 7, 2e-2),
        (DType::F32, 4, 4, 32, 1, 1e-5),
        (DType::BF16, 16, 8, 128, 0, 2e-2),
    ] {
        let layout = if block_size == 0 { "contiguous".to_string() } else { format!("blocks of {block_size}") };
        let label = format!("Hq {hq} Hkv {hkv} d {d}, {layout}");
        match run(dev, dtype, hq, hkv, d, block_size, seed) {
            Ok(err) => rows.push(CheckRow::new(NAME, &label, dtype.suffix(), err, tol)),
            Err(e) => rows.push(CheckRow::failed(NAME, &label, dtype.suffix(), e.to_string())),
        }
    }
    for (dtype, hq, hkv, d, block_size, members, tol) in [
        (DType::BF16, 32, 8, 128, 16, 16, 2e-2),
        (DType::F32, 8, 2, 64, 7, 5, 1e-5),
        (DType::BF16, 12, 1, 32, 16, 40, 2e-2),
    ] {
        let label = format!("Hq {hq} Hkv {hkv} d {d}, blocks of {block_size}, {members} rows sharing a prefix");
        let op = "decode attention, prefix groups";
        match run_grouped(dev, dtype, [hq, hkv, d], block_size, members, seed) {
            Ok(err) => rows.push(CheckRow::new(op, &label, dtype.suffix(), err, tol)),
            Err(e) => rows.push(CheckRow::failed(op, &label, dtype.suffix(), e.to_string())),
        }
    }
    rows
}

/// `members` requests sharing a 300-token prompt (its whole blocks shared, the partial one each
/// request's own) with responses of 1 to ~300 tokens, then three unrelated requests; grouped decode
/// attention on `dev` (groups split at the rows a CTA takes) against the ungrouped f64 reference.
fn run_grouped(
    dev: &Device,
    dtype: DType,
    [hq, hkv, d]: [usize; 3],
    bs: usize,
    members: usize,
    seed: u64,
) -> Result<f64> {
    let prompt = 300usize;
    let shared = prompt / bs; // whole prompt blocks
    let mut lens: Vec<usize> = (0..members).map(|i| prompt + 1 + (i * 37 + 11) % 300).collect();
    lens.extend([1, 45, 400]);
    let width = lens.iter().max().copied().unwrap_or(1).div_ceil(bs);
    let blocks = shared + lens.iter().map(|&l| l.div_ceil(bs)).sum::<usize>();
    let pool = PoolShape::new(blocks, bs)?;
    // blocks from the back of the pool: the shared ones first, then each request's own
    let mut next = blocks as i32;
    let mut take = || {
        next -= 1;
        next
    };
    let prefix_blocks: Vec<i32> = (0..shared).map(|_| take()).collect();
    let tables: Vec<Vec<i32>> = lens
        .iter()
        .enumerate()
        .map(|(r, &l)| {
            let mut t = if r < members { prefix_blocks.clone() } else { Vec::new() };
            while t.len() < l.div_ceil(bs) {
                t.push(take());
            }
            t.resize(width, 0);
            t
        })
        .collect();
    // every logical position written once: the shared prefix through request 0's table
    let mut dst = Vec::new();
    for (r, &l) in lens.iter().enumerate() {
        let from = if r > 0 && r < members { shared * bs } else { 0 };
        for p in from..l {
            dst.push(pool.row(&tables[r], p)?);
        }
    }
    let cpu = Device::Cpu;
    let cache = KvCache::new(pool, hkv, d, hq, dtype, dev)?;
    let reference = KvCache::new(pool, hkv, d, hq, DType::F64, &cpu)?;
    let n = dst.len();
    let k = Tensor::randn([n, hkv, d], 1.0, dtype, dev, seed + 5)?;
    let v = Tensor::randn([n, hkv, d], 1.0, dtype, dev, seed + 6)?;
    cache.write(&k, &v, &CacheRows::new(dst.clone(), pool, dev)?)?;
    let f64_of = |t: &Tensor| Tensor::from_f64(&t.to_vec_f64()?, t.shape().clone(), DType::F64, &cpu);
    reference.write(&f64_of(&k)?, &f64_of(&v)?, &CacheRows::new(dst, pool, &cpu)?)?;
    let table: Vec<i32> = tables.concat();
    let pos: Vec<i32> = lens.iter().map(|&l| l as i32 - 1).collect();
    let most = cache.max_prefix_group_rows();
    let groups: Vec<PrefixGroup> = (0..members)
        .step_by(most)
        .map(|first| PrefixGroup { first, rows: most.min(members - first), prefix_len: shared * bs })
        .filter(|g| g.rows > 1)
        .collect();
    let q = Tensor::randn([lens.len(), hq, d], 1.0, dtype, dev, seed + 7)?;
    let idx = CacheIndex::new_grouped(table.clone(), width, &pos, pool, Some((&groups, most)), dev)?;
    let o = cache.attend(&q, &idx)?;
    let o_ref = reference.attend(&f64_of(&q)?, &CacheIndex::new(table, width, &pos, pool, &cpu)?)?;
    dev.synchronize()?;
    Ok(max_rel_err(&o.to_vec_f64()?, &o_ref.to_vec_f64()?))
}

/// Fill five requests' caches with one prefill-style write, copy request 0's last block into a fresh
/// block (as a shared prompt's first write does) and attend through the copy; `block_size` 0 is the
/// contiguous layout (one slot per request).
fn run(dev: &Device, dtype: DType, hq: usize, hkv: usize, d: usize, block_size: usize, seed: u64) -> Result<f64> {
    let lens = [300usize, 1, 37, 129, 64];
    let longest = *lens.iter().max().unwrap_or(&1);
    let (pool, width) = if block_size == 0 {
        (PoolShape::contiguous(lens.len() + 1, longest)?, 1)
    } else {
        let width = longest.div_ceil(block_size);
        (PoolShape::new(lens.len() * width + 1, block_size)?, width)
    };
    // request r's table row: blocks handed out from the back of the pool, interleaved across requests
    let mut tables = vec![vec![0i32; width]; lens.len()];
    let mut next = pool.blocks as i32 - 1;
    for j in 0..width {
        for t in &mut tables {
            t[j] = next;
            next -= 1;
        }
    }
    let spare = next; // block 0 (a slot for contiguous), written only by the copy
    let cpu = Device::Cpu;
    let cache = KvCache::new(pool, hkv, d, hq, dtype, dev)?;
    let reference = KvCache::new(pool, hkv, d, hq, DType::F64, &cpu)?;
    let mut dst = Vec::new();
    for (r, &l) in lens.iter().enumerate() {
        for p in 0..l {
            dst.push(pool.row(&tables[r], p)?);
        }
    }
    let n = dst.len();
    let k = Tensor::randn([n, hkv, d], 1.0, dtype, dev, seed)?;
    let v = Tensor::randn([n, hkv, d], 1.0, dtype, dev, seed + 1)?;
    cache.write(&k, &v, &CacheRows::new(dst.clone(), pool, dev)?)?;
    let f64_of = |t: &Tensor| Tensor::from_f64(&t.to_vec_f64()?, t.shape().clone(), DType::F64, &cpu);
    reference.write(&f64_of(&k)?, &f64_of(&v)?, &CacheRows::new(dst, pool, &cpu)?)?;
    // request 0 continues in a copy of its last block
    let last = pool.blocks_for(lens[0]) - 1;
    let (src, to) = (vec![tables[0][last]], vec![spare]);
    cache.copy_blocks(&BlockCopies::new(src.clone(), to.clone(), pool, dev)?)?;
    reference.copy_blocks(&BlockCopies::new(src, to, pool, &cpu)?)?;
    tables[0][last] = spare;
    // one query per request at its last position, requests in reverse order
    let order: Vec<usize> = (0..lens.len()).rev().collect();
    let table: Vec<i32> = order.iter().flat_map(|&r| tables[r].clone()).collect();
    let pos: Vec<i32> = order.iter().map(|&r| lens[r] as i32 - 1).collect();
    let q = Tensor::randn([lens.len(), hq, d], 1.0, dtype, dev, seed + 2)?;
    let o = cache.attend(&q, &CacheIndex::new(table.clone(), width, &pos, pool, dev)?)?;
    let o_ref = reference.attend(&f64_of(&q)?, &CacheIndex::new(table, width, &pos, pool, &cpu)?)?;
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
