//! Global gradient norm ‖g‖₂ over all parameters, and clipping to a maximum norm (torch's
//! clip_grad_norm_: scale by max_norm / (‖g‖ + 1e-6) when that is below 1). Gradients may be f32, f64 (CPU)
//! or bf16 ([`crate::GradStorage::Bf16`]): squares are summed in f32 partials on a GPU and f64 on the host
//! whatever the storage, and a bf16 gradient is scaled in f32 and rounded back to bf16.
use crate::cpu::reduce::sum_squares;
use crate::cpu::CpuStorage;
use crate::cuda::kernels::{self, SUMSQ_BLOCKS};
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::{CudaStorage, Storage};
use crate::tensor::Tensor;
use half::bf16;

/// ‖g‖₂ over the gradients of `params` (parameters without a gradient count as zero).
pub fn global_grad_norm(params: &[Tensor]) -> Result<f64> {
    Ok(grad_sumsq(params)?.sqrt())
}

/// Σ g² over the gradients of `params` (what ranks all-reduce for a global norm).
pub fn grad_sumsq(params: &[Tensor]) -> Result<f64> {
    Ok(sumsq(params)?.0)
}

/// torch's clip_grad_norm_ coefficient: min(1, max_norm / (‖g‖ + 1e-6)).
pub fn clip_coef(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Clip gradients in place so their global norm is at most `max_norm`. Returns the norm before clipping.
/// A non-finite norm leaves the gradients unchanged (the caller decides to skip the step).
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Result<f64> {
    let (ss, dev_sumsq) = sumsq(params)?;
    let norm = ss.sqrt();
    if !norm.is_finite() {
        return Ok(norm);
    }
    let grads: Vec<Tensor> = params.iter().filter_map(|p| p.grad()).collect();
    match dev_sumsq {
        Some(sumsq) => {
            let coef = CudaStorage::alloc(&sumsq.device, DType::F32, 1)?;
            kernels::clip_coef(&sumsq, &coef, max_norm)?;
            for g in &grads {
                match &*g.storage() {
                    Storage::Cuda(s) => kernels::scale_by(s, &coef)?,
                    Storage::Cpu(_) => return Err(mixed()),
                }
            }
        }
        None => {
            let coef = clip_coef(norm, max_norm);
            if coef < 1.0 {
                for g in &grads {
                    match &mut *g.storage_mut() {
                        Storage::Cpu(CpuStorage::F32(v)) => v.iter_mut().for_each(|x| *x *= coef as f32),
                        Storage::Cpu(CpuStorage::F64(v)) => v.iter_mut().for_each(|x| *x *= coef),
                        Storage::Cpu(CpuStorage::BF16(v)) => {
                            v.iter_mut().for_each(|x| *x = bf16::from_f32(x.to_f32() * coef as f32))
                        }
                        _ => return Err(mixed()),
                    }
                }
            }
        }
    }
    Ok(norm)
}

fn mixed() -> EngineError {
    EngineError::invalid("clip_grad_norm", "gradients must all be on one device, in f32 or bf16 (or f64 on CPU)")
}

/// Σ g² (host value) and, on CUDA, the device scalar it was read from.
fn sumsq(params: &[Tensor]) -> Result<(f64, Option<CudaStorage>)> {
    let grads: Vec<Tensor> = params.iter().filter_map(|p| p.grad()).collect();
    let Some(first) = grads.first() else {
        return Ok((0.0, None));
    };
    let Some(dev) = first.device().as_cuda().cloned() else {
        let mut s = 0.0;
        for g in &grads {
            match &*g.storage() {
                Storage::Cpu(CpuStorage::F32(v)) => s += sum_squares(v),
                Storage::Cpu(CpuStorage::F64(v)) => s += sum_squares(v),
                Storage::Cpu(CpuStorage::BF16(v)) => s += v.iter().map(|x| x.to_f64() * x.to_f64()).sum::<f64>(),
                _ => return Err(mixed()),
            }
        }
        return Ok((s, None));
    };
    // Deterministic two-stage reduction: fixed-size partials per gradient, then one block sums them all.
    let partials = CudaStorage::alloc(&dev, DType::F32, grads.len() * SUMSQ_BLOCKS)?;
    for (i, g) in grads.iter().enumerate() {
        match &*g.storage() {
            Storage::Cuda(s) => kernels::sumsq_partials(s, &partials, i * SUMSQ_BLOCKS)?,
            Storage::Cpu(_) => return Err(mixed()),
        }
    }
    let total = CudaStorage::alloc(&dev, DType::F32, 1)?;
    kernels::sum_partials(&partials, &total)?;
    let host = total.to_cpu()?.to_f64_vec()[0];
    Ok((host, Some(total)))
}
