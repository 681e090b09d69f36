//! Packed variable-length sequences ("varlen"): sequences laid end to end without padding, described
//! by cumulative offsets `cu_seqlens` = [0, len0, len0+len1, ...] as FlashAttention takes them.
use crate::device::Device;
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;
use std::sync::Mutex;

pub struct Packing {
    cu: Vec<i32>,
    max_len: usize,
    /// The offsets uploaded once per device (kernels read them there).
    device_copies: Mutex<Vec<Tensor>>,
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
        let mut copies = self.device_copies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = copies.iter().find(|t| t.device().same(device)) {
            return Ok(t.clone());
        }
        let t = Tensor::from_vec(self.cu.clone(), [self.cu.len()], device)?;
        copies.push(t.clone());
        Ok(t)
    }
}

impl std::fmt::Debug for Packing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packing({} seqs, {} tokens, max {})", self.num_seqs(), self.total(), self.max_len)
    }
}
