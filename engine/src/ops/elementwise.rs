//! add / sub / mul (numpy broadcasting), scale, cast, SwiGLU.
use super::{check_float, check_same_dtype, dispatch, dispatch1};
use crate::autograd::Backward;
use crate::cpu::elementwise::{Binary, BinaryOp, Scale, SwigluBwd, SwigluFwd};
use crate::cpu::storage::run_float;
use crate::cuda::kernels;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

impl Tensor {
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        binary(BinaryOp::Add, self, other)
    }
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        binary(BinaryOp::Sub, self, other)
    }
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        binary(BinaryOp::Mul, self, other)
    }

    /// s · self
    pub fn scale(&self, s: f64) -> Result<Tensor> {
        check_float("scale", self)?;
        let dt = self.dtype();
        let st = dispatch1(
            "scale",
            &[self],
            |x| Ok(run_float("scale", &Scale(s), x)?.remove(0).cast(dt)),
            |x| kernels::scale(x[0], s),
        )?;
        Tensor::from_op(st, self.shape().clone(), self.device(), &[self], ScaleBackward(s))
    }
    pub fn neg(&self) -> Result<Tensor> {
        self.scale(-1.0)
    }

    /// Cast to `dtype` (f32 ↔ bf16 on GPU; any pair on CPU). Differentiable between float types.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let st = dispatch1("to_dtype", &[self], |x| Ok(x[0].cast(dtype)), |x| kernels::cast(x[0], dtype))?;
        let src = self.dtype();
        if !(src.is_float() && dtype.is_float()) {
            return Ok(Tensor::from_storage(st, self.shape().clone(), self.device()));
        }
        Tensor::from_op(st, self.shape().clone(), self.device(), &[self], CastBackward(src))
    }

    /// SwiGLU: silu(self) · up, self being the gate projection.
    pub fn swiglu(&self, up: &Tensor) -> Result<Tensor> {
        check_float("swiglu", self)?;
        check_same_dtype("swiglu", self, up)?;
        if self.shape() != up.shape() {
            return Err(EngineError::shape("swiglu", format!("gate {} vs up {}", self.shape(), up.shape())));
        }
        let dt = self.dtype();
        let st = dispatch1(
            "swiglu",
            &[self, up],
            |x| Ok(run_float("swiglu", &SwigluFwd, x)?.remove(0).cast(dt)),
            |x| kernels::swiglu_fwd(x[0], x[1]),
        )?;
        let rule = SwigluBackward { gate: self.detach(), up: up.detach() };
        Tensor::from_op(st, self.shape().clone(), self.device(), &[self, up], rule)
    }
}

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let name = op.name();
    check_float(name, a)?;
    check_same_dtype(name, a, b)?;
    let out_shape = Shape::broadcast(a.shape(), b.shape(), name)?;
    let same = a.shape() == b.shape();
    let (sa, sb) = (a.shape().broadcast_strides(&out_shape), b.shape().broadcast_strides(&out_shape));
    let dt = a.dtype();
    let st = dispatch1(
        name,
        &[a, b],
        |x| {
            let k = Binary { op, out_dims: out_shape.dims(), a_strides: &sa, b_strides: &sb };
            Ok(run_float(name, &k, x)?.remove(0).cast(dt))
        },
        |x| kernels::binary(op, x[0], x[1], out_shape.dims(), (!same).then_some((&sa[..], &sb[..]))),
    )?;
    let rule = BinaryBackward {
        op,
        a: (op == BinaryOp::Mul).then(|| a.detach()),
        b: (op == BinaryOp::Mul).then(|| b.detach()),
        a_shape: a.shape().clone(),
        b_shape: b.shape().clone(),
    };
    Tensor::from_op(st, out_shape, a.device(), &[a, b], rule)
}

struct BinaryBackward {
    op: BinaryOp,
    a: Option<Tensor>,
    b: Option<Tensor>,
    a_shape: Shape,
    b_shape: Shape,
}
impl Backward for BinaryBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (ga, gb) = match self.op {
            BinaryOp::Add => (g.clone(), g.clone()),
            BinaryOp::Sub => (g.clone(), g.neg()?),
            BinaryOp::Mul => {
                let (a, b) = (self.a.as_ref().expect("saved"), self.b.as_ref().expect("saved"));
                (g.mul(b)?, g.mul(a)?)
            }
        };
        Ok(vec![Some(ga.sum_to(&self.a_shape)?), Some(gb.sum_to(&self.b_shape)?)])
    }
}

struct ScaleBackward(f64);
impl Backward for ScaleBackward {
    fn name(&self) -> &'static str {
        "scale"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.scale(self.0)?)])
    }
}

struct CastBackward(DType);
impl Backward for CastBackward {
    fn name(&self) -> &'static str {
        "to_dtype"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_dtype(self.0)?)])
    }
}

struct SwigluBackward {
    gate: Tensor,
    up: Tensor,
}
impl Backward for SwigluBackward {
    fn name(&self) -> &'static str {
        "swiglu"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dt = self.gate.dtype();
        let mut st = dispatch(
            "swiglu backward",
            &[g, &self.gate, &self.up],
            |x| Ok(run_float("swiglu backward", &SwigluBwd, x)?.into_iter().map(|s| s.cast(dt)).collect()),
            |x| {
                let (dg, du) = kernels::swiglu_bwd(x[0], x[1], x[2])?;
                Ok(vec![dg, du])
            },
        )?;
        let du = st.pop().expect("two outputs");
        let dg = st.pop().expect("two outputs");
        let (shape, dev) = (self.gate.shape().clone(), self.gate.device());
        Ok(vec![Some(Tensor::from_storage(dg, shape.clone(), dev)), Some(Tensor::from_storage(du, shape, dev))])
    }
}
