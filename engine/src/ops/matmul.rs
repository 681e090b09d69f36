//! Matrix products: C = op(A)·op(B), optionally batched (leading dims), with either operand broadcast
//! over the batch when it is 2-D. GPU: cuBLAS with f32 accumulation. CPU: matrixmultiply.
use super::{check_float, check_same_dtype, dispatch1};
use crate::autograd::Backward;
use crate::cpu::matmul::Gemm;
use crate::cpu::storage::run_float;
use crate::cuda::gemm::gemm;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::storage::CudaStorage;
use crate::tensor::Tensor;

/// Which operands are transposed (op(X) = Xᵀ over the last two dims).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulSpec {
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Tensor {
    /// self @ other
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.matmul_ex(other, MatmulSpec::default())
    }
    /// Linear layer without bias: x[..., in] · w[out, in]ᵀ → [..., out].
    pub fn linear(&self, w: &Tensor) -> Result<Tensor> {
        if w.rank() != 2 {
            return Err(EngineError::shape("linear", format!("weight must be [out, in], got {}", w.shape())));
        }
        let lead = &self.dims()[..self.rank().saturating_sub(1)];
        let x2 = self.reshape([self.shape().rows(), self.shape().last()])?;
        let y = x2.matmul_ex(w, MatmulSpec { trans_a: false, trans_b: true })?;
        let mut out = lead.to_vec();
        out.push(w.dims()[0]);
        y.reshape(out)
    }
    /// op(self) @ op(other) with explicit transposes.
    pub fn matmul_ex(&self, other: &Tensor, spec: MatmulSpec) -> Result<Tensor> {
        check_float("matmul", self)?;
        check_same_dtype("matmul", self, other)?;
        let plan = plan(self.shape(), other.shape(), spec)?;
        let g = plan.gemm;
        let dt = self.dtype();
        let st = dispatch1(
            "matmul",
            &[self, other],
            |x| Ok(run_float("matmul", &g, x)?.remove(0).cast(dt)),
            |x| {
                let c = CudaStorage::alloc(&x[0].device, dt, g.batch * g.m * g.n)?;
                gemm(&x[0].device, dt, &g, x[0].ptr(), x[1].ptr(), c.ptr())?;
                Ok(c)
            },
        )?;
        let rule = MatmulBackward { a: self.detach(), b: other.detach(), spec };
        Tensor::from_op(st, plan.out, self.device(), &[self, other], rule)
    }
}

struct Plan {
    gemm: Gemm,
    out: Shape,
}

fn plan(a: &Shape, b: &Shape, spec: MatmulSpec) -> Result<Plan> {
    if a.rank() < 2 || b.rank() < 2 {
        return Err(EngineError::shape("matmul", format!("operands need rank >= 2, got {a} and {b}")));
    }
    let mat = |s: &Shape, t: bool| {
        let (r, c) = (s.dims()[s.rank() - 2], s.dims()[s.rank() - 1]);
        if t {
            (c, r)
        } else {
            (r, c)
        }
    };
    let (m, k) = mat(a, spec.trans_a);
    let (k2, n) = mat(b, spec.trans_b);
    if k != k2 {
        return Err(EngineError::shape(
            "matmul",
            format!("inner dimensions differ: {a}{} · {b}{} ({k} vs {k2})", t(spec.trans_a), t(spec.trans_b)),
        ));
    }
    let (la, lb) = (&a.dims()[..a.rank() - 2], &b.dims()[..b.rank() - 2]);
    let (ba, bb): (usize, usize) = (la.iter().product(), lb.iter().product());
    let lead = match (la.is_empty(), lb.is_empty()) {
        (_, true) => la.to_vec(),
        (true, false) => lb.to_vec(),
        (false, false) if la == lb => la.to_vec(),
        _ => return Err(EngineError::shape("matmul", format!("batch dims differ: {a} vs {b}"))),
    };
    let batch = ba.max(bb);
    let gemm = Gemm {
        batch,
        m,
        n,
        k,
        trans_a: spec.trans_a,
        trans_b: spec.trans_b,
        stride_a: if la.is_empty() { 0 } else { m * k },
        stride_b: if lb.is_empty() { 0 } else { k * n },
    };
    let mut out = lead;
    out.extend([m, n]);
    Ok(Plan { gemm, out: Shape::new(out) })
}

fn t(x: bool) -> &'static str {
    if x {
        "ᵀ"
    } else {
        ""
    }
}

struct MatmulBackward {
    a: Tensor,
    b: Tensor,
    spec: MatmulSpec,
}

impl Backward for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&self.a, &self.b);
        let s = |trans_a, trans_b| MatmulSpec { trans_a, trans_b };
        // C = op(A)·op(B); see the table in ARCHITECTURE.md ("matmul backward").
        let (da, db) = match (self.spec.trans_a, self.spec.trans_b) {
            (false, false) => (g.matmul_ex(b, s(false, true))?, a.matmul_ex(g, s(true, false))?),
            (false, true) => (g.matmul_ex(b, s(false, false))?, g.matmul_ex(a, s(true, false))?),
            (true, false) => (b.matmul_ex(g, s(false, true))?, a.matmul_ex(g, s(false, false))?),
            (true, true) => (b.matmul_ex(g, s(true, true))?, g.matmul_ex(a, s(true, true))?),
        };
        // An operand broadcast over the batch gets the sum of its per-batch gradients.
        let fold = |d: Tensor, shape: &Shape| -> Result<Tensor> {
            if d.shape() == shape {
                return Ok(d);
            }
            let lead: Vec<usize> = (0..d.rank() - 2).collect();
            d.sum_dims(&lead, false)
        };
        Ok(vec![Some(fold(da, a.shape())?), Some(fold(db, b.shape())?)])
    }
}
