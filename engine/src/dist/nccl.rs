//! [`Communicator`] over NCCL for the GPU path: one communicator per GPU of this process
//! (`ncclCommInitAll`), each driven by its rank's worker thread on that device's stream. Host-side
//! exchanges (rollouts, counts, norms) and abort propagation go through an in-process [`ThreadComm`].
//! Unverified on hardware so far (no multi-GPU machine lent; NCCL with one rank ran on the H100 in
//! toolchain.md's probe).
use super::guarded::Guarded;
use super::{Communicator, ThreadComm};
use crate::cuda::CudaDevice;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::Storage;
use crate::tensor::Tensor;
use cudarc::nccl::{result, sys};
use std::sync::Arc;
use std::time::Duration;

pub struct NcclComm {
    rank: usize,
    world: usize,
    device: CudaDevice,
    host: ThreadComm,
    group: Arc<Group>,
}

/// Every communicator of the group, so that one rank's abort can abort them all: a rank blocked in a
/// collective its peer will never join is only released by aborting its own communicator.
struct Group {
    slots: Vec<Slot>,
}

/// One rank's communicator and its use / abort / free state machine ([`Guarded`]): an abort waits for an
/// enqueue in progress (with connections made at init — NCCL_RUNTIME_CONNECT=0, which the `entrl` binary
/// sets at start-up before any thread exists — an enqueue does not wait for peers), the owner then gets
/// errors instead of touching a freed communicator, and it is freed once. If an enqueue is still blocked
/// after ABORT_WAIT, the communicator is aborted under it (NCCL's documented way to release a hang; whether
/// that call then returns cleanly is unverified on hardware).
struct Slot {
    /// The communicator (its address; fixed at init).
    comm: usize,
    guard: Guarded,
}

/// How long an abort waits for a rank's enqueue in progress before aborting its communicator anyway.
const ABORT_WAIT: Duration = Duration::from_secs(2);

// SAFETY: an NCCL communicator may be used from any thread as long as one thread at a time issues its
// operations; each NcclComm belongs to exactly one worker thread, which is the only one calling it.
unsafe impl Send for NcclComm {}
// SAFETY: see Send; `abort` (the one cross-thread call) is ncclCommAbort, which NCCL allows from another
// thread; each slot's `freed` flag makes abort and drop free a communicator exactly once, and `aborted`
// stops its owner from issuing anything on it afterwards.
unsafe impl Sync for NcclComm {}

fn nccl_err(what: &str) -> impl Fn(result::NcclError) -> EngineError + '_ {
    move |e| EngineError::Comm(format!("NCCL {what}: {e:?}"))
}

impl NcclComm {
    /// One communicator per device (rank = position in `devices`), created together from this thread.
    pub fn group(devices: &[CudaDevice], host_timeout: Duration) -> Result<Vec<NcclComm>> {
        // SAFETY: is_culib_present only probes the dynamic loader.
        if !unsafe { sys::is_culib_present() } {
            return Err(EngineError::CudaUnavailable(
                "libnccl could not be loaded (symlink libnccl.so -> libnccl.so.2 on LD_LIBRARY_PATH)".into(),
            ));
        }
        // The abort's bounded wait relies on connections made at init (see Slot). The variable must be set
        // before threads exist (the `entrl` binary does), so here it is only checked.
        if std::env::var("NCCL_RUNTIME_CONNECT").as_deref() != Ok("0") {
            eprintln!(
                "warning: NCCL_RUNTIME_CONNECT is not 0: NCCL may connect peers inside the first collectives, \
                 where an aborting rank can wait the full {ABORT_WAIT:?} per abort (set it to 0 at process start)"
            );
        }
        let n = devices.len();
        let ordinals: Vec<i32> = devices.iter().map(|d| d.ordinal() as i32).collect();
        let mut comms: Vec<sys::ncclComm_t> = vec![std::ptr::null_mut(); n];
        // SAFETY: `comms` has room for n communicators and `ordinals` lists n devices.
        unsafe { result::comm_init_all(comms.as_mut_ptr(), n as i32, ordinals.as_ptr()) }.map_err(nccl_err("init"))?;
        let hosts = ThreadComm::group(n, host_timeout);
        let slots = comms.iter().map(|&c| Slot { comm: c as usize, guard: Guarded::default() }).collect();
        let group = Arc::new(Group { slots });
        Ok(hosts
            .into_iter()
            .zip(devices)
            .enumerate()
            .map(|(rank, (host, d))| NcclComm { rank, world: n, device: d.clone(), host, group: group.clone() })
            .collect())
    }

    fn dtype(t: &Tensor) -> Result<sys::ncclDataType_t> {
        match t.dtype() {
            DType::F32 => Ok(sys::ncclDataType_t::ncclFloat32),
            DType::BF16 => Ok(sys::ncclDataType_t::ncclBfloat16),
            d => Err(EngineError::UnsupportedDType { op: "nccl", dtype: d, msg: "f32 and bf16 are" }),
        }
    }

    fn stream(&self) -> sys::cudaStream_t {
        self.device.stream().cu_stream() as sys::cudaStream_t
    }

    /// Run one enqueue on this rank's communicator unless the group was aborted (then an error, never a call
    /// on a freed communicator).
    fn with_comm(
        &self,
        what: &str,
        f: impl FnOnce(sys::ncclComm_t) -> std::result::Result<(), result::NcclError>,
    ) -> Result<()> {
        let slot = &self.group.slots[self.rank];
        slot.guard
            .run(|| {
                self.device.bind()?;
                f(slot.comm as sys::ncclComm_t).map_err(nccl_err(what))
            })
            .unwrap_or_else(|| Err(EngineError::Aborted(format!("NCCL {what}: the group was aborted"))))
    }

    /// (device pointer, elements) of a CUDA tensor on this rank's device.
    fn ptr(&self, t: &Tensor) -> Result<u64> {
        match &*t.storage() {
            Storage::Cuda(s) if s.device().same(&self.device) => Ok(s.ptr()),
            _ => Err(EngineError::invalid("nccl", format!("{t:?} is not on rank {}'s GPU", self.rank))),
        }
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        let (p, dt, n, stream) = (self.ptr(t)?, Self::dtype(t)?, t.numel(), self.stream());
        // SAFETY: in-place all-reduce over t's numel elements of its device buffer.
        self.with_comm("all_reduce", |c| unsafe {
            result::all_reduce(p as *const _, p as *mut _, n, dt, sys::ncclRedOp_t::ncclSum, c, stream).map(|_| ())
        })
    }

    fn reduce_scatter_sum(&self, input: &Tensor, output: &Tensor) -> Result<()> {
        if input.numel() != output.numel() * self.world || input.dtype() != output.dtype() {
            return Err(EngineError::shape("reduce_scatter", format!("{input:?} -> {output:?} over {}", self.world)));
        }
        let (i, o, dt, n, stream) =
            (self.ptr(input)?, self.ptr(output)?, Self::dtype(input)?, output.numel(), self.stream());
        // SAFETY: input holds world·k elements and output k, checked above.
        self.with_comm("reduce_scatter", |c| unsafe {
            result::reduce_scatter(i as *const _, o as *mut _, n, dt, sys::ncclRedOp_t::ncclSum, c, stream).map(|_| ())
        })
    }

    fn all_gather(&self, input: &Tensor, output: &Tensor) -> Result<()> {
        if output.numel() != input.numel() * self.world || input.dtype() != output.dtype() {
            return Err(EngineError::shape("all_gather", format!("{input:?} -> {output:?} over {}", self.world)));
        }
        let (i, o, dt, n, stream) =
            (self.ptr(input)?, self.ptr(output)?, Self::dtype(input)?, input.numel(), self.stream());
        // SAFETY: output holds world·k elements and input k, checked above.
        self.with_comm("all_gather", |c| unsafe {
            result::all_gather(i as *const _, o as *mut _, n, dt, c, stream).map(|_| ())
        })
    }

    fn all_gather_host(&self, bytes: Vec<u8>) -> Result<Arc<Vec<Vec<u8>>>> {
        self.host.all_gather_host(bytes)
    }

    fn abort(&self, reason: &str) {
        self.host.abort(reason);
        // 1. no rank starts a new operation; 2. free every communicator once, after an enqueue in progress
        //    has returned (bounded wait: a rank blocked inside NCCL is what ncclCommAbort releases)
        for slot in &self.group.slots {
            slot.guard.mark_aborted();
        }
        let deadline = std::time::Instant::now() + ABORT_WAIT;
        for slot in &self.group.slots {
            // SAFETY: Guarded calls this at most once per communicator, with no operation able to start on it.
            slot.guard.abort(deadline, || {
                let _ = unsafe { result::comm_abort(slot.comm as sys::ncclComm_t) };
            });
        }
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        let slot = &self.group.slots[self.rank];
        // After an abort or during a panic peers may still have collectives queued that this rank will not
        // join: abort rather than destroy (which waits for them).
        slot.guard.release(|abort| {
            // SAFETY: this rank owns the communicator, Guarded frees it once, and nothing is issued after drop.
            let _ = unsafe {
                if abort {
                    result::comm_abort(slot.comm as sys::ncclComm_t)
                } else {
                    result::comm_destroy(slot.comm as sys::ncclComm_t)
                }
            };
        });
    }
}
