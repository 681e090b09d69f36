//! ZeRO-2 AdamW over a [`Communicator`]: every rank holds the full working weights (bf16 on GPUs) and
//! computes gradients on its share of the data (f32, or bf16 with [`crate::GradStorage::Bf16`]: each
//! bucket is packed in f32 either way); the flat f32 gradients are reduce-scattered (Σ over
//! ranks, so each rank's loss must already be divided by the global token count), each rank keeps the f32
//! master weights and moments of its 1/world shard only, clips with the global norm (Σ of the shards'
//! squared norms, all-reduced), updates its shard and all-gathers the new weights.
use super::{clip_coef, grad_sumsq, AdamW, AdamWConfig};
use crate::dist::{flat_slice, flat_write_at, Communicator, FlatLayout, BUCKET_ELEMENTS};
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
        Self::with_buckets(params, config, comm, BUCKET_ELEMENTS)
    }

    /// As [`ShardedAdamW::new`] with buckets of `bucket_elements` flat elements (tests use tiny ones).
    pub fn with_buckets(
        params: &[Tensor],
        config: AdamWConfig,
        comm: Arc<dyn Communicator>,
        bucket_elements: usize,
    ) -> Result<Self> {
        let first = params.first().ok_or_else(|| EngineError::invalid("ShardedAdamW", "no parameters"))?;
        let (dtype, dev) = (first.dtype(), first.device().clone());
        if let Some(p) = params.iter().find(|p| p.dtype() != dtype || !p.device().same(&dev) || !p.is_param()) {
            return Err(EngineError::invalid(
                "ShardedAdamW",
                format!("parameters must be trainable leaves of one dtype and device; {p:?} differs"),
            ));
        }
        let layout = FlatLayout::new(params, comm.world_size(), bucket_elements);
        let all: Vec<Option<Tensor>> = params.iter().map(|p| Some(p.detach())).collect();
        let (k, rank) = (layout.bucket, comm.rank());
        let master = Tensor::zeros([layout.shard_len()], DType::F32, &dev)?;
        for j in 0..layout.buckets {
            // only this rank's k elements of bucket j (not the whole world·k bucket)
            let own = layout.bucket_range(j).start + rank * k;
            flat_write_at(&master, j * k, &layout.pack_range(&all, own..own + k, DType::F32, &dev)?)?;
        }
        let master = master.param();
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
        let l = &self.layout;
        let k = l.bucket;
        // Bucket by bucket: pack, reduce-scatter into this rank's piece, and drop each parameter's
        // gradient once its last bucket is packed, so only one bucket is in flight besides the gradients.
        let mut grads: Vec<Option<Tensor>> = self.params.iter().map(Tensor::grad).collect();
        let shard = Tensor::zeros([l.shard_len()], DType::F32, &dev)?;
        for j in 0..l.buckets {
            let bucket = l.pack_range(&grads, l.bucket_range(j), DType::F32, &dev)?;
            for i in l.ending_in(j) {
                grads[i] = None;
                self.params[i].zero_grad();
            }
            let piece = Tensor::zeros([k], DType::F32, &dev)?;
            self.comm.reduce_scatter_sum(&bucket, &piece)?;
            flat_write_at(&shard, j * k, &piece)?;
        }
        self.master.set_grad(Some(shard))?;
        let norm = self.comm.all_reduce_host(grad_sumsq(std::slice::from_ref(&self.master))?)?.sqrt();
        let applied = norm.is_finite();
        if applied {
            let coef = Tensor::scalar(clip_coef(norm, max_norm), DType::F32, &dev)?;
            self.inner.step(lr, Some(&coef))?;
            self.gather()?;
        }
        self.master.zero_grad();
        self.params.iter().for_each(Tensor::zero_grad);
        Ok(ShardedStep { norm, applied })
    }

    /// All-gather the shards' weights (in the parameters' dtype) bucket by bucket into the parameters.
    fn gather(&self) -> Result<()> {
        let l = &self.layout;
        let k = l.bucket;
        let cast = self.master.detach().to_dtype(self.dtype)?;
        for j in 0..l.buckets {
            let full = Tensor::zeros([l.world * k], self.dtype, cast.device())?;
            self.comm.all_gather(&flat_slice(&cast, j * k, k)?, &full)?;
            l.unpack_range(&full, l.bucket_range(j), &self.params)?;
        }
        Ok(())
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
        let m = lookup("shard.master", &k).ok_or_else(|| {
            EngineError::invalid(
                "ShardedAdamW",
                "no shard.master of this shard's size: the saved shard does not match this layout (different \
                 world size or bucket size)",
            )
        })?;
        self.master.copy_from(&m.to_dtype(DType::F32)?.to_device(self.master.device())?)?;
        self.inner.load_state(&["shard".to_string()], step, lookup)?;
        self.gather()
    }
}
