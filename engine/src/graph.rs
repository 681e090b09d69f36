//! Step graphs: a body of device work captured once and replayed with O(1) host work (a CUDA graph on
//! a GPU). A body reads its per-step inputs only from buffers that exist before the capture and writes
//! its results into the buffers the captured run returned; each replay rewrites those buffers. A body
//! must not move data between host and device: on a GPU that would be a host pointer frozen into the
//! graph, so [`Tensor`](crate::Tensor) uploads and reads inside a capture or a CPU replay are errors.
//!
//! On the CPU a graph is a stand-in with the same contract: "capture" runs the body once and "replay"
//! runs it again, both under the same no-transfer rule, so a CPU test of a graph-driven loop checks
//! that its bodies read only their fixed buffers and that replays rewrite the captured results.
use crate::device::Device;
use crate::error::{EngineError, Result};
use std::cell::Cell;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside a capture (or a CPU replay).
pub fn capturing() -> bool {
    CAPTURING.with(|c| c.get())
}

/// An error for a host-device transfer (`what`) inside a capture.
pub(crate) fn check_no_transfer(what: &str) -> Result<()> {
    if capturing() {
        return Err(EngineError::invalid(
            "graph capture",
            format!("{what} inside a captured step body (a body reads and writes device buffers only)"),
        ));
    }
    Ok(())
}

/// Run `body` with this thread marked as capturing.
pub(crate) fn with_capture_flag<T>(body: &mut impl FnMut() -> Result<T>) -> Result<T> {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            CAPTURING.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(CAPTURING.with(|c| c.replace(true)));
    body()
}

/// The graphs of one loop on one device: they share a private pool for their temporaries and are
/// replayed one at a time.
pub struct GraphSet {
    device: Device,
    /// Declared after nothing that outlives it: dropped last, after every graph of the set.
    pool: Option<crate::cuda::graph::PrivatePool>,
}

/// One captured body.
pub struct StepGraph {
    cuda: Option<crate::cuda::graph::CapturedGraph>,
}

impl GraphSet {
    pub fn new(device: &Device) -> Result<Self> {
        let pool = match device.as_cuda() {
            Some(d) => Some(d.new_private_pool()?),
            None => None,
        };
        Ok(Self { device: device.clone(), pool })
    }

    /// Capture `body` (a GPU runs it once eagerly first): the graph and the captured run's result, whose
    /// buffers are meaningful only after a replay. The graphs of one set share their temporaries: a
    /// graph's result buffers hold its results until another graph of the set is replayed.
    pub fn capture<T>(&self, mut body: impl FnMut() -> Result<T>) -> Result<(StepGraph, T)> {
        match (&self.device, &self.pool) {
            (Device::Cuda(d), Some(pool)) => {
                let (g, out) = d.capture(pool, body)?;
                Ok((StepGraph { cuda: Some(g) }, out))
            }
            _ => {
                let out = with_capture_flag(&mut body)?;
                Ok((StepGraph { cuda: None }, out))
            }
        }
    }

    /// Replay `graph`, which rewrites the buffers of `out` (the result its capture returned). On the CPU
    /// the body runs again under the no-transfer rule and its result replaces `out`.
    pub fn replay<T>(&self, graph: &StepGraph, mut body: impl FnMut() -> Result<T>, out: &mut T) -> Result<()> {
        match (&graph.cuda, &self.pool) {
            (Some(g), Some(pool)) => g.replay(pool),
            _ => {
                *out = with_capture_flag(&mut body)?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    #[test]
    fn a_body_that_moves_data_between_host_and_device_is_refused() {
        let set = GraphSet::new(&Device::Cpu).unwrap();
        let x = Tensor::from_vec(vec![1.0f32, 2.0], [2], &Device::Cpu).unwrap();
        let e = set.capture(|| Tensor::from_vec(vec![1.0f32], [1], &Device::Cpu)).err().unwrap();
        assert!(e.to_string().contains("inside a captured step body"), "{e}");
        assert!(set.capture(|| x.to_vec_f32()).is_err());
        assert!(!capturing(), "the flag is reset after a failed body");
        // a body of device work is captured, and each replay recomputes from the current inputs
        let table = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2], &Device::Cpu).unwrap();
        let ids = Tensor::from_vec(vec![0i32, 2], [2], &Device::Cpu).unwrap();
        let (g, mut out) = set.capture(|| table.embedding(&ids)).unwrap();
        set.replay(&g, || table.embedding(&ids), &mut out).unwrap();
        assert_eq!(out.to_vec_f32().unwrap(), [1.0, 2.0, 5.0, 6.0]);
        ids.write_i32(&[1, 1]).unwrap();
        set.replay(&g, || table.embedding(&ids), &mut out).unwrap();
        assert_eq!(out.to_vec_f32().unwrap(), [3.0, 4.0, 3.0, 4.0]);
        assert!(set.capture(|| ids.write_i32(&[0, 0])).is_err(), "inputs are written outside the body");
    }
}
