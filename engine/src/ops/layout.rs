//! reshape (shares storage), permute / transpose (materialise a strided copy).
use super::dispatch1;
use crate::autograd::Backward;
use crate::cpu::elementwise::{copy_strided, CopyStrided};
use crate::cpu::storage::run_float;
use crate::cpu::CpuStorage;
use crate::cuda::kernels;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

impl Tensor {
    /// Same data under another shape with the same number of elements (no copy).
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(EngineError::shape("reshape", format!("{} -> {}", self.shape(), shape)));
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let out = self.view_as(shape);
        Tensor::from_op_output(out, &[self], ReshapeBackward(self.shape().clone()))
    }

    /// Reorder dimensions: output dim i is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
            return Err(EngineError::shape("permute", format!("{perm:?} is not a permutation of {r} dims")));
        }
        let strides = self.shape().strides();
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims()[p]).collect();
        let in_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        let st = dispatch1(
            "permute",
            &[self],
            |x| match x[0] {
                CpuStorage::I32(v) => Ok(CpuStorage::I32(copy_strided(v, &dims, &in_strides))),
                s => {
                    let k = CopyStrided { dims: &dims, strides: &in_strides };
                    Ok(run_float("permute", &k, &[s])?.remove(0).cast(s.dtype()))
                }
            },
            |x| kernels::copy_strided(x[0], &dims, &in_strides),
        )?;
        let mut inv = vec![0; r];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        Tensor::from_op(st, Shape::new(dims), self.device(), &[self], PermuteBackward(inv))
    }

    /// Swap two dimensions.
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        if d0 >= perm.len() || d1 >= perm.len() {
            return Err(EngineError::shape("transpose", format!("dims ({d0}, {d1}) for {}", self.shape())));
        }
        perm.swap(d0, d1);
        self.permute(&perm)
    }
}

struct ReshapeBackward(Shape);
impl Backward for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(self.0.clone())?)])
    }
}

struct PermuteBackward(Vec<usize>);
impl Backward for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.permute(&self.0)?)])
    }
}
