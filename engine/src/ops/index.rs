//! Embedding lookup (scatter-add backward) and per-row gather of one column (e.g. target log-probs).
use super::{check_float, check_i32, dispatch1};
use crate::autograd::Backward;
use crate::cpu::index::{EmbeddingBwd, EmbeddingFwd, GatherLast, ScatterLast};
use crate::cpu::storage::run_float;
use crate::cuda::kernels;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

impl Tensor {
    /// Rows of this table [vocab, dim] picked by `ids` (i32, any shape) → ids.shape + [dim].
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        check_float("embedding", self)?;
        check_i32("embedding", ids)?;
        if self.rank() != 2 {
            return Err(EngineError::shape("embedding", format!("table must be [vocab, dim], got {}", self.shape())));
        }
        let (vocab, dim) = (self.dims()[0], self.dims()[1]);
        let dt = self.dtype();
        let st = dispatch1(
            "embedding",
            &[self, ids],
            |x| {
                let k = EmbeddingFwd { ids: x[1].as_i32("embedding")?, dim, vocab };
                Ok(run_float("embedding", &k, &[x[0]])?.remove(0).cast(dt))
            },
            |x| kernels::embedding_fwd(x[0], x[1], dim, vocab),
        )?;
        let mut out = ids.dims().to_vec();
        out.push(dim);
        let rule = EmbeddingBackward { ids: ids.clone(), vocab, dim, dtype: dt };
        Tensor::from_op(st, Shape::new(out), self.device(), &[self, ids], rule)
    }

    /// out[r] = self[r, idx[r]] over the last dim: self [..., C], idx [...] (i32) → [...].
    pub fn gather_last(&self, idx: &Tensor) -> Result<Tensor> {
        check_float("gather_last", self)?;
        check_i32("gather_last", idx)?;
        let lead = &self.dims()[..self.rank().saturating_sub(1)];
        if self.rank() == 0 || idx.dims() != lead {
            return Err(EngineError::shape(
                "gather_last",
                format!("indices {} for input {}", idx.shape(), self.shape()),
            ));
        }
        let (rows, cols) = (self.shape().rows(), self.shape().last());
        let dt = self.dtype();
        let st = dispatch1(
            "gather_last",
            &[self, idx],
            |x| {
                let k = GatherLast { idx: x[1].as_i32("gather_last")?, cols };
                Ok(run_float("gather_last", &k, &[x[0]])?.remove(0).cast(dt))
            },
            |x| kernels::gather_last(x[0], x[1], rows, cols),
        )?;
        let rule = GatherBackward { idx: idx.clone(), shape: self.shape().clone() };
        Tensor::from_op(st, idx.shape().clone(), self.device(), &[self, idx], rule)
    }
}

struct EmbeddingBackward {
    ids: Tensor,
    vocab: usize,
    dim: usize,
    dtype: DType,
}
impl Backward for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (vocab, dim, dt) = (self.vocab, self.dim, self.dtype);
        let st = dispatch1(
            "embedding backward",
            &[g, &self.ids],
            |x| {
                let k = EmbeddingBwd { ids: x[1].as_i32("embedding")?, dim, vocab };
                Ok(run_float("embedding backward", &k, &[x[0]])?.remove(0).cast(dt))
            },
            |x| {
                let d = kernels::embedding_bwd(x[0], x[1], dim, vocab)?;
                if dt == DType::F32 {
                    Ok(d)
                } else {
                    kernels::cast(&d, dt)
                }
            },
        )?;
        let dtable = Tensor::from_storage(st, Shape::new([vocab, dim]), g.device());
        Ok(vec![Some(dtable), None])
    }
}

struct GatherBackward {
    idx: Tensor,
    shape: Shape,
}
impl Backward for GatherBackward {
    fn name(&self) -> &'static str {
        "gather_last"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (rows, cols) = (self.shape.rows(), self.shape.last());
        let dt = g.dtype();
        let st = dispatch1(
            "gather_last backward",
            &[g, &self.idx],
            |x| {
                let k = ScatterLast { idx: x[1].as_i32("gather_last")?, cols };
                Ok(run_float("gather_last backward", &k, &[x[0]])?.remove(0).cast(dt))
            },
            |x| kernels::scatter_last(x[0], x[1], rows, cols),
        )?;
        Ok(vec![Some(Tensor::from_storage(st, self.shape.clone(), g.device())), None])
    }
}
