//! `entrl bench generate` and `entrl bench train-step`: whole-model benchmarks with random weights of a
//! named Qwen3 shape (bf16 on the GPU), for comparison with HF in `benches/torch_model.py`.
use entrl_engine::ops::{dapo_loss, DapoBatch, DapoLossConfig};
use entrl_engine::{DType, Device, GradStorage, Packing, Tensor};
use entrl_qwen3::{generate_run, ForwardOptions, GenerateOptions, Qwen3, Qwen3Config, Request, SamplingParams};
use entrl_rl::config::DecodeChoice;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

fn gpu_model(shape: &str) -> Result<(Device, Qwen3), Box<dyn std::error::Error>> {
    let dev = Device::cuda(0)?;
    let t0 = Instant::now();
    let m = Qwen3::random(Qwen3Config::named(shape)?, DType::BF16, &dev, 1)?;
    dev.synchronize()?;
    println!(
        "{shape}: {:.3} B parameters, random bf16 init {:.1} s",
        m.config.num_params() as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    Ok((dev, m))
}

fn json_line(path: Option<&std::path::Path>, lines: &str) -> entrl_qwen3::Result<()> {
    path.map_or(Ok(()), |p| crate::bench::write_atomic(p, lines))
}

/// Prefill and decode throughput at several batch sizes (prompt `prompt` tokens, `new` sampled tokens).
pub fn generate_bench(
    shape: &str,
    batches: &[usize],
    prompt: usize,
    new: usize,
    modes: &[DecodeChoice],
    json: Option<&std::path::Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if new < 2 || prompt == 0 {
        return Err(format!("bench generate: --new {new} and --prompt {prompt} (need --new ≥ 2, --prompt ≥ 1)").into());
    }
    let (dev, m) = gpu_model(shape)?;
    let cuda = dev.as_cuda().expect("cuda").clone();
    let params = SamplingParams::default();
    // The weight-read floor of a decode step: every weight read once at the copy bandwidth measured here
    // (a 2 GiB device-to-device copy reads and writes each byte: 2 × bytes / time).
    let floor_ms = {
        let n = 1usize << 30;
        let src = entrl_engine::Tensor::zeros([n], DType::BF16, &dev)?;
        let dst = entrl_engine::Tensor::zeros([n], DType::BF16, &dev)?;
        let t = entrl_engine::cuda::timing::time_ms(&cuda, 2, 10, || dst.copy_from(&src))?;
        let gb_per_s = 2.0 * (2 * n) as f64 / (entrl_engine::cuda::timing::median(&t) * 1e-3) / 1e9;
        let weight_bytes = m.config.num_params() as f64 * 2.0;
        let floor = weight_bytes / (gb_per_s * 1e9) * 1e3;
        println!("copy bandwidth {gb_per_s:.0} GB/s: weight-read floor {floor:.2} ms a decode step ({:.1} GB of bf16 weights)", weight_bytes / 1e9);
        (floor, gb_per_s)
    };
    let mut lines = String::new();
    for &mode in modes {
        let opts = GenerateOptions { decode: mode.mode(), ..Default::default() };
        for &b in batches {
            let reqs = |n: usize| -> Vec<Request> {
                (0..b)
                    .map(|i| Request {
                        prompt: (0..prompt).map(|j| ((i * 7919 + j * 104_729) % 151_000) as u32).collect(),
                        max_new_tokens: n,
                        seed: i as u64,
                    })
                    .collect()
            };
            let run = |n: usize| generate_run(&m, &reqs(n), &params, &[], &opts, |_, _| {});
            run(2)?; // warm-up
            let _ = entrl_engine::profile::take_report(); // ENTRL_PROFILE: report the measured runs only
            let t0 = Instant::now();
            run(1)?;
            let prefill = t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let timed = run(new)?;
            let total = t0.elapsed().as_secs_f64();
            // a graph run's captures (each with its eager warm-up) are paid once per generation: reported
            // apart from the steady-state step
            let capture = timed.stats.graphs.capture_us as f64 * 1e-6;
            let decode = (total - prefill - capture).max(1e-9);
            let (tps_total, tps_decode, tps_prefill) =
                ((b * new) as f64 / total, (b * (new - 1)) as f64 / decode, (b * prompt) as f64 / prefill);
            let step_ms = decode * 1e3 / (new - 1) as f64;
            let name = mode.name();
            println!(
                "{name:<5} batch {b:>3}: {tps_total:>8.0} tok/s overall ({prompt}+{new}), decode {tps_decode:>8.0} tok/s ({step_ms:.2} ms/step, {:.2}× the floor), prefill {tps_prefill:>9.0} tok/s, {} captures in {:.0} ms",
                step_ms / floor_ms.0,
                timed.stats.graphs.captures,
                capture * 1e3
            );
            if let Some(report) = entrl_engine::profile::take_report() {
                println!("ENTRL_PROFILE {name} batch {b}:\n{report}");
            }
            lines.push_str(&format!(
                "{{\"bench\":\"generate\",\"impl\":\"entrl-{name}\",\"shape\":\"{shape}\",\"batch\":{b},\"prompt\":{prompt},\"new\":{new},\"tok_per_s\":{tps_total:.1},\"decode_tok_per_s\":{tps_decode:.1},\"prefill_tok_per_s\":{tps_prefill:.1},\"step_ms\":{step_ms:.3},\"floor_ms\":{:.3},\"copy_gb_per_s\":{:.0},\"captures\":{},\"capture_ms\":{:.1},\"gpu\":\"{}\",\"commit\":\"{}\"}}\n",
                floor_ms.0,
                floor_ms.1,
                timed.stats.graphs.captures,
                capture * 1e3,
                cuda.name(),
                crate::COMMIT
            ));
        }
    }
    json_line(json, &lines)?;
    Ok(ExitCode::SUCCESS)
}

/// One forward+backward of a `seq`-token sequence with per-layer checkpointing and the fused loss, the
/// gradients stored as `grads` (`train.grad_dtype`).
pub fn train_step_bench(
    shape: &str,
    seq: usize,
    reps: usize,
    grads: GradStorage,
    json: Option<&std::path::Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (dev, m) = gpu_model(shape)?;
    for (_, p) in m.params() {
        p.set_grad_storage(grads)?;
    }
    let grad_dtype = if grads == GradStorage::Bf16 { "bf16" } else { "f32" };
    let cuda = dev.as_cuda().expect("cuda").clone();
    let packing = Arc::new(Packing::single(seq)?);
    let ids: Vec<i32> = (0..seq).map(|j| ((j * 104_729 + 17) % 151_000) as i32).collect();
    let ids_t = Tensor::from_vec(ids.clone(), [seq], &dev)?;
    let targets = Tensor::from_vec(ids[1..].iter().copied().chain([0]).collect::<Vec<_>>(), [seq], &dev)?;
    let zeros = Tensor::zeros([seq], DType::F32, &dev)?;
    let ones = Tensor::ones([seq], DType::F32, &dev)?;
    let adv = Tensor::rand_uniform([seq], -1.0, 1.0, DType::F32, &dev, 3)?;
    let opts = ForwardOptions::entropy_at(vec![20.min(m.config.num_hidden_layers - 1)], true);
    let step = || -> Result<(), Box<dyn std::error::Error>> {
        let out = m.forward(&ids_t, &packing, &opts)?;
        let batch = DapoBatch { targets: &targets, old_logp: &zeros, advantages: &adv, mask: &ones, weights: &ones };
        dapo_loss(&out.hidden, m.lm_head(), &batch, &DapoLossConfig::default())?.loss.backward()?;
        m.params().iter().for_each(|(_, p)| p.zero_grad());
        Ok(())
    };
    step()?;
    dev.synchronize()?;
    cuda.reset_peak_memory();
    let _ = entrl_engine::profile::take_report(); // ENTRL_PROFILE: report the measured steps only
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        step()?;
        dev.synchronize()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    if let Some(report) = entrl_engine::profile::take_report() {
        println!("ENTRL_PROFILE train step {shape}, {seq} tokens, {} steps:\n{report}", reps.max(1));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let s = times[times.len() / 2];
    let peak = cuda.memory_stats().peak_in_use as f64 / (1u64 << 30) as f64;
    println!(
        "train step {shape}, {seq} tokens, checkpointed, {grad_dtype} gradients: {:.1} ms, {:.0} tokens/s, peak {peak:.1} GiB",
        s * 1e3,
        seq as f64 / s
    );
    json_line(
        json,
        &format!(
            "{{\"bench\":\"train_step\",\"impl\":\"entrl\",\"shape\":\"{shape}\",\"seq\":{seq},\"grad_dtype\":\"{grad_dtype}\",\"ms\":{:.1},\"tok_per_s\":{:.1},\"peak_gib\":{peak:.2},\"gpu\":\"{}\",\"commit\":\"{}\"}}\n",
            s * 1e3,
            seq as f64 / s,
            cuda.name(),
            crate::COMMIT
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}
