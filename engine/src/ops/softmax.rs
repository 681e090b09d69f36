//! Softmax and log-softmax over the last dimension.
use super::{check_float, dispatch1};
use crate::autograd::Backward;
use crate::cpu::softmax::{SoftmaxBwd, SoftmaxFwd};
use crate::cpu::storage::run_float;
use crate::cuda::kernels;
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;

impl Tensor {
    pub fn softmax(&self) -> Result<Tensor> {
        softmax(self, false)
    }
    pub fn log_softmax(&self) -> Result<Tensor> {
        softmax(self, true)
    }
    /// Mean negative log-likelihood of `targets` (i32, one per row) under softmax(self).
    pub fn cross_entropy(&self, targets: &Tensor) -> Result<Tensor> {
        self.log_softmax()?.gather_last(targets)?.mean()?.neg()
    }
}

fn softmax(x: &Tensor, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    check_float(op, x)?;
    if x.rank() == 0 {
        return Err(EngineError::shape(op, "needs at least one dimension"));
    }
    let (rows, cols) = (x.shape().rows(), x.shape().last());
    let dt = x.dtype();
    let st = dispatch1(
        op,
        &[x],
        |s| Ok(run_float(op, &SoftmaxFwd { cols, log }, s)?.remove(0).cast(dt)),
        |s| kernels::softmax_fwd(s[0], rows, cols, log),
    )?;
    let y = Tensor::from_storage(st, x.shape().clone(), x.device());
    let rule = SoftmaxBackward { y: y.clone(), log };
    Tensor::from_op_output(y, &[x], rule)
}

struct SoftmaxBackward {
    y: Tensor,
    log: bool,
}
impl Backward for SoftmaxBackward {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (rows, cols, log, dt) = (self.y.shape().rows(), self.y.shape().last(), self.log, self.y.dtype());
        let st = dispatch1(
            "softmax backward",
            &[g, &self.y],
            |s| Ok(run_float("softmax backward", &SoftmaxBwd { cols, log }, s)?.remove(0).cast(dt)),
            |s| kernels::softmax_bwd(s[0], s[1], rows, cols, log),
        )?;
        Ok(vec![Some(Tensor::from_storage(st, self.y.shape().clone(), g.device()))])
    }
}
