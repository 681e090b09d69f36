//! KV cache for generation: preallocated per-layer K/V buffers [slots, max_len, Hkv, D] (one slot per
//! request), row writes at (slot, position), and decode attention of one new query row per request.
//! Prefill writes the prompt's K/V with [`KvCache::write`] after the fused attention; each decode step
//! writes the new token's K/V and attends with [`KvCache::attend`]. Inference only: no gradients.
use super::check_same_device;
use crate::cpu::decode::{decode_attention as cpu_decode, kv_write as cpu_kv_write, DecodeGeom};
use crate::cpu::CpuStorage;
use crate::cuda::decode as cuda_decode;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

/// One layer's cache.
pub struct KvCache {
    pub k: Tensor,
    pub v: Tensor,
    geom: DecodeGeom,
    slots: usize,
}

/// Rows of a cache operation: (slot, position) per row, validated on the host, uploaded once.
/// For attention, row i is request i's new query at `pos[i]`, attending to keys 0..=pos[i].
pub struct CacheIndex {
    slot: Vec<i32>,
    pos: Vec<i32>,
    device: Option<[Tensor; 3]>,
}

impl CacheIndex {
    pub fn new(slot: Vec<i32>, pos: Vec<i32>, slots: usize, max_len: usize, device: &Device) -> Result<Self> {
        if slot.len() != pos.len() {
            return Err(EngineError::invalid("kv cache", format!("{} slots for {} positions", slot.len(), pos.len())));
        }
        if let Some(i) = (0..slot.len())
            .find(|&i| slot[i] < 0 || slot[i] as usize >= slots || pos[i] < 0 || pos[i] as usize >= max_len)
        {
            return Err(EngineError::invalid(
                "kv cache",
                format!(
                    "row {i}: (slot {}, position {}) outside the cache's {slots} slots x {max_len} positions",
                    slot[i], pos[i]
                ),
            ));
        }
        let len: Vec<i32> = pos.iter().map(|p| p + 1).collect();
        let device = if device.is_cuda() {
            let n = slot.len();
            Some([
                Tensor::from_vec(slot.clone(), [n], device)?,
                Tensor::from_vec(pos.clone(), [n], device)?,
                Tensor::from_vec(len, [n], device)?,
            ])
        } else {
            None
        };
        Ok(Self { slot, pos, device })
    }
    pub fn len(&self) -> usize {
        self.slot.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }
}

impl KvCache {
    pub fn new(
        slots: usize,
        max_len: usize,
        hkv: usize,
        d: usize,
        hq: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if hkv == 0 || !hq.is_multiple_of(hkv) {
            return Err(EngineError::invalid(
                "kv cache",
                format!("{hq} query heads are not a multiple of {hkv} KV heads"),
            ));
        }
        let shape = Shape::new([slots, max_len, hkv, d]);
        Ok(Self {
            k: Tensor::zeros(shape.clone(), dtype, device)?,
            v: Tensor::zeros(shape, dtype, device)?,
            geom: DecodeGeom { hq, hkv, d, max_len },
            slots,
        })
    }
    pub fn slots(&self) -> usize {
        self.slots
    }
    pub fn max_len(&self) -> usize {
        self.geom.max_len
    }
    /// Bytes held by this layer's K and V.
    pub fn bytes(&self) -> usize {
        2 * self.k.numel() * self.k.dtype().size_in_bytes()
    }

    /// Write rows k, v [n, Hkv, D] at the index's (slot, position) pairs.
    pub fn write(&self, k: &Tensor, v: &Tensor, idx: &CacheIndex) -> Result<()> {
        let g = self.geom;
        let want = [idx.len(), g.hkv, g.d];
        if k.dims() != want || v.dims() != want || k.dtype() != self.k.dtype() || v.dtype() != self.k.dtype() {
            return Err(EngineError::shape(
                "kv cache write",
                format!("rows {} / {} ({}) for {want:?} {}", k.shape(), v.shape(), k.dtype(), self.k.dtype()),
            ));
        }
        check_same_device("kv cache write", &self.k, k)?;
        let (ks, vs) = (k.storage(), v.storage());
        let (mut kc, mut vc) = (self.k.storage_mut(), self.v.storage_mut());
        match (&mut *kc, &mut *vc, &*ks, &*vs) {
            (Storage::Cuda(kc), Storage::Cuda(vc), Storage::Cuda(ks), Storage::Cuda(vs)) => {
                let [slot, pos, _] =
                    idx.device.as_ref().ok_or_else(|| EngineError::invalid("kv cache", "index built for the CPU"))?;
                let (s, p) = (slot.storage(), pos.storage());
                let (Storage::Cuda(s), Storage::Cuda(p)) = (&*s, &*p) else { unreachable!("uploaded") };
                cuda_decode::kv_write(kc, vc, ks, vs, s, p, idx.len(), &g)
            }
            (Storage::Cpu(kc), Storage::Cpu(vc), Storage::Cpu(ks), Storage::Cpu(vs)) => {
                write_cpu(kc, ks, idx, &g)?;
                write_cpu(vc, vs, idx, &g)
            }
            _ => Err(EngineError::invalid("kv cache write", "cache and rows on different devices")),
        }
    }

    /// Decode attention: q [B, Hq, D] (row b = request b's new token at idx.pos[b]) → o [B, Hq, D].
    pub fn attend(&self, q: &Tensor, idx: &CacheIndex) -> Result<Tensor> {
        let g = self.geom;
        if q.dims() != [idx.len(), g.hq, g.d] || q.dtype() != self.k.dtype() {
            return Err(EngineError::shape(
                "decode attention",
                format!("q {} {} for [{}, {}, {}] {}", q.shape(), q.dtype(), idx.len(), g.hq, g.d, self.k.dtype()),
            ));
        }
        check_same_device("decode attention", &self.k, q)?;
        let (qs, kc, vc) = (q.storage(), self.k.storage(), self.v.storage());
        let st = match (&*qs, &*kc, &*vc) {
            (Storage::Cuda(qs), Storage::Cuda(kc), Storage::Cuda(vc)) => {
                let [slot, _, len] =
                    idx.device.as_ref().ok_or_else(|| EngineError::invalid("kv cache", "index built for the CPU"))?;
                let (s, l) = (slot.storage(), len.storage());
                let (Storage::Cuda(s), Storage::Cuda(l)) = (&*s, &*l) else { unreachable!("uploaded") };
                let max_keys = idx.pos.iter().map(|&p| p as usize + 1).max().unwrap_or(0);
                Storage::Cuda(cuda_decode::decode_attention(qs, kc, vc, s, l, idx.len(), max_keys, &g)?)
            }
            (Storage::Cpu(qs), Storage::Cpu(kc), Storage::Cpu(vc)) => {
                let len: Vec<i32> = idx.pos.iter().map(|p| p + 1).collect();
                let (q64, k64, v64) = (qs.to_f64_vec(), kc.to_f64_vec(), vc.to_f64_vec());
                let o = cpu_decode(&q64, &k64, &v64, &idx.slot, &len, &g);
                Storage::Cpu(CpuStorage::from_f64(qs.dtype(), &o))
            }
            _ => return Err(EngineError::invalid("decode attention", "cache and query on different devices")),
        };
        Ok(Tensor::from_storage(st, q.shape().clone(), q.device()))
    }
}

fn write_cpu(cache: &mut CpuStorage, rows: &CpuStorage, idx: &CacheIndex, g: &DecodeGeom) -> Result<()> {
    match (cache, rows) {
        (CpuStorage::F32(c), CpuStorage::F32(r)) => cpu_kv_write(c, r, &idx.slot, &idx.pos, g),
        (CpuStorage::F64(c), CpuStorage::F64(r)) => cpu_kv_write(c, r, &idx.slot, &idx.pos, g),
        (CpuStorage::BF16(c), CpuStorage::BF16(r)) => cpu_kv_write(c, r, &idx.slot, &idx.pos, g),
        _ => return Err(EngineError::invalid("kv cache write", "cache and rows differ in dtype")),
    }
    Ok(())
}
