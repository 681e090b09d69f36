//! [`Communicator`] over NCCL for the GPU path: one communicator per GPU of this process
//! (`ncclCommInitAll`), each driven by its rank's worker thread on that device's stream. Host-side
//! exchanges (rollouts, counts, norms) and abort propagation go through an in-process [`ThreadComm`].
//! Unverified on hardware so far (no multi-GPU machine lent; NCCL with one rank ran on the H100 in
//! toolchain.md's probe).
use super::{Communicator, ThreadComm};
use crate::cuda::CudaDevice;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::Storage;
use crate::tensor::Tensor;
use cudarc::nccl::{result, sys};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct NcclComm {
    rank: usize,
    world: usize,
    comm: sys::ncclComm_t,
    device: CudaDevice,
    host: ThreadComm,
    group: Arc<Group>,
}

/// Every communicator of the group (as addresses), so that one rank's abort can abort them all: a rank
/// blocked in a collective its peer will never join is only released by aborting its own communicator.
struct Group {
    /// Live communicators by rank; None once destroyed or aborted (the lock orders abort against drop).
    live: Mutex<Vec<Option<usize>>>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as one thread at a time issues its
// operations; each NcclComm belongs to exactly one worker thread, which is the only one calling it.
unsafe impl Send for NcclComm {}
// SAFETY: see Send; `abort` (the one cross-thread call) is ncclCommAbort, which NCCL allows from another
// thread, serialised against destruction by the group's lock.
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
        let n = devices.len();
        let ordinals: Vec<i32> = devices.iter().map(|d| d.ordinal() as i32).collect();
        let mut comms: Vec<sys::ncclComm_t> = vec![std::ptr::null_mut(); n];
        // SAFETY: `comms` has room for n communicators and `ordinals` lists n devices.
        unsafe { result::comm_init_all(comms.as_mut_ptr(), n as i32, ordinals.as_ptr()) }.map_err(nccl_err("init"))?;
        let hosts = ThreadComm::group(n, host_timeout);
        let group = Arc::new(Group { live: Mutex::new(comms.iter().map(|&c| Some(c as usize)).collect()) });
        Ok(comms
            .into_iter()
            .zip(hosts)
            .zip(devices)
            .enumerate()
            .map(|(rank, ((comm, host), d))| NcclComm {
                rank,
                world: n,
                comm,
                device: d.clone(),
                host,
                group: group.clone(),
            })
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
        let (p, dt) = (self.ptr(t)?, Self::dtype(t)?);
        self.device.bind()?;
        // SAFETY: in-place all-reduce over t's numel elements of its device buffer.
        unsafe {
            result::all_reduce(
                p as *const _,
                p as *mut _,
                t.numel(),
                dt,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                self.stream(),
            )
        }
        .map(|_| ())
        .map_err(nccl_err("all_reduce"))
    }

    fn reduce_scatter_sum(&self, input: &Tensor, output: &Tensor) -> Result<()> {
        if input.numel() != output.numel() * self.world || input.dtype() != output.dtype() {
            return Err(EngineError::shape("reduce_scatter", format!("{input:?} -> {output:?} over {}", self.world)));
        }
        let (i, o, dt) = (self.ptr(input)?, self.ptr(output)?, Self::dtype(input)?);
        self.device.bind()?;
        // SAFETY: input holds world·k elements and output k, checked above.
        unsafe {
            result::reduce_scatter(
                i as *const _,
                o as *mut _,
                output.numel(),
                dt,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                self.stream(),
            )
        }
        .map(|_| ())
        .map_err(nccl_err("reduce_scatter"))
    }

    fn all_gather(&self, input: &Tensor, output: &Tensor) -> Result<()> {
        if output.numel() != input.numel() * self.world || input.dtype() != output.dtype() {
            return Err(EngineError::shape("all_gather", format!("{input:?} -> {output:?} over {}", self.world)));
        }
        let (i, o, dt) = (self.ptr(input)?, self.ptr(output)?, Self::dtype(input)?);
        self.device.bind()?;
        // SAFETY: output holds world·k elements and input k, checked above.
        unsafe { result::all_gather(i as *const _, o as *mut _, input.numel(), dt, self.comm, self.stream()) }
            .map(|_| ())
            .map_err(nccl_err("all_gather"))
    }

    fn all_gather_host(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        self.host.all_gather_host(bytes)
    }

    fn abort(&self, reason: &str) {
        self.host.abort(reason);
        let mut live = self.group.live.lock().unwrap_or_else(|e| e.into_inner());
        for c in live.iter_mut().filter_map(Option::take) {
            // SAFETY: `c` was live (not yet destroyed or aborted) under the lock; taking it marks it gone.
            let _ = unsafe { result::comm_abort(c as sys::ncclComm_t) };
        }
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        let mut live = self.group.live.lock().unwrap_or_else(|e| e.into_inner());
        if live[self.rank].take().is_some() {
            // SAFETY: this thread owns the communicator, it was still live under the lock, and no operation
            // is issued after drop.
            let _ = unsafe { result::comm_destroy(self.comm) };
        }
    }
}
