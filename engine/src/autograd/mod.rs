//! Reverse-mode autograd over a tape. Each differentiable op appends a node (its backward rule plus its
//! inputs) with a monotonically increasing tape position; `backward()` walks the reachable nodes in
//! reverse tape order, so every node's output gradient is complete before its rule runs.
//! Gradients of trainable leaves accumulate (in f32, or f64 for f64 leaves) across backward calls.
mod checkpoint;
mod grad_mode;

pub use checkpoint::checkpoint;
pub use grad_mode::{enable_grad, is_grad_enabled, no_grad, GradModeGuard};

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

/// How a tensor takes part in autograd.
#[derive(Clone)]
pub(crate) enum GradLink {
    /// Constant: no gradient flows here.
    None,
    /// Trainable leaf: gradients accumulate into this slot.
    Leaf(Arc<Mutex<Option<Tensor>>>),
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

/// leaf.grad += g, kept in f32 (f64 for f64 leaves).
fn accumulate_leaf(slot: &Arc<Mutex<Option<Tensor>>>, leaf: &Tensor, g: &Tensor) -> Result<()> {
    let acc_dtype = crate::cpu::storage::compute_dtype(leaf.dtype());
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        // A gradient nobody else holds, already in the accumulator dtype, is adopted without a copy.
        None if g.dtype() == acc_dtype && g.is_unique() => *guard = Some(g.detach()),
        None => *guard = Some(g.to_dtype(acc_dtype)?.detach_copy()?),
        Some(acc) => acc.add_assign_scaled(g, 1.0)?,
    }
    Ok(())
}
