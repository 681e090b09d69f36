//! Tensor storage: a host `Vec` or a block of device memory from the caching allocator.
use crate::cpu::CpuStorage;
use crate::cuda::{alloc::DeviceBlock, CudaDevice};
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use cudarc::driver::result;
use half::bf16;

pub struct CudaStorage {
    pub(crate) block: DeviceBlock,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    pub(crate) device: CudaDevice,
}

impl CudaStorage {
    /// Uninitialised storage for `len` elements (poisoned with NaN bytes in self-test mode).
    pub fn alloc(device: &CudaDevice, dtype: DType, len: usize) -> Result<Self> {
        if dtype == DType::F64 {
            return Err(EngineError::UnsupportedDType { op: "cuda alloc", dtype, msg: "f64 is CPU-only" });
        }
        let bytes = len.checked_mul(dtype.size_in_bytes()).ok_or_else(|| {
            EngineError::invalid("cuda alloc", format!("{len} {dtype} elements are more than 2^64 bytes"))
        })?;
        let block = device.alloc(bytes)?;
        Ok(Self { block, dtype, len, device: device.clone() })
    }
    pub fn zeros(device: &CudaDevice, dtype: DType, len: usize) -> Result<Self> {
        let s = Self::alloc(device, dtype, len)?;
        device.bind()?;
        // SAFETY: the block holds at least len·size bytes.
        unsafe { result::memset_d8_async(s.ptr(), 0, s.bytes(), device.stream().cu_stream()) }
            .map_err(|e| EngineError::cuda("memset", e))?;
        Ok(s)
    }
    pub fn ptr(&self) -> u64 {
        self.block.ptr()
    }
    pub fn bytes(&self) -> usize {
        self.len * self.dtype.size_in_bytes()
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    pub fn from_cpu(device: &CudaDevice, s: &CpuStorage) -> Result<Self> {
        let out = Self::alloc(device, s.dtype(), s.len())?;
        device.bind()?;
        let stream = device.stream().cu_stream();
        // SAFETY: sizes match; the host slice outlives the call because we synchronise below.
        unsafe {
            match s {
                CpuStorage::F32(v) => result::memcpy_htod_async(out.ptr(), v, stream),
                CpuStorage::BF16(v) => result::memcpy_htod_async(out.ptr(), v, stream),
                CpuStorage::I32(v) => result::memcpy_htod_async(out.ptr(), v, stream),
                CpuStorage::F64(_) => unreachable!("rejected by alloc"),
            }
        }
        .map_err(|e| EngineError::cuda("host-to-device copy", e))?;
        device.stream().synchronize().map_err(|e| EngineError::cuda("host-to-device copy", e))?;
        Ok(out)
    }

    /// Overwrite an i32 block in place from the host, queued on the stream (a pageable source is staged
    /// before the call returns, so `values` may be dropped at once).
    pub fn write_i32(&self, values: &[i32]) -> Result<()> {
        if self.dtype != DType::I32 || values.len() != self.len {
            return Err(EngineError::invalid(
                "write_i32",
                format!("{} values into {} {}", values.len(), self.len, self.dtype),
            ));
        }
        self.device.bind()?;
        // SAFETY: the block holds len i32 values.
        unsafe { result::memcpy_htod_async(self.ptr(), values, self.device.stream().cu_stream()) }
            .map_err(|e| EngineError::cuda("host-to-device copy", e))
    }

    pub fn to_cpu(&self) -> Result<CpuStorage> {
        self.device.synchronize()?;
        self.device.bind()?;
        // SAFETY: the block holds len elements of dtype; the stream is idle after synchronize.
        let r = unsafe {
            match self.dtype {
                DType::F32 => {
                    let mut v = vec![0f32; self.len];
                    result::memcpy_dtoh_sync(&mut v, self.ptr()).map(|_| CpuStorage::F32(v))
                }
                DType::BF16 => {
                    let mut v = vec![bf16::ZERO; self.len];
                    result::memcpy_dtoh_sync(&mut v, self.ptr()).map(|_| CpuStorage::BF16(v))
                }
                DType::I32 => {
                    let mut v = vec![0i32; self.len];
                    result::memcpy_dtoh_sync(&mut v, self.ptr()).map(|_| CpuStorage::I32(v))
                }
                DType::F64 => unreachable!("rejected by alloc"),
            }
        };
        r.map_err(|e| EngineError::cuda("device-to-host copy", e))
    }

    /// Copy `len` elements from `src[src_off..]` into `self[dst_off..]` (same dtype, same device).
    pub fn copy_range_from(&self, dst_off: usize, src: &CudaStorage, src_off: usize, len: usize) -> Result<()> {
        if src.dtype != self.dtype || dst_off + len > self.len || src_off + len > src.len {
            return Err(EngineError::invalid(
                "copy_range_from",
                format!("{len} {} elements from {}+{src_off} into {}+{dst_off}", src.dtype, src.len, self.len),
            ));
        }
        let es = self.dtype.size_in_bytes();
        self.device.bind()?;
        // SAFETY: both ranges were checked against the blocks' lengths above.
        unsafe {
            result::memcpy_dtod_async(
                self.ptr() + (dst_off * es) as u64,
                src.ptr() + (src_off * es) as u64,
                len * es,
                self.device.stream().cu_stream(),
            )
        }
        .map_err(|e| EngineError::cuda("device-to-device copy", e))
    }

    pub fn try_clone(&self) -> Result<Self> {
        let out = Self::alloc(&self.device, self.dtype, self.len)?;
        self.device.bind()?;
        // SAFETY: both blocks hold `bytes()` bytes.
        unsafe { result::memcpy_dtod_async(out.ptr(), self.ptr(), self.bytes(), self.device.stream().cu_stream()) }
            .map_err(|e| EngineError::cuda("device-to-device copy", e))?;
        Ok(out)
    }
}

pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Cuda(s) => s.len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
