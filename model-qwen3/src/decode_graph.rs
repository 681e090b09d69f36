//! Decode steps as replayed step graphs ([`DecodeMode::Graph`](crate::generate::DecodeMode)): the whole
//! step (embedding, every layer with its KV write and decode attention, the LM head and the sampler) is
//! captured once per bucket and replayed, so a step costs the host O(1) driver calls: eight input uploads,
//! one replay and two reads of the picks, whatever the model's depth.
//!
//! A bucket is (batch rows, key capacity). A step of n requests runs in the smallest batch bucket ≥ n
//! (powers of two to 8, then multiples of 8 to 256, then of 32; capped at the most requests that can
//! run) with rows n.. as padding rows: token 0 at position 0, one key in block 0, write row
//! [`PADDING_ROW`] (nothing written), pick discarded. The key capacity (split-K chunks of decode
//! attention) is the smallest power-of-two number of chunks covering the step's longest request,
//! capped at the block-table width, so short steps do not launch empty chunks for the longest request
//! the call may see. Block tables are `width` entries wide for the whole call (the blocks of the
//! longest request), unused entries 0.
//!
//! Each bucket owns fixed input buffers; the host packs and checks a step's inputs
//! ([`check_index`], [`check_write_rows`]) before writing them, then replays. The body reads nothing
//! else per step: sampling parameters are fixed for the call and each row's uniform is keyed by its
//! buffer row of (seed, position), so a graph gives the eager path's picks (on a GPU up to the rounding of
//! GEMMs that a padded batch may run with other kernels).
use crate::error::Result;
use crate::generate::forward_decode;
use crate::model::Qwen3;
use entrl_engine::graph::{GraphSet, StepGraph};
use entrl_engine::ops::{
    check_index, check_prefix_groups, check_write_rows, key_words, prefix_group_rows, sample_keyed, CacheIndex,
    CacheRows, KvCache, PoolShape, PrefixGroup, SampleKey, SampledRows, SamplingParams, DECODE_CHUNK_KEYS, PADDING_ROW,
};
use entrl_engine::{Device, Tensor};
use std::collections::BTreeMap;

/// One request's row of a decode step.
pub(crate) struct StepRow<'a> {
    /// The token fed (the last one sampled).
    pub token: u32,
    /// Its position.
    pub pos: usize,
    /// The pool row its K/V goes to.
    pub write_row: i32,
    /// Its block-table row (at most `width` blocks).
    pub table: &'a [i32],
    pub key: SampleKey,
}

/// What the graphs of one generation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Buckets captured (each also run once eagerly first on a GPU).
    pub captures: usize,
    /// Steps replayed.
    pub replays: usize,
    /// Padding rows computed and discarded over all steps.
    pub padded_rows: usize,
    /// Wall time of the captures (their eager warm-up runs included), microseconds.
    pub capture_us: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct BucketKey {
    batch: usize,
    keys: usize,
}

/// A bucket's fixed inputs.
struct StepBuffers {
    ids: Tensor,
    pos: Tensor,
    write_rows: Tensor,
    len: Tensor,
    table: Tensor,
    keys: Tensor,
    /// 0..batch: the logits row of each pick (constant).
    sample_rows: Tensor,
    /// Prefix groups (`ops::prefix_group_rows`), read when the graphs group rows.
    group_rows: Tensor,
    prefix_len: Tensor,
}

/// The host side of one step's inputs, padded to the bucket.
struct HostInputs {
    ids: Vec<i32>,
    pos: Vec<i32>,
    write_rows: Vec<i32>,
    len: Vec<i32>,
    table: Vec<i32>,
    keys: Vec<i32>,
    group_rows: Vec<i32>,
    prefix_len: Vec<i32>,
}

struct Bucket {
    buffers: StepBuffers,
    graph: StepGraph,
    out: SampledRows,
}

/// The decode graphs of one generation (they read its caches, so they live as long as the call).
pub(crate) struct DecodeGraphs {
    /// Declared before `set`: every graph is destroyed before the set's private pool is retired.
    buckets: BTreeMap<BucketKey, Bucket>,
    set: GraphSet,
    pool: PoolShape,
    width: usize,
    max_batch: usize,
    params: SamplingParams,
    /// With prefix groups: the longest shared prefix of the call (keys), fixed for its graphs.
    prefix: Option<usize>,
    pub stats: GraphStats,
}

/// The batch bucket of a step of `n` rows when at most `cap` can run.
pub fn batch_bucket(n: usize, cap: usize) -> usize {
    let b = if n <= 8 {
        n.next_power_of_two()
    } else if n <= 256 {
        n.div_ceil(8) * 8
    } else {
        n.div_ceil(32) * 32
    };
    b.min(cap.max(n))
}

/// The key capacity of a step whose longest request has `keys` keys, for tables of `capacity` positions.
pub fn key_bucket(keys: usize, capacity: usize) -> usize {
    (keys.div_ceil(DECODE_CHUNK_KEYS).max(1).next_power_of_two() * DECODE_CHUNK_KEYS).min(capacity)
}

impl DecodeGraphs {
    /// Graphs for tables of `width` blocks of `pool` and at most `max_batch` rows a step; `prefix`: group
    /// rows by shared prefixes of at most this many keys (None: no groups).
    pub(crate) fn new(
        device: &Device,
        pool: PoolShape,
        width: usize,
        max_batch: usize,
        params: SamplingParams,
        prefix: Option<usize>,
    ) -> Result<Self> {
        Ok(Self {
            prefix,
            buckets: BTreeMap::new(),
            set: GraphSet::new(device)?,
            pool,
            width: width.max(1),
            max_batch: max_batch.max(1),
            params,
            stats: GraphStats::default(),
        })
    }

    /// One decode step for `rows` (at most `max_batch`): (token, log-prob) per row.
    /// `groups`: the rows' prefix groups (graphs built with a prefix capacity).
    pub(crate) fn step(
        &mut self,
        model: &Qwen3,
        layers: &[KvCache],
        rows: &[StepRow],
        groups: Option<&[PrefixGroup]>,
    ) -> Result<Vec<(u32, f64)>> {
        let n = rows.len();
        if n == 0 || n > self.max_batch {
            return Err(crate::ModelError::Invalid(format!(
                "decode graph: a step of {n} rows for graphs of 1 to {} rows (the most requests that can run)",
                self.max_batch
            )));
        }
        let longest = rows.iter().map(|r| r.pos + 1).max().unwrap_or(1);
        let key = BucketKey {
            batch: batch_bucket(n, self.max_batch),
            keys: key_bucket(longest, self.width * self.pool.block_size),
        };
        let max_rows = layers.first().map_or(1, |l| l.max_prefix_group_rows());
        let host = self.pack(rows, key.batch, groups.unwrap_or(&[]), max_rows)?;
        if !self.buckets.contains_key(&key) {
            model.device.synchronize()?;
            let t0 = std::time::Instant::now();
            let buffers = StepBuffers::new(&model.device, key.batch, self.width)?;
            host.write_to(&buffers)?;
            let (pool, params, prefix) = (self.pool, self.params, self.prefix);
            let body = || step_body(model, layers, &buffers, key.keys, pool, &params, prefix);
            let (graph, out) = self.set.capture(body)?;
            model.device.synchronize()?;
            self.stats.captures += 1;
            self.stats.capture_us += t0.elapsed().as_micros() as u64;
            self.buckets.insert(key, Bucket { buffers, graph, out });
        }
        let b = self.buckets.get_mut(&key).expect("captured above");
        host.write_to(&b.buffers)?;
        let (pool, params, prefix) = (self.pool, self.params, self.prefix);
        let (buffers, graph) = (&b.buffers, &b.graph);
        let body = || step_body(model, layers, buffers, key.keys, pool, &params, prefix);
        self.set.replay(graph, body, &mut b.out)?;
        self.stats.replays += 1;
        self.stats.padded_rows += key.batch - n;
        let tokens = b.out.tokens.to_vec_i32()?;
        let logprobs = b.out.logprobs.to_vec_f32()?;
        Ok(tokens.into_iter().zip(logprobs).take(n).map(|(t, l)| (t as u32, l as f64)).collect())
    }

    /// The step's inputs padded to `batch` rows, checked as the body will read them.
    fn pack(&self, rows: &[StepRow], batch: usize, groups: &[PrefixGroup], max_rows: usize) -> Result<HostInputs> {
        let w = self.width;
        let mut h = HostInputs {
            ids: vec![0; batch],
            pos: vec![0; batch],
            write_rows: vec![PADDING_ROW; batch],
            len: vec![1; batch],
            table: vec![0; batch * w],
            keys: vec![0; batch * 4],
            group_rows: Vec::new(),
            prefix_len: Vec::new(),
        };
        let mut keys = Vec::with_capacity(batch);
        for (i, r) in rows.iter().enumerate() {
            if r.table.len() > w {
                return Err(crate::ModelError::Invalid(format!(
                    "decode graph: row {i} holds {} blocks, the tables hold {w}",
                    r.table.len()
                )));
            }
            h.ids[i] = r.token as i32;
            h.pos[i] = r.pos as i32;
            h.write_rows[i] = r.write_row;
            h.table[i * w..i * w + r.table.len()].copy_from_slice(r.table);
            keys.push(r.key);
        }
        keys.resize(batch, SampleKey { seed: 0, position: 0 });
        h.keys = key_words(&keys);
        h.len = check_index(&h.table, w, &h.pos, self.pool)?;
        check_write_rows(&h.write_rows, self.pool, true)?;
        if let Some(cap) = self.prefix {
            // padding rows are groups of 1 without a prefix
            (h.group_rows, h.prefix_len) = prefix_group_rows(groups, batch);
            check_prefix_groups(&h.table, w, &h.len, &h.group_rows, &h.prefix_len, self.pool, max_rows)?;
            if let Some(p) = h.prefix_len.iter().find(|&&p| p as usize > cap) {
                return Err(crate::ModelError::Invalid(format!(
                    "decode graph: a prefix of {p} keys past the {cap} of the graphs"
                )));
            }
        }
        Ok(h)
    }
}

impl StepBuffers {
    fn new(device: &Device, batch: usize, width: usize) -> Result<Self> {
        let zeros = |n: usize| Tensor::from_vec(vec![0i32; n], [n], device);
        Ok(Self {
            ids: zeros(batch)?,
            pos: zeros(batch)?,
            write_rows: zeros(batch)?,
            len: zeros(batch)?,
            table: Tensor::from_vec(vec![0i32; batch * width], [batch, width], device)?,
            keys: Tensor::from_vec(vec![0i32; batch * 4], [batch, 4], device)?,
            sample_rows: Tensor::from_vec((0..batch as i32).collect::<Vec<_>>(), [batch], device)?,
            group_rows: zeros(batch)?,
            prefix_len: zeros(batch)?,
        })
    }
}

impl HostInputs {
    fn write_to(&self, b: &StepBuffers) -> Result<()> {
        b.ids.write_i32(&self.ids)?;
        b.pos.write_i32(&self.pos)?;
        b.write_rows.write_i32(&self.write_rows)?;
        b.len.write_i32(&self.len)?;
        b.table.write_i32(&self.table)?;
        b.keys.write_i32(&self.keys)?;
        if !self.group_rows.is_empty() {
            b.group_rows.write_i32(&self.group_rows)?;
            b.prefix_len.write_i32(&self.prefix_len)?;
        }
        Ok(())
    }
}

/// The captured body: the decode forward over the bucket's buffers, then the sampler.
fn step_body(
    model: &Qwen3,
    layers: &[KvCache],
    b: &StepBuffers,
    max_keys: usize,
    pool: PoolShape,
    params: &SamplingParams,
    prefix: Option<usize>,
) -> entrl_engine::Result<SampledRows> {
    let rows = CacheRows::bound(&b.write_rows)?;
    let mut idx = CacheIndex::bound(&b.table, &b.len, max_keys, pool)?;
    if let Some(cap) = prefix {
        idx = idx.with_bound_prefix_groups(&b.group_rows, &b.prefix_len, cap)?;
    }
    let logits = forward_decode(model, layers, &b.ids, &b.pos, &rows, &idx).map_err(into_engine)?;
    sample_keyed(&logits, &b.sample_rows, &b.keys, params)
}

fn into_engine(e: crate::ModelError) -> entrl_engine::EngineError {
    match e {
        crate::ModelError::Engine(e) => e,
        other => entrl_engine::EngineError::invalid("decode graph", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Qwen3Config;
    use entrl_engine::DType;

    #[test]
    fn bad_steps_are_refused_before_anything_is_captured() {
        let dev = Device::Cpu;
        let mut c = Qwen3Config::named("qwen3-0.6b").unwrap();
        (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers) = (64, 32, 64, 1);
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim) = (2, 1, 32);
        let m = Qwen3::random(c, DType::F32, &dev, 1).unwrap();
        let pool = PoolShape::new(6, 4).unwrap();
        let layers = vec![KvCache::new(pool, 1, 32, 2, DType::F32, &dev).unwrap()];
        let mut g = DecodeGraphs::new(&dev, pool, 2, 2, SamplingParams::default(), None).unwrap();
        fn row(pos: usize, write_row: i32, table: &[i32]) -> StepRow<'_> {
            StepRow { token: 1, pos, write_row, table, key: SampleKey { seed: 0, position: 0 } }
        }
        let _ng = entrl_engine::no_grad();
        let (two, wide, outside) = ([0i32, 1], [0i32, 1, 2], [0i32, 9]);
        let err = |g: &mut DecodeGraphs, rows: &[StepRow]| g.step(&m, &layers, rows, None).unwrap_err().to_string();
        // more rows than the graphs hold, and none
        assert!(
            err(&mut g, &[row(0, 0, &two), row(1, 1, &two), row(2, 2, &two)]).contains("3 rows for graphs of 1 to 2")
        );
        assert!(err(&mut g, &[]).contains("0 rows"));
        // a table wider than the graphs', a block outside the pool, a write row outside the pool
        assert!(err(&mut g, &[row(0, 0, &wide)]).contains("holds 3 blocks"));
        assert!(err(&mut g, &[row(5, 0, &outside)]).contains("block 9"));
        assert!(err(&mut g, &[row(0, 24, &two)]).contains("pool row 24"));
        assert_eq!(g.stats, GraphStats::default(), "nothing captured or replayed");
        // a good step runs
        assert_eq!(g.step(&m, &layers, &[row(0, 0, &two)], None).unwrap().len(), 1);
        assert_eq!((g.stats.captures, g.stats.replays, g.stats.padded_rows), (1, 1, 0));
    }

    #[test]
    fn buckets_cover_each_step_with_bounded_padding() {
        assert_eq!([1, 2, 3, 5, 8, 9, 17, 256, 257].map(|n| batch_bucket(n, 1000)), [1, 2, 4, 8, 8, 16, 24, 256, 288]);
        assert_eq!(batch_bucket(300, 300), 300, "never past the most requests that can run");
        assert_eq!(batch_bucket(5, 6), 6);
        for n in 1..600 {
            let b = batch_bucket(n, 10_000);
            let most = if n <= 8 {
                n
            } else if n <= 256 {
                8
            } else {
                32
            };
            assert!(b >= n && b - n < most, "{n} -> {b}");
        }
        let c = DECODE_CHUNK_KEYS;
        assert_eq!(key_bucket(1, 100 * c), c);
        assert_eq!(key_bucket(c + 1, 100 * c), 2 * c);
        assert_eq!(key_bucket(5 * c, 100 * c), 8 * c);
        assert_eq!(key_bucket(90 * c, 100 * c), 100 * c, "capped at the table capacity");
        assert_eq!(key_bucket(7, 9), 9, "a capacity under one chunk");
    }
}
