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
    pub world: usize,
    /// Elements each rank owns per bucket (k); a bucket covers world·k flat elements.
    pub bucket: usize,
    pub buckets: usize,
}

/// Flat elements per bucket over all ranks (256 MB of f32 gradients in flight at a time).
pub const BUCKET_ELEMENTS: usize = 64 << 20;

impl FlatLayout {
    /// The layout of `params` over `world` ranks in buckets of about `bucket_elements` flat elements.
    pub fn new(params: &[Tensor], world: usize, bucket_elements: usize) -> Self {
        let mut spans = Vec::with_capacity(params.len());
        let mut off = 0;
        for p in params {
            spans.push((off, p.numel()));
            off += p.numel();
        }
        let world = world.max(1);
        let bucket = bucket_elements.div_ceil(world).clamp(1, off.div_ceil(world).max(1));
        Self { spans, total: off, world, bucket, buckets: off.div_ceil(world * bucket).max(1) }
    }

    /// Elements of one rank's shard: its k-element piece of every bucket, concatenated.
    pub fn shard_len(&self) -> usize {
        self.buckets * self.bucket
    }

    /// Flat index range of bucket `j` (may run past `total`: padding).
    pub fn bucket_range(&self, j: usize) -> Range<usize> {
        let w = self.world * self.bucket;
        j * w..(j + 1) * w
    }

    /// Parameters (index, own offset, flat range) overlapping `range`.
    fn overlaps(&self, range: &Range<usize>) -> impl Iterator<Item = (usize, usize, Range<usize>)> + '_ {
        let r = range.clone();
        self.spans.iter().enumerate().filter_map(move |(i, &(off, n))| {
            let (a, b) = (off.max(r.start), (off + n).min(r.end));
            (a < b).then(|| (i, a - off, a..b))
        })
    }

    /// The flat elements `range` of `tensors` (None = zeros) as one [range.len()] tensor of `dtype`.
    pub fn pack_range(
        &self,
        tensors: &[Option<Tensor>],
        range: Range<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if tensors.len() != self.spans.len() {
            return Err(EngineError::invalid(
                "flat pack",
                format!("{} tensors for {}", tensors.len(), self.spans.len()),
            ));
        }
        let buf = Tensor::zeros([range.len()], dtype, device)?;
        for (i, own, flat) in self.overlaps(&range) {
            if let Some(t) = &tensors[i] {
                if t.numel() != self.spans[i].1 {
                    return Err(EngineError::shape(
                        "flat pack",
                        format!("{} where {} elements were laid out", t.shape(), self.spans[i].1),
                    ));
                }
                let at = flat.start - range.start;
                if t.dtype() == dtype && t.device().same(device) {
                    copy_range(&buf, at, t, own, flat.len())?; // the hot path (f32 gradients): one copy
                } else {
                    // bf16 gradients (`GradStorage::Bf16`) and parameters: the slice is cast into the bucket
                    write_at(&buf, at, &slice(&t.to_device(device)?, own, flat.len())?.to_dtype(dtype)?)?;
                }
            }
        }
        Ok(buf)
    }

    /// Write `src` (the flat elements `range`, in the parameters' dtype) into the parameters, in place.
    pub fn unpack_range(&self, src: &Tensor, range: Range<usize>, params: &[Tensor]) -> Result<()> {
        for (i, own, flat) in self.overlaps(&range) {
            let (p, at) = (&params[i], flat.start - range.start);
            if src.dtype() == p.dtype() && src.device().same(p.device()) {
                copy_range(p, own, src, at, flat.len())?;
            } else {
                write_at(p, own, &slice(src, at, flat.len())?.to_dtype(p.dtype())?.to_device(p.device())?)?;
            }
        }
        Ok(())
    }

    /// Indices of the parameters whose last element lies in bucket `j` (their gradients are done with
    /// once that bucket is packed).
    pub fn ending_in(&self, j: usize) -> impl Iterator<Item = usize> + '_ {
        let r = self.bucket_range(j);
        self.spans.iter().enumerate().filter(move |(_, &(off, n))| r.contains(&((off + n).max(1) - 1))).map(|(i, _)| i)
    }
}

/// This rank's shard of Σ_ranks `grads` in `layout`, bucket by bucket, without touching `grads`: bucket
/// j's flat elements are packed in f32, reduce-scattered (all ranks call this together) and this rank's
/// k-element piece is handed to `piece(j, piece)`. With no communicator (`layout.world` = 1) the piece is
/// the packed bucket itself. Only one bucket and one piece are in flight at a time.
pub fn reduce_scatter_pieces(
    grads: &[Option<Tensor>],
    layout: &FlatLayout,
    comm: Option<&dyn super::Communicator>,
    device: &Device,
    mut piece: impl FnMut(usize, Tensor) -> Result<()>,
) -> Result<()> {
    let world = comm.map_or(1, |c| c.world_size());
    if world != layout.world {
        return Err(EngineError::invalid(
            "reduce_scatter_pieces",
            format!("a layout over {} ranks in a group of {world}", layout.world),
        ));
    }
    for j in 0..layout.buckets {
        let bucket = layout.pack_range(grads, layout.bucket_range(j), DType::F32, device)?;
        match comm {
            None => piece(j, bucket)?,
            Some(c) => {
                let out = Tensor::zeros([layout.bucket], DType::F32, device)?;
                c.reduce_scatter_sum(&bucket, &out)?;
                piece(j, out)?;
            }
        }
    }
    Ok(())
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
    copy_range(dst, off, src, 0, src.numel())
}

/// dst[dst_off .. dst_off+n] = src[src_off .. src_off+n], element ranges of the storages (any shapes; same
/// dtype and device; two distinct tensors).
pub fn copy_range(dst: &Tensor, dst_off: usize, src: &Tensor, src_off: usize, n: usize) -> Result<()> {
    if src.dtype() != dst.dtype() || dst_off + n > dst.numel() || src_off + n > src.numel() || dst.shares_storage(src) {
        return Err(EngineError::invalid(
            "flat copy",
            format!("{n} elements of {src:?}+{src_off} into {dst:?}+{dst_off}"),
        ));
    }
    let src_guard = src.storage();
    let mut dst_guard = dst.storage_mut();
    let (a, b) = (src_off, src_off + n);
    match (&mut *dst_guard, &*src_guard) {
        (Storage::Cpu(d), Storage::Cpu(s)) => match (d, s) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => d[dst_off..dst_off + n].copy_from_slice(&s[a..b]),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => d[dst_off..dst_off + n].copy_from_slice(&s[a..b]),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => d[dst_off..dst_off + n].copy_from_slice(&s[a..b]),
            (CpuStorage::I32(d), CpuStorage::I32(s)) => d[dst_off..dst_off + n].copy_from_slice(&s[a..b]),
            _ => unreachable!("dtypes checked above"),
        },
        (Storage::Cuda(d), Storage::Cuda(s)) => d.copy_range_from(dst_off, s, src_off, n)?,
        _ => return Err(EngineError::invalid("flat copy", "source and destination on different devices")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_flat_vector() {
        let dev = Device::Cpu;
        let a = Tensor::from_f64(&[1., 2., 3., 4., 5., 6.], [2, 3], DType::F32, &dev).unwrap();
        let b = Tensor::from_f64(&[7.], [1], DType::BF16, &dev).unwrap();
        // 7 elements, 2 ranks, buckets of 4 flat elements (2 per rank): 2 buckets, shard of 4.
        let l = FlatLayout::new(&[a.clone(), b.clone()], 2, 4);
        assert_eq!((l.bucket, l.buckets, l.shard_len(), l.bucket_range(1)), (2, 2, 4, 4..8));
        let grads = [Some(a.clone()), Some(b.clone())];
        let b0 = l.pack_range(&grads, l.bucket_range(0), DType::F32, &dev).unwrap();
        let b1 = l.pack_range(&grads, l.bucket_range(1), DType::F32, &dev).unwrap();
        assert_eq!(b0.to_vec_f64().unwrap(), vec![1., 2., 3., 4.]);
        assert_eq!(b1.to_vec_f64().unwrap(), vec![5., 6., 7., 0.]);
        assert_eq!(l.ending_in(0).collect::<Vec<_>>(), Vec::<usize>::new());
        assert_eq!(l.ending_in(1).collect::<Vec<_>>(), vec![0, 1]);
        let twice = Tensor::from_f64(&[10., 12., 14., 0.], [4], DType::F32, &dev).unwrap();
        l.unpack_range(&twice, 4..8, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(a.to_vec_f64().unwrap(), vec![1., 2., 3., 4., 10., 12.]);
        assert_eq!((b.dtype(), b.to_vec_f64().unwrap()), (DType::BF16, vec![14.]));
        assert_eq!(slice(&b1, 2, 2).unwrap().to_vec_f64().unwrap(), vec![7., 0.]);
    }
}
