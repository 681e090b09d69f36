//! A caching device allocator (PyTorch-style): freed blocks go back to a pool keyed by size class and
//! are reused, so a training step does not call cudaMalloc per op. All work runs on the device's one
//! stream, so reusing a block freed on the host is ordered after every kernel that used it.
//!
//! Private pools (for CUDA graphs): while a private pool is active, requests are served from and freed
//! blocks return to that pool only, so the addresses a captured graph replays are never handed to a
//! tensor outside it. Retiring the pool moves its free blocks to the shared pool; a block of a retired
//! pool freed later goes there too.
use crate::error::{EngineError, Result};
use cudarc::driver::{result, sys::CUdeviceptr, CudaContext, CudaStream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Byte counts for one device's allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of blocks currently held by tensors (size-class rounded).
    pub in_use: usize,
    pub peak_in_use: usize,
    /// Bytes obtained from the driver (in use + cached).
    pub reserved: usize,
    pub peak_reserved: usize,
    /// Allocation requests, and how many were served from the cache.
    pub requests: u64,
    pub cache_hits: u64,
    /// cudaMalloc calls actually made.
    pub driver_allocs: u64,
}

/// Size class of a request: 512-byte minimum, then four classes per power of two (≤ 25% waste).
pub fn size_class(bytes: usize) -> usize {
    let b = bytes.max(1);
    if b <= 512 {
        return 512;
    }
    let e = usize::BITS - 1 - (b - 1).leading_zeros(); // 2^e < b <= 2^(e+1)
    let step = (1usize << e) / 4;
    b.div_ceil(step) * step
}

pub struct CachingAllocator {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    state: Mutex<Pool>,
    poison: AtomicBool,
    /// The stream poisoning memsets go to while a private pool is active (a graph's stream).
    private_stream: Mutex<Option<Arc<CudaStream>>>,
}

/// The shared pool's id; private pools count up from 1.
const SHARED: u32 = 0;

#[derive(Default)]
struct Pool {
    /// Free blocks by (pool id, size class).
    free: HashMap<(u32, usize), Vec<CUdeviceptr>>,
    stats: MemoryStats,
    /// The pool new requests come from.
    active: u32,
    next_private: u32,
    retired: std::collections::HashSet<u32>,
}

/// A device allocation. Dropping it returns the block to its allocator's pool.
pub struct DeviceBlock {
    ptr: CUdeviceptr,
    class: usize,
    pool: u32,
    alloc: Arc<CachingAllocator>,
}

impl DeviceBlock {
    pub fn ptr(&self) -> CUdeviceptr {
        self.ptr
    }
    pub fn capacity(&self) -> usize {
        self.class
    }
}

impl Drop for DeviceBlock {
    fn drop(&mut self) {
        let mut p = self.alloc.state.lock().unwrap_or_else(|e| e.into_inner());
        p.stats.in_use -= self.class;
        let pool = if p.retired.contains(&self.pool) { SHARED } else { self.pool };
        p.free.entry((pool, self.class)).or_default().push(self.ptr);
    }
}

impl CachingAllocator {
    pub fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            stream,
            state: Mutex::new(Pool::default()),
            poison: AtomicBool::new(false),
            private_stream: Mutex::new(None),
        })
    }

    /// When on, every block handed out is first filled with 0xFF bytes (NaN for f32/bf16, −1 for i32),
    /// so a kernel that fails to write part of its output is caught by the self-test.
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    pub fn stats(&self) -> MemoryStats {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stats
    }

    pub fn reset_peak(&self) {
        let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
        p.stats.peak_in_use = p.stats.in_use;
        p.stats.peak_reserved = p.stats.reserved;
    }

    /// A new private pool (not yet active).
    pub fn new_private_pool(&self) -> u32 {
        let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
        p.next_private += 1;
        p.next_private
    }

    /// Serve requests from `pool` (a private pool's id, or 0 for the shared pool), with the work that
    /// uses its blocks queued on `stream` (None: the device's stream); returns the pool that was active.
    pub fn set_active_pool(&self, pool: u32, stream: Option<Arc<CudaStream>>) -> u32 {
        *self.private_stream.lock().unwrap_or_else(|e| e.into_inner()) = stream;
        let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut p.active, pool)
    }

    /// Give a private pool's free blocks to the shared pool; its blocks still held go there when freed.
    pub fn retire_pool(&self, pool: u32) {
        if pool == SHARED {
            return;
        }
        let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
        p.retired.insert(pool);
        if p.active == pool {
            p.active = SHARED;
        }
        let mine: Vec<(u32, usize)> = p.free.keys().filter(|(id, _)| *id == pool).copied().collect();
        for key in mine {
            let blocks = p.free.remove(&key).unwrap_or_default();
            p.free.entry((SHARED, key.1)).or_default().extend(blocks);
        }
    }

    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBlock> {
        let class = size_class(bytes);
        let (cached, pool) = {
            let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
            p.stats.requests += 1;
            let pool = p.active;
            let hit = p.free.get_mut(&(pool, class)).and_then(|v| v.pop());
            if hit.is_some() {
                p.stats.cache_hits += 1;
                p.stats.in_use += class;
                p.stats.peak_in_use = p.stats.peak_in_use.max(p.stats.in_use);
            }
            (hit, pool)
        };
        let ptr = match cached {
            Some(ptr) => ptr,
            None => self.driver_alloc(class)?,
        };
        let block = DeviceBlock { ptr, class, pool, alloc: self.clone() };
        if self.poison.load(Ordering::Relaxed) {
            self.ctx.bind_to_thread().map_err(|e| EngineError::cuda("binding the context", e))?;
            let stream = self.private_stream.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let stream = stream.as_ref().unwrap_or(&self.stream);
            // SAFETY: ptr is a live allocation of `class` bytes owned by this block.
            unsafe { result::memset_d8_async(ptr, 0xFF, class, stream.cu_stream()) }
                .map_err(|e| EngineError::cuda("poisoning a new block", e))?;
        }
        Ok(block)
    }

    fn driver_alloc(&self, class: usize) -> Result<CUdeviceptr> {
        self.ctx.bind_to_thread().map_err(|e| EngineError::cuda("binding the context", e))?;
        // SAFETY: plain cuMemAlloc of `class` bytes on the bound context.
        let ptr = match unsafe { result::malloc_sync(class) } {
            Ok(p) => p,
            Err(_) => {
                // Out of memory: give every cached block back to the driver and try once more.
                self.empty_cache()?;
                unsafe { result::malloc_sync(class) }.map_err(|e| {
                    let s = self.stats();
                    EngineError::cuda(
                        format!(
                            "allocating {class} bytes ({:.2} GiB in use, {:.2} GiB reserved)",
                            s.in_use as f64 / (1u64 << 30) as f64,
                            s.reserved as f64 / (1u64 << 30) as f64
                        ),
                        e,
                    )
                })?
            }
        };
        let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
        p.stats.driver_allocs += 1;
        p.stats.reserved += class;
        p.stats.in_use += class;
        p.stats.peak_reserved = p.stats.peak_reserved.max(p.stats.reserved);
        p.stats.peak_in_use = p.stats.peak_in_use.max(p.stats.in_use);
        Ok(ptr)
    }

    /// Return every cached (unused) block to the driver.
    pub fn empty_cache(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| EngineError::cuda("synchronizing before freeing", e))?;
        let blocks: Vec<(usize, CUdeviceptr)> = {
            let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // only the shared pool's blocks: a live private pool's free blocks are a graph's addresses
            let keys: Vec<(u32, usize)> = p.free.keys().filter(|(id, _)| *id == SHARED).copied().collect();
            let v: Vec<_> = keys
                .into_iter()
                .flat_map(|k| p.free.remove(&k).unwrap_or_default().into_iter().map(move |q| (k.1, q)))
                .collect();
            p.stats.reserved -= v.iter().map(|(c, _)| c).sum::<usize>();
            v
        };
        self.ctx.bind_to_thread().map_err(|e| EngineError::cuda("binding the context", e))?;
        for (_, ptr) in blocks {
            // SAFETY: the block came from malloc_sync and no tensor refers to it any more.
            unsafe { result::free_sync(ptr) }.map_err(|e| EngineError::cuda("freeing a cached block", e))?;
        }
        Ok(())
    }
}

impl Drop for CachingAllocator {
    fn drop(&mut self) {
        {
            let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<u32> = p.free.keys().map(|(id, _)| *id).filter(|&id| id != SHARED).collect();
            p.retired.extend(ids);
        }
        let ids: Vec<u32> = self.state.lock().unwrap_or_else(|e| e.into_inner()).retired.iter().copied().collect();
        for id in ids {
            self.retire_pool(id);
        }
        let _ = self.empty_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;
    #[test]
    fn size_classes_bound_waste() {
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 640);
        assert_eq!(size_class(1024), 1024);
        assert_eq!(size_class(1025), 1280);
        for b in [700usize, 4097, 1 << 20, (1 << 30) + 3, 123_456_789] {
            let c = size_class(b);
            assert!(c >= b && (c as f64) <= b as f64 * 1.25 + 512.0, "{b} -> {c}");
            assert_eq!(size_class(c), c, "classes are fixed points");
        }
    }
}
