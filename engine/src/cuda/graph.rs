//! CUDA-graph capture and replay of a step (`crate::graph` is the device-independent front).
//!
//! Capture runs on the device's graph stream (the main stream is the legacy default stream, which cannot
//! be captured): the graph stream first waits for the main stream, every launch, library call and
//! allocation of the body goes to the graph stream and to the graph set's private allocator pool, and
//! the main stream waits for the graph stream afterwards. The body runs once eagerly before the capture
//! (kernels loaded, shared-memory attributes set, the private pool filled), so the capture itself
//! allocates nothing from the driver. A replay is: graph stream waits for main, one graph launch, main
//! waits for graph stream (three driver calls whatever the body launches).
use super::CudaDevice;
use crate::error::{EngineError, Result};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream};
use std::sync::Arc;

/// A private allocator pool shared by the graphs of one set: the temporaries of every captured body
/// live here (graphs of one set never run concurrently: they replay one at a time on one stream).
pub struct PrivatePool {
    id: u32,
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

    pub fn new_private_pool(&self) -> PrivatePool {
        PrivatePool { id: self.inner.alloc.new_private_pool(), device: self.clone() }
    }

    /// Route launches, cuBLAS and allocations to the graph stream and `pool` (Some), or back (None).
    fn route(&self, to: Option<(&Arc<CudaStream>, &PrivatePool)>) -> Result<()> {
        let stream = to.map(|(s, _)| s.clone()).unwrap_or_else(|| self.inner.stream.clone());
        // SAFETY: the handle lives as long as the device; the stream is this context's.
        unsafe { cudarc::cublas::result::set_stream(*self.inner.blas.handle(), stream.cu_stream() as _) }
            .map_err(|e| EngineError::cuda("pointing cuBLAS at the graph stream", e))?;
        match to {
            Some((s, pool)) => {
                self.inner.alloc.set_active_pool(pool.id, Some(s.clone()));
                *self.inner.capturing.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
            }
            None => {
                self.inner.alloc.set_active_pool(0, None);
                *self.inner.capturing.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        Ok(())
    }

    /// Run `body` once eagerly, then capture it; the graph and the captured run's result (whose device
    /// buffers each replay rewrites).
    pub fn capture<T>(&self, pool: &PrivatePool, mut body: impl FnMut() -> Result<T>) -> Result<(CapturedGraph, T)> {
        let gs = self.graph_stream()?;
        self.bind()?;
        gs.join(&self.inner.stream).map_err(|e| EngineError::cuda("ordering the graph stream", e))?;
        self.route(Some((&gs, pool)))?;
        let captured = (|| {
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
        })();
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
    pub fn replay(&self) -> Result<()> {
        let dev = &self.device;
        let gs = dev.graph_stream()?;
        gs.join(&dev.inner.stream).map_err(|e| EngineError::cuda("ordering the graph stream", e))?;
        self.graph.launch().map_err(|e| EngineError::cuda("launching a graph", e))?;
        dev.inner.stream.join(&gs).map_err(|e| EngineError::cuda("ordering the main stream", e))?;
        dev.after_launch("graph replay")
    }
}
