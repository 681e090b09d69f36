//! CUDA kernels against the f64 CPU reference: each case's forward output and the gradients of every
//! float input (through the recorded backward), on fresh random inputs, with the allocator poisoning
//! every new block and every launch synchronised and checked.
use super::cases::{all_cases, OpCase};
use super::{max_rel_err, trainable_floats, CheckRow};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::tensor::Tensor;
use crate::GradStorage;

/// All GPU rows: every op case in f32 and bf16, optimizer and clipping (as [`backend_checks`]), then the
/// allocator and error-path checks, with poisoned allocations and every launch synchronised.
pub fn cuda_checks(dev: &Device, seed: u64) -> Vec<CheckRow> {
    let Some(cuda) = dev.as_cuda() else {
        return vec![CheckRow::failed("cuda", "-", "-", "not a CUDA device")];
    };
    cuda.set_poison(true);
    cuda.set_debug_sync(true);
    let mut rows = backend_checks(dev, seed);
    rows.extend(other_gemm_backend_rows(dev, seed));
    rows.extend(other_attention_forward_rows(dev, seed));
    rows.extend(super::fused::fused_inference_rows(dev, seed));
    rows.push(row_or_fail("allocator reuse", "fwd+bwd x3", DType::F32, || allocator_check(dev, seed)));
    rows.push(bad_index_row(dev));
    cuda.set_debug_sync(false);
    cuda.set_poison(false);
    rows
}

/// Every op case in f32 and bf16 on `dev` against the f64 CPU reference, plus AdamW and clipping.
/// On the CPU this checks the f32/bf16 paths (and this harness) against f64.
pub fn backend_checks(dev: &Device, seed: u64) -> Vec<CheckRow> {
    let mut rows = cases_rows(dev, seed, |_| true);
    for dtype in [DType::F32, DType::BF16] {
        rows.push(row_or_fail("adamw x3 steps", "[333, 65]", dtype, || {
            adamw_check(dev, dtype, GradStorage::F32, seed)
        }));
    }
    rows.push(row_or_fail("adamw x3 steps, bf16 gradients", "[333, 65]", DType::BF16, || {
        adamw_check(dev, DType::BF16, GradStorage::Bf16, seed)
    }));
    rows.push(row_or_fail("clip_grad_norm", "3 tensors", DType::F32, || clip_check(dev, seed)));
    rows
}

/// The cases that run GEMMs (matmul, linear, the fused loss, cross entropy) once more through the GEMM
/// backend the device does not use (`cuda/gemm_lt.rs`: cuBLAS or cuBLASLt), rows marked with its name.
fn other_gemm_backend_rows(dev: &Device, seed: u64) -> Vec<CheckRow> {
    use crate::cuda::gemm_lt::GemmBackend;
    let Some(cuda) = dev.as_cuda() else {
        return Vec::new();
    };
    let current = cuda.kernel_choices();
    let other = if current.gemm == GemmBackend::Lt { GemmBackend::Cublas } else { GemmBackend::Lt };
    let gemm_case = |name: &str| ["matmul", "linear", "dapo_loss", "cross_entropy"].iter().any(|p| name.starts_with(p));
    let choices = crate::cuda::KernelChoices { gemm: other, ..current };
    rows_with_choices(dev, seed, choices, other.name(), |c| gemm_case(&c.name))
}

/// The attention cases once more through the forward the device does not use (`cuda/attention.rs`:
/// `AttnVersion`), on a GPU where the Hopper forward runs (sm_90; its head sizes 64 and 128, the others run
/// the mma forward both times), rows marked with its name.
fn other_attention_forward_rows(dev: &Device, seed: u64) -> Vec<CheckRow> {
    use crate::cuda::attention::AttnVersion;
    let Some(cuda) = dev.as_cuda() else {
        return Vec::new();
    };
    if !AttnVersion::hopper_runs(128, cuda.compute_capability().unwrap_or((0, 0))) {
        return Vec::new();
    }
    let current = cuda.kernel_choices();
    let other = if current.attention == AttnVersion::Hopper { AttnVersion::Mma } else { AttnVersion::Hopper };
    let choices = crate::cuda::KernelChoices { attention: other, ..current };
    rows_with_choices(dev, seed, choices, other.name(), |c| c.name.starts_with("attention"))
}

/// [`cases_rows`] with the device running `choices`, each row's op marked `[label]`.
fn rows_with_choices(
    dev: &Device,
    seed: u64,
    choices: crate::cuda::KernelChoices,
    label: &str,
    keep: impl Fn(&OpCase) -> bool,
) -> Vec<CheckRow> {
    let Some(cuda) = dev.as_cuda() else {
        return Vec::new();
    };
    let mut rows = cuda.with_kernel_choices(choices, || cases_rows(dev, seed, keep));
    for r in &mut rows {
        r.op = format!("{} [{label}]", r.op);
    }
    rows
}

/// Rows of every case `keep` accepts that runs on `dev`, each in its dtypes, with a per-case seed.
fn cases_rows(dev: &Device, seed: u64, keep: impl Fn(&OpCase) -> bool) -> Vec<CheckRow> {
    let on_cpu = !dev.is_cuda();
    let mut rows = Vec::new();
    for (i, case) in all_cases().iter().enumerate() {
        if (on_cpu && !case.on_cpu) || (!on_cpu && !case.on_gpu) || !keep(case) {
            continue;
        }
        for &dtype in &case.dtypes {
            rows.extend(case_rows(case, dtype, dev, seed.wrapping_add(i as u64 * 7919)));
        }
    }
    rows
}

pub(super) fn row_or_fail(op: &str, shape: &str, dtype: DType, f: impl FnOnce() -> Result<(f64, f64)>) -> CheckRow {
    match f() {
        Ok((err, tol)) => CheckRow::new(op, shape, dtype.suffix(), err, tol),
        Err(e) => CheckRow::failed(op, shape, dtype.suffix(), e.to_string()),
    }
}

/// Forward row plus one backward row per float input.
pub fn case_rows(case: &OpCase, dtype: DType, dev: &Device, seed: u64) -> Vec<CheckRow> {
    let tol = if dtype == DType::BF16 { case.tol_bf16 } else { case.tol_f32 };
    let label = case.label();
    match compare_case(case, dtype, dev, seed) {
        Ok((fwd, bwd)) => {
            let mut rows = vec![CheckRow::new(&format!("{} fwd", case.name), &label, dtype.suffix(), fwd, tol)];
            for (i, e) in bwd {
                rows.push(CheckRow::new(&format!("{} bwd d{i}", case.name), &label, dtype.suffix(), e, tol * 2.0));
            }
            rows
        }
        Err(e) => vec![CheckRow::failed(&format!("{} fwd+bwd", case.name), &label, dtype.suffix(), e.to_string())],
    }
}

/// (forward error, [(input index, gradient error)]).
fn compare_case(case: &OpCase, dtype: DType, dev: &Device, seed: u64) -> Result<(f64, Vec<(usize, f64)>)> {
    let (test, reference) = case.make_inputs(dtype, dev, seed)?;
    let test = trainable_floats(&test);
    let reference = trainable_floats(&reference);
    let out = (case.f)(&test)?;
    let out_ref = (case.f)(&reference)?;
    dev.synchronize()?;
    let fwd = max_rel_err(&out.to_vec_f64()?, &out_ref.to_vec_f64()?);
    // Backward with the same random upstream gradient on both sides (rounded to the output dtype).
    let seed_grad = Tensor::randn(out.shape().clone(), 1.0, out.dtype(), dev, seed ^ 0xabcdef)?;
    let seed_ref = Tensor::from_f64(&seed_grad.to_vec_f64()?, out.shape().clone(), DType::F64, &Device::Cpu)?;
    if !out.requires_grad() {
        return Ok((fwd, Vec::new())); // a measurement (e.g. attention entropy): no gradient to compare
    }
    out.backward_with(seed_grad)?;
    out_ref.backward_with(seed_ref)?;
    dev.synchronize()?;
    let mut bwd = Vec::new();
    for (i, (t, r)) in test.iter().zip(&reference).enumerate() {
        if !t.dtype().is_float() {
            continue;
        }
        let (g, gr) = match (t.grad(), r.grad()) {
            (Some(g), Some(gr)) => (g.to_vec_f64()?, gr.to_vec_f64()?),
            (None, None) => continue,
            _ => return Err(EngineError::Autograd(format!("input {i}: gradient present on one backend only"))),
        };
        bwd.push((i, max_rel_err(&g, &gr)));
    }
    Ok((fwd, bwd))
}

/// Three AdamW steps with fixed gradients (the third clip-scaled) vs the f64 CPU optimizer, the gradients
/// stored as `grad` says (bf16 for bf16 parameters with `GradStorage::Bf16`; the reference gets the same
/// values).
fn adamw_check(dev: &Device, dtype: DType, grad: GradStorage, seed: u64) -> Result<(f64, f64)> {
    let shape = [333usize, 65];
    let p0 = Tensor::randn(shape, 1.0, dtype, dev, seed)?;
    let p_ref = Tensor::from_f64(&p0.to_vec_f64()?, shape, DType::F64, &Device::Cpu)?.param();
    let p = p0.param();
    p.set_grad_storage(grad)?;
    let cfg = AdamWConfig { lr: 1e-2, weight_decay: 0.1, ..AdamWConfig::default() };
    let (mut opt, mut opt_ref) =
        (AdamW::new(std::slice::from_ref(&p), cfg)?, AdamW::new(std::slice::from_ref(&p_ref), cfg)?);
    for step in 0..3u64 {
        let g =
            Tensor::randn(shape, 1.0, DType::F32, dev, seed + 100 + step)?.to_dtype(p.grad_dtype().expect("leaf"))?;
        p.set_grad(Some(g.clone()))?;
        p_ref.set_grad(Some(Tensor::from_f64(&g.to_vec_f64()?, shape, DType::F64, &Device::Cpu)?))?;
        opt.step(cfg.lr, None)?;
        opt_ref.step(cfg.lr, None)?;
    }
    let err = max_rel_err(&p.to_vec_f64()?, &p_ref.to_vec_f64()?);
    Ok((err, if dtype == DType::BF16 { 1e-2 } else { 1e-5 }))
}

fn clip_check(dev: &Device, seed: u64) -> Result<(f64, f64)> {
    let shapes: [&[usize]; 3] = [&[1000, 37], &[5], &[129, 3]];
    let mut ps = Vec::new();
    let mut refs = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let p = Tensor::zeros(s.to_vec(), DType::F32, dev)?.param();
        let g = Tensor::randn(s.to_vec(), 1.0, DType::F32, dev, seed + i as u64)?;
        let r = Tensor::zeros(s.to_vec(), DType::F64, &Device::Cpu)?.param();
        r.set_grad(Some(Tensor::from_f64(&g.to_vec_f64()?, s.to_vec(), DType::F64, &Device::Cpu)?))?;
        p.set_grad(Some(g))?;
        ps.push(p);
        refs.push(r);
    }
    let n = clip_grad_norm(&ps, 1.0)?;
    let nr = clip_grad_norm(&refs, 1.0)?;
    let mut err = ((n - nr) / nr).abs();
    for (p, r) in ps.iter().zip(&refs) {
        let (g, gr) = (p.grad().expect("set").to_vec_f64()?, r.grad().expect("set").to_vec_f64()?);
        err = err.max(max_rel_err(&g, &gr));
    }
    Ok((err, 1e-5))
}

/// After one warm-up step, repeated identical steps must be served entirely from the cache.
fn allocator_check(dev: &Device, seed: u64) -> Result<(f64, f64)> {
    let cuda = dev.as_cuda().expect("cuda");
    let w = Tensor::randn([64, 96], 0.1, DType::F32, dev, seed)?.param();
    let x = Tensor::randn([33, 96], 1.0, DType::F32, dev, seed + 1)?;
    let step = || -> Result<()> {
        let loss = x.linear(&w)?.softmax()?.mean()?;
        loss.backward()?;
        w.zero_grad();
        Ok(())
    };
    step()?;
    dev.synchronize()?;
    let before = cuda.memory_stats().driver_allocs;
    for _ in 0..3 {
        step()?;
    }
    dev.synchronize()?;
    let new_allocs = cuda.memory_stats().driver_allocs - before;
    Ok((new_allocs as f64, 0.0))
}

/// An out-of-range embedding id on the GPU must surface as an error at the next synchronize.
fn bad_index_row(dev: &Device) -> CheckRow {
    let run = || -> Result<bool> {
        let table = Tensor::zeros([10, 4], DType::F32, dev)?;
        let ids = Tensor::from_vec(vec![1i32, 10, 3], [3], dev)?;
        let _ = table.embedding(&ids)?;
        Ok(dev.synchronize().is_err())
    };
    match run() {
        Ok(true) => CheckRow::new("embedding bad id -> error", "[10, 4] id 10", "f32", 0.0, 0.0),
        Ok(false) => CheckRow::failed("embedding bad id -> error", "[10, 4] id 10", "f32", "no error raised"),
        Err(e) => CheckRow::failed("embedding bad id -> error", "[10, 4] id 10", "f32", e.to_string()),
    }
}
