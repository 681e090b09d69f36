//! `entrl bench ...`: GPU benchmarks timed with CUDA events (median of repetitions after warm-up).
use entrl_engine::cuda::timing::{median, time_ms};
use entrl_engine::{DType, Device, Tensor};
use entrl_rl::config::{DecodeChoice, GradDtype};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// C = A·B through the engine's matmul (cuBLAS, f32 accumulation).
    Matmul {
        #[arg(long, default_value_t = 8192)]
        m: usize,
        #[arg(long, default_value_t = 8192)]
        n: usize,
        #[arg(long, default_value_t = 8192)]
        k: usize,
        /// bf16 or f32
        #[arg(long, default_value = "bf16")]
        dtype: String,
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Also write the result as one JSON line to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Generation throughput of a named Qwen3 shape with random weights (prefill + KV-cache decode).
    Generate {
        #[arg(long, default_value = "qwen3-8b")]
        shape: String,
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        batches: Vec<usize>,
        #[arg(long, default_value_t = 256)]
        prompt: usize,
        #[arg(long, default_value_t = 128)]
        new: usize,
        /// Decode modes to time, each at every batch (eager, graph).
        #[arg(long, value_delimiter = ',', default_value = "eager,graph", value_parser = crate::train::choice::<DecodeChoice>(DecodeChoice::NAMES))]
        decode: Vec<DecodeChoice>,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Issue 16's rollout workload (long-tailed response lengths) through the paged KV cache and through
    /// contiguous slots in the same call.
    Rollout(crate::bench_rollout::RolloutArgs),
    /// One checkpointed forward+backward (fused loss) of a named Qwen3 shape: tokens/s and peak memory.
    TrainStep {
        #[arg(long, default_value = "qwen3-8b")]
        shape: String,
        #[arg(long, default_value_t = 8192)]
        seq: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Gradient storage of the bf16 weights (train.grad_dtype): bf16 halves the gradients' memory.
        #[arg(long, default_value = "f32", value_parser = crate::train::choice::<GradDtype>(GradDtype::NAMES))]
        grad_dtype: GradDtype,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Top and bottom `frac` of `n` scores by device radix select (vs torch.topk twice), in one pool or
    /// split into `pools` equal pools (the per-sequence / per-micro-batch scopes of the token strategies).
    Select {
        #[arg(long, default_value_t = 4_194_304)]
        n: usize,
        #[arg(long, default_value_t = 0.2)]
        frac: f64,
        #[arg(long, default_value_t = 1)]
        pools: usize,
        #[arg(long, default_value_t = 50)]
        reps: usize,
        /// Also time the wide version over a grid of shapes (tile, candidate split, pass-0 copies), each
        /// checked against the plain version's masks.
        #[arg(long)]
        wide_sweep: bool,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// The fused LM-head + DAPO token loss (bf16), forward+backward, time and extra memory.
    Loss {
        #[arg(long, default_value_t = 8192)]
        tokens: usize,
        #[arg(long, default_value_t = 4096)]
        hidden: usize,
        #[arg(long, default_value_t = 151_936)]
        vocab: usize,
        #[arg(long, default_value_t = 1024)]
        chunk: usize,
        #[arg(long, default_value_t = 10)]
        reps: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// The fused causal attention (bf16): forward, forward with entropy, forward+backward, for
    /// S = 1024..8192 (one sequence) and a varlen pack of 8 × 1024.
    Attention {
        #[arg(long, default_value_t = 32)]
        heads: usize,
        #[arg(long, default_value_t = 8)]
        kv_heads: usize,
        #[arg(long, default_value_t = 128)]
        head_dim: usize,
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// One packed shape of these sequence lengths (e.g. 300,129,0,1) instead of S = 1k..8k and 8 × 1k
        /// (small runs under compute-sanitizer).
        #[arg(long, value_delimiter = ',')]
        lens: Vec<usize>,
        /// Also write one JSON line per (shape, mode) to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

/// Shapes of `entrl bench attention`: one causal sequence of each length, then a varlen pack.
const ATTN_SHAPES: [&[usize]; 5] = [&[1024], &[2048], &[4096], &[8192], &[1024; 8]];

pub fn run(b: &Bench) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match b {
        Bench::Matmul { m, n, k, dtype, reps, json } => matmul(*m, *n, *k, dtype, *reps, json.as_deref()),
        Bench::Attention { heads, kv_heads, head_dim, reps, lens, json } => {
            let shapes: Vec<&[usize]> = if lens.is_empty() { ATTN_SHAPES.to_vec() } else { vec![lens.as_slice()] };
            attention(*heads, *kv_heads, *head_dim, *reps, &shapes, json.as_deref())
        }
        Bench::Generate { shape, batches, prompt, new, decode, json } => {
            crate::bench_model::generate_bench(shape, batches, *prompt, *new, decode, json.as_deref())
        }
        Bench::Rollout(a) => crate::bench_rollout::rollout_bench(a),
        Bench::TrainStep { shape, seq, reps, grad_dtype, json } => {
            crate::bench_model::train_step_bench(shape, *seq, *reps, grad_dtype.storage(), json.as_deref())
        }
        Bench::Select { n, frac, pools, reps, wide_sweep, json } => {
            crate::bench_select::select(*n, *frac, *pools, *reps, *wide_sweep, json.as_deref())
        }
        Bench::Loss { tokens, hidden, vocab, chunk, reps, json } => {
            loss(*tokens, *hidden, *vocab, *chunk, *reps, json.as_deref())
        }
    }
}

fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dtype: &str,
    reps: usize,
    json: Option<&std::path::Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let dt = match dtype {
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        d => return Err(format!("--dtype must be bf16 or f32, not {d}").into()),
    };
    let dev = Device::cuda(0)?;
    let cuda = dev.as_cuda().expect("cuda").clone();
    let a = Tensor::randn([m, k], 1.0, dt, &dev, 1)?;
    let b = Tensor::randn([k, n], 1.0, dt, &dev, 2)?;
    let times = time_ms(&cuda, 3, reps.max(1), || a.matmul(&b).map(|_| ()))?;
    let ms = median(&times);
    let tflops = 2.0 * (m * n * k) as f64 / (ms * 1e-3) / 1e12;
    println!("matmul {dtype} {m}x{n}x{k}: median {ms:.3} ms over {reps} reps, {tflops:.1} TFLOP/s ({})", cuda.name());
    if let Some(path) = json {
        let line = format!(
            "{{\"bench\":\"matmul\",\"dtype\":\"{dtype}\",\"m\":{m},\"n\":{n},\"k\":{k},\"ms\":{ms:.4},\"tflops\":{tflops:.2},\"gpu\":\"{}\",\"commit\":\"{}\"}}\n",
            cuda.name(),
            crate::COMMIT
        );
        write_atomic(path, &line)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Write via a temporary file and rename (the model crate's writer), so a reader never sees half a file.
pub(crate) fn write_atomic(path: &std::path::Path, text: &str) -> entrl_qwen3::Result<()> {
    entrl_qwen3::save::write_atomic(path, text.as_bytes())
}

fn attention(
    hq: usize,
    hkv: usize,
    d: usize,
    reps: usize,
    shapes: &[&[usize]],
    json: Option<&std::path::Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use entrl_engine::cuda::attention::AttnVersion;
    use entrl_engine::cuda::choices::current_first;
    use entrl_engine::ops::{attention as attn, RowStat, RowStats};
    use entrl_engine::{no_grad, Packing};
    let dev = Device::cuda(0)?;
    let cuda = dev.as_cuda().expect("cuda").clone();
    let mut lines = String::new();
    // every shipped forward that runs this head size here, the device's own first
    let cc = cuda.compute_capability()?;
    let start = cuda.kernel_choices();
    let kernels: Vec<AttnVersion> = current_first(start.attention, &AttnVersion::ALL)
        .into_iter()
        .filter(|&k| k == AttnVersion::Mma || AttnVersion::hopper_runs(d, cc))
        .collect();
    for kernel in kernels {
        cuda.set_kernel_choices(entrl_engine::cuda::KernelChoices { attention: kernel, ..start });
        println!(
        "attention bf16, {hq} q heads / {hkv} kv heads, d={d}, causal ({}); forward attention_{}, backward attention_mma_bwd",
        cuda.name(),
        kernel.name()
    );
        println!(
            "{:<10} {:>16} {:>16} {:>16} {:>16} {:>18}",
            "shape", "fwd ms (TF/s)", "fwd+H ms (TF/s)", "fwd+stats ms", "fwd+H+hmix ms", "fwd+bwd ms (TF/s)"
        );
        // every statistic of the online pass (attn_fwd_mma_stats_d*)
        let online =
            RowStat::ALL.into_iter().filter(|&s| (s as usize) < RowStat::ONLINE).fold(RowStats::NONE, RowStats::with);
        for &lens in shapes {
            let packing = Packing::from_lengths(lens)?;
            let t = packing.total();
            let q = Tensor::randn([t, hq, d], 1.0, DType::BF16, &dev, 1)?.param();
            let k = Tensor::randn([t, hkv, d], 1.0, DType::BF16, &dev, 2)?.param();
            let v = Tensor::randn([t, hkv, d], 1.0, DType::BF16, &dev, 3)?.param();
            let dout = Tensor::randn([t, hq, d], 1.0, DType::BF16, &dev, 4)?;
            // FLOPs as flash-attention's benchmark counts them: 4·S²·H·d per sequence, halved for causal.
            let fwd_flops: f64 = lens.iter().map(|&s| 2.0 * (s * s * hq * d) as f64).sum();
            let forward = |stats: RowStats| -> Result<f64, Box<dyn std::error::Error>> {
                Ok(median(&time_ms(&cuda, 3, reps, || {
                    let _g = no_grad();
                    attn(&q, &k, &v, &packing, stats).map(|_| ())
                })?))
            };
            let hmix = RowStats::ENTROPY.with(RowStat::HeadMix);
            let (fwd, fwd_h, fwd_hmix) = (forward(RowStats::NONE)?, forward(RowStats::ENTROPY)?, forward(hmix)?);
            let fwd_stats = forward(online)?;
            let fwd_bwd = median(&time_ms(&cuda, 3, reps, || {
                attn(&q, &k, &v, &packing, RowStats::NONE)?.out.backward_with(dout.clone())?;
                [&q, &k, &v].iter().for_each(|p| p.zero_grad());
                Ok(())
            })?);
            let tf = |flops: f64, ms: f64| flops / (ms * 1e-3) / 1e12;
            let cell = |ms: f64, flops: f64| format!("{ms:.3} ({:.0})", tf(flops, ms));
            let label = match lens {
                [s] => format!("S={s}"),
                [first, ..] if lens.iter().all(|l| l == first) => format!("{}x{first}", lens.len()),
                _ => lens.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("+"),
            };
            println!(
                "{label:<10} {:>16} {:>16} {:>16} {:>16} {:>18}",
                cell(fwd, fwd_flops),
                cell(fwd_h, fwd_flops),
                format!("{fwd_stats:.3} (x{:.3})", fwd_stats / fwd_h),
                format!("{fwd_hmix:.3} (x{:.2})", (fwd_hmix - fwd_h) / fwd),
                cell(fwd_bwd, 3.5 * fwd_flops)
            );
            for (mode, ms, flops) in [
                ("fwd", fwd, fwd_flops),
                ("fwd_entropy", fwd_h, fwd_flops),
                // every online statistic (the printed ×: its time / the entropy-only forward's)
                ("fwd_stats", fwd_stats, fwd_flops),
                // forward + entropy + the head-mixture pass (the printed ×: the pass's time / the forward's)
                ("fwd_entropy_hmix", fwd_hmix, fwd_flops),
                ("fwd_bwd", fwd_bwd, 3.5 * fwd_flops),
            ] {
                lines.push_str(&format!(
                "{{\"bench\":\"attention\",\"impl\":\"entrl\",\"kernel\":\"{}\",\"shape\":\"{label}\",\"mode\":\"{mode}\",\"ms\":{ms:.4},\"tflops\":{:.2},\"heads\":{hq},\"kv_heads\":{hkv},\"d\":{d},\"gpu\":\"{}\",\"commit\":\"{}\"}}\n",
                kernel.name(),
                tf(flops, ms),
                cuda.name(),
                crate::COMMIT
            ));
            }
        }
    }
    cuda.set_kernel_choices(start);
    let mem = cuda.memory_stats();
    println!(
        "allocator: peak {:.2} GiB in use, {} driver allocations",
        mem.peak_in_use as f64 / (1u64 << 30) as f64,
        mem.driver_allocs
    );
    if let Some(path) = json {
        write_atomic(path, &lines)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn loss(
    t: usize,
    h: usize,
    v: usize,
    chunk: usize,
    reps: usize,
    json: Option<&std::path::Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use entrl_engine::ops::{dapo_loss, DapoBatch, DapoLossConfig};
    let dev = Device::cuda(0)?;
    let cuda = dev.as_cuda().expect("cuda").clone();
    let x = Tensor::randn([t, h], 1.0, DType::BF16, &dev, 1)?.param();
    let w = Tensor::randn([v, h], 0.02, DType::BF16, &dev, 2)?.param();
    let targets = Tensor::from_vec((0..t).map(|i| ((i * 7919) % v) as i32).collect::<Vec<_>>(), [t], &dev)?;
    let old = Tensor::full([t], -(v as f64).ln(), DType::F32, &dev)?;
    let adv = Tensor::rand_uniform([t], -1.0, 1.0, DType::F32, &dev, 3)?;
    let ones = Tensor::ones([t], DType::F32, &dev)?;
    let batch = DapoBatch { targets: &targets, old_logp: &old, advantages: &adv, mask: &ones, weights: &ones };
    let cfg = DapoLossConfig { chunk_tokens: chunk, ..Default::default() };
    let step = || -> entrl_engine::Result<()> {
        dapo_loss(&x, &w, &batch, &cfg)?.loss.backward()?;
        x.zero_grad();
        w.zero_grad();
        Ok(())
    };
    // Extra memory: peak over one step beyond the inputs (the LM-head gradient, f32 [V, H], included).
    step()?;
    dev.synchronize()?;
    let base = cuda.memory_stats().in_use;
    cuda.reset_peak_memory();
    step()?;
    dev.synchronize()?;
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    let extra = gib(cuda.memory_stats().peak_in_use - base);
    let dw = gib(v * h * 4);
    let ms = median(&time_ms(&cuda, 2, reps.max(1), step)?);
    let tflops = 6.0 * (t * h * v) as f64 / (ms * 1e-3) / 1e12;
    println!(
        "dapo_loss fused LM head, T={t} H={h} V={v} chunk={chunk}: fwd+bwd {ms:.2} ms ({tflops:.0} TF/s GEMM-equivalent), \
         extra memory {extra:.2} GiB (of which {dw:.2} GiB is the f32 LM-head gradient) ({})",
        cuda.name()
    );
    if let Some(path) = json {
        let line = format!(
            "{{\"bench\":\"loss\",\"impl\":\"entrl\",\"tokens\":{t},\"hidden\":{h},\"vocab\":{v},\"chunk\":{chunk},\"ms\":{ms:.3},\"tflops\":{tflops:.1},\"extra_gib\":{extra:.3},\"dw_gib\":{dw:.3},\"gpu\":\"{}\",\"commit\":\"{}\"}}\n",
            cuda.name(),
            crate::COMMIT
        );
        write_atomic(path, &line)?;
    }
    Ok(ExitCode::SUCCESS)
}
