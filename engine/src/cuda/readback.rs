//! Small device-to-host reads that do not drain the stream: the copy lands in page-locked host memory behind
//! an event, so the host waits for that point of the stream only, while the work queued after it keeps the
//! GPU busy. (A copy into pageable memory, or a stream synchronisation, idles the GPU until the host has
//! read the value and queued the next kernel: 20-30 µs per read on the H100, measured on the select passes.)
use super::CudaDevice;
use crate::error::{EngineError, Result};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{result, CudaEvent};
use std::sync::{Arc, Mutex};

/// Words (i32) one pending read can hold.
pub const READBACK_WORDS: usize = 16;

/// A page-locked host buffer of [`READBACK_WORDS`] i32, freed on drop.
pub(crate) struct PinnedWords {
    ptr: *mut i32,
}

// SAFETY: the buffer is plain host memory owned by this value; it is only touched through &mut or after
// the event that orders the device's write to it.
unsafe impl Send for PinnedWords {}

impl PinnedWords {
    fn new() -> Result<Self> {
        // SAFETY: a fresh page-locked allocation (no flags: cached, readable by the host at full speed).
        let ptr = unsafe { result::malloc_host(READBACK_WORDS * 4, 0) }
            .map_err(|e| EngineError::cuda("allocating page-locked host memory", e))?;
        Ok(Self { ptr: ptr.cast() })
    }
}

impl Drop for PinnedWords {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host; the owning device synchronises its stream before its pool drops.
        let _ = unsafe { result::free_host(self.ptr.cast()) };
    }
}

/// The per-device pool of pinned buffers (allocating page-locked memory costs far more than a read).
pub(crate) type PinnedPool = Arc<Mutex<Vec<PinnedWords>>>;

/// A read queued by [`CudaDevice::read_i32_async`]; [`PendingRead::wait`] returns the values.
pub struct PendingRead {
    buf: Option<PinnedWords>,
    len: usize,
    event: CudaEvent,
    pool: PinnedPool,
}

impl PendingRead {
    /// Waits for the stream to reach the copy (not for work queued after it), then returns the words.
    /// Reports an asynchronous fault of the work before the copy.
    pub fn wait(self) -> Result<Vec<i32>> {
        self.event.synchronize().map_err(|e| EngineError::cuda("waiting for a device-to-host read", e))?;
        let buf = self.buf.as_ref().expect("held until drop");
        // SAFETY: the copy of len <= READBACK_WORDS words into buf completed (event above).
        Ok(unsafe { std::slice::from_raw_parts(buf.ptr, self.len) }.to_vec())
    }
}

impl Drop for PendingRead {
    /// The buffer goes back to the pool even when the copy is still in flight: its next use is a copy queued
    /// later on the same stream, and the host reads it only after that copy's own event.
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        }
    }
}

impl CudaDevice {
    /// Queues a copy of `len` (<= [`READBACK_WORDS`]) i32 at device address `src` to the host, after the work
    /// queued so far, and returns at once.
    pub fn read_i32_async(&self, src: u64, len: usize) -> Result<PendingRead> {
        if len > READBACK_WORDS {
            return Err(EngineError::invalid("read_i32_async", format!("{len} words (at most {READBACK_WORDS})")));
        }
        self.bind()?;
        let pool = self.inner.pinned.clone();
        let taken = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let buf = match taken {
            Some(b) => b,
            None => PinnedWords::new()?,
        };
        // SAFETY: buf holds READBACK_WORDS >= len i32; src holds len i32 (the caller's buffer); the copy is
        // ordered on the device's stream and read only after the event below.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.ptr, len) };
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream().cu_stream()) }
            .map_err(|e| EngineError::cuda("device-to-host copy", e))?;
        let event = self
            .stream()
            .record_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
            .map_err(|e| EngineError::cuda("recording a read-back event", e))?;
        Ok(PendingRead { buf: Some(buf), len, event, pool })
    }
}
