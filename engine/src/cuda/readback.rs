//! Small device-to-host reads that do not drain the stream: the copy lands in page-locked host memory behind
//! an event, so the host waits for that point of the stream only, while the work queued after it keeps the
//! GPU busy. (A copy into pageable memory, or a stream synchronisation, idles the GPU until the host has
//! read the value and queued the next kernel: 20-30 µs per read on the H100, measured on the select passes.)
use super::CudaDevice;
use crate::error::{EngineError, Result};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{result, CudaEvent, PinnedHostSlice};
use std::sync::{Arc, Mutex};

/// Words (i32) one pending read can hold.
pub const READBACK_WORDS: usize = 16;

/// One pooled read: a page-locked buffer of [`READBACK_WORDS`] i32 and the event that marks its copy
/// (re-recorded on each use: creating either costs far more than a read).
pub(crate) struct ReadSlot {
    buf: PinnedHostSlice<i32>,
    event: CudaEvent,
}

/// The per-device pool of read slots.
pub(crate) type PinnedPool = Arc<Mutex<Vec<ReadSlot>>>;

/// A read queued by [`CudaDevice::read_i32_async`]; [`PendingRead::wait`] returns the values.
pub struct PendingRead {
    slot: Option<ReadSlot>,
    len: usize,
    pool: PinnedPool,
}

impl PendingRead {
    /// Waits for the stream to reach the copy (not for work queued after it), then returns the words.
    /// Reports an asynchronous fault of the work before the copy.
    pub fn wait(self) -> Result<Vec<i32>> {
        crate::graph::check_no_transfer("a device-to-host read")?;
        let slot = self.slot.as_ref().expect("held until drop");
        slot.event.synchronize().map_err(|e| EngineError::cuda("waiting for a device-to-host read", e))?;
        let words = slot.buf.as_slice().map_err(|e| EngineError::cuda("reading a page-locked buffer", e))?;
        Ok(words[..self.len].to_vec())
    }
}

impl Drop for PendingRead {
    /// The slot goes back to the pool even when the copy is still in flight: its next use is a copy queued
    /// later on the same stream, and the host reads it only after that copy's own record of the event.
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
        }
    }
}

impl CudaDevice {
    /// Queues a copy of `len` (<= [`READBACK_WORDS`]) i32 at device address `src` to the host, after the work
    /// queued so far, and returns at once.
    pub fn read_i32_async(&self, src: u64, len: usize) -> Result<PendingRead> {
        crate::graph::check_no_transfer("a device-to-host read")?;
        if len > READBACK_WORDS {
            return Err(EngineError::invalid("read_i32_async", format!("{len} words (at most {READBACK_WORDS})")));
        }
        self.bind()?;
        let pool = self.inner.pinned.clone();
        let taken = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut slot = match taken {
            Some(s) => s,
            None => {
                let ctx = &self.inner.ctx;
                // SAFETY: page-locked host memory, not write-combined (flags 0: the host reads it at full
                // speed); every word read is first written by a copy.
                let buf = unsafe { ctx.alloc_pinned_with_flags::<i32>(READBACK_WORDS, 0) }
                    .map_err(|e| EngineError::cuda("allocating page-locked host memory", e))?;
                let event = ctx
                    .new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
                    .map_err(|e| EngineError::cuda("creating a read-back event", e))?;
                ReadSlot { buf, event }
            }
        };
        let dst = slot.buf.as_mut_slice().map_err(|e| EngineError::cuda("writing a page-locked buffer", e))?;
        // SAFETY: dst holds READBACK_WORDS >= len i32; src holds len i32 (the caller's buffer); the copy is
        // ordered on the device's stream and read only after the event recorded below.
        unsafe { result::memcpy_dtoh_async(&mut dst[..len], src, self.stream().cu_stream()) }
            .map_err(|e| EngineError::cuda("device-to-host copy", e))?;
        slot.event.record(&self.stream()).map_err(|e| EngineError::cuda("recording a read-back event", e))?;
        Ok(PendingRead { slot: Some(slot), len, pool })
    }
}
