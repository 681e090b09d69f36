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
    /// Also run `verify-reference` on every model folder under DIR (the format of shared/fixtures/): f32
    /// on the CPU, and bf16 on the GPU; one row per folder and device with the worst error / bound.
    #[arg(long, value_name = "DIR")]
    fixtures: Option<std::path::PathBuf>,
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
    backend_rows.extend(crate::selftest_graph::graph_rows(&Device::Cpu, seed));
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
                rows.extend(crate::selftest_graph::graph_rows(&dev, seed));
                println!(
                    "\nCUDA kernels vs CPU reference (f64), poisoned outputs, every launch checked\n{}",
                    format_table(&rows)
                );
                all.extend(rows);
            }
            Err(e) => println!("no GPU checks: {e}"),
        }
    }
    if let Some(root) = &a.fixtures {
        let mut devices = vec![Device::Cpu];
        if !a.cpu_only {
            devices.extend(Device::cuda(a.gpu).ok());
        }
        let rows = fixture_rows(root, &devices)?;
        println!(
            "\nverify-reference against {} (worst rel err / bound per folder)\n{}",
            root.display(),
            format_table(&rows)
        );
        all.extend(rows);
    }
    let failed = all.iter().filter(|r| !r.pass).count();
    println!("{} passed, {failed} failed", all.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One row per (model folder under `root`, device): the largest rel err / bound over every quantity that
/// `verify-reference` checks (f32 on the CPU; bf16 with its measured bf16 floor on a GPU).
fn fixture_rows(root: &std::path::Path, devices: &[Device]) -> Result<Vec<CheckRow>, Box<dyn std::error::Error>> {
    use entrl_qwen3::verify::{verify_reference, VerifyOptions};
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| format!("--fixtures {}: {e}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file() && p.join("reference.safetensors").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(format!(
            "--fixtures {}: no model folder with config.json and reference.safetensors",
            root.display()
        )
        .into());
    }
    let mut rows = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for dev in devices {
            let dtype = dev.default_dtype();
            let opts = VerifyOptions {
                dtype,
                checkpoint: false,
                tol: None,
                hf_bf16_rope: true,
                bf16_floor: dtype == entrl_engine::DType::BF16,
            };
            let label = format!("verify-reference {name} ({dev})");
            rows.push(match verify_reference(dir, dev, &opts) {
                Ok(r) => {
                    // The largest err / bound, a non-finite ratio counting as the largest (so a NaN quantity
                    // is the one shown, and fails the row): the row passes when every quantity does.
                    let ratio = |v: &entrl_qwen3::verify::VerifyRow| {
                        let x = v.rel_err / v.tol;
                        if x.is_finite() {
                            x
                        } else {
                            f64::INFINITY
                        }
                    };
                    match r.iter().max_by(|a, b| ratio(a).total_cmp(&ratio(b))) {
                        Some(w) => {
                            let shape = format!("{} quantities, worst: {}", r.len(), w.what);
                            CheckRow::new(&label, &shape, &dtype.to_string(), ratio(w), 1.0)
                        }
                        None => CheckRow::failed(&label, "-", &dtype.to_string(), "no quantities"),
                    }
                }
                Err(e) => CheckRow::failed(&label, "-", &dtype.to_string(), e.to_string()),
            });
        }
    }
    Ok(rows)
}
