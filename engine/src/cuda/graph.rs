//! CUDA-graph capture and replay of a step (`crate::graph` is the device-independent front).
//!
//! Capture runs on the device's graph stream (the main stream is the legacy default stream, which cannot
//! be captured): the graph stream first waits for the main stream, every launch, library call and
//! allocation of the body goes to the graph stream and to the graph set's private allocator pool, and
//! the main stream waits for the graph stream afterwards. The body runs once eagerly before the capture
//! (kernels loaded, shared-memory attributes set, the private pool filled), so the capture itself
//! allocates nothing from the driver. cuBLAS works in a workspace block the pool owns (set while routed,
//! so no graph allocates a workspace of its own). A replay is five driver calls: record an event on the
//! main stream, the graph stream waits for it, one graph launch, record on the graph stream, the main
//! stream waits for it.
use super::alloc::DeviceBlock;
use super::CudaDevice;
use crate::error::{EngineError, Result};
use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaEvent, CudaGraph, CudaStream};
use std::sync::Arc;

/// cuBLAS workspace of a graph set: 32 MiB (cuBLAS's recommendation for Hopper).
const CUBLAS_WORKSPACE: usize = 32 << 20;

/// A private allocator pool shared by the graphs of one set: the temporaries of every captured body
/// live here (graphs of one set never run concurrently: they replay one at a time on one stream), with
/// the set's cuBLAS workspace and the two events that order a replay.
pub struct PrivatePool {
    id: u32,
    workspace: DeviceBlock,
    main_done: CudaEvent,
    graph_done: CudaEvent,
    device: CudaDevice,
}

impl Drop for PrivatePool {
    fn drop(&mut self) {
        self.device.inner.alloc.retire_pool(self.id);
    }
}

/// One captured and instantiated body.
pub struct CapturedGraph {
    graph: CudaGraph,
    device: CudaDevice,
}

impl CudaDevice {
    /// The graph stream, created on first use.
    fn graph_stream(&self) -> Result<Arc<CudaStream>> {
        if let Some(s) = self.inner.graph_stream.get() {
            return Ok(s.clone());
        }
        let s = self.inner.ctx.new_stream().map_err(|e| EngineError::cuda("creating the graph stream", e))?;
        Ok(self.inner.graph_stream.get_or_init(|| s).clone())
    }

    pub fn new_private_pool(&self) -> Result<PrivatePool> {
        let event = || {
            self.inner
                .ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(|e| EngineError::cuda("creating a graph event", e))
        };
        Ok(PrivatePool {
            id: self.inner.alloc.new_private_pool(),
            workspace: self.alloc(CUBLAS_WORKSPACE)?,
            main_done: event()?,
            graph_done: event()?,
            device: self.clone(),
        })
    }

    /// Route launches, cuBLAS and allocations to the graph stream and `pool` (Some), or back (None). The
    /// engine's own routing is switched first, so a failing cuBLAS call cannot leave it half switched.
    fn route(&self, to: Option<(&Arc<CudaStream>, &PrivatePool)>) -> Result<()> {
        let handle = *self.inner.blas.handle();
        match to {
            Some((s, pool)) => {
                self.inner.alloc.set_active_pool(pool.id, Some(s.clone()));
                *self.inner.capturing.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
                self.inner.routed.store(true, std::sync::atomic::Ordering::Release);
                // SAFETY: the handle lives as long as the device; the stream is this context's; the
                // workspace block lives as long as the pool, which outlives its graphs.
                unsafe {
                    cudarc::cublas::result::set_stream(handle, s.cu_stream() as _)
                        .map_err(|e| EngineError::cuda("pointing cuBLAS at the graph stream", e))?;
                    cudarc::cublas::sys::cublasSetWorkspace_v2(
                        handle,
                        pool.workspace.ptr() as *mut std::ffi::c_void,
                        pool.workspace.capacity(),
                    )
                    .result()
                    .map_err(|e| EngineError::cuda("setting the graph cuBLAS workspace", e))
                }
            }
            None => {
                self.inner.alloc.set_active_pool(0, None);
                self.inner.routed.store(false, std::sync::atomic::Ordering::Release);
                *self.inner.capturing.lock().unwrap_or_else(|e| e.into_inner()) = None;
                // SAFETY: as above; setting the stream also returns cuBLAS to its own workspace.
                unsafe { cudarc::cublas::result::set_stream(handle, self.inner.stream.cu_stream() as _) }
                    .map_err(|e| EngineError::cuda("pointing cuBLAS back at the main stream", e))
            }
        }
    }

    /// Run `body` once eagerly, then capture it: the graph, and the captured run's result, whose device
    /// buffers hold nothing until the first replay.
    pub fn capture<T>(&self, pool: &PrivatePool, mut body: impl FnMut() -> Result<T>) -> Result<(CapturedGraph, T)> {
        let gs = self.graph_stream()?;
        self.bind()?;
        gs.join(&self.inner.stream).map_err(|e| EngineError::cuda("ordering the graph stream", e))?;
        let routed = self.route(Some((&gs, pool)));
        let captured = routed.and_then(|()| {
            // warm-up on the graph stream, in the private pool, under the capture's rules
            drop(crate::graph::with_capture_flag(&mut body)?);
            gs.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(|e| EngineError::cuda("beginning a graph capture", e))?;
            let out = crate::graph::with_capture_flag(&mut body);
            // end the capture whether or not the body succeeded, so the stream leaves capture mode
            let graph = gs.end_capture(CUgraphInstantiate_flags(0));
            let out = out?;
            let graph = graph
                .map_err(|e| EngineError::cuda("ending a graph capture", e))?
                .ok_or_else(|| EngineError::invalid("graph capture", "the captured body queued no work"))?;
            Ok((graph, out))
        });
        let restored = self.route(None);
        let joined = self.inner.stream.join(&gs).map_err(|e| EngineError::cuda("ordering the main stream", e));
        let (graph, out) = captured?;
        restored?;
        joined?;
        graph.upload().map_err(|e| EngineError::cuda("uploading a graph", e))?;
        Ok((CapturedGraph { graph, device: self.clone() }, out))
    }
}

impl CapturedGraph {
    /// Replay after the work queued so far on the main stream; later work on the main stream waits for it.
    pub fn replay(&self, pool: &PrivatePool) -> Result<()> {
        let dev = &self.device;
        let gs = dev.graph_stream()?;
        let order = |e: cudarc::driver::DriverError| EngineError::cuda("ordering a graph replay", e);
        pool.main_done.record(&dev.inner.stream).map_err(order)?;
        gs.wait(&pool.main_done).map_err(order)?;
        self.graph.launch().map_err(|e| EngineError::cuda("launching a graph", e))?;
        pool.graph_done.record(&gs).map_err(order)?;
        dev.inner.stream.wait(&pool.graph_done).map_err(order)?;
        dev.after_launch("graph replay")
    }
}
