//! Reference KV-cache write and decode attention (one query row per request against its cache),
//! f64 accumulation. Cache layout [slots, max_len, Hkv, D].
use super::Real;

/// Geometry of one decode call.
#[derive(Clone, Copy, Debug)]
pub struct DecodeGeom {
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
    pub max_len: usize,
}

/// cache[slot[i], pos[i]] = rows[i] for the rows [n, Hkv, D].
pub fn kv_write<T: Copy>(cache: &mut [T], rows: &[T], slot: &[i32], pos: &[i32], g: &DecodeGeom) {
    let row = g.hkv * g.d;
    for i in 0..slot.len() {
        let dst = (slot[i] as usize * g.max_len + pos[i] as usize) * row;
        cache[dst..dst + row].copy_from_slice(&rows[i * row..(i + 1) * row]);
    }
}

/// o[b, h] = softmax_j(scale·q[b, h]·k_j) · v over keys j < len[b] of slot[b].
pub fn decode_attention<T: Real>(q: &[T], kc: &[T], vc: &[T], slot: &[i32], len: &[i32], g: &DecodeGeom) -> Vec<T> {
    let (row, scale) = (g.hkv * g.d, 1.0 / (g.d as f64).sqrt());
    let mut o = vec![T::zero(); q.len()];
    for b in 0..slot.len() {
        let base = slot[b] as usize * g.max_len * row;
        for h in 0..g.hq {
            let kvh = h / (g.hq / g.hkv);
            let qo = (b * g.hq + h) * g.d;
            let s: Vec<f64> = (0..len[b] as usize)
                .map(|j| {
                    let ko = base + j * row + kvh * g.d;
                    scale * (0..g.d).map(|c| q[qo + c].f64() * kc[ko + c].f64()).sum::<f64>()
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let l: f64 = e.iter().sum();
            for c in 0..g.d {
                let acc: f64 = e.iter().enumerate().map(|(j, p)| p * vc[base + j * row + kvh * g.d + c].f64()).sum();
                o[qo + c] = T::of(if l > 0.0 { acc / l } else { 0.0 });
            }
        }
    }
    o
}
