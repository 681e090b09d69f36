//! `entrl bench ...`: GPU benchmarks timed with CUDA events (median of repetitions after warm-up).
use entrl_engine::cuda::timing::{median, time_ms};
use entrl_engine::{DType, Device, Tensor};
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
        Bench::Attention { heads, kv_heads, head_dim, reps, json } => {
            attention(*heads, *kv_heads, *head_dim, *reps, json.as_deref())
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

/// Write via a temporary file and rename, so a reader never sees a half-written file.
fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

fn attention(
    hq: usize,
    hkv: usize,
    d: usize,
    reps: usize,
    json: Option<&std::path::Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use entrl_engine::ops::attention as attn;
    use entrl_engine::{no_grad, Packing};
    let dev = Device::cuda(0)?;
    let cuda = dev.as_cuda().expect("cuda").clone();
    let mut lines = String::new();
    println!("attention bf16, {hq} q heads / {hkv} kv heads, d={d}, causal ({})", cuda.name());
    println!(
        "{:<14} {:>12} {:>10} {:>14} {:>10} {:>14} {:>10}",
        "shape", "fwd ms", "TF/s", "fwd+H ms", "TF/s", "fwd+bwd ms", "TF/s"
    );
    for lens in ATTN_SHAPES {
        let packing = Packing::from_lengths(lens)?;
        let t = packing.total();
        let q = Tensor::randn([t, hq, d], 1.0, DType::BF16, &dev, 1)?.param();
        let k = Tensor::randn([t, hkv, d], 1.0, DType::BF16, &dev, 2)?.param();
        let v = Tensor::randn([t, hkv, d], 1.0, DType::BF16, &dev, 3)?.param();
        let dout = Tensor::randn([t, hq, d], 1.0, DType::BF16, &dev, 4)?;
        // FLOPs as flash-attention's benchmark counts them: 4·S²·H·d per sequence, halved for causal.
        let fwd_flops: f64 = lens.iter().map(|&s| 2.0 * (s * s * hq * d) as f64).sum();
        let fwd = median(&time_ms(&cuda, 3, reps, || {
            let _g = no_grad();
            attn(&q, &k, &v, &packing, false).map(|_| ())
        })?);
        let fwd_h = median(&time_ms(&cuda, 3, reps, || {
            let _g = no_grad();
            attn(&q, &k, &v, &packing, true).map(|_| ())
        })?);
        let fwd_bwd = median(&time_ms(&cuda, 3, reps, || {
            attn(&q, &k, &v, &packing, false)?.out.backward_with(dout.clone())?;
            [&q, &k, &v].iter().for_each(|p| p.zero_grad());
            Ok(())
        })?);
        let tf = |flops: f64, ms: f64| flops / (ms * 1e-3) / 1e12;
        let label = if lens.len() == 1 { format!("S={}", lens[0]) } else { format!("{}x{}", lens.len(), lens[0]) };
        println!(
            "{label:<14} {fwd:>12.3} {:>10.1} {fwd_h:>14.3} {:>10.1} {fwd_bwd:>14.3} {:>10.1}",
            tf(fwd_flops, fwd),
            tf(fwd_flops, fwd_h),
            tf(3.5 * fwd_flops, fwd_bwd)
        );
        for (mode, ms, flops) in
            [("fwd", fwd, fwd_flops), ("fwd_entropy", fwd_h, fwd_flops), ("fwd_bwd", fwd_bwd, 3.5 * fwd_flops)]
        {
            lines.push_str(&format!(
                "{{\"bench\":\"attention\",\"impl\":\"entrl\",\"shape\":\"{label}\",\"mode\":\"{mode}\",\"ms\":{ms:.4},\"tflops\":{:.2},\"heads\":{hq},\"kv_heads\":{hkv},\"d\":{d},\"gpu\":\"{}\",\"commit\":\"{}\"}}\n",
                tf(flops, ms),
                cuda.name(),
                crate::COMMIT
            ));
        }
    }
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
