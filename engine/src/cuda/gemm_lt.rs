//! Matmul through cuBLASLt with cached plans — a second GEMM path, opt-in (a device's
//! `KernelChoices::gemm`; `ENTRL_GEMM=lt` in the `entrl` binary) until an H100 measurement makes it the
//! default.
//!
//! Why: the default path (`gemm.rs`, `cublasGemmStridedBatchedEx`) took 13.4 µs of host time a call on the
//! H100 (`ENTRL_PROFILE=host`, qwen3-0.6b decode at batch 32: 196 calls a step, 2.67 of its 5.60 ms). Here
//! the matmul descriptor, the three layouts and the heuristic's algorithm are built once per shape
//! ([`PlanKey`]) and kept for the device's lifetime, so a call is one `cublasLtMatmul`.
//!
//! Same operand mapping as `gemm.rs`: row-major C = op(A)·op(B) is the column-major product
//! Cᵀ = op(B)ᵀ·op(A)ᵀ, so Lt's "A" is our B and Lt's "B" is our A; D = C (in place, beta·C accumulates).
use super::alloc::DeviceBlock;
use super::CudaDevice;
use crate::cpu::matmul::Gemm;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// Which library runs `gemm_into`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmBackend {
    /// `cublasGemmStridedBatchedEx` (the default).
    Cublas,
    /// `cublasLtMatmul` with plans cached per shape.
    Lt,
}

impl GemmBackend {
    pub const ALL: [GemmBackend; 2] = [Self::Cublas, Self::Lt];
    pub fn name(self) -> &'static str {
        match self {
            Self::Cublas => "cublas",
            Self::Lt => "lt",
        }
    }
}

/// Bytes of cuBLASLt workspace per device (NVIDIA's recommendation for Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

/// Everything a plan depends on.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    in_dtype: DType,
    out_dtype: DType,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    batch: usize,
    stride_a: usize,
    stride_b: usize,
    /// Byte alignment of Lt's A (our b), Lt's B (our a) and C = D, capped at 256: the heuristic may pick an
    /// algorithm that needs aligned pointers, and callers pass offsets into buffers (the fused loss's chunks).
    align: [u32; 3],
}

/// Plans kept per device; past this many (shapes that keep changing) the cache starts over.
const MAX_PLANS: usize = 4096;

/// The alignment a pointer guarantees, in bytes, at most 256.
fn alignment(ptr: u64) -> u32 {
    1u32 << ptr.trailing_zeros().min(8)
}

/// A matmul descriptor, layouts (Lt's A, Lt's B, C = D) and the chosen algorithm.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

// SAFETY: the descriptors are host-side objects, created once and only read afterwards (cuBLASLt allows
// using them from any thread).
unsafe impl Send for Plan {}
unsafe impl Sync for Plan {}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created by this plan (null when a build stopped before creating it) and destroyed once;
        // failures at teardown are ignored.
        unsafe {
            for layout in [self.c, self.b, self.a] {
                if !layout.is_null() {
                    let _ = lt::destroy_matrix_layout(layout);
                }
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// One device's cuBLASLt handle, workspace and plans.
pub(crate) struct LtState {
    handle: sys::cublasLtHandle_t,
    /// A raw block (not a `CudaStorage`, which holds the device: the device holds this state).
    workspace: DeviceBlock,
    plans: Mutex<HashMap<PlanKey, Arc<Plan>>>,
}

// SAFETY: the handle is only used under the device's one stream; cuBLASLt handles are thread-safe for use
// with distinct descriptors, and the plan map is behind a mutex.
unsafe impl Send for LtState {}
unsafe impl Sync for LtState {}

impl Drop for LtState {
    fn drop(&mut self) {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

impl LtState {
    pub(crate) fn new(dev: &CudaDevice) -> Result<Self> {
        // SAFETY: only checks whether the library could be loaded.
        if !unsafe { sys::is_culib_present() } {
            return Err(EngineError::invalid("matmul", "the lt GEMM backend was chosen but libcublasLt was not found"));
        }
        dev.bind()?;
        let handle = lt::create_handle().map_err(|e| EngineError::cuda("cublasLtCreate", e))?;
        let workspace = dev.alloc(WORKSPACE_BYTES)?;
        Ok(Self { handle, workspace, plans: Mutex::new(HashMap::new()) })
    }

    fn plan(&self, key: PlanKey) -> Result<Arc<Plan>> {
        if let Some(p) = self.plans.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(self.build(key)?);
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(key, p.clone());
        Ok(p)
    }

    fn build(&self, key: PlanKey) -> Result<Plan> {
        let err = |what: &str| {
            let what = what.to_string();
            move |e| {
                EngineError::cuda(format!("cuBLASLt {what} ({}x{}x{} batch {})", key.m, key.n, key.k, key.batch), e)
            }
        };
        let (ty, cty) = (lt_type(key.in_dtype)?, lt_type(key.out_dtype)?);
        let (m, n, k) = (key.m as u64, key.n as u64, key.k as u64);
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType::CUDA_R_32F)
            .map_err(err("matmul descriptor"))?;
        // From here every created object belongs to `plan`, whose Drop frees it on an early return (the
        // layouts start null and are filled in below).
        let mut plan = Plan {
            desc,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            algo: sys::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        for (attr, trans) in [
            (sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, key.trans_b),
            (sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, key.trans_a),
        ] {
            use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
            let op = if trans { CUBLAS_OP_T as i32 } else { CUBLAS_OP_N as i32 }; // the attribute is an int32
                                                                                  // SAFETY: a live descriptor; the attribute takes an int32 by pointer and size.
            unsafe {
                lt::set_matmul_desc_attribute(plan.desc, attr, (&op as *const i32).cast(), std::mem::size_of::<i32>())
            }
            .map_err(err("transpose attribute"))?;
        }
        // Column-major layouts (rows, cols, ld) as stored: Lt's A = our B (n×k, or k×n when transposed),
        // Lt's B = our A (k×m, or m×k when transposed), C = n×m.
        let (ar, ac) = if key.trans_b { (k, n) } else { (n, k) };
        let (br, bc) = if key.trans_a { (m, k) } else { (k, m) };
        plan.a = lt::create_matrix_layout(ty, ar, ac, ar as i64).map_err(err("layout A"))?;
        plan.b = lt::create_matrix_layout(ty, br, bc, br as i64).map_err(err("layout B"))?;
        plan.c = lt::create_matrix_layout(cty, n, m, n as i64).map_err(err("layout C"))?;
        if key.batch > 1 {
            let count = key.batch as i32;
            for (layout, stride) in [(plan.a, key.stride_b), (plan.b, key.stride_a), (plan.c, key.m * key.n)] {
                let stride = stride as i64;
                // SAFETY: live layouts; i32 batch count and i64 stride by pointer and size.
                unsafe {
                    lt::set_matrix_layout_attribute(
                        layout,
                        sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                        (&count as *const i32).cast(),
                        std::mem::size_of::<i32>(),
                    )
                    .and_then(|_| {
                        lt::set_matrix_layout_attribute(
                            layout,
                            sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                            (&stride as *const i64).cast(),
                            std::mem::size_of::<i64>(),
                        )
                    })
                }
                .map_err(err("batch attributes"))?;
            }
        }
        let pref = lt::create_matmul_pref().map_err(err("preference"))?;
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: a live preference; the workspace limit is a u64 by pointer and size. Then the heuristic over
        // live objects; the preference is destroyed whatever it returns.
        let heuristic = unsafe {
            use sys::cublasLtMatmulPreferenceAttributes_t as P;
            let [aa, ab, ac] = key.align;
            let set_u32 = |attr, v: u32| {
                lt::set_matmul_pref_attribute(pref, attr, (&v as *const u32).cast(), std::mem::size_of::<u32>())
            };
            lt::set_matmul_pref_attribute(
                pref,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
            .and_then(|_| set_u32(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, aa))
            .and_then(|_| set_u32(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, ab))
            .and_then(|_| set_u32(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, ac))
            .and_then(|_| set_u32(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, ac))
            .and_then(|_| lt::get_matmul_algo_heuristic(self.handle, plan.desc, plan.a, plan.b, plan.c, plan.c, pref))
        };
        // SAFETY: created above, destroyed once.
        let _ = unsafe { lt::destroy_matmul_pref(pref) };
        plan.algo = heuristic.map_err(err("heuristic (no algorithm)"))?.algo;
        Ok(plan)
    }
}

fn lt_type(dtype: DType) -> Result<sys::cudaDataType> {
    match dtype {
        DType::BF16 => Ok(sys::cudaDataType::CUDA_R_16BF),
        DType::F32 => Ok(sys::cudaDataType::CUDA_R_32F),
        d => Err(EngineError::UnsupportedDType { op: "matmul", dtype: d, msg: "cuBLASLt path takes f32 or bf16" }),
    }
}

/// C = op(A)·op(B) + beta·C through cuBLASLt (what `gemm::gemm_into` does through cuBLAS) for inputs of
/// `dtypes.0` into C of `dtypes.1`, with `[a, b, c]` the device pointers; `g` has k ≥ 1 and batch·m·n ≥ 1
/// (the caller handles the empty cases).
pub(crate) fn gemm_into_lt(
    dev: &CudaDevice,
    dtypes: (DType, DType),
    g: &Gemm,
    [a, b, c]: [u64; 3],
    beta: f32,
) -> Result<()> {
    let (in_dtype, out_dtype) = dtypes;
    let st = dev.lt()?;
    let key = PlanKey {
        in_dtype,
        out_dtype,
        m: g.m,
        n: g.n,
        k: g.k,
        trans_a: g.trans_a,
        trans_b: g.trans_b,
        batch: g.batch,
        stride_a: g.stride_a,
        stride_b: g.stride_b,
        align: [alignment(b), alignment(a), alignment(c)],
    };
    let plan = st.plan(key)?;
    let alpha = 1.0f32;
    let stream = dev.stream().cu_stream() as sys::cudaStream_t;
    crate::profile::host_region("cuda: cublasLtMatmul", || {
        // SAFETY: live plan objects and workspace; pointers are device buffers the caller sized for this
        // geometry; alpha/beta are host f32 scalars (the default pointer mode).
        unsafe {
            lt::matmul(
                st.handle,
                plan.desc,
                (&alpha as *const f32).cast::<c_void>(),
                (&beta as *const f32).cast::<c_void>(),
                b as *const c_void,
                plan.a,
                a as *const c_void,
                plan.b,
                c as *const c_void,
                plan.c,
                c as *mut c_void,
                plan.c,
                &plan.algo,
                st.workspace.ptr() as *mut c_void,
                WORKSPACE_BYTES,
                stream,
            )
        }
    })
    .map_err(|e| EngineError::cuda(format!("cublasLtMatmul {}x{}x{} batch {}", g.m, g.n, g.k, g.batch), e))?;
    dev.after_launch("gemm (cuBLASLt)")
}

#[cfg(test)]
mod tests {
    use super::alignment;

    #[test]
    fn alignment_is_the_lowest_set_bit_capped_at_256() {
        assert_eq!(alignment(0x7f00_0000_1000), 256);
        assert_eq!(alignment(0x7f00_0000_1080), 128);
        assert_eq!(alignment(0x7f00_0000_1002), 2);
        assert_eq!(alignment(0), 256);
    }
}
