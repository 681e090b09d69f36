//! sum / mean over all elements or chosen dimensions, and `sum_to` (the backward of broadcasting).
use super::{check_float, dispatch1};
use crate::autograd::Backward;
use crate::cpu::reduce::ReduceSum;
use crate::cpu::storage::run_float;
use crate::cuda::kernels;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

impl Tensor {
    /// Sum of all elements (a scalar tensor).
    pub fn sum(&self) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.reduce(&all, false, 1.0)
    }
    /// Mean of all elements.
    pub fn mean(&self) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.reduce(&all, false, 1.0 / self.numel().max(1) as f64)
    }
    /// Sum over `dims`; `keepdim` keeps them as size 1.
    pub fn sum_dims(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(dims, keepdim, 1.0)
    }
    pub fn mean_dims(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let n: usize = dims.iter().map(|&d| self.dims().get(d).copied().unwrap_or(1)).product();
        self.reduce(dims, keepdim, 1.0 / n.max(1) as f64)
    }

    /// Sum this tensor down to `shape`, which must broadcast to `self.shape()` (reverses broadcasting).
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let b = Shape::broadcast(shape, self.shape(), "sum_to")?;
        if &b != self.shape() {
            return Err(EngineError::shape("sum_to", format!("{} does not broadcast to {}", shape, self.shape())));
        }
        let off = self.rank() - shape.rank();
        let dims: Vec<usize> =
            (0..self.rank()).filter(|&i| i < off || (shape.dims()[i - off] == 1 && self.dims()[i] != 1)).collect();
        self.reduce(&dims, true, 1.0)?.reshape(shape.clone())
    }

    fn reduce(&self, dims: &[usize], keepdim: bool, scale: f64) -> Result<Tensor> {
        check_float("sum", self)?;
        let r = self.rank();
        let mut is_red = vec![false; r];
        for &d in dims {
            if d >= r {
                return Err(EngineError::shape("sum", format!("dimension {d} out of range for {}", self.shape())));
            }
            is_red[d] = true;
        }
        let strides = self.shape().strides();
        let (mut od, mut os, mut rd, mut rs, mut out_shape) = (vec![], vec![], vec![], vec![], vec![]);
        for i in 0..r {
            if is_red[i] {
                rd.push(self.dims()[i]);
                rs.push(strides[i]);
                if keepdim {
                    out_shape.push(1);
                }
            } else {
                od.push(self.dims()[i]);
                os.push(strides[i]);
                out_shape.push(self.dims()[i]);
            }
        }
        let dt = self.dtype();
        let st = dispatch1(
            "sum",
            &[self],
            |x| {
                let k = ReduceSum { out_dims: &od, out_strides: &os, red_dims: &rd, red_strides: &rs, scale };
                Ok(run_float("sum", &k, x)?.remove(0).cast(dt))
            },
            |x| kernels::reduce_sum(x[0], &od, &os, &rd, &rs, scale),
        )?;
        // Backward: broadcast g (with reduced dims restored as 1) back to the input shape, times scale.
        let kept: Vec<usize> = (0..r).map(|i| if is_red[i] { 1 } else { self.dims()[i] }).collect();
        let rule = ReduceBackward { kept: Shape::new(kept), input: self.shape().clone(), scale };
        Tensor::from_op(st, Shape::new(out_shape), self.device(), &[self], rule)
    }

    /// `self` broadcast (materialised) to `shape`.
    pub fn broadcast_to(&self, shape: &Shape) -> Result<Tensor> {
        let zeros = Tensor::zeros(shape.clone(), self.dtype(), self.device())?;
        zeros.add(self)
    }
}

struct ReduceBackward {
    kept: Shape,
    input: Shape,
    scale: f64,
}
impl Backward for ReduceBackward {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g = g.reshape(self.kept.clone())?.broadcast_to(&self.input)?;
        Ok(vec![Some(if self.scale == 1.0 { g } else { g.scale(self.scale)? })])
    }
}
