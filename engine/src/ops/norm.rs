//! RMSNorm over the last dimension with a learned scale (Qwen3's input/post-attention/q/k/final norms).
use super::{check_float, check_same_dtype, dispatch};
use crate::autograd::Backward;
use crate::cpu::norm::{RmsNormBwd, RmsNormFwd};
use crate::cpu::storage::run_float;
use crate::cuda::kernels;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

impl Tensor {
    /// y = x · (mean(x²) + eps)^(-1/2) · w over the last dim; w has shape [dim].
    pub fn rms_norm(&self, w: &Tensor, eps: f64) -> Result<Tensor> {
        check_float("rms_norm", self)?;
        check_same_dtype("rms_norm", self, w)?;
        let dim = self.shape().last();
        if w.dims() != [dim] || self.rank() == 0 {
            return Err(EngineError::shape("rms_norm", format!("weight {} for input {}", w.shape(), self.shape())));
        }
        let rows = self.shape().rows();
        let dt = self.dtype();
        let mut st = dispatch(
            "rms_norm",
            &[self, w],
            |x| {
                let mut o = run_float("rms_norm", &RmsNormFwd { dim, eps }, x)?;
                let rstd = o.pop().expect("rstd");
                Ok(vec![o.pop().expect("y").cast(dt), rstd])
            },
            |x| {
                let (y, r) = kernels::rmsnorm_fwd(x[0], x[1], rows, dim, eps)?;
                Ok(vec![y, r])
            },
        )?;
        let rstd = Tensor::from_storage(st.pop().expect("rstd"), Shape::new([rows]), self.device());
        let y = st.pop().expect("y");
        let rule = RmsNormBackward { x: self.detach(), w: w.detach(), rstd };
        Tensor::from_op(y, self.shape().clone(), self.device(), &[self, w], rule)
    }
}

/// Inference's residual add and the RMSNorm after it: `(x + y, rms_norm(x + y, w))`, on a GPU in one pass
/// (bitwise the same as `add` then `rms_norm`). x and y of one shape, w [last dim]. Forward only: with
/// gradients being recorded for an input it is an error (use `add` and `rms_norm`).
pub fn add_rms_norm(x: &Tensor, y: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    const OP: &str = "add_rms_norm";
    check_float(OP, x)?;
    check_same_dtype(OP, x, y)?;
    check_same_dtype(OP, x, w)?;
    let dim = x.shape().last();
    if x.dims() != y.dims() || w.dims() != [dim] || x.rank() == 0 {
        return Err(EngineError::shape(OP, format!("x {}, y {}, weight {}", x.shape(), y.shape(), w.shape())));
    }
    if Tensor::would_record(&[x, y, w]) {
        return Err(EngineError::invalid(OP, "forward only, but gradients are being recorded (use add + rms_norm)"));
    }
    if !x.device().is_cuda() {
        let s = x.add(y)?;
        let n = s.rms_norm(w, eps)?;
        return Ok((s, n));
    }
    let rows = x.shape().rows();
    let mut st = dispatch(
        OP,
        &[x, y, w],
        |_| unreachable!("the CPU takes the composed path above"),
        |v| {
            let (s, n) = kernels::add_rmsnorm_fwd(v[0], v[1], v[2], rows, dim, eps)?;
            Ok(vec![s, n])
        },
    )?;
    let n = Tensor::from_storage(st.pop().expect("normed"), x.shape().clone(), x.device());
    let s = Tensor::from_storage(st.pop().expect("sum"), x.shape().clone(), x.device());
    Ok((s, n))
}

struct RmsNormBackward {
    x: Tensor,
    w: Tensor,
    /// Saved 1/rms per row (compute precision: f32, or f64 for f64 inputs).
    rstd: Tensor,
}
impl Backward for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms_norm"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (dim, rows, dt) = (self.w.numel(), self.x.shape().rows(), self.x.dtype());
        let dev = self.x.device();
        let mut st = dispatch(
            "rms_norm backward",
            &[g, &self.x, &self.w, &self.rstd],
            |x| {
                // rstd is stored in compute precision; widen the others to match.
                let cd = x[3].dtype();
                let ins: Vec<_> = x[..3].iter().map(|s| s.cast(cd)).collect();
                let refs = [&ins[0], &ins[1], &ins[2], x[3]];
                let o = run_float("rms_norm backward", &RmsNormBwd { dim }, &refs)?;
                Ok(o.into_iter().map(|s| s.cast(dt)).collect())
            },
            |x| {
                let (dx, dwp, blocks) = kernels::rmsnorm_bwd(x[0], x[1], x[2], x[3], rows, dim)?;
                // dw = Σ over blocks of the per-block partials (deterministic reduction).
                let dw = kernels::reduce_sum(&dwp, &[dim], &[1], &[blocks], &[dim], 1.0)?;
                let dw = if dt == crate::dtype::DType::F32 { dw } else { kernels::cast(&dw, dt)? };
                Ok(vec![dx, dw])
            },
        )?;
        let dw = Tensor::from_storage(st.pop().expect("dw"), Shape::new([dim]), dev);
        let dx = Tensor::from_storage(st.pop().expect("dx"), self.x.shape().clone(), dev);
        Ok(vec![Some(dx), Some(dw)])
    }
}
