//! Rotary position embedding (rotate-half) of x[tokens, heads, head_dim] at per-token positions.
use super::{check_float, check_i32, check_same_dtype, dispatch, dispatch1};
use crate::autograd::Backward;
use crate::cpu::rope::Rope;
use crate::cpu::storage::run_float;
use crate::cuda::kernels;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
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

/// Qwen3's per-head q/k RMSNorm followed by RoPE, for generation (prefill, decode):
/// `(rope(rms_norm(q, q_w)), rope(rms_norm(k, k_w)))`, on a GPU in one launch instead of four.
/// q [tokens, hq, d], k [tokens, hk, d], weights [d], pos i32 [tokens]. Forward only: with gradients being
/// recorded for an input it is an error (use `rms_norm` then `rope_with`, which have backward rules).
pub fn qk_norm_rope(
    q: &Tensor,
    k: &Tensor,
    q_w: &Tensor,
    k_w: &Tensor,
    pos: &Tensor,
    eps: f64,
    spec: RopeSpec,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "qk_norm_rope";
    check_float(OP, q)?;
    for t in [k, q_w, k_w] {
        check_same_dtype(OP, q, t)?;
    }
    check_i32(OP, pos)?;
    let shapes_ok = q.rank() == 3
        && k.rank() == 3
        && q.dims()[0] == k.dims()[0]
        && q.dims()[2] == k.dims()[2]
        && q.dims()[2].is_multiple_of(2)
        && q_w.dims() == [q.dims()[2]]
        && k_w.dims() == [q.dims()[2]]
        && pos.dims() == [q.dims()[0]];
    if !shapes_ok {
        return Err(EngineError::shape(
            OP,
            format!(
                "q [tokens, hq, even d], k [tokens, hk, d], weights [d], pos [tokens]; got {}, {}, {}, {}, {}",
                q.shape(),
                k.shape(),
                q_w.shape(),
                k_w.shape(),
                pos.shape()
            ),
        ));
    }
    if Tensor::would_record(&[q, k, q_w, k_w]) {
        return Err(EngineError::invalid(OP, "forward only, but gradients are being recorded (use rms_norm + rope)"));
    }
    let (tokens, hq, hk, d) = (q.dims()[0], q.dims()[1], k.dims()[1], q.dims()[2]);
    if !q.device().is_cuda() || d > kernels::NORM_ROPE_MAX_HEAD_DIM {
        return Ok((q.rms_norm(q_w, eps)?.rope_with(pos, spec)?, k.rms_norm(k_w, eps)?.rope_with(pos, spec)?));
    }
    let mut st = dispatch(
        OP,
        &[q, k, q_w, k_w, pos],
        |_| unreachable!("the CPU takes the composed path above"),
        |x| {
            let (qo, ko) = kernels::qk_norm_rope(x[0], x[1], x[2], x[3], x[4], (tokens, hq, hk, d), eps, spec)?;
            Ok(vec![qo, ko])
        },
    )?;
    let dev = q.device();
    let k_out = Tensor::from_storage(st.pop().expect("k"), Shape::new([tokens, hk, d]), dev);
    let q_out = Tensor::from_storage(st.pop().expect("q"), Shape::new([tokens, hq, d]), dev);
    Ok((q_out, k_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{autograd::no_grad, DType, Device};

    fn inputs() -> Vec<Tensor> {
        let (cpu, f) = (Device::Cpu, DType::F32);
        vec![
            Tensor::randn([4, 3, 8], 1.0, f, &cpu, 1).unwrap(),
            Tensor::randn([4, 2, 8], 1.0, f, &cpu, 2).unwrap(),
            Tensor::randn([8], 1.0, f, &cpu, 3).unwrap(),
            Tensor::randn([8], 1.0, f, &cpu, 4).unwrap(),
            Tensor::from_vec(vec![0i32, 5, 1, 900], [4], &cpu).unwrap(),
        ]
    }

    #[test]
    fn qk_norm_rope_is_norm_then_rope() {
        let x = inputs();
        let spec = RopeSpec { theta: 1e6, bf16_inv_freq: true };
        let (q, k) = qk_norm_rope(&x[0], &x[1], &x[2], &x[3], &x[4], 1e-6, spec).unwrap();
        let q_ref = x[0].rms_norm(&x[2], 1e-6).unwrap().rope_with(&x[4], spec).unwrap();
        let k_ref = x[1].rms_norm(&x[3], 1e-6).unwrap().rope_with(&x[4], spec).unwrap();
        assert_eq!(q.dims(), [4, 3, 8]);
        assert_eq!(q.to_vec_f32().unwrap(), q_ref.to_vec_f32().unwrap());
        assert_eq!(k.to_vec_f32().unwrap(), k_ref.to_vec_f32().unwrap());
    }

    #[test]
    fn qk_norm_rope_rejects_bad_shapes_and_recorded_gradients() {
        let x = inputs();
        let spec = RopeSpec::new(1e4);
        // k with another head_dim, weights of the wrong length, positions of the wrong length
        let k6 = Tensor::randn([4, 2, 6], 1.0, DType::F32, &Device::Cpu, 5).unwrap();
        assert!(matches!(qk_norm_rope(&x[0], &k6, &x[2], &x[3], &x[4], 1e-6, spec), Err(EngineError::Shape { .. })));
        assert!(matches!(qk_norm_rope(&x[0], &x[1], &x[4], &x[3], &x[4], 1e-6, spec), Err(EngineError::DType { .. })));
        let p3 = Tensor::from_vec(vec![0i32, 1, 2], [3], &Device::Cpu).unwrap();
        assert!(matches!(qk_norm_rope(&x[0], &x[1], &x[2], &x[3], &p3, 1e-6, spec), Err(EngineError::Shape { .. })));
        // a trainable weight while gradients are recorded: an error; under no_grad: fine
        let w = x[2].param();
        assert!(qk_norm_rope(&x[0], &x[1], &w, &x[3], &x[4], 1e-6, spec).is_err());
        let _ng = no_grad();
        assert!(qk_norm_rope(&x[0], &x[1], &w, &x[3], &x[4], 1e-6, spec).is_ok());
    }
}
