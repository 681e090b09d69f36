//! Index ops: embedding gather / scatter-add, and picking one element per row (log-prob of a target).
use super::storage::FloatKernel;
use super::Real;
use crate::error::{EngineError, Result};

fn check_ids(op: &'static str, ids: &[i32], bound: usize) -> Result<()> {
    match ids.iter().find(|&&i| i < 0 || i as usize >= bound) {
        Some(bad) => Err(EngineError::invalid(op, format!("index {bad} outside [0, {bound})"))),
        None => Ok(()),
    }
}

/// out[i, :] = table[ids[i], :]
pub struct EmbeddingFwd<'a> {
    pub ids: &'a [i32],
    pub dim: usize,
    pub vocab: usize,
}
impl FloatKernel for EmbeddingFwd<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        check_ids("embedding", self.ids, self.vocab)?;
        let mut out = Vec::with_capacity(self.ids.len() * self.dim);
        for &id in self.ids {
            let r = id as usize * self.dim;
            out.extend_from_slice(&x[0][r..r + self.dim]);
        }
        Ok(vec![out])
    }
}

/// dtable[ids[i], :] += dout[i, :], in index order (deterministic).
pub struct EmbeddingBwd<'a> {
    pub ids: &'a [i32],
    pub dim: usize,
    pub vocab: usize,
}
impl FloatKernel for EmbeddingBwd<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        check_ids("embedding backward", self.ids, self.vocab)?;
        let mut d = vec![T::zero(); self.vocab * self.dim];
        for (i, &id) in self.ids.iter().enumerate() {
            let (r, s) = (id as usize * self.dim, i * self.dim);
            for c in 0..self.dim {
                d[r + c] = d[r + c] + x[0][s + c];
            }
        }
        Ok(vec![d])
    }
}

/// out[r] = x[r, idx[r]]
pub struct GatherLast<'a> {
    pub idx: &'a [i32],
    pub cols: usize,
}
impl FloatKernel for GatherLast<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        check_ids("gather_last", self.idx, self.cols)?;
        Ok(vec![self.idx.iter().enumerate().map(|(r, &c)| x[0][r * self.cols + c as usize]).collect()])
    }
}

/// dx[r, idx[r]] = dout[r], zeros elsewhere.
pub struct ScatterLast<'a> {
    pub idx: &'a [i32],
    pub cols: usize,
}
impl FloatKernel for ScatterLast<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        check_ids("gather_last backward", self.idx, self.cols)?;
        let mut d = vec![T::zero(); self.idx.len() * self.cols];
        for (r, &c) in self.idx.iter().enumerate() {
            d[r * self.cols + c as usize] = x[0][r];
        }
        Ok(vec![d])
    }
}
