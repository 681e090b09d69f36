//! Differentiable ops. Each op checks its inputs (shape, dtype, device: typed errors), runs the CPU
//! reference kernel or the CUDA kernel, and records a backward rule. Backward rules run under `no_grad`
//! and are written with the same ops or with dedicated backward kernels.
mod attention;
mod decode;
mod elementwise;
mod index;
mod layout;
mod matmul;
mod norm;
mod policy_loss;
mod reduce;
mod rope;
mod row_stat;
mod sampling;
mod select;
mod softmax;
mod weights;

pub use attention::{attention, normalized_entropy, AttentionOutput};
pub use decode::{
    check_index, check_prefix_groups, check_write_rows, prefix_group_rows, BlockCopies, CacheIndex, CacheRows, KvCache,
    PoolShape, PrefixGroup, DECODE_CHUNK_KEYS, PADDING_ROW,
};
pub use matmul::MatmulSpec;
pub use norm::add_rms_norm;
pub use policy_loss::{dapo_loss, DapoBatch, DapoLossConfig, DapoLossOutput, DapoMetrics, LossNormalizer};
pub use rope::{qk_norm_rope, RopeSpec};
pub use row_stat::{AttnStats, Over, RowProbs, RowStat, RowStatSpec, RowStats, ScoreNorm};
pub use sampling::{
    key_words, sample_keyed, sample_rows, sample_uniform, Sample, SampleKey, SampledRows, SamplingParams,
};
pub use select::{radix_sort, select_random, select_tails, tail_count, TailMasks, COUNT_SLACK};
pub use weights::{soft_weights, SoftWeightSchedule};

use crate::cpu::CpuStorage;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::{CudaStorage, Storage};
use crate::tensor::Tensor;

pub(crate) fn check_same_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.device().same(b.device()) {
        Ok(())
    } else {
        Err(EngineError::DeviceMismatch { op, a: a.device().to_string(), b: b.device().to_string() })
    }
}

pub(crate) fn check_same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() == b.dtype() {
        Ok(())
    } else {
        Err(EngineError::DType { op, msg: format!("{} vs {} (cast one with .to_dtype())", a.dtype(), b.dtype()) })
    }
}

pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(EngineError::UnsupportedDType { op, dtype: t.dtype(), msg: "needs a float tensor" })
    }
}

pub(crate) fn check_i32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() == DType::I32 {
        Ok(())
    } else {
        Err(EngineError::DType { op, msg: format!("indices must be i32, got {}", t.dtype()) })
    }
}

/// Run an op on the inputs' backend: `cpu` gets host storages, `cuda` device storages.
/// All inputs must live on one device.
pub(crate) fn dispatch(
    op: &'static str,
    inputs: &[&Tensor],
    cpu: impl FnOnce(&[&CpuStorage]) -> Result<Vec<CpuStorage>>,
    cuda: impl FnOnce(&[&CudaStorage]) -> Result<Vec<CudaStorage>>,
) -> Result<Vec<Storage>> {
    for t in &inputs[1..] {
        check_same_device(op, inputs[0], t)?;
    }
    let guards: Vec<_> = inputs.iter().map(|t| t.storage()).collect();
    if inputs[0].device().is_cuda() {
        let refs: Vec<&CudaStorage> = guards
            .iter()
            .map(|g| match &**g {
                Storage::Cuda(s) => s,
                Storage::Cpu(_) => unreachable!("device checked above"),
            })
            .collect();
        Ok(cuda(&refs)?.into_iter().map(Storage::Cuda).collect())
    } else {
        let refs: Vec<&CpuStorage> = guards
            .iter()
            .map(|g| match &**g {
                Storage::Cpu(s) => s,
                Storage::Cuda(_) => unreachable!("device checked above"),
            })
            .collect();
        Ok(cpu(&refs)?.into_iter().map(Storage::Cpu).collect())
    }
}

/// Single-output form of [`dispatch`].
pub(crate) fn dispatch1(
    op: &'static str,
    inputs: &[&Tensor],
    cpu: impl FnOnce(&[&CpuStorage]) -> Result<CpuStorage>,
    cuda: impl FnOnce(&[&CudaStorage]) -> Result<CudaStorage>,
) -> Result<Storage> {
    let mut v = dispatch(op, inputs, |x| Ok(vec![cpu(x)?]), |x| Ok(vec![cuda(x)?]))?;
    Ok(v.remove(0))
}
