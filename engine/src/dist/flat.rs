//! Parameters as one flat vector, padded to a multiple of the world size so rank r owns the contiguous
//! shard [r·k, (r+1)·k) (ZeRO-2's layout): gradients are packed into it before the reduce-scatter and the
//! updated parameters unpacked from it after the all-gather.
use crate::cpu::CpuStorage;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::storage::{CudaStorage, Storage};
use crate::tensor::Tensor;
use crate::Device;
use std::ops::Range;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatLayout {
    /// (offset, numel) of every parameter, in order.
    pub spans: Vec<(usize, usize)>,
    pub total: usize,
    /// total rounded up to a multiple of world.
    pub padded: usize,
    pub world: usize,
}

impl FlatLayout {
    pub fn new(params: &[Tensor], world: usize) -> Self {
        let mut spans = Vec::with_capacity(params.len());
        let mut off = 0;
        for p in params {
            spans.push((off, p.numel()));
            off += p.numel();
        }
        let world = world.max(1);
        Self { spans, total: off, padded: off.div_ceil(world) * world, world }
    }

    pub fn shard_len(&self) -> usize {
        self.padded / self.world
    }

    pub fn shard(&self, rank: usize) -> Range<usize> {
        let k = self.shard_len();
        rank * k..(rank + 1) * k
    }

    /// Concatenate `tensors` (None = zeros) into one flat [padded] tensor of `dtype` on `device`.
    pub fn pack(&self, tensors: &[Option<Tensor>], dtype: DType, device: &Device) -> Result<Tensor> {
        if tensors.len() != self.spans.len() {
            return Err(EngineError::invalid(
                "flat pack",
                format!("{} tensors for {}", tensors.len(), self.spans.len()),
            ));
        }
        let flat = Tensor::zeros([self.padded], dtype, device)?;
        for (t, &(off, n)) in tensors.iter().zip(&self.spans) {
            if let Some(t) = t {
                if t.numel() != n {
                    return Err(EngineError::shape(
                        "flat pack",
                        format!("{} where {n} elements were laid out", t.shape()),
                    ));
                }
                write_at(&flat, off, &t.to_dtype(dtype)?.to_device(device)?)?;
            }
        }
        Ok(flat)
    }

    /// Copy each parameter's span of `flat` into it (cast to the parameter's dtype).
    pub fn unpack_into(&self, flat: &Tensor, params: &[Tensor]) -> Result<()> {
        for (p, &(off, n)) in params.iter().zip(&self.spans) {
            let part = slice(flat, off, n)?.reshape(p.shape().clone())?;
            p.copy_from(&part.to_dtype(p.dtype())?.to_device(p.device())?)?;
        }
        Ok(())
    }
}

/// Elements [start, start+len) of a 1-D tensor as a new tensor.
pub fn slice(t: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    if start + len > t.numel() {
        return Err(EngineError::shape("flat slice", format!("[{start}, {}) of {}", start + len, t.shape())));
    }
    let st = match &*t.storage() {
        Storage::Cpu(s) => Storage::Cpu(match s {
            CpuStorage::F32(v) => CpuStorage::F32(v[start..start + len].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[start..start + len].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[start..start + len].to_vec()),
            CpuStorage::I32(v) => CpuStorage::I32(v[start..start + len].to_vec()),
        }),
        Storage::Cuda(s) => {
            let out = CudaStorage::alloc(s.device(), s.dtype(), len)?;
            out.copy_range_from(0, s, start, len)?;
            Storage::Cuda(out)
        }
    };
    Ok(Tensor::from_storage(st, Shape::new([len]), t.device()))
}

/// dst[off .. off+src.numel()] = src (same dtype and device).
pub fn write_at(dst: &Tensor, off: usize, src: &Tensor) -> Result<()> {
    let n = src.numel();
    if src.dtype() != dst.dtype() || off + n > dst.numel() {
        return Err(EngineError::invalid("flat write", format!("{src:?} at {off} into {dst:?}")));
    }
    let src_guard = src.storage();
    let mut dst_guard = dst.storage_mut();
    match (&mut *dst_guard, &*src_guard) {
        (Storage::Cpu(d), Storage::Cpu(s)) => match (d, s) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => d[off..off + n].copy_from_slice(s),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => d[off..off + n].copy_from_slice(s),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => d[off..off + n].copy_from_slice(s),
            (CpuStorage::I32(d), CpuStorage::I32(s)) => d[off..off + n].copy_from_slice(s),
            _ => unreachable!("dtypes checked above"),
        },
        (Storage::Cuda(d), Storage::Cuda(s)) => d.copy_range_from(off, s, 0, n)?,
        _ => return Err(EngineError::invalid("flat write", "source and destination on different devices")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_shard_unpack_round_trip() {
        let dev = Device::Cpu;
        let a = Tensor::from_f64(&[1., 2., 3., 4., 5., 6.], [2, 3], DType::F32, &dev).unwrap();
        let b = Tensor::from_f64(&[7.], [1], DType::BF16, &dev).unwrap();
        let l = FlatLayout::new(&[a.clone(), b.clone()], 4);
        assert_eq!((l.total, l.padded, l.shard_len(), l.shard(3)), (7, 8, 2, 6..8));
        let flat = l.pack(&[Some(a.clone()), None], DType::F32, &dev).unwrap();
        assert_eq!(flat.to_vec_f64().unwrap(), vec![1., 2., 3., 4., 5., 6., 0., 0.]);
        let flat = l.pack(&[Some(a.clone()), Some(b.clone())], DType::F32, &dev).unwrap();
        let doubled = Tensor::from_f64(
            &flat.to_vec_f64().unwrap().iter().map(|x| 2.0 * x).collect::<Vec<_>>(),
            [8],
            DType::F32,
            &dev,
        )
        .unwrap();
        l.unpack_into(&doubled, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(a.to_vec_f64().unwrap(), vec![2., 4., 6., 8., 10., 12.]);
        assert_eq!((b.dtype(), b.to_vec_f64().unwrap()), (DType::BF16, vec![14.]));
        assert_eq!(slice(&doubled, 6, 2).unwrap().to_vec_f64().unwrap(), vec![14., 0.]);
    }
}
