//! ZeRO-2 AdamW over a [`Communicator`]: every rank holds the full working weights (bf16 on GPUs) and
//! computes gradients on its share of the data; the flat f32 gradients are reduce-scattered (Σ over
//! ranks, so each rank's loss must already be divided by the global token count), each rank keeps the f32
//! master weights and moments of its 1/world shard only, clips with the global norm (Σ of the shards'
//! squared norms, all-reduced), updates its shard and all-gathers the new weights.
use super::{global_grad_norm, AdamW, AdamWConfig};
use crate::dist::{Communicator, FlatLayout};
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

pub struct ShardedAdamW {
    comm: Arc<dyn Communicator>,
    pub layout: FlatLayout,
    params: Vec<Tensor>,
    /// This rank's shard of the flat f32 weights, a trainable leaf driven by `inner`.
    master: Tensor,
    inner: AdamW,
    dtype: DType,
}

/// What one [`ShardedAdamW::step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShardedStep {
    /// Global gradient norm before clipping.
    pub norm: f64,
    /// False when the norm was not finite: nothing was applied on any rank.
    pub applied: bool,
}

impl ShardedAdamW {
    pub fn new(params: &[Tensor], config: AdamWConfig, comm: Arc<dyn Communicator>) -> Result<Self> {
        let first = params.first().ok_or_else(|| EngineError::invalid("ShardedAdamW", "no parameters"))?;
        let (dtype, dev) = (first.dtype(), first.device().clone());
        if let Some(p) = params.iter().find(|p| p.dtype() != dtype || !p.device().same(&dev) || !p.is_param()) {
            return Err(EngineError::invalid(
                "ShardedAdamW",
                format!("parameters must be trainable leaves of one dtype and device; {p:?} differs"),
            ));
        }
        let layout = FlatLayout::new(params, comm.world_size());
        let all: Vec<Option<Tensor>> = params.iter().map(|p| Some(p.detach())).collect();
        let flat = layout.pack(&all, DType::F32, &dev)?;
        let r = layout.shard(comm.rank());
        let master = crate::dist::flat_slice(&flat, r.start, r.len())?.param();
        let inner = AdamW::new(std::slice::from_ref(&master), config)?;
        Ok(Self { comm, layout, params: params.to_vec(), master, inner, dtype })
    }

    pub fn steps(&self) -> u64 {
        self.inner.steps()
    }

    /// Reduce-scatter the gradients, clip to `max_norm` by the global norm, update this rank's shard at
    /// `lr`, all-gather the weights and clear the gradients. A non-finite norm skips the update on every
    /// rank alike (the norm is global).
    pub fn step(&mut self, lr: f64, max_norm: f64) -> Result<ShardedStep> {
        let dev = self.master.device().clone();
        let grads: Vec<Option<Tensor>> = self.params.iter().map(Tensor::grad).collect();
        let flat = self.layout.pack(&grads, DType::F32, &dev)?;
        let shard = Tensor::zeros([self.layout.shard_len()], DType::F32, &dev)?;
        self.comm.reduce_scatter_sum(&flat, &shard)?;
        self.master.set_grad(Some(shard))?;
        let local = global_grad_norm(std::slice::from_ref(&self.master))?;
        let norm = self.comm.all_reduce_host(local * local)?.sqrt();
        let applied = norm.is_finite();
        if applied {
            // torch's clip_grad_norm_: scale by max_norm / (‖g‖ + 1e-6) when that is below 1.
            let coef = Tensor::scalar((max_norm / (norm + 1e-6)).min(1.0), DType::F32, &dev)?;
            self.inner.step(lr, Some(&coef))?;
            let full = Tensor::zeros([self.layout.padded], self.dtype, &dev)?;
            self.comm.all_gather(&self.master.detach().to_dtype(self.dtype)?, &full)?;
            self.layout.unpack_into(&full, &self.params)?;
        }
        self.master.zero_grad();
        self.params.iter().for_each(Tensor::zero_grad);
        Ok(ShardedStep { norm, applied })
    }

    /// This rank's optimizer state (shard of the f32 weights as `master`, moments) and the step count.
    pub fn state_tensors(&self) -> Result<(Vec<(String, Tensor)>, u64)> {
        let (mut v, steps) = self.inner.state_tensors(&["shard".to_string()])?;
        v.push(("shard.master".into(), self.master.detach()));
        Ok((v, steps))
    }

    /// Restore what [`ShardedAdamW::state_tensors`] wrote on this rank, then re-gather the weights.
    pub fn load_state(&mut self, step: u64, mut lookup: impl FnMut(&str, &[usize]) -> Option<Tensor>) -> Result<()> {
        let k = [self.layout.shard_len()];
        let m =
            lookup("shard.master", &k).ok_or_else(|| EngineError::invalid("ShardedAdamW", "missing shard.master"))?;
        self.master.copy_from(&m.to_dtype(DType::F32)?.to_device(self.master.device())?)?;
        self.inner.load_state(&["shard".to_string()], step, lookup)?;
        let full = Tensor::zeros([self.layout.padded], self.dtype, self.master.device())?;
        self.comm.all_gather(&self.master.detach().to_dtype(self.dtype)?, &full)?;
        self.layout.unpack_into(&full, &self.params)
    }
}
