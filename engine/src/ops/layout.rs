//! reshape (shares storage), permute / transpose (materialise a strided copy), split_last (contiguous parts
//! of the last dimension, e.g. q/k/v out of one fused projection).
use super::dispatch1;
use crate::autograd::Backward;
use crate::cpu::elementwise::{copy_strided, CopyStrided};
use crate::cpu::storage::run_float;
use crate::cpu::CpuStorage;
use crate::cuda::kernels;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::storage::CudaStorage;
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

    /// Split the last dimension into contiguous parts of `sizes` columns (which must sum to it): part j is
    /// self[..., off_j .. off_j + sizes[j]] as a new tensor. The backward of part j places its gradient in
    /// its columns of a zero gradient for `self`; the tape sums the parts' contributions, so the gradient of
    /// `self` is the parts' gradients side by side, with zeros for a part that received none.
    pub fn split_last(&self, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let cols = if self.rank() == 0 { 0 } else { self.shape().last() };
        if self.rank() == 0 || sizes.iter().sum::<usize>() != cols || sizes.is_empty() {
            return Err(EngineError::shape(
                "split_last",
                format!("parts {sizes:?} do not add up to the last dimension of {}", self.shape()),
            ));
        }
        let rows = self.shape().rows();
        let mut parts = Vec::with_capacity(sizes.len());
        let mut off = 0;
        for &w in sizes {
            let (dims, strides) = ([rows, w], [cols, 1]);
            let st = dispatch1(
                "split_last",
                &[self],
                |x| Ok(narrow_cpu(x[0], off, &dims, &strides)),
                |x| kernels::copy_strided_at(x[0], off, &dims, &strides),
            )?;
            let mut shape = self.dims().to_vec();
            *shape.last_mut().expect("rank checked above") = w;
            let rule = SplitLastBackward { rows, cols, off, width: w };
            parts.push(Tensor::from_op(st, Shape::new(shape), self.device(), &[self], rule)?);
            off += w;
        }
        Ok(parts)
    }
}

/// x[off + off(i)] for the output index i over `dims` with input `strides` (any storage type).
fn narrow_cpu(x: &CpuStorage, off: usize, dims: &[usize], strides: &[usize]) -> CpuStorage {
    match x {
        CpuStorage::F32(v) => CpuStorage::F32(copy_strided(&v[off..], dims, strides)),
        CpuStorage::F64(v) => CpuStorage::F64(copy_strided(&v[off..], dims, strides)),
        CpuStorage::BF16(v) => CpuStorage::BF16(copy_strided(&v[off..], dims, strides)),
        CpuStorage::I32(v) => CpuStorage::I32(copy_strided(&v[off..], dims, strides)),
    }
}

/// [rows, cols] zeros holding g [rows, width] in columns off .. off + width.
fn pad_last_cpu<T: Copy>(g: &[T], zero: T, rows: usize, cols: usize, off: usize, width: usize) -> Vec<T> {
    let mut out = vec![zero; rows * cols];
    for (dst, src) in out.chunks_exact_mut(cols).zip(g.chunks_exact(width.max(1))) {
        dst[off..off + width].copy_from_slice(&src[..width]);
    }
    out
}

/// The CUDA form of [`pad_last_cpu`] from the existing strided-copy kernel and a device copy: gᵀ [width,
/// rows] lands in rows off .. off + width of a zeroed [cols, rows] buffer, which is transposed back.
fn pad_last_cuda(g: &CudaStorage, rows: usize, cols: usize, off: usize, width: usize) -> Result<CudaStorage> {
    let gt = kernels::copy_strided(g, &[width, rows], &[1, width])?;
    let buf = CudaStorage::zeros(g.device(), g.dtype(), cols * rows)?;
    buf.copy_range_from(off * rows, &gt, 0, width * rows)?;
    kernels::copy_strided(&buf, &[rows, cols], &[1, rows])
}

struct SplitLastBackward {
    rows: usize,
    cols: usize,
    off: usize,
    width: usize,
}
impl Backward for SplitLastBackward {
    fn name(&self) -> &'static str {
        "split_last"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let Self { rows, cols, off, width } = *self;
        let st = dispatch1(
            "split_last backward",
            &[g],
            |x| {
                Ok(match x[0] {
                    CpuStorage::F32(v) => CpuStorage::F32(pad_last_cpu(v, 0.0, rows, cols, off, width)),
                    CpuStorage::F64(v) => CpuStorage::F64(pad_last_cpu(v, 0.0, rows, cols, off, width)),
                    CpuStorage::BF16(v) => CpuStorage::BF16(pad_last_cpu(v, half::bf16::ZERO, rows, cols, off, width)),
                    CpuStorage::I32(v) => CpuStorage::I32(pad_last_cpu(v, 0, rows, cols, off, width)),
                })
            },
            |x| pad_last_cuda(x[0], rows, cols, off, width),
        )?;
        let mut shape = g.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = cols;
        }
        Ok(vec![Some(Tensor::from_storage(st, Shape::new(shape), g.device()))])
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
