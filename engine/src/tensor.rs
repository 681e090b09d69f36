//! `Tensor`: a shape, a dtype and contiguous row-major storage on one device, plus its autograd link.
//! Tensors are cheap handles (`Arc`); reshape/detach share storage, every other op allocates its output.
use crate::autograd::{self, is_grad_enabled, Backward, GradLink, GradStorage, LeafGrad, Node};
use crate::cpu::CpuStorage;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::shape::Shape;
use crate::storage::{CudaStorage, Storage};
use half::bf16;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    id: u64,
    shape: Shape,
    dtype: DType,
    device: Device,
    storage: Arc<RwLock<Storage>>,
    link: GradLink,
}

/// Host element types a tensor can be built from.
pub trait Element: Copy + 'static {
    fn into_storage(v: Vec<Self>) -> CpuStorage;
}
macro_rules! element {
    ($($t:ty => $v:ident),*) => {$(
        impl Element for $t {
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$v(v)
            }
        }
    )*};
}
element!(f32 => F32, f64 => F64, bf16 => BF16, i32 => I32);

impl Tensor {
    // ---------------------------------------------------------------- construction
    pub(crate) fn from_storage(storage: Storage, shape: Shape, device: &Device) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dtype: storage.dtype(),
            shape,
            device: device.clone(),
            storage: Arc::new(RwLock::new(storage)),
            link: GradLink::None,
        }))
    }

    /// Wrap a CPU or CUDA storage result of an op; records `rule` when grad mode is on and an input needs grad.
    pub(crate) fn from_op(
        storage: Storage,
        shape: Shape,
        device: &Device,
        inputs: &[&Tensor],
        rule: impl Backward + 'static,
    ) -> Result<Tensor> {
        Tensor::from_op_output(Tensor::from_storage(storage, shape, device), inputs, rule)
    }

    /// Whether an op over `inputs` is recorded on the tape now (gradients on, and an input requires them):
    /// forward-only ops refuse exactly these calls.
    pub(crate) fn would_record(inputs: &[&Tensor]) -> bool {
        is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())
    }

    /// Attach a backward rule to an already computed (unrecorded) output.
    pub(crate) fn from_op_output(out: Tensor, inputs: &[&Tensor], rule: impl Backward + 'static) -> Result<Tensor> {
        if !Tensor::would_record(inputs) {
            return Ok(out);
        }
        let node = Node {
            position: autograd::next_tape_position(),
            rule: Box::new(rule),
            inputs: inputs.iter().map(|t| (*t).clone()).collect(),
        };
        Ok(out.with_link(GradLink::Node(Arc::new(node))))
    }

    fn with_link(&self, link: GradLink) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape: self.0.shape.clone(),
            dtype: self.0.dtype,
            device: self.0.device.clone(),
            storage: self.0.storage.clone(),
            link,
        }))
    }

    /// A tensor sharing this one's storage under another shape (same numel), without recording.
    pub(crate) fn view_as(&self, shape: Shape) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            dtype: self.0.dtype,
            device: self.0.device.clone(),
            storage: self.0.storage.clone(),
            link: GradLink::None,
        }))
    }

    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(EngineError::shape(
                "from_vec",
                format!("{} values do not fill shape {shape} ({} elements)", data.len(), shape.numel()),
            ));
        }
        Tensor::from_cpu(T::into_storage(data), shape, device)
    }

    /// Values given as f64, stored as `dtype` (rounded).
    pub fn from_f64(values: &[f64], shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if values.len() != shape.numel() {
            return Err(EngineError::shape("from_f64", format!("{} values do not fill shape {shape}", values.len())));
        }
        Tensor::from_cpu(CpuStorage::from_f64(dtype, values), shape, device)
    }

    pub(crate) fn from_cpu(s: CpuStorage, shape: Shape, device: &Device) -> Result<Tensor> {
        crate::graph::check_no_transfer("a host-to-device upload")?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(s),
            Device::Cuda(d) => Storage::Cuda(CudaStorage::from_cpu(d, &s)?),
        };
        Ok(Tensor::from_storage(storage, shape, device))
    }

    pub fn full(shape: impl Into<Shape>, value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_numel()?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::full(dtype, n, value)?),
            Device::Cuda(d) => Storage::Cuda(crate::cuda::kernels::fill(d, dtype, n, value)?),
        };
        Ok(Tensor::from_storage(storage, shape, device))
    }
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_numel()?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::zeros(dtype, n)?),
            Device::Cuda(d) => Storage::Cuda(CudaStorage::zeros(d, dtype, n)?),
        };
        Ok(Tensor::from_storage(storage, shape, device))
    }
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype, device)
    }
    pub fn scalar(value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(Shape::scalar(), value, dtype, device)
    }
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape().clone(), self.dtype(), self.device())
    }
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape().clone(), self.dtype(), self.device())
    }

    /// Standard normal samples · `std`, from a seeded generator (same seed = same values on any device).
    pub fn randn(shape: impl Into<Shape>, std: f64, dtype: DType, device: &Device, seed: u64) -> Result<Tensor> {
        let shape = shape.into();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f64> = (0..shape.numel())
            .map(|_| {
                // Box–Muller
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        Tensor::from_f64(&v, shape, dtype, device)
    }
    /// Normal samples · `std` from a counter-based generator: element i depends only on (seed, i), and the
    /// GPU fills the tensor in place (no host round trip), so multi-billion-parameter random models
    /// initialise in milliseconds. CPU and GPU agree up to the last bit of libm vs CUDA log/cos.
    pub fn randn_hashed(shape: impl Into<Shape>, std: f64, dtype: DType, device: &Device, seed: u64) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.numel();
        match device {
            Device::Cpu => {
                let v: Vec<f64> =
                    (0..n as u64).map(|i| crate::cpu::random::hashed_normal(seed, i, std as f32) as f64).collect();
                Tensor::from_f64(&v, shape, dtype, device)
            }
            Device::Cuda(d) => {
                let st = crate::cuda::kernels::randn(d, dtype, n, seed, std)?;
                Ok(Tensor::from_storage(Storage::Cuda(st), shape, device))
            }
        }
    }
    /// Uniform samples in [lo, hi).
    pub fn rand_uniform(
        shape: impl Into<Shape>,
        lo: f64,
        hi: f64,
        dtype: DType,
        device: &Device,
        seed: u64,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f64> = (0..shape.numel()).map(|_| lo + (hi - lo) * rng.random::<f64>()).collect();
        Tensor::from_f64(&v, shape, dtype, device)
    }

    // ---------------------------------------------------------------- accessors
    pub fn id(&self) -> u64 {
        self.0.id
    }
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.shape.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn grad_link(&self) -> &GradLink {
        &self.0.link
    }
    /// True if no other handle refers to this tensor or its storage (its buffer can be taken over).
    pub(crate) fn is_unique(&self) -> bool {
        Arc::strong_count(&self.0) == 1 && Arc::strong_count(&self.0.storage) == 1
    }
    /// True if both handles share one storage buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    // ---------------------------------------------------------------- transfers
    /// Copy to the host as a `CpuStorage` (synchronises the device).
    pub fn to_cpu_storage(&self) -> Result<CpuStorage> {
        crate::graph::check_no_transfer("a device-to-host read")?;
        match &*self.storage() {
            Storage::Cpu(s) => Ok(s.clone()),
            Storage::Cuda(s) => s.to_cpu(),
        }
    }
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(self.to_cpu_storage()?.to_f64_vec())
    }
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(match self.to_cpu_storage()? {
            CpuStorage::F32(v) => v,
            s => s.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        })
    }
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        match self.to_cpu_storage()? {
            CpuStorage::I32(v) => Ok(v),
            s => Err(EngineError::DType { op: "to_vec_i32", msg: format!("tensor is {}", s.dtype()) }),
        }
    }
    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(EngineError::shape("to_scalar", format!("tensor has shape {}", self.shape())));
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// Copy to `device` (differentiable: the gradient is copied back).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device().same(device) {
            return Ok(self.clone());
        }
        let out = Tensor::from_cpu(self.to_cpu_storage()?, self.shape().clone(), device)?;
        Tensor::from_op_output(out, &[self], ToDeviceBackward { src: self.device().clone() })
    }

    // ---------------------------------------------------------------- autograd
    pub fn requires_grad(&self) -> bool {
        !matches!(self.0.link, GradLink::None)
    }
    /// A trainable leaf sharing this tensor's storage (gradients accumulate into it).
    pub fn param(&self) -> Tensor {
        self.with_link(GradLink::Leaf(Arc::new(Mutex::new(LeafGrad::default()))))
    }
    pub fn is_param(&self) -> bool {
        matches!(self.0.link, GradLink::Leaf(_))
    }
    /// Same storage, cut from the graph.
    pub fn detach(&self) -> Tensor {
        self.with_link(GradLink::None)
    }
    /// A fresh copy of the data, cut from the graph.
    pub fn detach_copy(&self) -> Result<Tensor> {
        let storage = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(s.clone()),
            Storage::Cuda(s) => Storage::Cuda(s.try_clone()?),
        };
        Ok(Tensor::from_storage(storage, self.shape().clone(), self.device()))
    }
    /// Accumulated gradient of a trainable leaf, in [`Tensor::grad_dtype`]: f32 (f64 for f64 leaves), or
    /// bf16 for a bf16 leaf whose [`GradStorage`] is `Bf16`.
    pub fn grad(&self) -> Option<Tensor> {
        match &self.0.link {
            GradLink::Leaf(slot) => slot.lock().unwrap_or_else(|e| e.into_inner()).grad.clone(),
            _ => None,
        }
    }
    /// How this trainable leaf stores its gradient (None for a tensor that is not a trainable leaf).
    pub fn grad_storage(&self) -> Option<GradStorage> {
        match &self.0.link {
            GradLink::Leaf(slot) => Some(slot.lock().unwrap_or_else(|e| e.into_inner()).storage),
            _ => None,
        }
    }
    /// The dtype of this trainable leaf's accumulated gradient (None for a tensor that is not one).
    pub fn grad_dtype(&self) -> Option<DType> {
        self.grad_storage().map(|s| s.grad_dtype(self.dtype()))
    }
    /// Choose how this trainable leaf stores its gradient (it matters for bf16 leaves only: f32 and f64
    /// leaves keep f32 and f64 gradients). A gradient already held is converted.
    pub fn set_grad_storage(&self, storage: GradStorage) -> Result<()> {
        let GradLink::Leaf(slot) = &self.0.link else {
            return Err(EngineError::Autograd("set_grad_storage on a tensor that is not a trainable leaf".into()));
        };
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let dtype = storage.grad_dtype(self.dtype());
        if let Some(g) = guard.grad.as_ref().filter(|g| g.dtype() != dtype) {
            let _ng = autograd::no_grad();
            guard.grad = Some(g.to_dtype(dtype)?.detach());
        }
        guard.storage = storage;
        Ok(())
    }
    /// Replace the accumulated gradient. It must match the parameter's shape and device, be of the
    /// gradient dtype ([`Tensor::grad_dtype`]) and not share the parameter's storage.
    pub fn set_grad(&self, g: Option<Tensor>) -> Result<()> {
        let GradLink::Leaf(slot) = &self.0.link else {
            return Err(EngineError::Autograd("set_grad on a tensor that is not a trainable leaf".into()));
        };
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = &g {
            let acc = guard.storage.grad_dtype(self.dtype());
            if g.shape() != self.shape() || g.dtype() != acc || !g.device().same(self.device()) {
                return Err(EngineError::invalid(
                    "set_grad",
                    format!("gradient {g:?} for parameter {self:?} (gradients are {acc}, same shape and device)"),
                ));
            }
            if g.shares_storage(self) {
                return Err(EngineError::invalid("set_grad", "a gradient cannot share the parameter's storage"));
            }
        }
        guard.grad = g;
        Ok(())
    }
    pub fn zero_grad(&self) {
        if let GradLink::Leaf(slot) = &self.0.link {
            slot.lock().unwrap_or_else(|e| e.into_inner()).grad = None;
        }
    }
    /// Backpropagate from this tensor; a non-scalar output is seeded with ones.
    pub fn backward(&self) -> Result<()> {
        let seed = {
            let _ng = autograd::no_grad();
            self.ones_like()?
        };
        self.backward_with(seed)
    }
    /// Backpropagate with an explicit ∂L/∂self.
    pub fn backward_with(&self, seed: Tensor) -> Result<()> {
        if seed.shape() != self.shape() {
            return Err(EngineError::shape(
                "backward",
                format!("seed gradient {} does not match output {}", seed.shape(), self.shape()),
            ));
        }
        if seed.dtype() != self.dtype() || !seed.device().same(self.device()) {
            return Err(EngineError::DType {
                op: "backward",
                msg: format!("seed gradient {seed:?} for output {self:?} (must match dtype and device)"),
            });
        }
        autograd::run_backward(self, seed)
    }

    /// In place: self += alpha · g (self f32, f64 on CPU, or bf16 — each bf16 element's sum formed in f32 and
    /// rounded once — and not a graph node; g of any float dtype).
    pub fn add_assign_scaled(&self, g: &Tensor, alpha: f64) -> Result<()> {
        crate::ops::check_same_device("add_assign", self, g)?;
        if self.shape() != g.shape() {
            return Err(EngineError::shape("add_assign", format!("{} += {}", self.shape(), g.shape())));
        }
        if self.shares_storage(g) {
            let copy = g.detach_copy()?;
            return self.add_assign_scaled(&copy, alpha);
        }
        let src = g.storage();
        let mut dst = self.storage_mut();
        match (&mut *dst, &*src) {
            (Storage::Cpu(CpuStorage::F32(d)), Storage::Cpu(s)) => {
                let s = s.cast(DType::F32);
                for (x, y) in d.iter_mut().zip(s.as_f32("add_assign")?) {
                    *x += (alpha as f32) * y;
                }
            }
            (Storage::Cpu(CpuStorage::F64(d)), Storage::Cpu(s)) => {
                for (x, y) in d.iter_mut().zip(s.to_f64_vec()) {
                    *x += alpha * y;
                }
            }
            // A bf16 accumulator: each element's sum formed in f32 and rounded once.
            (Storage::Cpu(CpuStorage::BF16(d)), Storage::Cpu(s)) => {
                let s = s.cast(DType::F32);
                for (x, y) in d.iter_mut().zip(s.as_f32("add_assign")?) {
                    *x = half::bf16::from_f32(x.to_f32() + (alpha as f32) * y);
                }
            }
            (Storage::Cuda(d), Storage::Cuda(s)) => crate::cuda::kernels::axpy(d, s, alpha)?,
            (d, _) => {
                return Err(EngineError::UnsupportedDType {
                    op: "add_assign",
                    dtype: d.dtype(),
                    msg: "accumulators are f32 or bf16 (or f64 on CPU)",
                })
            }
        }
        Ok(())
    }

    /// In place: self *= s for a one-element tensor `s` of the same float dtype and device (no host sync).
    pub fn mul_assign_scalar(&self, s: &Tensor) -> Result<()> {
        crate::ops::check_same_device("mul_assign_scalar", self, s)?;
        if s.numel() != 1 || s.dtype() != self.dtype() {
            return Err(EngineError::invalid(
                "mul_assign_scalar",
                format!("{s:?} is not a scalar of {}", self.dtype()),
            ));
        }
        if self.shares_storage(s) {
            return Err(EngineError::invalid("mul_assign_scalar", "the scale shares this tensor's storage"));
        }
        let src = s.storage();
        match (&mut *self.storage_mut(), &*src) {
            (Storage::Cuda(d), Storage::Cuda(c)) if d.dtype == DType::F32 => crate::cuda::kernels::scale_by(d, c),
            (Storage::Cpu(CpuStorage::F32(d)), Storage::Cpu(c)) => {
                let k = c.to_f64_vec()[0] as f32;
                d.iter_mut().for_each(|x| *x *= k);
                Ok(())
            }
            (Storage::Cpu(CpuStorage::F64(d)), Storage::Cpu(c)) => {
                let k = c.to_f64_vec()[0];
                d.iter_mut().for_each(|x| *x *= k);
                Ok(())
            }
            (d, _) => Err(EngineError::UnsupportedDType {
                op: "mul_assign_scalar",
                dtype: d.dtype(),
                msg: "f32 (or f64 on CPU) only",
            }),
        }
    }

    /// Overwrite this tensor's values with `src`'s (same shape and dtype; used by optimizers and loaders).
    /// Overwrite this i32 tensor's values in place from the host (the device buffer keeps its address:
    /// the way to feed a captured step graph its next inputs).
    pub fn write_i32(&self, values: &[i32]) -> Result<()> {
        crate::graph::check_no_transfer("a host-to-device upload")?;
        if self.dtype() != DType::I32 || values.len() != self.numel() {
            return Err(EngineError::shape(
                "write_i32",
                format!("{} i32 values into {} {}", values.len(), self.shape(), self.dtype()),
            ));
        }
        match &mut *self.storage_mut() {
            Storage::Cpu(CpuStorage::I32(v)) => {
                v.copy_from_slice(values);
                Ok(())
            }
            Storage::Cuda(c) => c.write_i32(values),
            Storage::Cpu(_) => Err(EngineError::invalid("write_i32", "storage is not i32")),
        }
    }

    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if self.shape() != src.shape() || self.dtype() != src.dtype() {
            return Err(EngineError::shape(
                "copy_from",
                format!("{} {} <- {} {}", self.shape(), self.dtype(), src.shape(), src.dtype()),
            ));
        }
        let data = src.to_device(self.device())?.detach_copy()?;
        let new = std::mem::replace(&mut *data.storage_mut(), Storage::Cpu(CpuStorage::F32(Vec::new())));
        *self.storage_mut() = new;
        Ok(())
    }
}

struct ToDeviceBackward {
    src: Device,
}
impl Backward for ToDeviceBackward {
    fn name(&self) -> &'static str {
        "to_device"
    }
    fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_device(&self.src)?)])
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}, {}, {})", self.shape(), self.dtype(), self.device())
    }
}
