//! `entrl selftest`: CPU gradient checks always; on a GPU, every CUDA op against the CPU reference.
use entrl_engine::check::{self, format_table, CheckRow};
use entrl_engine::Device;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// Seed for the random inputs (default: fresh from the clock; printed so a failure can be replayed).
    #[arg(long)]
    seed: Option<u64>,
    /// GPU ordinal to test.
    #[arg(long, default_value_t = 0)]
    gpu: usize,
    /// Skip the GPU checks even when a GPU is present.
    #[arg(long)]
    cpu_only: bool,
}

pub fn run(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let seed = a
        .seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    println!("entrl selftest — commit {}, seed {seed}", crate::COMMIT);

    let cpu_rows = check::gradcheck::cpu_gradient_checks(seed);
    println!("\nCPU backend: finite-difference gradient checks (f64)\n{}", format_table(&cpu_rows));
    let mut all: Vec<CheckRow> = cpu_rows;
    let mut backend_rows = check::gpu::backend_checks(&Device::Cpu, seed);
    backend_rows.extend(check::decode::decode_checks(&Device::Cpu, seed));
    backend_rows.push(check::decode::randn_check(&Device::Cpu, seed));
    backend_rows.extend(check::sampling::sampling_checks(&Device::Cpu, seed));
    println!("CPU backend: f32 and bf16 paths vs the f64 reference\n{}", format_table(&backend_rows));
    all.extend(backend_rows);

    if a.cpu_only {
        println!("GPU checks skipped (--cpu-only)");
    } else {
        match Device::cuda(a.gpu) {
            Ok(dev) => {
                let cuda = dev.as_cuda().expect("cuda device");
                let (maj, min) = cuda.compute_capability()?;
                println!("GPU {}: {} (sm_{maj}{min})", a.gpu, cuda.name());
                let mut rows = check::gpu::cuda_checks(&dev, seed);
                rows.extend(check::select::select_checks(&dev, seed));
                rows.extend(check::decode::decode_checks(&dev, seed));
                rows.push(check::decode::randn_check(&dev, seed));
                rows.extend(check::sampling::sampling_checks(&dev, seed));
                println!(
                    "\nCUDA kernels vs CPU reference (f64), poisoned outputs, every launch checked\n{}",
                    format_table(&rows)
                );
                all.extend(rows);
            }
            Err(e) => println!("no GPU checks: {e}"),
        }
    }
    let failed = all.iter().filter(|r| !r.pass).count();
    println!("{} passed, {failed} failed", all.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
