//! `entrl verify-reference DIR`: relative errors of logits, log-probs, attention entropy, the DAPO loss and
//! every gradient against HF's float64 references; exits non-zero beyond tolerance.
use entrl_engine::{DType, Device};
use entrl_qwen3::verify::{verify_reference, VerifyOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Folder with config.json, model.safetensors, inputs/reference/reference_grads.safetensors.
    dir: PathBuf,
    /// cpu or cuda[:N]
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32 or f64 on CPU, bf16 on CUDA (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    dtype: Option<String>,
    /// Recompute each layer in backward (activation checkpointing).
    #[arg(long)]
    checkpoint: bool,
    /// Override the tolerance for activations and gradients.
    #[arg(long)]
    tol: Option<f64>,
    /// Use f32 RoPE frequencies instead of reproducing HF's bf16-rounded inv_freq (the fixtures were made
    /// from a module cast with .to(bfloat16), which rounds the rotary buffer).
    #[arg(long)]
    f32_rope: bool,
}

pub fn run(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let device = parse_device(&a.device)?;
    let dtype = match a.dtype.as_deref() {
        None => device.default_dtype(),
        Some("f32") => DType::F32,
        Some("f64") => DType::F64,
        Some("bf16") => DType::BF16,
        Some(d) => return Err(format!("--dtype must be f32, f64 or bf16, not {d}").into()),
    };
    let opts = VerifyOptions {
        dtype,
        checkpoint: a.checkpoint,
        tol: a.tol.map(|t| (t, t)),
        hf_bf16_rope: !a.f32_rope,
        bf16_floor: dtype == DType::BF16 && device.is_cuda() && a.tol.is_none(),
    };
    let rows = verify_reference(&a.dir, &device, &opts)?;
    println!(
        "verify-reference {} on {device} ({dtype}{})",
        a.dir.display(),
        if a.checkpoint { ", checkpointed" } else { "" }
    );
    let floor = rows.iter().any(|r| r.bf16_floor.is_some());
    if floor {
        println!(
            "bf16 on a GPU: each bound is also at least {}x the CPU bf16 path's own error (cpu bf16 column): \
             bf16 rounding alone moves these fixtures that far",
            entrl_qwen3::verify::BF16_FLOOR_FACTOR
        );
        println!("{:<58} {:>12} {:>12} {:>9}  pass", "quantity", "rel err", "cpu bf16", "tol");
    } else {
        println!("{:<58} {:>12} {:>9}  pass", "quantity", "rel err", "tol");
    }
    for r in &rows {
        let verdict = if r.pass { "ok" } else { "FAIL" };
        match r.bf16_floor {
            Some(f) => println!("{:<58} {:>12.3e} {:>12.3e} {:>9.1e}  {verdict}", r.what, r.rel_err, f, r.tol),
            None => println!("{:<58} {:>12.3e} {:>9.1e}  {verdict}", r.what, r.rel_err, r.tol),
        }
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!("{} passed, {failed} failed", rows.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn parse_device(s: &str) -> Result<Device, Box<dyn std::error::Error>> {
    Ok(Device::parse(s)?)
}
