//! Fused causal attention over packed sequences, with the row statistics of `row_stat.rs` emitted by the
//! same pass on request. GPU: the FlashAttention-2-style kernels in `kernels-cu/cuda/attention_mma*.cu`
//! (bf16 in, f32 accumulation, the S×S matrix never written). CPU: the materialising f64 reference.
//! The entropy is a measurement: it carries no gradient.
use super::{check_float, check_same_device, check_same_dtype, dispatch};
use crate::autograd::Backward;
use crate::cpu::attention::{normalize_entropy, AttentionBwd, AttentionFwd, AttnGeom};
use crate::cpu::storage::{compute_dtype, run_float};
use crate::cpu::CpuStorage;
use crate::cuda::attention as cuda_attn;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::packing::Packing;
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

use super::row_stat::{AttnStats, Over, RowStats};

/// What `attention` returns.
pub struct AttentionOutput {
    /// [tokens, Hq, D], the input dtype; differentiable.
    pub out: Tensor,
    /// Row log-sum-exp of the scaled scores, [tokens, Hq] (f32; f64 for f64 inputs).
    pub lse: Tensor,
    /// The row statistics asked for ([`RowStats`]).
    pub stats: AttnStats,
}

/// Causal self-attention of packed sequences: q [T, Hq, D], k and v [T, Hkv, D] (Hq a multiple of Hkv,
/// GQA), scale 1/√D, with the row statistics `stats` asks for. Each sequence of `packing` attends only to
/// itself. GPU: `attention_mma.cu` (+ `attention_hmix.cu` for the head mixture); CPU: the f64 reference.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, packing: &Packing, stats: RowStats) -> Result<AttentionOutput> {
    let g = validate(q, k, v, packing)?;
    stats.validate()?;
    let dt = q.dtype();
    let cu = packing.on(q.device())?;
    // Both backends return o, lse and then the statistics asked for, in slot order.
    let st = dispatch(
        "attention",
        &[q, k, v, &cu],
        |x| {
            let fwd = AttentionFwd { g: &g, stats };
            let mut all = run_float("attention", &fwd, &x[..3])?.into_iter();
            let o = all.next().expect("o").cast(dt);
            Ok(std::iter::once(o).chain(all).collect())
        },
        |x| {
            let r = cuda_attn::forward(x[0], x[1], x[2], x[3], &g, packing.max_len(), &stats)?;
            Ok([r.o, r.lse].into_iter().chain(r.stats).collect())
        },
    )?;
    let dev = q.device();
    let mut st = st.into_iter();
    let out = Tensor::from_storage(st.next().expect("o"), q.shape().clone(), dev);
    let lse = Tensor::from_storage(st.next().expect("lse"), Shape::new([g.total, g.hq]), dev);
    let mut row_stats = AttnStats::default();
    for stat in stats.iter() {
        let shape = match stat.spec().over {
            Over::Head => Shape::new([g.total, g.hq]),
            Over::HeadMixture => Shape::new([g.total]),
        };
        row_stats.set(stat, Tensor::from_storage(st.next().expect("a statistic asked for"), shape, dev));
    }
    let rule = AttentionBackward {
        q: q.detach(),
        k: k.detach(),
        v: v.detach(),
        o: out.clone(),
        lse: lse.clone(),
        cu,
        g,
        max_len: packing.max_len(),
    };
    let out = Tensor::from_op_output(out, &[q, k, v], rule)?;
    Ok(AttentionOutput { out, lse, stats: row_stats })
}

fn validate(q: &Tensor, k: &Tensor, v: &Tensor, packing: &Packing) -> Result<AttnGeom> {
    check_float("attention", q)?;
    check_same_dtype("attention", q, k)?;
    check_same_dtype("attention", q, v)?;
    check_same_device("attention", q, k)?;
    check_same_device("attention", q, v)?;
    let bad = |msg: String| EngineError::shape("attention", msg);
    if q.rank() != 3 || k.rank() != 3 || k.shape() != v.shape() {
        return Err(bad(format!(
            "q [T, Hq, D], k and v [T, Hkv, D] expected; got {}, {}, {}",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    let (t, hq, d) = (q.dims()[0], q.dims()[1], q.dims()[2]);
    let (tk, hkv, dk) = (k.dims()[0], k.dims()[1], k.dims()[2]);
    if tk != t || dk != d || hq == 0 || hkv == 0 || hq % hkv != 0 {
        return Err(bad(format!(
            "q {} vs k/v {}: tokens and head_dim must match, Hq a multiple of Hkv",
            q.shape(),
            k.shape()
        )));
    }
    if packing.total() != t {
        return Err(bad(format!("packing covers {} tokens but q has {t}", packing.total())));
    }
    if q.device().is_cuda() {
        if q.dtype() != DType::BF16 {
            return Err(EngineError::UnsupportedDType {
                op: "attention",
                dtype: q.dtype(),
                msg: "the CUDA kernel takes bf16",
            });
        }
        if ![32, 64, 128].contains(&d) {
            return Err(bad(format!("the CUDA kernel supports head_dim 32, 64 and 128, not {d}")));
        }
    }
    Ok(AttnGeom { spans: packing.spans().collect(), total: t, hq, hkv, d, scale: 1.0 / (d as f64).sqrt() })
}

struct AttentionBackward {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    cu: Tensor,
    g: AttnGeom,
    max_len: usize,
}

impl Backward for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn backward(&self, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (g, dt) = (&self.g, self.q.dtype());
        let mut st = dispatch(
            "attention backward",
            &[&self.q, &self.k, &self.v, &self.o, dout, &self.lse, &self.cu],
            |x| {
                // lse is kept in compute precision; widen the rest to match.
                let cd = x[5].dtype();
                let ins: Vec<CpuStorage> = x[..5].iter().map(|s| s.cast(cd)).collect();
                let refs = [&ins[0], &ins[1], &ins[2], &ins[3], &ins[4], x[5]];
                let out = run_float("attention backward", &AttentionBwd { g }, &refs)?;
                Ok(out.into_iter().map(|s| s.cast(dt)).collect())
            },
            |x| {
                let (dq, dk, dv) = cuda_attn::backward(x[0], x[1], x[2], x[3], x[4], x[5], x[6], g, self.max_len)?;
                Ok(vec![dq, dk, dv])
            },
        )?;
        let dev = self.q.device();
        let dv = Tensor::from_storage(st.pop().expect("dv"), self.v.shape().clone(), dev);
        let dk = Tensor::from_storage(st.pop().expect("dk"), self.k.shape().clone(), dev);
        let dq = Tensor::from_storage(st.pop().expect("dq"), self.q.shape().clone(), dev);
        Ok(vec![Some(dq), Some(dk), Some(dv)])
    }
}

/// The paper's normalised attention entropy: Hnorm = H / ln(#keys), #keys = position + 1 within the
/// token's sequence (0 at position 0). Returns (per head [T, Hq], mean over heads [T]); no gradient.
pub fn normalized_entropy(entropy: &Tensor, packing: &Packing) -> Result<(Tensor, Tensor)> {
    check_float("normalized_entropy", entropy)?;
    if entropy.rank() != 2 || entropy.dims()[0] != packing.total() {
        return Err(EngineError::shape(
            "normalized_entropy",
            format!(
                "entropy must be [tokens, heads] over the packing's {} tokens, got {}",
                packing.total(),
                entropy.shape()
            ),
        ));
    }
    let (t, hq) = (entropy.dims()[0], entropy.dims()[1]);
    let dev = entropy.device();
    let mut st = match &*entropy.storage() {
        Storage::Cpu(s) => {
            let cd = compute_dtype(s.dtype());
            let pos = packing.positions();
            let (norm, mean) = match s.cast(cd) {
                CpuStorage::F64(h) => {
                    let (a, b) = normalize_entropy(&h, &pos, hq);
                    (CpuStorage::F64(a), CpuStorage::F64(b))
                }
                CpuStorage::F32(h) => {
                    let (a, b) = normalize_entropy(&h, &pos, hq);
                    (CpuStorage::F32(a), CpuStorage::F32(b))
                }
                _ => unreachable!("compute dtype is f32 or f64"),
            };
            vec![Storage::Cpu(norm), Storage::Cpu(mean)]
        }
        Storage::Cuda(s) => {
            let cu = packing.on(dev)?;
            let cu_guard = cu.storage();
            let Storage::Cuda(cu_s) = &*cu_guard else { unreachable!("uploaded to the same device") };
            let (norm, mean) = cuda_attn::normalize_entropy(s, cu_s, t, hq, packing.num_seqs())?;
            vec![Storage::Cuda(norm), Storage::Cuda(mean)]
        }
    };
    let mean = Tensor::from_storage(st.pop().expect("mean"), Shape::new([t]), dev);
    let norm = Tensor::from_storage(st.pop().expect("norm"), Shape::new([t, hq]), dev);
    Ok((norm, mean))
}
