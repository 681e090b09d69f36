//! `entrl bench rollout`: the rollout workload of issue 16 through the paged KV cache and, in the same
//! call, through contiguous slots: `prompts` prompts of `prompt_len` random tokens × `samples` responses,
//! each response stopped at a length drawn from a seeded long-tailed distribution (EOS ignored), random
//! weights of a named Qwen3 shape. Reports generated tokens/s, wall time, peak device memory and what
//! the paged scheduler did.
use entrl_engine::{DType, Device};
use entrl_qwen3::{
    generate_run, GenerateOptions, GenerateStats, Generation, KvLayout, PagedKv, Qwen3, Qwen3Config, Request,
    SamplingParams, KV_MEMORY_FRACTION,
};
use entrl_rl::config::DecodeChoice;
use rand::{Rng, SeedableRng};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Clone, Debug)]
pub struct RolloutArgs {
    #[arg(long, default_value = "qwen3-8b")]
    pub shape: String,
    /// Keep only this many layers of the shape (0 = all): a quick run of the same scheduling.
    #[arg(long, default_value_t = 0)]
    pub layers: usize,
    #[arg(long, value_enum, default_value_t = BenchDevice::Cuda)]
    pub device: BenchDevice,
    #[arg(long, default_value_t = 256)]
    pub prompts: usize,
    #[arg(long, default_value_t = 512)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Mean response length (lognormal, σ = 0.8, clipped at --max-response; `entrl plan`'s distribution).
    #[arg(long, default_value_t = 2000)]
    pub mean_response: usize,
    #[arg(long, default_value_t = 8192)]
    pub max_response: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Slots of the contiguous run (0 = as many as 80% of the free memory holds).
    #[arg(long, default_value_t = 0)]
    pub contiguous_slots: usize,
    #[arg(long)]
    pub skip_contiguous: bool,
    /// Decode modes of the paged runs (eager, graph); the contiguous run decodes eagerly.
    #[arg(long, value_delimiter = ',', default_value = "eager,graph", value_parser = crate::train::choice::<DecodeChoice>(DecodeChoice::NAMES))]
    pub decode: Vec<DecodeChoice>,
    /// Also run each paged mode with prefix-grouped decode attention (each prompt's blocks read once per
    /// group of its responses).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub prefix_attention: bool,
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BenchDevice {
    Cuda,
    Cpu,
}

/// Response lengths: the seeded lognormal of `entrl plan`'s paged model (σ
/// [`entrl_rl::plan::paged::LENGTH_SIGMA`], clipped at the maximum, located so the mean is exact), so the
/// bench and the plan see the same workload.
pub use entrl_rl::plan::paged::response_lengths;

struct RunResult {
    seconds: f64,
    tokens: usize,
    peak_gib: f64,
    stats: GenerateStats,
    generations: Vec<Generation>,
}

fn run(m: &Qwen3, reqs: &[Request], opts: &GenerateOptions) -> Result<RunResult, Box<dyn std::error::Error>> {
    let dev = &m.device;
    if let Some(c) = dev.as_cuda() {
        c.reset_peak_memory();
    }
    dev.synchronize()?;
    let t0 = Instant::now();
    let greedy_free = SamplingParams::default();
    let out = generate_run(m, reqs, &greedy_free, &[], opts, |_, _| {})?;
    dev.synchronize()?;
    let seconds = t0.elapsed().as_secs_f64();
    let tokens = out.generations.iter().map(|g| g.tokens.len()).sum();
    let peak_gib = dev.as_cuda().map_or(0.0, |c| c.memory_stats().peak_in_use as f64 / (1u64 << 30) as f64);
    Ok(RunResult { seconds, tokens, peak_gib, stats: out.stats, generations: out.generations })
}

pub fn rollout_bench(a: &RolloutArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sizes = [a.prompts, a.samples, a.prompt_len, a.mean_response, a.max_response, a.block_size];
    if sizes.contains(&0) {
        return Err(
            "bench rollout: --prompts, --samples, --prompt-len, --mean-response, --max-response and --block-size are ≥ 1".into()
        );
    }
    if a.mean_response > a.max_response {
        return Err(format!(
            "bench rollout: --mean-response {} above --max-response {}",
            a.mean_response, a.max_response
        )
        .into());
    }
    let n =
        a.prompts.checked_mul(a.samples).filter(|&n| n <= 1 << 20).ok_or("bench rollout: at most 2^20 responses")?;
    let (dev, dtype) = match a.device {
        BenchDevice::Cuda => (Device::cuda(0)?, DType::BF16),
        BenchDevice::Cpu => (Device::Cpu, DType::F32),
    };
    let mut cfg = Qwen3Config::named(&a.shape)?;
    if a.layers > 0 {
        cfg.num_hidden_layers = a.layers.min(cfg.num_hidden_layers);
    }
    let m = Qwen3::random(cfg, dtype, &dev, a.seed)?;
    let vocab = m.config.vocab_size as u32;
    let lens = response_lengths(n, a.mean_response, a.max_response, a.seed);
    let mut g = rand::rngs::StdRng::seed_from_u64(a.seed ^ 0x5eed);
    let mut reqs = Vec::with_capacity(n);
    for p in 0..a.prompts {
        let prompt: Vec<u32> = (0..a.prompt_len).map(|_| g.random_range(0..vocab)).collect();
        for s in 0..a.samples {
            let i = p * a.samples + s;
            reqs.push(Request { prompt: prompt.clone(), max_new_tokens: lens[i], seed: i as u64 });
        }
    }
    let total: usize = lens.iter().sum();
    println!(
        "bench rollout: {} ({} layers) on {dev}, {} prompts × {} tokens × {} samples, responses mean {:.0} max {} (drawn), {total} tokens",
        a.shape,
        m.config.num_hidden_layers,
        a.prompts,
        a.prompt_len,
        a.samples,
        total as f64 / n as f64,
        lens.iter().max().unwrap_or(&0)
    );
    if a.decode.is_empty() {
        return Err("bench rollout: --decode names at least one mode".into());
    }
    let mut lines = String::new();
    let report = |name: &str, r: &RunResult| {
        println!(
            "{name:<12} {:>9.0} tok/s  {:>8.1} s  peak {:>6.1} GiB  running ≤ {}  preemptions {}  prefill tokens {}  decode steps {}  graphs {} ({:.1} s, {} padding rows)",
            r.tokens as f64 / r.seconds,
            r.seconds,
            r.peak_gib,
            r.stats.peak_running,
            r.stats.preemptions,
            r.stats.prefill_tokens,
            r.stats.decode_steps,
            r.stats.graphs.captures,
            r.stats.graphs.capture_us as f64 * 1e-6,
            r.stats.graphs.padded_rows
        );
        format!(
            "{{\"bench\":\"rollout\",\"impl\":\"entrl-{name}\",\"shape\":\"{}\",\"layers\":{},\"prompts\":{},\"prompt_len\":{},\"samples\":{},\"tokens\":{},\"seconds\":{:.3},\"tok_per_s\":{:.1},\"peak_gib\":{:.2},\"peak_running\":{},\"preemptions\":{},\"pool_blocks\":{},\"block_size\":{},\"device\":\"{dev}\",\"commit\":\"{}\"}}\n",
            a.shape,
            m.config.num_hidden_layers,
            a.prompts,
            a.prompt_len,
            a.samples,
            r.tokens,
            r.seconds,
            r.tokens as f64 / r.seconds,
            r.peak_gib,
            r.stats.peak_running,
            r.stats.preemptions,
            r.stats.pool_blocks,
            r.stats.block_size,
            crate::COMMIT
        )
    };
    let mut paged: Vec<(String, RunResult)> = Vec::new();
    let prefix_modes: &[bool] = if a.prefix_attention { &[false, true] } else { &[false] };
    for &mode in &a.decode {
        for &prefix_attention in prefix_modes {
            let opts = GenerateOptions {
                max_seqs: 0,
                kv: KvLayout::Paged(PagedKv { block_size: a.block_size, blocks: 0, share_prompts: true }),
                decode: mode.mode(),
                prefix_attention,
                ..Default::default()
            };
            let r = run(&m, &reqs, &opts)?;
            let name = format!("paged-{}{}", mode.name(), if prefix_attention { "-prefix" } else { "" });
            lines.push_str(&report(&name, &r));
            paged.push((name, r));
        }
    }
    // the same keyed samples either way, up to rounding (a padded batch may take other GEMM kernels)
    if let [(ma, ra), (mb, rb), ..] = &paged[..] {
        let same = ra.generations.iter().zip(&rb.generations).filter(|(x, y)| x.tokens == y.tokens).count();
        println!("{ma} vs {mb}: {same} of {n} responses identical");
    }
    let p = &paged.iter().min_by(|x, y| x.1.seconds.total_cmp(&y.1.seconds)).expect("one mode").1;
    if !a.skip_contiguous {
        let slots = if a.contiguous_slots > 0 {
            a.contiguous_slots
        } else {
            let c = &m.config;
            let per_slot = (a.prompt_len + a.max_response) as f64
                * (c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * dtype.size_in_bytes()) as f64;
            ((dev.available_memory()? as f64 * KV_MEMORY_FRACTION / per_slot) as usize).clamp(1, n)
        };
        println!("contiguous: {slots} slots of {} positions", a.prompt_len + a.max_response);
        let c = run(&m, &reqs, &GenerateOptions { max_seqs: slots, kv: KvLayout::Contiguous, ..Default::default() })?;
        lines.push_str(&report("contiguous", &c));
        for (mode, r) in &paged {
            println!("{mode} / contiguous: {:.2}× tokens/s", c.seconds / r.seconds);
        }
        println!("best paged / contiguous: {:.2}× tokens/s", c.seconds / p.seconds);
    }
    if let Some(path) = &a.json {
        crate::bench::write_atomic(path, &lines)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_lengths_hit_the_mean_with_a_long_tail_and_stay_in_range() {
        let l = response_lengths(1024, 2000, 8192, 1);
        let mean = l.iter().sum::<usize>() as f64 / l.len() as f64;
        assert!((mean - 2000.0).abs() < 5.0, "mean {mean}");
        assert!(l.iter().all(|&x| (1..=8192).contains(&x)));
        let median = {
            let mut s = l.clone();
            s.sort();
            s[512]
        };
        assert!(median < 1800 && *l.iter().max().unwrap() > 6000, "median {median}: a long tail");
        assert_eq!(l, response_lengths(1024, 2000, 8192, 1), "seeded");
    }
}
