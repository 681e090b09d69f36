//! Reference paged KV-cache writes, block copies and decode attention (one query row per request against
//! its cache), f64 accumulation. Cache layout [blocks, block_size, Hkv, D]: a request's position p lives
//! in block `table[p / block_size]` of its block-table row, at row p % block_size of that block.
use super::Real;

/// Geometry of one decode call.
#[derive(Clone, Copy, Debug)]
pub struct DecodeGeom {
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
    /// Positions per block.
    pub block_size: usize,
    /// Entries per block-table row (the most blocks one request may hold).
    pub width: usize,
    /// Blocks in the pool.
    pub blocks: usize,
}

impl DecodeGeom {
    /// Pool row (block · block_size + offset) of position `pos` for the block-table row `table`.
    pub fn row_of(&self, table: &[i32], pos: usize) -> usize {
        table[pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }
}

/// Write row of a padding row (a fixed-size graph batch's unused row): nothing is written.
pub const PADDING_ROW: i32 = -1;

/// cache[dst[i]] = rows[i] for the rows [n, Hkv, D] (dst: pool rows; [`PADDING_ROW`] writes nothing).
pub fn kv_write<T: Copy>(cache: &mut [T], rows: &[T], dst: &[i32], g: &DecodeGeom) {
    let row = g.hkv * g.d;
    for (i, &r) in dst.iter().enumerate() {
        if r == PADDING_ROW {
            continue;
        }
        let at = r as usize * row;
        cache[at..at + row].copy_from_slice(&rows[i * row..(i + 1) * row]);
    }
}

/// Block dst[i] = block src[i] (whole blocks of `block_elems` elements).
pub fn copy_blocks<T: Copy>(cache: &mut [T], src: &[i32], dst: &[i32], block_elems: usize) {
    for (&s, &d) in src.iter().zip(dst) {
        let (s, d) = (s as usize * block_elems, d as usize * block_elems);
        cache.copy_within(s..s + block_elems, d);
    }
}

/// o[b, h] = softmax_j(scale·q[b, h]·k_j) · v_j over positions j < len[b] of block-table row b
/// (table [B, width]).
pub fn decode_attention<T: Real>(q: &[T], kc: &[T], vc: &[T], table: &[i32], len: &[i32], g: &DecodeGeom) -> Vec<T> {
    let (row, scale) = (g.hkv * g.d, 1.0 / (g.d as f64).sqrt());
    let mut o = vec![T::zero(); q.len()];
    for b in 0..len.len() {
        let t = &table[b * g.width..(b + 1) * g.width];
        let rows: Vec<usize> = (0..len[b] as usize).map(|j| g.row_of(t, j) * row).collect();
        for h in 0..g.hq {
            let kvh = h / (g.hq / g.hkv);
            let qo = (b * g.hq + h) * g.d;
            let s: Vec<f64> = rows
                .iter()
                .map(|&r| {
                    let ko = r + kvh * g.d;
                    scale * (0..g.d).map(|c| q[qo + c].f64() * kc[ko + c].f64()).sum::<f64>()
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let l: f64 = e.iter().sum();
            for c in 0..g.d {
                let acc: f64 = e.iter().zip(&rows).map(|(p, &r)| p * vc[r + kvh * g.d + c].f64()).sum();
                o[qo + c] = T::of(if l > 0.0 { acc / l } else { 0.0 });
            }
        }
    }
    o
}
