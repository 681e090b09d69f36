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
}

pub fn run(b: &Bench) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match b {
        Bench::Matmul { m, n, k, dtype, reps, json } => matmul(*m, *n, *k, dtype, *reps, json.as_deref()),
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
