//! The CUDA backend: one device = context + stream + cuBLAS handle + caching allocator + loaded PTX modules.
//! Every launch and library call is checked; a missing driver or library is a typed error, not a panic.
/// Launch `family::name` with the given arguments (each a variable: pointers as u64, scalars, geometry).
/// Defined before the submodules so they can use it.
macro_rules! launch {
    ($dev:expr, $family:literal, $name:expr, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        use cudarc::driver::PushKernelArg;
        let name: &str = &$name;
        let k = $dev.function($family, name)?;
        // cudarc passes the arguments untyped: their count and sizes must be the kernel's (from its PTX).
        k.check_args($family, name, &[$(std::mem::size_of_val(&$arg)),*])?;
        let stream = $dev.stream().clone();
        let mut b = stream.launch_builder(&k.f);
        $( b.arg(&$arg); )*
        // SAFETY: argument lists follow kernels-cu/cuda/README.md; buffers are sized by the callers.
        crate::profile::host_region("cuda: cuLaunchKernel", || unsafe { b.launch($cfg) })
            .map_err(|e| EngineError::cuda(format!("launching {name}"), e))?;
        $dev.after_launch(name)?;
    }};
}

pub mod alloc;
pub mod attention;
pub mod choices;
pub mod decode;
pub mod gemm;
pub mod gemm_lt;
pub mod geo;
pub mod graph;
pub mod kernels;
#[cfg(test)]
mod launch_sites;
pub mod policy_loss;
pub mod readback;
pub mod sampling;
pub mod select;
pub(crate) mod select_params;
pub(crate) mod select_wide;
pub mod timing;
pub(crate) mod tma;
pub mod weights;

use crate::error::{EngineError, Result};
use alloc::{CachingAllocator, DeviceBlock, MemoryStats};
pub use choices::{set_default_kernel_choices, KernelChoices};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{result, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Why CUDA can or cannot be used on this machine, checked without letting cudarc panic.
pub fn device_count() -> Result<usize> {
    // SAFETY: is_culib_present only tries to dlopen the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(EngineError::CudaUnavailable(
            "no CUDA driver library (libcuda.so) was found: this machine has no NVIDIA driver".into(),
        ));
    }
    result::init().map_err(|e| EngineError::CudaUnavailable(format!("cuInit failed: {e:?}")))?;
    let n = result::device::get_count()
        .map_err(|e| EngineError::CudaUnavailable(format!("cuDeviceGetCount failed: {e:?}")))?;
    if n <= 0 {
        return Err(EngineError::CudaUnavailable("the CUDA driver sees no GPU".into()));
    }
    Ok(n as usize)
}

/// A loaded kernel and its parameters' byte sizes, read from its PTX `.entry` (`entrl_kernels::param_sizes`).
#[derive(Clone)]
pub(crate) struct Kernel {
    pub f: CudaFunction,
    params: Arc<[usize]>,
}

impl Kernel {
    /// A launch's arguments must match the kernel's parameters in count and size, in order (`launch!` checks
    /// before every launch: cudarc would pass a missing or mis-sized argument through, read as garbage).
    pub(crate) fn check_args(&self, family: &str, name: &str, sizes: &[usize]) -> Result<()> {
        if *self.params == *sizes {
            return Ok(());
        }
        Err(EngineError::Cuda {
            context: format!("launching {family}::{name}"),
            msg: format!(
                "the host passes {} arguments of {sizes:?} bytes but the kernel takes {} of {:?} \
                 (kernels-cu/cuda/README.md lists the signatures)",
                sizes.len(),
                self.params.len(),
                self.params
            ),
        })
    }
}

/// One CUDA GPU. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct CudaDevice {
    inner: Arc<Inner>,
}

struct Inner {
    /// cuBLASLt handle, workspace and plans, created on first use (the `lt` GEMM backend). First field: fields drop
    /// in order, so its handle goes while the context is surely alive.
    lt: std::sync::OnceLock<std::result::Result<gemm_lt::LtState, String>>,
    ordinal: usize,
    name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    alloc: Arc<CachingAllocator>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Loaded kernels by family, then name.
    functions: Mutex<HashMap<&'static str, HashMap<String, Kernel>>>,
    /// Device-side error word written by kernels that validate indices (1 = index out of range).
    err_flag: DeviceBlock,
    debug_sync: AtomicBool,
    /// The kernel versions this device runs (`choices.rs`).
    choices: Mutex<KernelChoices>,
    /// (major, minor), read from the driver once (every attention launch asks which version runs here).
    capability: std::sync::OnceLock<(i32, i32)>,
    /// Page-locked buffers of the non-draining reads (`read_i32_async`).
    pinned: readback::PinnedPool,
    /// The stream of CUDA-graph capture and replay (the main stream is the legacy default stream,
    /// which cannot be captured), created on first use.
    graph_stream: std::sync::OnceLock<Arc<CudaStream>>,
    /// While a graph is captured, the stream every launch goes to instead of `stream`; `routed` says
    /// whether it is set, so a launch outside a capture takes no lock.
    capturing: Mutex<Option<Arc<CudaStream>>>,
    routed: AtomicBool,
}

impl Drop for Inner {
    /// Runs before the fields drop: finish in-flight work and make this device's context current, so the
    /// cuBLAS handle, modules and buffers are released in their own context (the last clone may drop on a
    /// thread that last drove another GPU).
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
    }
}

impl CudaDevice {
    pub fn new(ordinal: usize) -> Result<Self> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(EngineError::CudaUnavailable(format!("asked for GPU {ordinal} but only {n} visible")));
        }
        if !entrl_kernels::COMPILED {
            return Err(EngineError::KernelsNotCompiled);
        }
        // SAFETY: only dlopen checks.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(EngineError::CudaUnavailable(
                "libcublas.so was not found (add the CUDA toolkit's lib directory to LD_LIBRARY_PATH)".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| EngineError::cuda("creating the context", e))?;
        // The engine orders all work on one stream and manages its own buffers: no per-slice events.
        // SAFETY: no CudaSlice crosses streams in this engine.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| EngineError::cuda("creating the cuBLAS handle", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let alloc = CachingAllocator::new(ctx.clone(), stream.clone());
        let err_flag = alloc.alloc(4)?;
        let dev = CudaDevice {
            inner: Arc::new(Inner {
                lt: std::sync::OnceLock::new(),
                ordinal,
                name,
                ctx,
                stream,
                blas,
                alloc,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
                err_flag,
                debug_sync: AtomicBool::new(false),
                choices: Mutex::new(choices::default_kernel_choices()),
                capability: std::sync::OnceLock::new(),
                pinned: Arc::new(Mutex::new(Vec::new())),
                graph_stream: std::sync::OnceLock::new(),
                capturing: Mutex::new(None),
                routed: AtomicBool::new(false),
            }),
        };
        dev.clear_error_flag()?;
        Ok(dev)
    }

    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Bytes of memory on this GPU (cuMemGetInfo's total).
    pub fn total_memory(&self) -> Result<usize> {
        self.bind()?;
        cudarc::driver::result::mem_get_info().map(|(_, total)| total).map_err(|e| EngineError::cuda("cuMemGetInfo", e))
    }
    /// This device's cuBLASLt state, created on first use.
    pub(crate) fn lt(&self) -> Result<&gemm_lt::LtState> {
        self.inner
            .lt
            .get_or_init(|| gemm_lt::LtState::new(self).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| EngineError::invalid("matmul", e.clone()))
    }
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        if let Some(&cc) = self.inner.capability.get() {
            return Ok(cc);
        }
        let cc = self.inner.ctx.compute_capability().map_err(|e| EngineError::cuda("compute capability", e))?;
        Ok(*self.inner.capability.get_or_init(|| cc))
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }
    /// The stream work is queued on: the device's one stream, or the graph stream while a graph is
    /// captured.
    pub fn stream(&self) -> Arc<CudaStream> {
        if !self.inner.routed.load(Ordering::Acquire) {
            return self.inner.stream.clone();
        }
        match &*self.inner.capturing.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(s) => s.clone(),
            None => self.inner.stream.clone(),
        }
    }
    pub(crate) fn blas(&self) -> &CudaBlas {
        &self.inner.blas
    }
    pub fn same(&self, other: &CudaDevice) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn alloc(&self, bytes: usize) -> Result<DeviceBlock> {
        crate::profile::host_region("cuda: allocate (caching allocator)", || self.inner.alloc.alloc(bytes))
    }
    pub fn memory_stats(&self) -> MemoryStats {
        self.inner.alloc.stats()
    }
    pub fn reset_peak_memory(&self) {
        self.inner.alloc.reset_peak()
    }
    pub fn empty_cache(&self) -> Result<()> {
        self.inner.alloc.empty_cache()
    }
    /// Fill every new block with NaN bytes (self-test mode).
    pub fn set_poison(&self, on: bool) {
        self.inner.alloc.set_poison(on)
    }
    /// The kernel versions this device runs.
    pub fn kernel_choices(&self) -> KernelChoices {
        *self.inner.choices.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Run `c`'s kernel versions from now on.
    pub fn set_kernel_choices(&self, c: KernelChoices) {
        *self.inner.choices.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }
    /// Runs `f` with `c`'s kernel versions, then puts the previous choices back (also when `f` panics).
    pub fn with_kernel_choices<T>(&self, c: KernelChoices, f: impl FnOnce() -> T) -> T {
        struct Restore<'a>(&'a CudaDevice, KernelChoices);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.set_kernel_choices(self.1);
            }
        }
        let _restore = Restore(self, self.kernel_choices());
        self.set_kernel_choices(c);
        f()
    }
    /// Synchronize and check for errors after every kernel (pinpoints a failing launch).
    pub fn set_debug_sync(&self, on: bool) {
        self.inner.debug_sync.store(on, Ordering::Relaxed)
    }

    /// Make this device's context current on the calling thread (raw driver calls need it).
    pub fn bind(&self) -> Result<()> {
        self.inner.ctx.bind_to_thread().map_err(|e| EngineError::cuda("binding the context", e))
    }

    /// Wait for all queued work; report asynchronous kernel faults and index errors raised by kernels.
    pub fn synchronize(&self) -> Result<()> {
        crate::graph::check_no_transfer("a device synchronisation")?;
        self.inner.stream.synchronize().map_err(|e| EngineError::cuda("stream synchronize", e))?;
        let mut flag = [0i32];
        // SAFETY: err_flag is a live 4-byte block; the stream is idle.
        unsafe { result::memcpy_dtoh_sync(&mut flag, self.inner.err_flag.ptr()) }
            .map_err(|e| EngineError::cuda("reading the kernel error flag", e))?;
        if flag[0] != 0 {
            self.clear_error_flag()?;
            return Err(EngineError::invalid(
                "embedding/gather",
                "an index on the GPU was outside its table (the output rows were zeroed)",
            ));
        }
        Ok(())
    }

    fn clear_error_flag(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: err_flag is a live 4-byte block.
        unsafe { result::memset_d8_async(self.inner.err_flag.ptr(), 0, 4, self.inner.stream.cu_stream()) }
            .map_err(|e| EngineError::cuda("clearing the kernel error flag", e))
    }

    pub(crate) fn error_flag_ptr(&self) -> u64 {
        self.inner.err_flag.ptr()
    }

    /// A kernel from one of the embedded PTX families, loaded and cached on first use.
    pub(crate) fn function(&self, family: &'static str, name: &str) -> Result<Kernel> {
        // Two levels so the per-launch lookup allocates nothing (the name is a &str here).
        if let Some(f) =
            self.inner.functions.lock().unwrap_or_else(|e| e.into_inner()).get(family).and_then(|m| m.get(name))
        {
            return Ok(f.clone());
        }
        let module = {
            let mut mods = self.inner.modules.lock().unwrap_or_else(|e| e.into_inner());
            match mods.get(family) {
                Some(m) => m.clone(),
                None => {
                    let ptx = entrl_kernels::ptx(family).ok_or(EngineError::KernelsNotCompiled)?;
                    let m = self
                        .inner
                        .ctx
                        .load_module(Ptx::from_src(ptx))
                        .map_err(|e| EngineError::cuda(format!("loading PTX module {family}"), e))?;
                    mods.insert(family, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(name)
            .map_err(|e| EngineError::cuda(format!("looking up kernel {family}::{name}"), e))?;
        let params = entrl_kernels::param_sizes(family, name).ok_or_else(|| EngineError::Cuda {
            context: format!("looking up kernel {family}::{name}"),
            msg: "its PTX .entry parameter list could not be read".into(),
        })?;
        let k = Kernel { f, params: params.into() };
        let mut functions = self.inner.functions.lock().unwrap_or_else(|e| e.into_inner());
        functions.entry(family).or_default().insert(name.to_string(), k.clone());
        Ok(k)
    }

    /// Allow `family::name` up to `bytes` of dynamic shared memory (needed above the default 48 KiB).
    pub(crate) fn allow_shared_memory(&self, family: &'static str, name: &str, bytes: usize) -> Result<()> {
        use cudarc::driver::sys::CUfunction_attribute_enum as Attr;
        self.bind()?;
        self.function(family, name)?
            .f
            .set_attribute(Attr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .map_err(|e| EngineError::cuda(format!("allowing {bytes} bytes of shared memory for {name}"), e))
    }

    /// Called after each launch: in debug-sync mode, wait and surface the kernel's own fault.
    pub(crate) fn after_launch(&self, name: &str) -> Result<()> {
        if self.inner.debug_sync.load(Ordering::Relaxed) && !crate::graph::capturing() {
            self.inner.stream.synchronize().map_err(|e| EngineError::cuda(format!("kernel {name}"), e))?;
        }
        Ok(())
    }
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cuda:{} ({})", self.inner.ordinal, self.inner.name)
    }
}
