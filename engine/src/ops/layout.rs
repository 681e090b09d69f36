//! reshape (shares storage), permute / transpose (materialise a strided copy), split_last (contiguous parts
//! of the last dimension, e.g. q/k/v out of one fused projection).
use super::dispatch1;
use crate::autograd::Backward;
use crate::cpu::elementwise::{copy_strided, CopyStrided};
use crate::cpu::storage::run_float;
use crate::cpu::CpuStorage;
use crate::cuda::kernels;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::storage::{CudaStorage, Storage};
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};

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
    /// self[..., off_j .. off_j + sizes[j]] as a new tensor. Backward concatenates the parts' gradients
    /// along the last dimension into the gradient of `self`, with zeros for a part that received none.
    pub fn split_last(&self, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let cols = if self.rank() == 0 { 0 } else { self.shape().last() };
        if self.rank() == 0 || sizes.is_empty() || sizes.iter().sum::<usize>() != cols {
            return Err(EngineError::shape(
                "split_last",
                format!("parts {sizes:?} do not add up to the last dimension of {}", self.shape()),
            ));
        }
        let rows = self.shape().rows();
        // The tape's rules take one output gradient each, so the parts hang off one shared node (`joint`,
        // a one-element stand-in recorded on `self`): each part's rule leaves its gradient in `slots` and
        // hands `joint` a zero, and `joint`'s rule, later on the tape than none of the parts, concatenates.
        let slots: Arc<Mutex<Vec<Option<Tensor>>>> = Arc::new(Mutex::new(vec![None; sizes.len()]));
        let joint = if Tensor::would_record(&[self]) {
            let stub = Tensor::zeros([1], self.dtype(), self.device())?;
            let rule = SplitJoin { slots: slots.clone(), sizes: sizes.to_vec(), rows, shape: self.shape().clone() };
            Some(Tensor::from_op_output(stub, &[self], rule)?)
        } else {
            None
        };
        let mut parts = Vec::with_capacity(sizes.len());
        let mut off = 0;
        for (j, &w) in sizes.iter().enumerate() {
            let (dims, strides) = ([rows, w], [cols, 1]);
            let st = dispatch1(
                "split_last",
                &[self],
                |x| Ok(narrow_cpu(x[0], off, &dims, &strides)),
                |x| kernels::copy_strided_at(x[0], off, &dims, &strides),
            )?;
            let mut shape = self.dims().to_vec();
            *shape.last_mut().expect("rank checked above") = w;
            let part = Tensor::from_storage(st, Shape::new(shape), self.device());
            parts.push(match &joint {
                Some(joint) => {
                    let rule = SplitPart {
                        slots: slots.clone(),
                        index: j,
                        dtype: joint.dtype(),
                        device: joint.device().clone(),
                    };
                    Tensor::from_op_output(part, &[joint], rule)?
                }
                None => part,
            });
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

/// The CPU reference of `place_cols`: part [rows, w] (None = zeros) into columns off .. off + w of out.
fn place_cols_cpu<T: Copy>(out: &mut [T], part: Option<&[T]>, rows: usize, cols: usize, off: usize, w: usize) {
    let Some(part) = part else { return };
    for r in 0..rows {
        out[r * cols + off..r * cols + off + w].copy_from_slice(&part[r * w..(r + 1) * w]);
    }
}

/// [rows, Σ sizes] from the parts [rows, sizes[j]] side by side (None = zeros), on the CPU.
fn concat_last_cpu<T: Copy>(parts: &[Option<&[T]>], zero: T, rows: usize, sizes: &[usize]) -> Vec<T> {
    let cols: usize = sizes.iter().sum();
    let mut out = vec![zero; rows * cols];
    let mut off = 0;
    for (p, &w) in parts.iter().zip(sizes) {
        place_cols_cpu(&mut out, *p, rows, cols, off, w);
        off += w;
    }
    out
}

/// The rule of one part of [`Tensor::split_last`]: keeps the part's gradient for [`SplitJoin`].
struct SplitPart {
    slots: Arc<Mutex<Vec<Option<Tensor>>>>,
    index: usize,
    /// The shared node's dtype and device (its gradient is a zero of one element).
    dtype: DType,
    device: Device,
}
impl Backward for SplitPart {
    fn name(&self) -> &'static str {
        "split_last part"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())[self.index] = Some(g.clone());
        Ok(vec![Some(Tensor::zeros([1], self.dtype, &self.device)?)])
    }
}

/// The rule of [`Tensor::split_last`]'s input: the parts' gradients concatenated along the last dimension.
struct SplitJoin {
    slots: Arc<Mutex<Vec<Option<Tensor>>>>,
    sizes: Vec<usize>,
    rows: usize,
    shape: Shape,
}
impl Backward for SplitJoin {
    fn name(&self) -> &'static str {
        "split_last"
    }
    fn backward(&self, _: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let grads: Vec<Option<Tensor>> =
            std::mem::replace(&mut *self.slots.lock().unwrap_or_else(|e| e.into_inner()), vec![None; self.sizes.len()]);
        let Some(first) = grads.iter().flatten().next().cloned() else {
            return Ok(vec![None]);
        };
        // every part's gradient in one dtype (the tape hands each part's gradient in the part's dtype)
        let grads = grads
            .into_iter()
            .map(|g| g.map(|g| if g.dtype() == first.dtype() { Ok(g) } else { g.to_dtype(first.dtype()) }).transpose())
            .collect::<Result<Vec<_>>>()?;
        let (rows, sizes) = (self.rows, &self.sizes);
        let cols: usize = sizes.iter().sum();
        let guards: Vec<_> = grads.iter().map(|g| g.as_ref().map(|g| g.storage())).collect();
        let st = if first.device().is_cuda() {
            let parts: Vec<Option<&CudaStorage>> = guards
                .iter()
                .map(|g| match g.as_deref() {
                    Some(Storage::Cuda(s)) => Ok(Some(s)),
                    Some(Storage::Cpu(_)) => Err(EngineError::invalid("split_last", "part gradients on two devices")),
                    None => Ok(None),
                })
                .collect::<Result<_>>()?;
            let dev = first.device().as_cuda().ok_or_else(|| EngineError::invalid("split_last", "no CUDA device"))?;
            let out = if parts.iter().all(Option::is_some) {
                CudaStorage::alloc(dev, first.dtype(), rows * cols)?
            } else {
                CudaStorage::zeros(dev, first.dtype(), rows * cols)?
            };
            let mut off = 0;
            for (p, &w) in parts.iter().zip(sizes) {
                if let Some(p) = p {
                    kernels::place_cols(&out, p, rows, w, cols, off)?;
                }
                off += w;
            }
            Storage::Cuda(out)
        } else {
            let parts: Vec<Option<&CpuStorage>> = guards
                .iter()
                .map(|g| match g.as_deref() {
                    Some(Storage::Cpu(s)) => Ok(Some(s)),
                    Some(Storage::Cuda(_)) => Err(EngineError::invalid("split_last", "part gradients on two devices")),
                    None => Ok(None),
                })
                .collect::<Result<_>>()?;
            macro_rules! cat {
                ($variant:ident, $zero:expr) => {{
                    let vs = parts
                        .iter()
                        .map(|p| match p {
                            Some(CpuStorage::$variant(v)) => Ok(Some(v.as_slice())),
                            Some(other) => Err(EngineError::invalid("split_last", format!("a {} part", other.dtype()))),
                            None => Ok(None),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    CpuStorage::$variant(concat_last_cpu(&vs, $zero, rows, sizes))
                }};
            }
            Storage::Cpu(match first.dtype() {
                DType::F32 => cat!(F32, 0.0),
                DType::F64 => cat!(F64, 0.0),
                DType::BF16 => cat!(BF16, half::bf16::ZERO),
                DType::I32 => cat!(I32, 0),
            })
        };
        drop(guards);
        Ok(vec![Some(Tensor::from_storage(st, self.shape.clone(), first.device()))])
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
