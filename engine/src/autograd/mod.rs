//! Reverse-mode autograd over a tape. Each differentiable op appends a node (its backward rule plus its
//! inputs) with a monotonically increasing tape position; `backward()` walks the reachable nodes in
//! reverse tape order, so every node's output gradient is complete before its rule runs.
//! Gradients of trainable leaves accumulate across backward calls, in f32 (f64 for f64 leaves); a bf16 leaf
//! set to [`GradStorage::Bf16`] stores its gradient in bf16, each accumulation adding in f32 and rounding
//! once.
mod checkpoint;
mod grad_mode;

pub use checkpoint::checkpoint;
pub use grad_mode::{enable_grad, is_grad_enabled, no_grad, GradModeGuard};

use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The backward rule of one op: given ∂L/∂output, return ∂L/∂input for each input (None = no gradient).
pub trait Backward: Send + Sync {
    fn name(&self) -> &'static str;
    fn backward(&self, grad_out: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

static TAPE_POSITION: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_tape_position() -> u64 {
    TAPE_POSITION.fetch_add(1, Ordering::Relaxed)
}

/// One recorded op.
pub struct Node {
    pub(crate) position: u64,
    pub(crate) rule: Box<dyn Backward>,
    pub(crate) inputs: Vec<Tensor>,
}

/// The storage dtype of a bf16 trainable leaf's accumulated gradient, chosen per leaf
/// ([`Tensor::set_grad_storage`]; a training run sets every parameter alike). f32 and f64 leaves keep
/// f32 and f64 gradients whatever is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GradStorage {
    /// f32 gradients (4 bytes a parameter): the default.
    #[default]
    F32,
    /// bf16 gradients (2 bytes a parameter). A second contribution (the next micro-batch, a tied weight)
    /// is added in f32 and the sum rounded once to bf16, never added in bf16 arithmetic; optimizers,
    /// clipping and the flat reduce-scatter buckets widen bf16 gradients to f32 where they compute.
    Bf16,
}

impl GradStorage {
    /// The dtype of the accumulated gradient of a leaf of dtype `param`.
    pub fn grad_dtype(self, param: DType) -> DType {
        match (self, param) {
            (GradStorage::Bf16, DType::BF16) => DType::BF16,
            _ => crate::cpu::storage::compute_dtype(param),
        }
    }
}

/// A trainable leaf's gradient slot: the accumulated gradient and how it is stored.
#[derive(Default)]
pub(crate) struct LeafGrad {
    pub(crate) grad: Option<Tensor>,
    pub(crate) storage: GradStorage,
}

/// How a tensor takes part in autograd.
#[derive(Clone)]
pub(crate) enum GradLink {
    /// Constant: no gradient flows here.
    None,
    /// Trainable leaf: gradients accumulate into this slot.
    Leaf(Arc<Mutex<LeafGrad>>),
    /// Result of a recorded op.
    Node(Arc<Node>),
}

/// Run the tape backwards from `root` with seed gradient `seed`.
pub(crate) fn run_backward(root: &Tensor, seed: Tensor) -> Result<()> {
    let _ng = no_grad();
    let root_node = match root.grad_link() {
        GradLink::None => {
            return Err(EngineError::Autograd(
                "backward() on a tensor that does not require grad (no trainable input, or built under no_grad)".into(),
            ))
        }
        GradLink::Leaf(slot) => return accumulate_leaf(slot, root, &seed),
        GradLink::Node(n) => n.clone(),
    };
    // 1. collect every node reachable from the root
    let mut nodes: Vec<Arc<Node>> = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root_node.clone()];
    while let Some(n) = stack.pop() {
        if !seen.insert(n.position) {
            continue;
        }
        for t in &n.inputs {
            if let GradLink::Node(c) = t.grad_link() {
                stack.push(c.clone());
            }
        }
        nodes.push(n);
    }
    // 2. reverse tape order
    nodes.sort_unstable_by_key(|n| std::cmp::Reverse(n.position));
    // 3. propagate
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    grads.insert(root_node.position, seed);
    for node in nodes {
        let Some(g) = grads.remove(&node.position) else {
            continue;
        };
        let in_grads = crate::profile::region(node.rule.name(), g.device(), || node.rule.backward(&g))?;
        if in_grads.len() != node.inputs.len() {
            return Err(EngineError::Autograd(format!(
                "{} returned {} gradients for {} inputs",
                node.rule.name(),
                in_grads.len(),
                node.inputs.len()
            )));
        }
        for (input, gi) in node.inputs.iter().zip(in_grads) {
            let Some(gi) = gi else { continue };
            if !gi.device().same(input.device()) {
                return Err(EngineError::Autograd(format!(
                    "{} produced a {gi:?} gradient for an input {input:?}",
                    node.rule.name()
                )));
            }
            // A rule may hand a leaf its gradient already in the accumulator dtype (f32 for bf16, e.g. the
            // fused loss's dW); anything else is brought to the input's dtype before the next rule sees it.
            let is_leaf = matches!(input.grad_link(), GradLink::Leaf(_));
            let gi = if gi.dtype() == input.dtype()
                || (is_leaf && gi.dtype() == crate::cpu::storage::compute_dtype(input.dtype()))
            {
                gi
            } else {
                gi.to_dtype(input.dtype())?
            };
            if gi.shape() != input.shape() {
                return Err(EngineError::Autograd(format!(
                    "{} produced a gradient of shape {} for an input of shape {}",
                    node.rule.name(),
                    gi.shape(),
                    input.shape()
                )));
            }
            match input.grad_link() {
                GradLink::None => {}
                GradLink::Leaf(slot) => accumulate_leaf(slot, input, &gi)?,
                GradLink::Node(n) => {
                    let acc = match grads.remove(&n.position) {
                        Some(prev) => prev.add(&gi)?,
                        None => gi,
                    };
                    grads.insert(n.position, acc);
                }
            }
        }
    }
    Ok(())
}

/// leaf.grad += g, kept in the leaf's gradient dtype (f32, f64 for f64 leaves, bf16 for a bf16 leaf with
/// [`GradStorage::Bf16`]: the sum is formed in f32 and rounded once).
fn accumulate_leaf(slot: &Arc<Mutex<LeafGrad>>, leaf: &Tensor, g: &Tensor) -> Result<()> {
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    let acc_dtype = guard.storage.grad_dtype(leaf.dtype());
    match guard.grad.as_ref() {
        // A gradient nobody else holds, already in the accumulator dtype, is adopted without a copy.
        None if g.dtype() == acc_dtype && g.is_unique() => guard.grad = Some(g.detach()),
        None if g.dtype() == acc_dtype => guard.grad = Some(g.detach_copy()?),
        // A cast is a fresh tensor: kept as it is.
        None => guard.grad = Some(g.to_dtype(acc_dtype)?.detach()),
        // In place; a bf16 accumulator's elements are widened, added in f32 and rounded once, no temporary.
        Some(acc) => acc.add_assign_scaled(g, 1.0)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;
    use half::bf16;

    fn leaf_slot(t: &Tensor) -> Arc<Mutex<LeafGrad>> {
        match t.grad_link() {
            GradLink::Leaf(slot) => slot.clone(),
            _ => panic!("not a leaf"),
        }
    }

    #[test]
    fn bf16_gradients_add_in_f32_and_round_once() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(vec![bf16::ZERO; 3], [3], &dev).unwrap().param();
        assert_eq!((x.grad_storage(), x.grad_dtype()), (Some(GradStorage::F32), Some(DType::F32)));
        x.set_grad_storage(GradStorage::Bf16).unwrap();
        assert_eq!(x.grad_dtype(), Some(DType::BF16));
        let slot = leaf_slot(&x);
        let f32s = |v: Vec<f32>| Tensor::from_vec(v, [3], &dev).unwrap();
        // An f32 contribution (what the fused loss hands a bf16 weight) is rounded once on arrival.
        accumulate_leaf(&slot, &x, &f32s(vec![1.0, 1.0, 256.0])).unwrap();
        assert_eq!(x.grad().unwrap().dtype(), DType::BF16);
        // 1 + (2^-8 + 2^-20): in f32 then rounded once, just above the tie → 1 + 2^-7. Rounding the
        // contribution to bf16 first (2^-8) and adding in bf16 would tie to even → 1.0.
        let tiny = 2f32.powi(-8) + 2f32.powi(-20);
        accumulate_leaf(&slot, &x, &f32s(vec![tiny, 2f32.powi(-8), 1.5])).unwrap();
        let g = x.grad().unwrap();
        assert_eq!(g.dtype(), DType::BF16);
        assert_eq!(g.to_vec_f32().unwrap(), vec![1.0 + 2f32.powi(-7), 1.0, 258.0], "257.5 rounds to even");
        // a bf16 contribution too: widened, added, rounded — in place, into the same bf16 storage
        let b = Tensor::from_vec(vec![bf16::from_f32(0.5); 3], [3], &dev).unwrap();
        accumulate_leaf(&slot, &x, &b).unwrap();
        assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![1.5078125, 1.5, 258.0]);
        assert!(x.grad().unwrap().shares_storage(&g), "the bf16 accumulator is updated in place");
        // f32 storage keeps the exact f32 sums; switching converts the held gradient
        let y = Tensor::from_vec(vec![bf16::ZERO; 3], [3], &dev).unwrap().param();
        let slot_y = leaf_slot(&y);
        accumulate_leaf(&slot_y, &y, &f32s(vec![1.0, 1.0, 256.0])).unwrap();
        accumulate_leaf(&slot_y, &y, &f32s(vec![tiny, 2f32.powi(-8), 1.5])).unwrap();
        assert_eq!(y.grad().unwrap().to_vec_f32().unwrap(), vec![1.0 + tiny, 1.0 + 2f32.powi(-8), 257.5]);
        y.set_grad_storage(GradStorage::Bf16).unwrap();
        assert_eq!(y.grad().unwrap().dtype(), DType::BF16);
        // f32 and f64 leaves keep their gradients whatever is asked
        let z = Tensor::zeros([2], DType::F32, &dev).unwrap().param();
        z.set_grad_storage(GradStorage::Bf16).unwrap();
        assert_eq!(z.grad_dtype(), Some(DType::F32));
        assert!(Tensor::zeros([2], DType::BF16, &dev).unwrap().set_grad_storage(GradStorage::Bf16).is_err());
        // set_grad takes the leaf's gradient dtype
        let e = x.set_grad(Some(f32s(vec![0.0; 3]))).unwrap_err().to_string();
        assert!(e.contains("gradients are bf16"), "{e}");
        x.set_grad(Some(b)).unwrap();
    }

    #[test]
    fn a_bf16_leaf_gets_bf16_gradients_through_backward() {
        let dev = Device::Cpu;
        let w = Tensor::from_f64(&[0.5, -1.0, 2.0, 0.25], [2, 2], DType::BF16, &dev).unwrap().param();
        w.set_grad_storage(GradStorage::Bf16).unwrap();
        let x = Tensor::from_f64(&[1.0, 2.0, 3.0, 4.0], [2, 2], DType::BF16, &dev).unwrap();
        for _ in 0..2 {
            x.matmul(&w).unwrap().sum().unwrap().backward().unwrap();
        }
        let g = w.grad().unwrap();
        assert_eq!(g.dtype(), DType::BF16);
        // d/dW Σ xW = xᵀ·1, twice: columns of 2·(1+3, 2+4)
        assert_eq!(g.to_vec_f64().unwrap(), vec![8.0, 8.0, 12.0, 12.0]);
    }
}
