//! Rotary position embedding (rotate-half) of x[tokens, heads, head_dim] at per-token positions.
use super::{check_float, check_i32, dispatch1};
use crate::autograd::Backward;
use crate::cpu::rope::Rope;
use crate::cpu::storage::run_float;
use crate::cuda::kernels;
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;

/// RoPE frequencies: base θ, inv_freq_i = θ^(−2i/D) in f32, optionally rounded to bf16 (what HF computes
/// when the whole module, rotary buffer included, was cast with `.to(torch.bfloat16)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeSpec {
    pub theta: f64,
    pub bf16_inv_freq: bool,
}

impl RopeSpec {
    pub fn new(theta: f64) -> Self {
        Self { theta, bf16_inv_freq: false }
    }
}

impl Tensor {
    /// RoPE with base `theta`; `pos` (i32, [tokens]) restarts at 0 for each packed sequence.
    pub fn rope(&self, pos: &Tensor, theta: f64) -> Result<Tensor> {
        rope(self, pos, RopeSpec::new(theta), 1.0)
    }
    /// RoPE with explicit frequency settings.
    pub fn rope_with(&self, pos: &Tensor, spec: RopeSpec) -> Result<Tensor> {
        rope(self, pos, spec, 1.0)
    }
}

fn rope(x: &Tensor, pos: &Tensor, spec: RopeSpec, sign: f64) -> Result<Tensor> {
    check_float("rope", x)?;
    check_i32("rope", pos)?;
    if x.rank() != 3 || !x.dims()[2].is_multiple_of(2) || pos.dims() != [x.dims()[0]] {
        return Err(EngineError::shape(
            "rope",
            format!(
                "x must be [tokens, heads, even head_dim] with pos [tokens]; got {} and {}",
                x.shape(),
                pos.shape()
            ),
        ));
    }
    let (tokens, heads, head_dim) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let dt = x.dtype();
    let st = dispatch1(
        "rope",
        &[x, pos],
        |s| {
            let k = Rope {
                pos: s[1].as_i32("rope")?,
                heads,
                head_dim,
                theta: spec.theta,
                sign,
                bf16_freqs: spec.bf16_inv_freq,
            };
            Ok(run_float("rope", &k, &[s[0]])?.remove(0).cast(dt))
        },
        |s| kernels::rope(s[0], s[1], tokens, heads, head_dim, spec, sign),
    )?;
    let rule = RopeBackward { pos: pos.clone(), spec, sign };
    Tensor::from_op(st, x.shape().clone(), x.device(), &[x, pos], rule)
}

struct RopeBackward {
    pos: Tensor,
    spec: RopeSpec,
    sign: f64,
}
impl Backward for RopeBackward {
    fn name(&self) -> &'static str {
        "rope"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // The rotation is orthogonal: its adjoint is the rotation by the opposite angle.
        Ok(vec![Some(rope(g, &self.pos, self.spec, -self.sign)?), None])
    }
}
