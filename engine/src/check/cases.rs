//! The op cases every check runs: inputs (shapes include odd sizes and long rows), the op as a closure
//! over tensors, and the tolerances for f32 and bf16 against the f64 CPU reference.
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{attention, normalized_entropy, MatmulSpec, RowStat, RowStats};
use crate::packing::Packing;
use crate::tensor::Tensor;
use std::borrow::Cow;
use std::sync::Arc;

/// How one input of a case is generated.
#[derive(Clone, Debug)]
pub enum Input {
    /// Normal(mean, std) floats.
    Float { shape: Vec<usize>, std: f64, mean: f64 },
    /// Uniform integers in [0, hi).
    Index { shape: Vec<usize>, hi: i32 },
}

pub type OpFn = Arc<dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync>;

#[derive(Clone)]
pub struct OpCase {
    pub name: Cow<'static, str>,
    pub inputs: Vec<Input>,
    pub f: OpFn,
    /// Small enough for finite differences on the CPU.
    pub gradcheck: bool,
    pub tol_f32: f64,
    pub tol_bf16: f64,
    /// Storage types the backend comparison runs (the attention kernel takes bf16 only).
    pub dtypes: Vec<DType>,
    /// Also compare the CPU's f32/bf16 path against f64 (off for cases only worth running on a GPU).
    pub on_cpu: bool,
    /// Run on a GPU (off for shapes the CUDA kernel does not take, e.g. attention head_dim 4).
    pub on_gpu: bool,
}

impl OpCase {
    fn new(
        name: impl Into<Cow<'static, str>>,
        inputs: Vec<Input>,
        f: impl Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            inputs,
            f: Arc::new(f),
            gradcheck: true,
            tol_f32: 2e-5,
            tol_bf16: 2e-2,
            dtypes: vec![DType::F32, DType::BF16],
            on_cpu: true,
            on_gpu: true,
        }
    }
    fn big(mut self) -> Self {
        self.gradcheck = false;
        self
    }
    /// Not differentiable by finite differences (piecewise constant, e.g. rounding).
    fn no_fd(mut self) -> Self {
        self.gradcheck = false;
        self
    }
    fn bf16_only(mut self) -> Self {
        self.dtypes = vec![DType::BF16];
        self
    }
    fn cpu_only(mut self) -> Self {
        self.on_gpu = false;
        self
    }
    fn gpu_only(mut self) -> Self {
        self.on_cpu = false;
        self.gradcheck = false;
        self
    }
    fn tol(mut self, f32: f64, bf16: f64) -> Self {
        self.tol_f32 = f32;
        self.tol_bf16 = bf16;
        self
    }
    /// "[7, 33] [33]" style label of the input shapes.
    pub fn label(&self) -> String {
        self.inputs
            .iter()
            .map(|i| match i {
                Input::Float { shape, .. } | Input::Index { shape, .. } => format!("{shape:?}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
            .replace(' ', "")
            .replace("][", "] [")
    }

    /// Inputs in `dtype` on `device`, plus the same values as f64 CPU tensors (the reference inputs).
    /// Float values are rounded to `dtype` first so both sides see identical numbers.
    pub fn make_inputs(&self, dtype: DType, device: &crate::Device, seed: u64) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut test, mut reference) = (Vec::new(), Vec::new());
        for input in &self.inputs {
            match input {
                Input::Float { shape, std, mean } => {
                    let mut t = Tensor::randn(shape.clone(), *std, dtype, device, rng.random())?;
                    if *mean != 0.0 {
                        t = t.to_vec_f64().and_then(|v| {
                            let v: Vec<f64> = v.iter().map(|x| x + mean).collect();
                            Tensor::from_f64(&v, shape.clone(), dtype, device)
                        })?;
                    }
                    let r = Tensor::from_f64(&t.to_vec_f64()?, shape.clone(), DType::F64, &crate::Device::Cpu)?;
                    test.push(t);
                    reference.push(r);
                }
                Input::Index { shape, hi } => {
                    let n: usize = shape.iter().product();
                    let v: Vec<i32> = (0..n).map(|_| rng.random_range(0..*hi)).collect();
                    test.push(Tensor::from_vec(v.clone(), shape.clone(), device)?);
                    reference.push(Tensor::from_vec(v, shape.clone(), &crate::Device::Cpu)?);
                }
            }
        }
        Ok((test, reference))
    }
}

fn fl(shape: &[usize]) -> Input {
    Input::Float { shape: shape.to_vec(), std: 1.0, mean: 0.0 }
}
fn fl_std(shape: &[usize], std: f64) -> Input {
    Input::Float { shape: shape.to_vec(), std, mean: 0.0 }
}
/// Normal(1, 1) floats for long reductions: a sum of zero-mean values can land arbitrarily close to 0,
/// where any relative error bound fails by cancellation alone (the condition number Σ|x| / |Σx| is
/// unbounded); with mean 1 it stays near 1.25 whatever the seed.
fn fl_reduce(shape: &[usize]) -> Input {
    Input::Float { shape: shape.to_vec(), std: 1.0, mean: 1.0 }
}
fn ix(shape: &[usize], hi: i32) -> Input {
    Input::Index { shape: shape.to_vec(), hi }
}
fn spec(trans_a: bool, trans_b: bool) -> MatmulSpec {
    MatmulSpec { trans_a, trans_b }
}

/// Every op, several shapes each (the first of each op is small enough for finite differences).
pub fn all_cases() -> Vec<OpCase> {
    let mut cases = vec![
        OpCase::new("add", vec![fl(&[7, 33]), fl(&[7, 33])], |x| x[0].add(&x[1])),
        OpCase::new("add (broadcast)", vec![fl(&[3, 1, 5]), fl(&[4, 1])], |x| x[0].add(&x[1])),
        OpCase::new("add (broadcast)", vec![fl(&[129, 257]), fl(&[257])], |x| x[0].add(&x[1])).big(),
        OpCase::new("sub", vec![fl(&[5, 17]), fl(&[5, 1])], |x| x[0].sub(&x[1])),
        OpCase::new("mul", vec![fl(&[9, 31]), fl(&[9, 31])], |x| x[0].mul(&x[1])),
        OpCase::new("mul (broadcast)", vec![fl(&[2, 3, 1, 7]), fl(&[3, 5, 1])], |x| x[0].mul(&x[1])),
        OpCase::new("mul", vec![fl(&[1001, 333])], |x| x[0].mul(&x[0])).big(),
        OpCase::new("scale", vec![fl(&[1000])], |x| x[0].scale(-0.37)),
        // A gradient accumulator updated in place (bf16: each sum formed in f32 and rounded once).
        OpCase::new("add_assign (accumulator)", vec![fl(&[3, 1001]), fl(&[3, 1001])], |x| {
            let acc = x[0].detach_copy()?;
            acc.add_assign_scaled(&x[1], 0.75)?;
            Ok(acc)
        })
        .no_fd(),
        OpCase::new("cast roundtrip", vec![fl(&[3, 333])], |x| x[0].to_dtype(DType::BF16)?.to_dtype(x[0].dtype()))
            .no_fd(),
        OpCase::new("sum", vec![fl_reduce(&[13, 11])], |x| x[0].sum()).tol(1e-5, 1e-2),
        OpCase::new("sum", vec![fl_reduce(&[1000, 999])], |x| x[0].sum()).big().tol(1e-5, 1e-2),
        // few outputs over long rows: the two-stage (split) reduction on the GPU
        OpCase::new("sum dim 1, 3 rows x 70001", vec![fl_reduce(&[3, 70001])], |x| x[0].sum_dims(&[1], false))
            .big()
            .tol(1e-5, 1e-2),
        OpCase::new("sum dim 0, 70001 x 2", vec![fl_reduce(&[70001, 2])], |x| x[0].sum_dims(&[0], false))
            .big()
            .tol(1e-5, 1e-2),
        OpCase::new("sum dims (0,2) keepdim", vec![fl_reduce(&[4, 9, 5])], |x| x[0].sum_dims(&[0, 2], true)),
        OpCase::new("mean dim 1", vec![fl(&[65, 7])], |x| x[0].mean_dims(&[1], false)),
        OpCase::new("mean", vec![fl_reduce(&[4097, 3])], |x| x[0].mean()).big().tol(1e-5, 1e-2),
        OpCase::new("matmul", vec![fl(&[5, 7]), fl(&[7, 3])], |x| x[0].matmul(&x[1])).tol(1e-5, 2e-2),
        OpCase::new("matmul", vec![fl(&[133, 257]), fl(&[257, 61])], |x| x[0].matmul(&x[1])).big().tol(1e-5, 2e-2),
        OpCase::new("matmul Aᵀ", vec![fl(&[6, 4]), fl(&[6, 5])], |x| x[0].matmul_ex(&x[1], spec(true, false))),
        OpCase::new("matmul Bᵀ (linear)", vec![fl(&[5, 6]), fl(&[3, 6])], |x| x[0].linear(&x[1])),
        OpCase::new("matmul AᵀBᵀ", vec![fl(&[4, 3]), fl(&[5, 4])], |x| x[0].matmul_ex(&x[1], spec(true, true))),
        OpCase::new("matmul batched", vec![fl(&[3, 4, 5]), fl(&[3, 5, 2])], |x| x[0].matmul(&x[1])),
        OpCase::new("matmul batched, B 2-D", vec![fl(&[2, 3, 4]), fl(&[4, 5])], |x| x[0].matmul(&x[1])),
        OpCase::new("linear", vec![fl(&[37, 3, 64]), fl(&[96, 64])], |x| x[0].linear(&x[1])).big().tol(1e-5, 2e-2),
        OpCase::new("permute", vec![fl(&[3, 5, 7])], |x| x[0].permute(&[2, 0, 1])),
        OpCase::new("transpose", vec![fl(&[33, 65])], |x| x[0].transpose(0, 1)).big(),
        // Each part of a fused projection's output (its gradient reaches only that part's columns; the others get zeros).
        OpCase::new("split_last part 0", vec![fl(&[4, 10])], |x| split_part(&x[0], &[3, 5, 2], 0)),
        OpCase::new("split_last part 1", vec![fl(&[2, 3, 10])], |x| split_part(&x[0], &[3, 5, 2], 1)),
        OpCase::new("split_last part 2", vec![fl(&[4, 10])], |x| split_part(&x[0], &[3, 5, 2], 2)),
        OpCase::new("split_last qkv", vec![fl(&[37, 8 * 128])], |x| split_part(&x[0], &[512, 256, 256], 1)).big(),
        OpCase::new("embedding", vec![fl(&[11, 6]), ix(&[9], 11)], |x| x[0].embedding(&x[1])),
        OpCase::new("embedding", vec![fl(&[5003, 129]), ix(&[2, 777], 5003)], |x| x[0].embedding(&x[1])).big(),
        OpCase::new("gather_last", vec![fl(&[7, 13]), ix(&[7], 13)], |x| x[0].gather_last(&x[1])),
        OpCase::new("rms_norm", vec![fl(&[5, 12]), fl(&[12])], |x| x[0].rms_norm(&x[1], 1e-6)),
        OpCase::new("rms_norm", vec![fl(&[37, 3, 33]), fl(&[33])], |x| x[0].rms_norm(&x[1], 1e-6)).big(),
        OpCase::new("rms_norm", vec![fl(&[1025, 4096]), fl(&[4096])], |x| x[0].rms_norm(&x[1], 1e-6))
            .big()
            .tol(5e-5, 2e-2),
        OpCase::new("rope", vec![fl(&[5, 2, 8]), ix(&[5], 40)], |x| x[0].rope(&x[1], 10_000.0)),
        // Long positions: f32 angles, and 1-ulp powf differences between libm and CUDA scale with position.
        OpCase::new("rope (pos < 8192)", vec![fl(&[67, 3, 128]), ix(&[67], 8192)], |x| x[0].rope(&x[1], 1_000_000.0))
            .big()
            .tol(2e-3, 2e-2),
        // The fused inference op (forward only): its q and k outputs, odd head counts, then Qwen3's shape.
        OpCase::new("qk_norm_rope q", norm_rope_inputs(7, 5, 3, 10, 40), |x| norm_rope(x, 0, 10_000.0)).no_fd(),
        OpCase::new("qk_norm_rope k", norm_rope_inputs(7, 5, 3, 10, 40), |x| norm_rope(x, 1, 10_000.0)).no_fd(),
        OpCase::new("qk_norm_rope q", norm_rope_inputs(67, 16, 8, 128, 8192), |x| norm_rope(x, 0, 1_000_000.0))
            .big()
            .tol(2e-3, 2e-2),
        OpCase::new("qk_norm_rope k", norm_rope_inputs(67, 16, 8, 128, 8192), |x| norm_rope(x, 1, 1_000_000.0))
            .big()
            .tol(2e-3, 2e-2),
        OpCase::new("add_rms_norm sum", vec![fl(&[5, 12]), fl(&[5, 12]), fl(&[12])], |x| add_norm(x, 0)).no_fd(),
        OpCase::new("add_rms_norm", vec![fl(&[5, 12]), fl(&[5, 12]), fl(&[12])], |x| add_norm(x, 1)).no_fd(),
        OpCase::new("add_rms_norm", vec![fl(&[9, 4096]), fl(&[9, 4096]), fl(&[4096])], |x| add_norm(x, 1))
            .big()
            .tol(5e-5, 2e-2),
        OpCase::new("swiglu", vec![fl(&[4, 9]), fl(&[4, 9])], |x| x[0].swiglu(&x[1])),
        OpCase::new("swiglu", vec![fl_std(&[37, 3001], 3.0), fl(&[37, 3001])], |x| x[0].swiglu(&x[1])).big(),
        OpCase::new("softmax", vec![fl(&[6, 7])], |x| x[0].softmax()),
        OpCase::new("softmax", vec![fl_std(&[37, 1], 1.0)], |x| x[0].softmax()).big(),
        OpCase::new("log_softmax", vec![fl(&[3, 9])], |x| x[0].log_softmax()),
        OpCase::new("log_softmax", vec![fl_std(&[3, 151_936], 4.0)], |x| x[0].log_softmax()).big().tol(2e-5, 2e-2),
        OpCase::new("cross_entropy", vec![fl(&[6, 10]), ix(&[6], 10)], |x| x[0].cross_entropy(&x[1])),
    ];
    cases.extend(attention_cases());
    cases.extend(loss_cases());
    cases.extend(weight_cases());
    cases
}

/// Soft token weights (scores [N] f32; validity and pools fixed per case). A measurement: forward only.
fn weight_case(name: &'static str, pools: &[usize]) -> OpCase {
    use crate::ops::{soft_weights, SoftWeightSchedule};
    let packing = Arc::new(Packing::from_lengths(pools).expect("valid lengths"));
    let n = packing.total();
    let valid: Vec<f32> = (0..n).map(|i| (i % 7 != 3) as i32 as f32).collect();
    let sched =
        SoftWeightSchedule { temperature: 0.7, direction_start: -1.0, direction_end: 1.0, ramp_steps: 10, floor: 0.1 };
    let mut c = OpCase::new(name, vec![fl(&[n])], move |x| {
        let v = Tensor::from_vec(valid.clone(), [n], x[0].device())?.to_dtype(x[0].dtype())?;
        soft_weights(&x[0], &v, &packing, &sched, 3)
    })
    .no_fd()
    .tol(1e-5, 1e-5);
    c.dtypes = vec![DType::F32];
    c
}

fn weight_cases() -> Vec<OpCase> {
    vec![weight_case("soft_weights", &[5, 0, 1, 17, 300]), weight_case("soft_weights", &[100_003])]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LossOut {
    Loss,
    Logp,
    Entropy,
    GradNorm,
}

/// The fused LM-head DAPO loss over `t` tokens, hidden `h`, vocab `v`, in chunks of `chunk` tokens, with
/// per-token data that exercises every branch (A = 0, weight 0, masked, ratios far outside the clip range).
fn loss_case(name: &'static str, t: usize, h: usize, v: usize, chunk: usize, what: LossOut) -> OpCase {
    use crate::ops::{dapo_loss, DapoBatch, DapoLossConfig, LossNormalizer};
    let targets: Vec<i32> = (0..t).map(|i| ((i * 7919 + 13) % v) as i32).collect();
    let base = -(v as f64).ln();
    let old: Vec<f64> = (0..t).map(|i| base + [0.0, 1.5, -1.5, -3.0, 0.2, -0.1, 0.05][i % 7]).collect();
    let adv: Vec<f64> = (0..t).map(|i| [1.0, -1.0, 0.5, -2.0, 0.0, 1.5][i % 6]).collect();
    let mask: Vec<f64> = (0..t).map(|i| (i % 9 != 8) as i32 as f64).collect();
    let w: Vec<f64> = (0..t).map(|i| [1.0, 0.0, 0.5, 1.0][i % 4]).collect();
    let normalizer = if t.is_multiple_of(2) { LossNormalizer::AllTokens } else { LossNormalizer::SelectedWeight };
    let inputs = vec![fl_std(&[t, h], 1.0), fl_std(&[v, h], 1.0 / (h as f64).sqrt())];
    let case = OpCase::new(name, inputs, move |x| {
        let dev = x[0].device();
        let f = |v: &[f64]| Tensor::from_f64(v, [t], DType::F32, dev);
        let (tg, o, a, m, ww) = (Tensor::from_vec(targets.clone(), [t], dev)?, f(&old)?, f(&adv)?, f(&mask)?, f(&w)?);
        let batch = DapoBatch { targets: &tg, old_logp: &o, advantages: &a, mask: &m, weights: &ww };
        let cfg = DapoLossConfig {
            normalizer,
            chunk_tokens: chunk,
            want_entropy: what == LossOut::Entropy,
            want_grad_norm: what == LossOut::GradNorm,
            ..Default::default()
        };
        let out = dapo_loss(&x[0], &x[1], &batch, &cfg)?;
        Ok(match what {
            LossOut::Loss => out.loss,
            LossOut::Logp => out.logp,
            LossOut::Entropy => out.entropy.expect("asked for"),
            LossOut::GradNorm => out.grad_norm.expect("asked for"),
        })
    });
    if what == LossOut::Loss {
        case
    } else {
        case.no_fd()
    }
}

fn loss_cases() -> Vec<OpCase> {
    vec![
        loss_case("dapo_loss (fused LM head)", 14, 5, 9, 4, LossOut::Loss),
        loss_case("dapo_loss (fused LM head)", 37, 64, 1001, 16, LossOut::Loss).big().tol(1e-4, 3e-2),
        loss_case("dapo_loss logp", 37, 64, 1001, 16, LossOut::Logp).tol(1e-5, 2e-2),
        loss_case("dapo_loss entropy", 37, 64, 1001, 16, LossOut::Entropy).tol(1e-5, 2e-2),
        loss_case("dapo_loss grad norm", 37, 64, 1001, 16, LossOut::GradNorm).tol(1e-5, 2e-2),
        loss_case("dapo_loss (fused LM head)", 300, 128, 32003, 128, LossOut::Loss).big().gpu_only().tol(1e-4, 3e-2),
    ]
}

/// Attention over a packing of `lens`, GQA `hq`/`hkv`, head_dim `d`: the output, or one row statistic.
fn attn(name: impl Into<Cow<'static, str>>, lens: &[usize], hq: usize, hkv: usize, d: usize, what: AttnOut) -> OpCase {
    let packing = Arc::new(Packing::from_lengths(lens).expect("valid lengths"));
    let t = packing.total();
    let inputs = vec![fl(&[t, hq, d]), fl(&[t, hkv, d]), fl(&[t, hkv, d])];
    let case = OpCase::new(name, inputs, move |x| {
        let stats = match what {
            AttnOut::Out => RowStats::NONE,
            AttnOut::NormMean => RowStats::ENTROPY,
            AttnOut::Stat(s) => RowStats::NONE.with(s).with_sink_keys(SINK_KEYS),
        };
        let a = attention(&x[0], &x[1], &x[2], &packing, stats)?;
        match what {
            AttnOut::Out => Ok(a.out),
            AttnOut::NormMean => Ok(normalized_entropy(a.stats.require(RowStat::Entropy)?, &packing)?.1),
            AttnOut::Stat(s) => Ok(a.stats.require(s)?.clone()),
        }
    });
    let case = if what == AttnOut::Out { case } else { case.no_fd() };
    case.tol(1e-5, 2e-2)
}

/// The sink statistic's leading keys in the checks (not a tile size, not the default).
const SINK_KEYS: usize = 5;

#[derive(Clone, Copy, PartialEq, Eq)]
enum AttnOut {
    Out,
    /// The head mean of the normalised entropy (`normalized_entropy`).
    NormMean,
    Stat(RowStat),
}

/// Small packs (odd lengths, length 1, GQA ratios 1/4/6, head dims the CUDA kernel does not take) for finite
/// differences and the CPU paths; the kernel's head dims 32/64/128 in bf16 with long rows (S >= 4096) and
/// packs with empty sequences for the GPU (each forward version: `gpu.rs`). Every row statistic of the table gets the same shapes.
fn attention_cases() -> Vec<OpCase> {
    use AttnOut::*;
    let mut cases = vec![
        attn("attention", &[3, 1, 4], 2, 2, 4, Out).cpu_only(),
        attn("attention gqa4", &[5, 2], 4, 1, 3, Out).cpu_only(),
        attn("attention gqa6", &[1, 6], 6, 1, 2, Out).cpu_only(),
        attn("attention Hnorm head-mean", &[5, 1, 2], 2, 1, 4, NormMean).cpu_only(),
        attn("attention d32", &[3, 50, 1, 70], 4, 2, 32, Out).bf16_only().big(),
        attn("attention d64", &[1, 37, 64, 129], 4, 1, 64, Out).bf16_only().big(),
        attn("attention d128 gqa4", &[200, 17, 65], 8, 2, 128, Out).bf16_only().big(),
        attn("attention Hnorm d64", &[1, 37, 64, 129], 4, 1, 64, NormMean).bf16_only(),
        attn("attention S=4096 d64", &[4096], 2, 1, 64, Out).bf16_only().gpu_only(),
        attn("attention d128 empty and one-key seqs", &[0, 1, 129, 0, 257], 4, 2, 128, Out).bf16_only().big(),
        attn("attention S=8192 d128 gqa4", &[8192], 8, 2, 128, Out).bf16_only().gpu_only(),
    ];
    for stat in RowStat::ALL {
        let name = stat.name();
        cases.extend([
            attn(format!("attention {name}"), &[7, 1, 9], 6, 2, 4, Stat(stat)).cpu_only(),
            attn(format!("attention {name} d32"), &[3, 50, 1, 70], 4, 2, 32, Stat(stat)).bf16_only(),
            attn(format!("attention {name} d64"), &[1, 37, 64, 129], 4, 1, 64, Stat(stat)).bf16_only(),
            attn(format!("attention {name} d128 gqa4"), &[200, 17, 65], 8, 2, 128, Stat(stat)).bf16_only(),
            attn(format!("attention {name} S=4099 d128"), &[4099], 8, 2, 128, Stat(stat)).bf16_only().gpu_only(),
        ]);
    }
    cases
}

/// Inputs of `ops::qk_norm_rope`: q [t, hq, d], k [t, hk, d], their weights, positions below `max_pos`.
fn norm_rope_inputs(t: usize, hq: usize, hk: usize, d: usize, max_pos: i32) -> Vec<Input> {
    vec![fl(&[t, hq, d]), fl(&[t, hk, d]), fl(&[d]), fl(&[d]), ix(&[t], max_pos)]
}

/// Output `which` (0: q, 1: k) of `ops::qk_norm_rope` on [`norm_rope_inputs`] (forward only: no gradients).
fn norm_rope(x: &[Tensor], which: usize, theta: f64) -> Result<Tensor> {
    let _no_grad = crate::autograd::no_grad();
    let (q, k) = crate::ops::qk_norm_rope(&x[0], &x[1], &x[2], &x[3], &x[4], 1e-6, crate::ops::RopeSpec::new(theta))?;
    Ok(if which == 0 { q } else { k })
}

/// Output `which` (0: the sum, 1: the normed sum) of `ops::add_rms_norm` (forward only: no gradients).
fn add_norm(x: &[Tensor], which: usize) -> Result<Tensor> {
    let _no_grad = crate::autograd::no_grad();
    let (s, n) = crate::ops::add_rms_norm(&x[0], &x[1], &x[2], 1e-6)?;
    Ok(if which == 0 { s } else { n })
}

/// Part `j` of `x` split along its last dimension into `sizes`.
fn split_part(x: &Tensor, sizes: &[usize], j: usize) -> Result<Tensor> {
    let mut parts = x.split_last(sizes)?;
    Ok(parts.swap_remove(j))
}
