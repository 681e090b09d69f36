//! Paged KV cache for generation: per-layer K/V pools [blocks, block_size, Hkv, D], row writes at pool
//! rows resolved on the host, whole-block copies (copy-on-write of a shared prompt's last block), and
//! decode attention of one new query row per request through its block-table row. A contiguous cache
//! (one slot of `max_len` positions per request) is the pool with `block_size = max_len` and one-entry
//! tables ([`PoolShape::contiguous`], [`CacheIndex::slots`]). Prefill writes the prompt's K/V with
//! [`KvCache::write`] after the fused attention; each decode step writes the new token's K/V and attends
//! with [`KvCache::attend`]. Inference only: no gradients.
use super::check_same_device;
pub use crate::cpu::decode::PADDING_ROW;
use crate::cpu::decode::{
    copy_blocks as cpu_copy_blocks, decode_attention as cpu_decode, kv_write as cpu_kv_write, DecodeGeom,
};
use crate::cpu::CpuStorage;
use crate::cuda::decode as cuda_decode;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::storage::{CudaStorage, Storage};
use crate::tensor::Tensor;

/// Keys per split-K chunk of the device's decode attention (a step graph's key capacity is a multiple).
pub const DECODE_CHUNK_KEYS: usize = crate::cuda::decode::CHUNK;

/// The block pool of a cache: `blocks` blocks of `block_size` positions (rows are i32 on the device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub blocks: usize,
    pub block_size: usize,
}

impl PoolShape {
    pub fn new(blocks: usize, block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(EngineError::invalid("kv cache", "block size 0 (a block holds at least one position)"));
        }
        if blocks == 0 {
            return Err(EngineError::invalid("kv cache", "a pool of 0 blocks"));
        }
        if blocks.checked_mul(block_size).is_none_or(|r| r > i32::MAX as usize) {
            return Err(EngineError::invalid(
                "kv cache",
                format!("{blocks} blocks × {block_size} positions: pool rows are i32 (at most {})", i32::MAX),
            ));
        }
        Ok(Self { blocks, block_size })
    }
    /// One slot of `max_len` positions per request.
    pub fn contiguous(slots: usize, max_len: usize) -> Result<Self> {
        Self::new(slots, max_len)
    }
    /// Positions in the pool.
    pub fn rows(&self) -> usize {
        self.blocks * self.block_size
    }
    /// Blocks needed to hold `positions` positions.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block_size)
    }
    /// Pool row of position `pos` for a block-table row, checked against the table and the pool.
    pub fn row(&self, table: &[i32], pos: usize) -> Result<i32> {
        let block = table.get(pos / self.block_size).copied().ok_or_else(|| {
            EngineError::invalid(
                "kv cache",
                format!("position {pos} needs block {} of a {}-entry block table", pos / self.block_size, table.len()),
            )
        })?;
        self.check_block(block)?;
        Ok(block * self.block_size as i32 + (pos % self.block_size) as i32)
    }
    fn check_block(&self, block: i32) -> Result<()> {
        if block < 0 || block as usize >= self.blocks {
            return Err(EngineError::invalid("kv cache", format!("block {block} outside the pool of {}", self.blocks)));
        }
        Ok(())
    }
}

/// One layer's cache.
pub struct KvCache {
    pub k: Tensor,
    pub v: Tensor,
    pool: PoolShape,
    hq: usize,
    hkv: usize,
    d: usize,
}

/// The requests of one decode-attention call: block-table row i and key count len[i] for query row i
/// (request i's new token at position len[i] − 1, attending to positions 0..len[i]). Built from host
/// vectors (checked, uploaded once, shared by every layer) or bound to a step graph's fixed buffers.
#[derive(Debug)]
pub struct CacheIndex {
    /// i32 [n, width] and i32 [n].
    table: Tensor,
    len: Tensor,
    n: usize,
    width: usize,
    /// The largest key count a row may have: it sets the split-K chunk count, so a graph fixes it.
    max_keys: usize,
    pool: PoolShape,
    /// Rows grouped by a shared prefix of their block tables, whose keys a device reads once per group.
    prefix: Option<PrefixGroups>,
    /// Built from host vectors already checked; a bound index's buffers are checked where they are read.
    checked: bool,
}

/// Groups of rows sharing a prefix (`ops::check_prefix_groups`): `group_rows` i32 [n] (at a group's first
/// row its row count, 0 at its other rows; a row outside any group is a group of 1 with no prefix) and
/// `prefix_len` i32 [n] (the group's shared keys, at every row of the group); `max_prefix` bounds them.
#[derive(Debug)]
struct PrefixGroups {
    group_rows: Tensor,
    prefix_len: Tensor,
    max_prefix: usize,
}

/// Rows of one group of a decode step whose block tables share their first blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixGroup {
    /// The group's first row; its rows are `first..first + rows`.
    pub first: usize,
    pub rows: usize,
    /// Keys 0..prefix_len (whole blocks) lie in blocks every row of the group shares.
    pub prefix_len: usize,
}

/// The per-row buffers of groups covering rows 0..n (rows outside every group become groups of 1 with no
/// prefix): (group_rows, prefix_len), checked with [`check_prefix_groups`] by the caller.
pub fn prefix_group_rows(groups: &[PrefixGroup], n: usize) -> (Vec<i32>, Vec<i32>) {
    let (mut rows, mut prefix) = (vec![1i32; n], vec![0i32; n]);
    for g in groups {
        for r in g.first..(g.first + g.rows).min(n) {
            rows[r] = if r == g.first { g.rows as i32 } else { 0 };
            prefix[r] = g.prefix_len as i32;
        }
    }
    (rows, prefix)
}

/// Check prefix groups over a checked index (`table` of `width`, key counts `len`): the groups tile the
/// rows in order (a count ≥ 1 at a group's first row, 0 at its others, at most `max_rows` rows), every row
/// of a group has the group's prefix length, which is a whole number of blocks below every row's key count,
/// and the rows' tables agree on the prefix's blocks.
pub fn check_prefix_groups(
    table: &[i32],
    width: usize,
    len: &[i32],
    group_rows: &[i32],
    prefix_len: &[i32],
    pool: PoolShape,
    max_rows: usize,
) -> Result<()> {
    let n = len.len();
    let bad = |msg: String| Err(EngineError::invalid("kv cache prefix groups", msg));
    if group_rows.len() != n || prefix_len.len() != n {
        return bad(format!("{} group counts and {} prefix lengths for {n} rows", group_rows.len(), prefix_len.len()));
    }
    let mut i = 0;
    while i < n {
        let rows = group_rows[i];
        if rows < 1 || rows as usize > max_rows.max(1) || i + rows as usize > n {
            return bad(format!("row {i} starts a group of {rows} rows (1 to {max_rows}, within {n})"));
        }
        let (p, end) = (prefix_len[i], i + rows as usize);
        if p < 0 || !(p as usize).is_multiple_of(pool.block_size) || p as usize > width * pool.block_size {
            return bad(format!("row {i}: a prefix of {p} keys (whole blocks of {} within {width})", pool.block_size));
        }
        let blocks = p as usize / pool.block_size;
        for r in i..end {
            if r > i && group_rows[r] != 0 {
                return bad(format!("row {r} inside the group of row {i} starts a group"));
            }
            if prefix_len[r] != p || p >= len[r] {
                return bad(format!("row {r}: prefix {} in a group of prefix {p}, {} keys", prefix_len[r], len[r]));
            }
            if table[r * width..r * width + blocks] != table[i * width..i * width + blocks] {
                return bad(format!("row {r} does not share the first {blocks} blocks of row {i}"));
            }
        }
        i = end;
    }
    Ok(())
}

/// Check a block table of `pos.len()` rows of `width` entries for queries at `pos`: every block a row
/// reads (those of positions 0..=pos) must lie in the pool. The key counts pos + 1.
pub fn check_index(table: &[i32], width: usize, pos: &[i32], pool: PoolShape) -> Result<Vec<i32>> {
    let n = pos.len();
    if width == 0 || table.len() != n.saturating_mul(width) {
        return Err(EngineError::invalid(
            "kv cache",
            format!("a block table of {} entries for {n} rows of width {width}", table.len()),
        ));
    }
    for (i, &p) in pos.iter().enumerate() {
        if p < 0 || p as usize >= width * pool.block_size {
            return Err(EngineError::invalid(
                "kv cache",
                format!("row {i}: position {p} outside its {width} blocks × {} positions", pool.block_size),
            ));
        }
        for &b in &table[i * width..i * width + pool.blocks_for(p as usize + 1)] {
            pool.check_block(b).map_err(|e| EngineError::invalid("kv cache", format!("row {i}: {e}")))?;
        }
    }
    Ok(pos.iter().map(|p| p + 1).collect())
}

/// Check the pool rows of a cache write: each in the pool, or [`PADDING_ROW`] when `padding` is allowed.
pub fn check_write_rows(rows: &[i32], pool: PoolShape, padding: bool) -> Result<()> {
    let bad = |r: i32| !(padding && r == PADDING_ROW) && (r < 0 || r as usize >= pool.rows());
    match rows.iter().enumerate().find(|(_, &r)| bad(r)) {
        Some((i, r)) => {
            Err(EngineError::invalid("kv cache", format!("write row {i}: pool row {r} outside {}", pool.rows())))
        }
        None => Ok(()),
    }
}

/// The i32 values of a host tensor, borrowed (a CPU step graph reads its bound buffers this way).
fn with_host_i32<R>(t: &Tensor, f: impl FnOnce(&[i32]) -> Result<R>) -> Result<R> {
    match &*t.storage() {
        Storage::Cpu(CpuStorage::I32(v)) => f(v),
        _ => Err(EngineError::invalid("kv cache", "an index buffer that is not i32 on the host")),
    }
}

fn check_i32(what: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dtype() != DType::I32 || t.dims() != dims {
        return Err(EngineError::shape("kv cache", format!("{what} {} {} for i32 {dims:?}", t.shape(), t.dtype())));
    }
    Ok(())
}

impl CacheIndex {
    /// `table`: n rows of `width` block ids; `pos`: n positions (checked with [`check_index`]).
    pub fn new(table: Vec<i32>, width: usize, pos: &[i32], pool: PoolShape, device: &Device) -> Result<Self> {
        Self::new_grouped(table, width, pos, pool, None, device)
    }
    /// [`CacheIndex::new`] with the rows grouped by shared prefixes (`groups` and the most rows a group
    /// may have; checked with [`check_prefix_groups`]). Results do not change; a device reads each group's
    /// prefix keys once for all its rows.
    pub fn new_grouped(
        table: Vec<i32>,
        width: usize,
        pos: &[i32],
        pool: PoolShape,
        groups: Option<(&[PrefixGroup], usize)>,
        device: &Device,
    ) -> Result<Self> {
        let len = check_index(&table, width, pos, pool)?;
        let n = pos.len();
        let prefix = match groups {
            None => None,
            Some((groups, max_rows)) => {
                let (rows, prefix) = prefix_group_rows(groups, n);
                check_prefix_groups(&table, width, &len, &rows, &prefix, pool, max_rows)?;
                let max_prefix = prefix.iter().copied().max().unwrap_or(0) as usize;
                Some(PrefixGroups {
                    group_rows: Tensor::from_vec(rows, [n], device)?,
                    prefix_len: Tensor::from_vec(prefix, [n], device)?,
                    max_prefix,
                })
            }
        };
        let max_keys = len.iter().copied().max().unwrap_or(0) as usize;
        Ok(Self {
            table: Tensor::from_vec(table, [n, width], device)?,
            len: Tensor::from_vec(len, [n], device)?,
            n,
            width,
            max_keys,
            pool,
            prefix,
            checked: true,
        })
    }
    /// Contiguous slots: request i holds slot `slot[i]` (a one-block table row).
    pub fn slots(slot: &[i32], pos: &[i32], pool: PoolShape, device: &Device) -> Result<Self> {
        Self::new(slot.to_vec(), 1, pos, pool, device)
    }
    /// An index over a step graph's buffers `table` i32 [n, width] and `len` i32 [n], whose contents the
    /// caller checks with [`check_index`] before each write; every row has at most `max_keys` keys.
    pub fn bound(table: &Tensor, len: &Tensor, max_keys: usize, pool: PoolShape) -> Result<Self> {
        let (n, width) = match table.dims() {
            &[n, w] => (n, w),
            _ => return Err(EngineError::shape("kv cache", format!("block table {}", table.shape()))),
        };
        check_i32("block table", table, &[n, width])?;
        check_i32("key counts", len, &[n])?;
        if width == 0 || max_keys == 0 || max_keys > width * pool.block_size {
            return Err(EngineError::invalid(
                "kv cache",
                format!("{max_keys} keys per row with {width} blocks of {} positions", pool.block_size),
            ));
        }
        Ok(Self { table: table.clone(), len: len.clone(), n, width, max_keys, pool, prefix: None, checked: false })
    }
    /// Prefix groups over a step graph's buffers `group_rows`, `prefix_len` i32 [n], whose contents the
    /// caller checks with [`check_prefix_groups`] before each write; every prefix has at most `max_prefix`
    /// keys.
    pub fn with_bound_prefix_groups(self, group_rows: &Tensor, prefix_len: &Tensor, max_prefix: usize) -> Result<Self> {
        check_i32("group rows", group_rows, &[self.n])?;
        check_i32("prefix lengths", prefix_len, &[self.n])?;
        if max_prefix > self.width * self.pool.block_size {
            return Err(EngineError::invalid("kv cache prefix groups", format!("prefixes of {max_prefix} keys")));
        }
        let prefix = PrefixGroups { group_rows: group_rows.clone(), prefix_len: prefix_len.clone(), max_prefix };
        Ok(Self { prefix: Some(prefix), ..self })
    }
    /// The longest shared prefix of its groups (0 without groups).
    pub fn prefix_keys(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.max_prefix)
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Pool rows of a cache write (i32 [n]): resolved and checked on the host ([`PoolShape::row`]) and
/// uploaded once, or bound to a step graph's buffer.
#[derive(Debug)]
pub struct CacheRows {
    rows: Tensor,
}

impl CacheRows {
    pub fn new(rows: Vec<i32>, pool: PoolShape, device: &Device) -> Result<Self> {
        check_write_rows(&rows, pool, false)?;
        let n = rows.len();
        Ok(Self { rows: Tensor::from_vec(rows, [n], device)? })
    }
    /// Rows from a step graph's buffer i32 [n], whose contents the caller checks with
    /// [`check_write_rows`] (padding allowed) before each write.
    pub fn bound(rows: &Tensor) -> Result<Self> {
        check_i32("write rows", rows, &[rows.numel()])?;
        Ok(Self { rows: rows.clone() })
    }
    pub fn len(&self) -> usize {
        self.rows.numel()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole-block copies src[i] → dst[i]: every block in the pool, no destination written twice or read
/// by another copy (so copies may run in any order).
#[derive(Debug)]
pub struct BlockCopies {
    src: Vec<i32>,
    dst: Vec<i32>,
    device: Option<[Tensor; 2]>,
}

impl BlockCopies {
    pub fn new(src: Vec<i32>, dst: Vec<i32>, pool: PoolShape, device: &Device) -> Result<Self> {
        if src.len() != dst.len() {
            return Err(EngineError::invalid(
                "kv cache",
                format!("{} copy sources for {} destinations", src.len(), dst.len()),
            ));
        }
        for &b in src.iter().chain(&dst) {
            pool.check_block(b)?;
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(&b) = dst.iter().find(|&&b| !seen.insert(b) || src.contains(&b)) {
            return Err(EngineError::invalid(
                "kv cache",
                format!("block {b} is written twice or both read and written by one copy call"),
            ));
        }
        let device = if device.is_cuda() && !src.is_empty() {
            let n = src.len();
            Some([Tensor::from_vec(src.clone(), [n], device)?, Tensor::from_vec(dst.clone(), [n], device)?])
        } else {
            None
        };
        Ok(Self { src, dst, device })
    }
    pub fn len(&self) -> usize {
        self.src.len()
    }
    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }
}

fn as_cuda(s: &Storage) -> &CudaStorage {
    match s {
        Storage::Cuda(c) => c,
        Storage::Cpu(_) => unreachable!("uploaded to the device"),
    }
}

impl KvCache {
    pub fn new(pool: PoolShape, hkv: usize, d: usize, hq: usize, dtype: DType, device: &Device) -> Result<Self> {
        if hkv == 0 || !hq.is_multiple_of(hkv) {
            return Err(EngineError::invalid(
                "kv cache",
                format!("{hq} query heads are not a multiple of {hkv} KV heads"),
            ));
        }
        let shape = Shape::new([pool.blocks, pool.block_size, hkv, d]);
        Ok(Self {
            k: Tensor::zeros(shape.clone(), dtype, device)?,
            v: Tensor::zeros(shape, dtype, device)?,
            pool,
            hq,
            hkv,
            d,
        })
    }
    pub fn pool(&self) -> PoolShape {
        self.pool
    }
    /// The most rows a prefix group of [`CacheIndex::new_grouped`] may have for this cache's heads (the
    /// query rows one device CTA takes over the heads it serves).
    pub fn max_prefix_group_rows(&self) -> usize {
        (cuda_decode::MAX_PREFIX_ROWS / cuda_decode::heads_per_cta(self.hq, self.hkv)).max(1)
    }
    /// Bytes held by this layer's K and V.
    pub fn bytes(&self) -> usize {
        2 * self.k.numel() * self.k.dtype().size_in_bytes()
    }
    fn geom(&self, width: usize) -> DecodeGeom {
        DecodeGeom {
            hq: self.hq,
            hkv: self.hkv,
            d: self.d,
            block_size: self.pool.block_size,
            width,
            blocks: self.pool.blocks,
        }
    }

    /// Write rows k, v [n, Hkv, D] at the pool rows of `rows`.
    pub fn write(&self, k: &Tensor, v: &Tensor, rows: &CacheRows) -> Result<()> {
        let g = self.geom(1);
        let want = [rows.len(), g.hkv, g.d];
        if k.dims() != want || v.dims() != want || k.dtype() != self.k.dtype() || v.dtype() != self.k.dtype() {
            return Err(EngineError::shape(
                "kv cache write",
                format!("rows {} / {} ({}) for {want:?} {}", k.shape(), v.shape(), k.dtype(), self.k.dtype()),
            ));
        }
        check_same_device("kv cache write", &self.k, k)?;
        let (ks, vs) = (k.storage(), v.storage());
        let (mut kc, mut vc) = (self.k.storage_mut(), self.v.storage_mut());
        match (&mut *kc, &mut *vc, &*ks, &*vs) {
            (Storage::Cuda(kc), Storage::Cuda(vc), Storage::Cuda(ks), Storage::Cuda(vs)) => {
                let dst = rows.rows.storage();
                let Storage::Cuda(dst) = &*dst else {
                    return Err(EngineError::invalid("kv cache write", "rows on the host for a device cache"));
                };
                cuda_decode::kv_write(kc, vc, ks, vs, dst, rows.len(), &g, self.pool.rows())
            }
            (Storage::Cpu(kc), Storage::Cpu(vc), Storage::Cpu(ks), Storage::Cpu(vs)) => {
                with_host_i32(&rows.rows, |dst| {
                    check_write_rows(dst, self.pool, true)?;
                    write_cpu(kc, ks, dst, &g)?;
                    write_cpu(vc, vs, dst, &g)
                })
            }
            _ => Err(EngineError::invalid("kv cache write", "cache and rows on different devices")),
        }
    }

    /// Copy whole blocks (K and V) within the pool.
    pub fn copy_blocks(&self, copies: &BlockCopies) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        let block_elems = self.pool.block_size * self.hkv * self.d;
        let (mut kc, mut vc) = (self.k.storage_mut(), self.v.storage_mut());
        for cache in [&mut *kc, &mut *vc] {
            match cache {
                Storage::Cuda(c) => {
                    let [s, d] = copies
                        .device
                        .as_ref()
                        .ok_or_else(|| EngineError::invalid("kv cache", "block copies built for the CPU"))?;
                    let (s, d) = (s.storage(), d.storage());
                    cuda_decode::copy_blocks(c, as_cuda(&s), as_cuda(&d), copies.len(), block_elems)?;
                }
                Storage::Cpu(c) => match c {
                    CpuStorage::F32(x) => cpu_copy_blocks(x, &copies.src, &copies.dst, block_elems),
                    CpuStorage::F64(x) => cpu_copy_blocks(x, &copies.src, &copies.dst, block_elems),
                    CpuStorage::BF16(x) => cpu_copy_blocks(x, &copies.src, &copies.dst, block_elems),
                    _ => return Err(EngineError::invalid("kv cache", "block copy of an integer cache")),
                },
            }
        }
        Ok(())
    }

    /// Decode attention: q [B, Hq, D] (row b = request b's new token at position len[b] − 1) → o [B, Hq, D].
    pub fn attend(&self, q: &Tensor, idx: &CacheIndex) -> Result<Tensor> {
        let g = self.geom(idx.width);
        if idx.pool != self.pool {
            return Err(EngineError::invalid(
                "decode attention",
                format!("an index for pool {:?} on a cache of pool {:?}", idx.pool, self.pool),
            ));
        }
        if q.dims() != [idx.len(), g.hq, g.d] || q.dtype() != self.k.dtype() {
            return Err(EngineError::shape(
                "decode attention",
                format!("q {} {} for [{}, {}, {}] {}", q.shape(), q.dtype(), idx.len(), g.hq, g.d, self.k.dtype()),
            ));
        }
        check_same_device("decode attention", &self.k, q)?;
        let (qs, kc, vc) = (q.storage(), self.k.storage(), self.v.storage());
        let st = match (&*qs, &*kc, &*vc) {
            (Storage::Cuda(qs), Storage::Cuda(kc), Storage::Cuda(vc)) => {
                let (t, l) = (idx.table.storage(), idx.len.storage());
                let (Storage::Cuda(t), Storage::Cuda(l)) = (&*t, &*l) else {
                    return Err(EngineError::invalid("decode attention", "an index on the host for a device cache"));
                };
                let groups =
                    idx.prefix.as_ref().map(|p| (p.group_rows.storage(), p.prefix_len.storage(), p.max_prefix));
                let prefix = match &groups {
                    None => None,
                    Some((rows, prefix, max_prefix)) => match (&**rows, &**prefix) {
                        (Storage::Cuda(group_rows), Storage::Cuda(prefix_len)) => {
                            Some(cuda_decode::PrefixArgs { group_rows, prefix_len, max_prefix: *max_prefix })
                        }
                        _ => return Err(EngineError::invalid("decode attention", "prefix groups on the host")),
                    },
                };
                Storage::Cuda(cuda_decode::decode_attention(qs, kc, vc, t, l, idx.len(), idx.max_keys, &g, prefix)?)
            }
            // The reference reads an f32/f64 pool in place (f64 accumulation): only the rows it attends to.
            (Storage::Cpu(qs), Storage::Cpu(kc), Storage::Cpu(vc)) => {
                with_host_i32(&idx.table, |table| {
                    with_host_i32(&idx.len, |len| {
                        // a bound index (a step graph's buffers) is checked here, as the reference reads it;
                        // grouping never changes the result, but a device relies on it
                        if !idx.checked {
                            let pos: Vec<i32> = len.iter().map(|l| l - 1).collect();
                            check_index(table, idx.width, &pos, self.pool)?;
                        }
                        if let (false, Some(p)) = (idx.checked, &idx.prefix) {
                            with_host_i32(&p.group_rows, |rows| {
                                with_host_i32(&p.prefix_len, |prefix| {
                                    let most = rows.iter().copied().max().unwrap_or(1).max(1) as usize;
                                    check_prefix_groups(table, idx.width, len, rows, prefix, self.pool, most)
                                })
                            })?;
                        }
                        Ok(Storage::Cpu(match (qs, kc, vc) {
                            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                                CpuStorage::F32(cpu_decode(q, k, v, table, len, &g))
                            }
                            (CpuStorage::F64(q), CpuStorage::F64(k), CpuStorage::F64(v)) => {
                                CpuStorage::F64(cpu_decode(q, k, v, table, len, &g))
                            }
                            // bf16 on the CPU (rare: the CPU default is f32) widens the pool first
                            (q @ CpuStorage::BF16(_), k @ CpuStorage::BF16(_), v @ CpuStorage::BF16(_)) => {
                                let o = cpu_decode(&q.to_f64_vec(), &k.to_f64_vec(), &v.to_f64_vec(), table, len, &g);
                                CpuStorage::from_f64(DType::BF16, &o)
                            }
                            _ => {
                                return Err(EngineError::invalid("decode attention", "query and cache differ in dtype"))
                            }
                        }))
                    })
                })?
            }
            _ => return Err(EngineError::invalid("decode attention", "cache and query on different devices")),
        };
        Ok(Tensor::from_storage(st, q.shape().clone(), q.device()))
    }
}

fn write_cpu(cache: &mut CpuStorage, rows: &CpuStorage, dst: &[i32], g: &DecodeGeom) -> Result<()> {
    match (cache, rows) {
        (CpuStorage::F32(c), CpuStorage::F32(r)) => cpu_kv_write(c, r, dst, g),
        (CpuStorage::F64(c), CpuStorage::F64(r)) => cpu_kv_write(c, r, dst, g),
        (CpuStorage::BF16(c), CpuStorage::BF16(r)) => cpu_kv_write(c, r, dst, g),
        _ => return Err(EngineError::invalid("kv cache write", "cache and rows differ in dtype")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_shapes_and_indices_are_checked_before_anything_is_uploaded() {
        let cpu = Device::Cpu;
        assert!(PoolShape::new(4, 0).unwrap_err().to_string().contains("block size 0"));
        assert!(PoolShape::new(0, 16).is_err());
        assert!(PoolShape::new(1 << 28, 16).unwrap_err().to_string().contains("i32"));
        let pool = PoolShape::new(4, 3).unwrap();
        assert_eq!((pool.rows(), pool.blocks_for(7)), (12, 3));
        assert_eq!(pool.row(&[2, 0, 3], 7).unwrap(), 3 * 3 + 1);
        assert!(pool.row(&[2, 0], 7).unwrap_err().to_string().contains("needs block 2"));
        assert!(pool.row(&[2, 9], 4).unwrap_err().to_string().contains("block 9 outside"));
        // a position past the row's blocks, a block outside the pool among those read, a ragged table
        assert!(CacheIndex::new(vec![0, 1], 2, &[6], pool, &cpu).is_err());
        assert!(CacheIndex::new(vec![0, 7], 2, &[4], pool, &cpu).unwrap_err().to_string().contains("block 7"));
        assert!(CacheIndex::new(vec![0, 7], 2, &[2], pool, &cpu).is_ok(), "block 7 is never read");
        assert!(CacheIndex::new(vec![0, 1, 2], 2, &[2], pool, &cpu).is_err());
        assert!(CacheRows::new(vec![0, 12], pool, &cpu).is_err());
        assert!(BlockCopies::new(vec![0, 1], vec![2, 2], pool, &cpu).unwrap_err().to_string().contains("twice"));
        assert!(BlockCopies::new(vec![0, 1], vec![1, 2], pool, &cpu).is_err());
        assert!(BlockCopies::new(vec![0], vec![4], pool, &cpu).is_err());
        assert_eq!(BlockCopies::new(vec![0, 1], vec![2, 3], pool, &cpu).unwrap().len(), 2);
    }

    #[test]
    fn paged_and_contiguous_layouts_attend_identically() {
        let cpu = Device::Cpu;
        let (hq, hkv, d) = (4, 2, 8);
        let lens = [5usize, 1, 9];
        let flat = PoolShape::contiguous(3, 9).unwrap();
        let paged = PoolShape::new(10, 2).unwrap();
        let a = KvCache::new(flat, hkv, d, hq, DType::F64, &cpu).unwrap();
        let b = KvCache::new(paged, hkv, d, hq, DType::F64, &cpu).unwrap();
        // scrambled blocks: request r takes blocks from the back of the pool
        let tables: Vec<Vec<i32>> = vec![vec![8, 6, 4, 0, 0], vec![7, 0, 0, 0, 0], vec![5, 3, 2, 1, 0]];
        let n: usize = lens.iter().sum();
        let k = Tensor::randn([n, hkv, d], 1.0, DType::F64, &cpu, 1).unwrap();
        let v = Tensor::randn([n, hkv, d], 1.0, DType::F64, &cpu, 2).unwrap();
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        for (r, &l) in lens.iter().enumerate() {
            for p in 0..l {
                ra.push(flat.row(&[r as i32], p).unwrap());
                rb.push(paged.row(&tables[r], p).unwrap());
            }
        }
        a.write(&k, &v, &CacheRows::new(ra, flat, &cpu).unwrap()).unwrap();
        b.write(&k, &v, &CacheRows::new(rb, paged, &cpu).unwrap()).unwrap();
        let pos: Vec<i32> = lens.iter().map(|&l| l as i32 - 1).collect();
        let q = Tensor::randn([3, hq, d], 1.0, DType::F64, &cpu, 3).unwrap();
        let oa = a.attend(&q, &CacheIndex::slots(&[0, 1, 2], &pos, flat, &cpu).unwrap()).unwrap();
        let table: Vec<i32> = tables.concat();
        let ob = b.attend(&q, &CacheIndex::new(table, 5, &pos, paged, &cpu).unwrap()).unwrap();
        assert_eq!(oa.to_vec_f64().unwrap(), ob.to_vec_f64().unwrap());
        // a copied block attends like its source: request 0's first block copied into the free block 9
        b.copy_blocks(&BlockCopies::new(vec![8], vec![9], paged, &cpu).unwrap()).unwrap();
        let moved: Vec<i32> = [vec![9, 6, 4, 0, 0], tables[1].clone(), tables[2].clone()].concat();
        let oc = b.attend(&q, &CacheIndex::new(moved, 5, &pos, paged, &cpu).unwrap()).unwrap();
        assert_eq!(oa.to_vec_f64().unwrap(), oc.to_vec_f64().unwrap());
    }

    #[test]
    fn prefix_groups_are_checked_and_leave_results_unchanged() {
        let cpu = Device::Cpu;
        let (hq, hkv, d) = (4, 2, 8);
        let pool = PoolShape::new(12, 2).unwrap();
        let cache = KvCache::new(pool, hkv, d, hq, DType::F64, &cpu).unwrap();
        let k = Tensor::randn([24, hkv, d], 1.0, DType::F64, &cpu, 1).unwrap();
        let v = Tensor::randn([24, hkv, d], 1.0, DType::F64, &cpu, 2).unwrap();
        cache.write(&k, &v, &CacheRows::new((0..24).collect(), pool, &cpu).unwrap()).unwrap();
        // rows 0-2 share blocks 0, 1 (a 4-key prefix); row 3 is alone
        let table = vec![0, 1, 2, 0, 1, 3, 0, 1, 4, 5, 6, 7];
        let pos = [4, 5, 4, 5];
        let q = Tensor::randn([4, hq, d], 1.0, DType::F64, &cpu, 3).unwrap();
        let plain = cache.attend(&q, &CacheIndex::new(table.clone(), 3, &pos, pool, &cpu).unwrap()).unwrap();
        let g = [PrefixGroup { first: 0, rows: 3, prefix_len: 4 }];
        let idx = CacheIndex::new_grouped(table.clone(), 3, &pos, pool, Some((&g, 4)), &cpu).unwrap();
        assert_eq!(idx.prefix_keys(), 4);
        assert_eq!(cache.attend(&q, &idx).unwrap().to_vec_f64().unwrap(), plain.to_vec_f64().unwrap());
        assert_eq!(prefix_group_rows(&g, 4), (vec![3, 0, 0, 1], vec![4, 4, 4, 0]));
        let bad = |groups: &[PrefixGroup], max_rows: usize, pos: &[i32]| {
            CacheIndex::new_grouped(table.clone(), 3, pos, pool, Some((groups, max_rows)), &cpu)
                .unwrap_err()
                .to_string()
        };
        let group = |first, rows, prefix_len| PrefixGroup { first, rows, prefix_len };
        assert!(bad(&g, 2, &pos).contains("group of 3 rows"), "more rows than a group may have");
        assert!(bad(&[group(0, 3, 3)], 4, &pos).contains("whole blocks"));
        let other = vec![0, 1, 2, 0, 8, 3, 0, 1, 4, 5, 6, 7];
        let e = CacheIndex::new_grouped(other, 3, &pos, pool, Some((&g, 4)), &cpu).unwrap_err().to_string();
        assert!(e.contains("row 1 does not share the first 2 blocks"), "{e}");
        assert!(bad(&[group(1, 3, 2)], 4, &pos).contains("does not share"), "row 3 holds other blocks");
        assert!(bad(&[group(0, 3, 4)], 4, &[3, 5, 4, 5]).contains("prefix 4"), "the prefix reaches row 0's query");
        assert!(bad(&[group(0, 5, 0)], 8, &pos).contains("within 4"));
    }
}
