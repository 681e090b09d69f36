//! Activation checkpointing: run a region's forward without recording (its activations are freed), and
//! recompute it with recording during backward. Parameters used inside the region get their gradients
//! from the recomputed graph; the region's inputs get theirs through this node.
use super::{enable_grad, is_grad_enabled, no_grad, Backward};
use crate::error::Result;
use crate::tensor::Tensor;
use std::sync::Arc;

type Region = Arc<dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync>;

/// `f(inputs)` with its intermediate activations dropped and recomputed in backward.
/// `f` must be deterministic (same output for the same inputs), as with torch.utils.checkpoint.
pub fn checkpoint(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    let f: Region = Arc::new(f);
    if !is_grad_enabled() {
        return f(inputs);
    }
    let out = {
        let _ng = no_grad();
        f(inputs)?
    };
    let refs: Vec<&Tensor> = inputs.iter().collect();
    Tensor::from_op_output(out, &refs, CheckpointBackward { f, inputs: inputs.to_vec() })
}

struct CheckpointBackward {
    f: Region,
    inputs: Vec<Tensor>,
}

impl Backward for CheckpointBackward {
    fn name(&self) -> &'static str {
        "checkpoint"
    }
    fn backward(&self, grad_out: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // 1. detached copies of the inputs become leaves, so their gradients can be read back
        let leaves: Vec<Tensor> =
            self.inputs.iter().map(|t| if t.requires_grad() { t.detach().param() } else { t.detach() }).collect();
        // 2. recompute the region with recording on, then backpropagate through it
        let out = {
            let _g = enable_grad();
            (self.f)(&leaves)?
        };
        if out.requires_grad() {
            out.backward_with(grad_out.clone())?;
        }
        // 3. hand the inputs' gradients to the outer graph (cast back to each input's dtype)
        leaves
            .iter()
            .zip(&self.inputs)
            .map(|(l, orig)| match l.grad() {
                Some(g) if orig.requires_grad() => g.to_dtype(orig.dtype()).map(Some),
                _ => Ok(None),
            })
            .collect()
    }
}
