//! Packed variable-length sequences ("varlen"): sequences laid end to end without padding, described
//! by cumulative offsets `cu_seqlens` = [0, len0, len0+len1, ...] as FlashAttention takes them.
use crate::device::Device;
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;
use std::sync::Mutex;

pub struct Packing {
    cu: Vec<i32>,
    max_len: usize,
    /// Tables uploaded once per device (kernels read them there): the offsets (`on`, key None) and the tile
    /// tables (`tiles_on`, key Some(tile size)).
    device_copies: Mutex<Vec<(Option<usize>, Tensor)>>,
}

impl Packing {
    /// From per-sequence lengths (zero-length sequences are allowed and contribute nothing).
    pub fn from_lengths(lengths: &[usize]) -> Result<Self> {
        let mut cu = vec![0i32];
        for &l in lengths {
            let next = *cu.last().expect("non-empty") as i64 + l as i64;
            let next = i32::try_from(next)
                .map_err(|_| EngineError::invalid("packing", "more than 2^31 tokens in one pack"))?;
            cu.push(next);
        }
        Ok(Self { cu, max_len: lengths.iter().copied().max().unwrap_or(0), device_copies: Mutex::new(Vec::new()) })
    }
    /// One sequence of `len` tokens.
    pub fn single(len: usize) -> Result<Self> {
        Self::from_lengths(&[len])
    }
    pub fn cu_seqlens(&self) -> &[i32] {
        &self.cu
    }
    pub fn num_seqs(&self) -> usize {
        self.cu.len() - 1
    }
    pub fn total(&self) -> usize {
        *self.cu.last().expect("non-empty") as usize
    }
    pub fn max_len(&self) -> usize {
        self.max_len
    }
    /// (start, len) of each sequence.
    pub fn spans(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.cu.windows(2).map(|w| (w[0] as usize, (w[1] - w[0]) as usize))
    }
    /// Position of every token within its own sequence (0-based), for RoPE and entropy normalisation.
    pub fn positions(&self) -> Vec<i32> {
        self.spans().flat_map(|(_, len)| 0..len as i32).collect()
    }
    /// The offsets as an i32 tensor on `device` (uploaded once, then cached).
    pub fn on(&self, device: &Device) -> Result<Tensor> {
        self.cached_on(device, None, || (self.cu.clone(), vec![self.cu.len()]))
    }
    /// The table `key` on `device`: the cached copy, else `build`'s (values, dims) uploaded and kept.
    fn cached_on(
        &self,
        device: &Device,
        key: Option<usize>,
        build: impl FnOnce() -> (Vec<i32>, Vec<usize>),
    ) -> Result<Tensor> {
        let mut copies = self.device_copies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = copies.iter().find(|(k, t)| *k == key && t.device().same(device)) {
            return Ok(t.clone());
        }
        let (values, dims) = build();
        let t = Tensor::from_vec(values, dims, device)?;
        copies.push((key, t.clone()));
        Ok(t)
    }
}

impl Packing {
    /// Every sequence cut into tiles of at most `tile` tokens, as i32 triples (start, end, sequence) in token
    /// order (a sequence of n tokens gives ceil(n / tile) tiles, an empty one none): the blocks of kernels
    /// that must not cross sequences.
    pub fn tiles(&self, tile: usize) -> Vec<i32> {
        let tile = tile.max(1);
        let mut out = Vec::new();
        for (q, (start, len)) in self.spans().enumerate() {
            for off in (0..len).step_by(tile) {
                out.extend([(start + off) as i32, (start + (off + tile).min(len)) as i32, q as i32]);
            }
        }
        out
    }
    /// [`Packing::tiles`] as an i32 tensor [tiles, 3] on `device` (uploaded once per tile size, then cached).
    pub fn tiles_on(&self, device: &Device, tile: usize) -> Result<Tensor> {
        self.cached_on(device, Some(tile), || {
            let v = self.tiles(tile);
            let rows = v.len() / 3;
            (v, vec![rows, 3])
        })
    }
}

impl std::fmt::Debug for Packing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packing({} seqs, {} tokens, max {})", self.num_seqs(), self.total(), self.max_len)
    }
}
