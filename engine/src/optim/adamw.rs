//! AdamW with f32 master weights and moments. A bf16 parameter keeps an f32 master copy; after each step
//! the fused kernel writes the rounded bf16 working copy that forward/backward use. Gradients are f32 (f64
//! for f64 parameters) or, for bf16 parameters with [`crate::GradStorage::Bf16`], bf16: the CUDA update
//! (`adamw_bf16_gbf16`) widens them as it reads them; the CPU one widens a copy first.
use crate::cpu::adamw::{adamw as cpu_adamw, AdamWStep};
use crate::cpu::CpuStorage;
use crate::cuda::kernels::{self, AdamWArgs};
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::Storage;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// DAPO's defaults (lr 1e-6, betas 0.9/0.999, weight decay 0.1).
    fn default() -> Self {
        Self { lr: 1e-6, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }
    }
}

struct ParamState {
    param: Tensor,
    /// f32 master copy when the parameter itself is bf16.
    master: Option<Tensor>,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    pub config: AdamWConfig,
    step: u64,
    states: Vec<ParamState>,
}

impl AdamW {
    pub fn new(params: &[Tensor], config: AdamWConfig) -> Result<Self> {
        let states = params
            .iter()
            .map(|p| {
                if !p.is_param() {
                    return Err(EngineError::invalid("AdamW", format!("{p:?} is not a trainable leaf (use .param())")));
                }
                let master = match p.dtype() {
                    DType::BF16 => Some(p.to_dtype(DType::F32)?.detach()),
                    DType::F32 | DType::F64 => None,
                    d => {
                        return Err(EngineError::UnsupportedDType {
                            op: "AdamW",
                            dtype: d,
                            msg: "parameters are float",
                        })
                    }
                };
                let acc = if p.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
                Ok(ParamState {
                    param: p.clone(),
                    master,
                    m: Tensor::zeros(p.shape().clone(), acc, p.device())?,
                    v: Tensor::zeros(p.shape().clone(), acc, p.device())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { config, step: 0, states })
    }

    /// Re-read the f32 master copies from the bf16 parameters (after loading weights into parameters
    /// this optimizer already tracks; the next step would otherwise overwrite them with stale masters).
    pub fn sync_masters(&mut self) -> Result<()> {
        for s in &self.states {
            if let Some(m) = &s.master {
                m.copy_from(&s.param.to_dtype(DType::F32)?.detach())?;
            }
        }
        Ok(())
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The optimizer state for a checkpoint: per parameter (in construction order, named by `names`)
    /// `{name}.exp_avg`, `{name}.exp_avg_sq` and, for bf16 parameters, `{name}.master`; plus the step count.
    pub fn state_tensors(&self, names: &[String]) -> Result<(Vec<(String, Tensor)>, u64)> {
        if names.len() != self.states.len() {
            return Err(EngineError::invalid(
                "AdamW state",
                format!("{} names for {} parameters", names.len(), self.states.len()),
            ));
        }
        let mut out = Vec::with_capacity(3 * names.len());
        for (n, s) in names.iter().zip(&self.states) {
            out.push((format!("{n}.exp_avg"), s.m.clone()));
            out.push((format!("{n}.exp_avg_sq"), s.v.clone()));
            if let Some(m) = &s.master {
                out.push((format!("{n}.master"), m.clone()));
            }
        }
        Ok((out, self.step))
    }

    /// Restore what [`AdamW::state_tensors`] wrote; `lookup(key, shape)` returns the saved tensor (any
    /// device), `shape` being the parameter's.
    /// Masters are restored too, and the working bf16 copies are rewritten from them.
    pub fn load_state(
        &mut self,
        names: &[String],
        step: u64,
        mut lookup: impl FnMut(&str, &[usize]) -> Option<Tensor>,
    ) -> Result<()> {
        if names.len() != self.states.len() {
            return Err(EngineError::invalid(
                "AdamW state",
                format!("{} names for {} parameters", names.len(), self.states.len()),
            ));
        }
        for (n, s) in names.iter().zip(&self.states) {
            let mut restore = |key: String, dst: &Tensor| -> Result<()> {
                let src = lookup(&key, dst.dims())
                    .ok_or_else(|| EngineError::invalid("AdamW state", format!("missing tensor {key}")))?;
                if src.dims() != dst.dims() {
                    return Err(EngineError::shape(
                        "AdamW state",
                        format!("{key} is {}, the parameter needs {}", src.shape(), dst.shape()),
                    ));
                }
                dst.copy_from(&src.to_dtype(dst.dtype())?.to_device(dst.device())?)
            };
            restore(format!("{n}.exp_avg"), &s.m)?;
            restore(format!("{n}.exp_avg_sq"), &s.v)?;
            if let Some(m) = &s.master {
                restore(format!("{n}.master"), m)?;
                s.param.copy_from(&m.to_dtype(s.param.dtype())?)?;
            }
        }
        self.step = step;
        Ok(())
    }

    /// One update at learning rate `lr` of every parameter that has a gradient. `grad_scale` (a device
    /// scalar, e.g. the clipping coefficient) multiplies every gradient when given.
    pub fn step(&mut self, lr: f64, grad_scale: Option<&Tensor>) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let a = AdamWStep {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            bc1: 1.0 - c.beta1.powi(t),
            bc2: 1.0 - c.beta2.powi(t),
            grad_scale: 1.0,
        };
        if let (Some(s), Some(first)) = (grad_scale, self.states.first()) {
            if !s.device().same(first.param.device()) || s.dtype() != DType::F32 || s.numel() != 1 {
                return Err(EngineError::invalid(
                    "AdamW",
                    "grad_scale must be an f32 scalar on the parameters' device",
                ));
            }
        }
        let host_scale = match grad_scale {
            Some(s) if !s.device().is_cuda() => Some(s.to_scalar()?),
            _ => None,
        };
        for s in &self.states {
            let Some(g) = s.param.grad() else { continue };
            let target = s.master.as_ref().unwrap_or(&s.param);
            match (&mut *target.storage_mut(), &mut *s.m.storage_mut(), &mut *s.v.storage_mut(), &*g.storage()) {
                (Storage::Cuda(p), Storage::Cuda(m), Storage::Cuda(v), Storage::Cuda(gs)) => {
                    let working = if s.master.is_some() { Some(s.param.storage()) } else { None };
                    let working = working.as_ref().map(|w| match &**w {
                        Storage::Cuda(w) => Ok(w),
                        _ => Err(EngineError::invalid("AdamW", "parameter and master on different devices")),
                    });
                    let working = working.transpose()?;
                    let scale_guard = grad_scale.map(|t| t.storage());
                    let scale = match scale_guard.as_deref() {
                        Some(Storage::Cuda(sc)) => Some(sc),
                        _ => None,
                    };
                    let args = AdamWArgs {
                        lr: a.lr as f32,
                        beta1: a.beta1 as f32,
                        beta2: a.beta2 as f32,
                        eps: a.eps as f32,
                        weight_decay: a.weight_decay as f32,
                        bc1: a.bc1 as f32,
                        bc2: a.bc2 as f32,
                    };
                    kernels::adamw(p, working, m, v, gs, scale, args)?;
                }
                (Storage::Cpu(p), Storage::Cpu(m), Storage::Cpu(v), Storage::Cpu(gs)) => {
                    let a = AdamWStep { grad_scale: host_scale.unwrap_or(1.0), ..a };
                    match gs {
                        CpuStorage::BF16(_) => cpu_step(p, m, v, &gs.cast(DType::F32), &a)?,
                        _ => cpu_step(p, m, v, gs, &a)?,
                    }
                }
                _ => return Err(EngineError::invalid("AdamW", "parameter, gradient and state on different devices")),
            }
            if let Some(master) = &s.master {
                if !master.device().is_cuda() {
                    s.param.copy_from(&master.to_dtype(s.param.dtype())?)?;
                }
            }
        }
        Ok(())
    }
}

fn cpu_step(p: &mut CpuStorage, m: &mut CpuStorage, v: &mut CpuStorage, g: &CpuStorage, a: &AdamWStep) -> Result<()> {
    match (p, m, v, g) {
        (CpuStorage::F32(p), CpuStorage::F32(m), CpuStorage::F32(v), CpuStorage::F32(g)) => cpu_adamw(p, m, v, g, a),
        (CpuStorage::F64(p), CpuStorage::F64(m), CpuStorage::F64(v), CpuStorage::F64(g)) => cpu_adamw(p, m, v, g, a),
        _ => {
            return Err(EngineError::invalid(
                "AdamW",
                "master, moments and gradient must share f32 (or f64; bf16 gradients are widened)",
            ))
        }
    }
    Ok(())
}
