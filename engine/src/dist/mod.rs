//! Collectives for data-parallel training in one process (one worker thread per rank): the
//! [`Communicator`] trait, its in-process implementation over threads and shared buffers
//! ([`ThreadComm`], CPU tensors, used by CI) and NCCL ([`NcclComm`], GPU tensors), plus the flat
//! parameter layout that ZeRO-2 sharding reduce-scatters and all-gathers.
mod flat;
mod guarded;
mod nccl;
mod thread;

pub use flat::{reduce_scatter_pieces, slice as flat_slice, write_at as flat_write_at, FlatLayout, BUCKET_ELEMENTS};
pub use nccl::NcclComm;
pub use thread::ThreadComm;

use crate::error::Result;
use crate::tensor::Tensor;

/// f64 values as little-endian bytes (the host exchanges' encoding) and back.
pub(crate) fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub(crate) fn bytes_f64(b: &[u8]) -> impl Iterator<Item = f64> + '_ {
    b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
}

/// One rank's handle on a group of `world_size` ranks. Every rank must call the same collectives in the
/// same order; a failed rank calls [`Communicator::abort`] so the others stop with its reason instead of
/// waiting forever.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// In place: t ← Σ_ranks t (f32 or bf16, same shape on every rank).
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()>;
    /// `input` [world·k] → `output` [k] = Σ_ranks input[rank·k .. (rank+1)·k].
    fn reduce_scatter_sum(&self, input: &Tensor, output: &Tensor) -> Result<()>;
    /// `input` [k] → `output` [world·k], rank r's input at r·k.
    fn all_gather(&self, input: &Tensor, output: &Tensor) -> Result<()>;
    /// Host bytes of every rank, in rank order (rollouts, counts, norms, barriers), shared by all ranks
    /// rather than copied to each.
    fn all_gather_host(&self, bytes: Vec<u8>) -> Result<std::sync::Arc<Vec<Vec<u8>>>>;
    /// Fail every pending and future collective of the group with `reason`.
    fn abort(&self, reason: &str);

    /// Σ over ranks of host values, element by element, in one exchange.
    fn all_reduce_host_many(&self, xs: &[f64]) -> Result<Vec<f64>> {
        let all = self.all_gather_host(f64_bytes(xs))?;
        let mut sum = vec![0.0; xs.len()];
        for b in all.iter() {
            if b.len() != 8 * xs.len() {
                return Err(crate::EngineError::Comm(format!("ranks reduced {} and {} values", xs.len(), b.len() / 8)));
            }
            sum.iter_mut().zip(bytes_f64(b)).for_each(|(s, x)| *s += x);
        }
        Ok(sum)
    }
    /// Σ over ranks of a host value.
    fn all_reduce_host(&self, x: f64) -> Result<f64> {
        Ok(self.all_reduce_host_many(&[x])?[0])
    }
    /// Wait until every rank arrives.
    fn barrier(&self) -> Result<()> {
        self.all_gather_host(Vec::new()).map(|_| ())
    }
}
