//! `entrl selftest`'s decode-graph rows: a small random Qwen3 (f32) generates the same requests with
//! eager and with graph-replayed decode steps, greedy and sampled, through a pool small enough to
//! preempt; the graph path must give the eager generations. On the CPU (the stand-in) they are identical;
//! on a GPU a padded batch may take other GEMM kernels, so one diverging response per run is allowed and
//! the log-probs must agree to 1e-4 up to each response's first differing token.
use entrl_engine::check::CheckRow;
use entrl_engine::{DType, Device};
use entrl_qwen3::{
    generate_run, DecodeMode, GenerateOptions, Generation, KvLayout, PagedKv, Qwen3, Qwen3Config, Request,
    SamplingParams,
};

fn small_model(dev: &Device, seed: u64) -> entrl_qwen3::Result<Qwen3> {
    let mut c = Qwen3Config::named("qwen3-0.6b")?;
    (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers) = (997, 128, 256, 2);
    (c.num_attention_heads, c.num_key_value_heads, c.head_dim) = (4, 2, 32);
    Qwen3::random(c, DType::F32, dev, seed)
}

fn requests(seed: u64, vocab: u32) -> Vec<Request> {
    let mut s = seed | 1;
    let mut next = |n: u64| {
        s = entrl_engine::cpu::random::splitmix64(s);
        s % n
    };
    let mut reqs = Vec::new();
    for p in 0..5u64 {
        let prompt: Vec<u32> = (0..1 + next(40)).map(|_| next(vocab as u64) as u32).collect();
        for k in 0..3 {
            reqs.push(Request { prompt: prompt.clone(), max_new_tokens: 1 + next(30) as usize, seed: p * 10 + k });
        }
    }
    reqs
}

/// (diverging responses, the largest |Δ log-prob| before each response's first differing token).
fn compare(a: &[Generation], b: &[Generation]) -> (usize, f64) {
    let mut diverged = 0;
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        diverged += usize::from(x.tokens != y.tokens);
        let same = x.tokens.iter().zip(&y.tokens).take_while(|(p, q)| p == q).count();
        for (lx, ly) in x.logprobs.iter().zip(&y.logprobs).take(same) {
            worst = worst.max(if (lx - ly).is_finite() { (lx - ly).abs() } else { f64::INFINITY });
        }
    }
    (diverged, worst)
}

pub fn graph_rows(dev: &Device, seed: u64) -> Vec<CheckRow> {
    let model = match small_model(dev, seed) {
        Ok(m) => m,
        Err(e) => return vec![CheckRow::failed("decode graph vs eager", "-", "f32", e.to_string())],
    };
    let reqs = requests(seed, model.config.vocab_size as u32);
    let allowed = usize::from(dev.is_cuda());
    let mut rows = Vec::new();
    for (name, params) in [
        ("greedy", SamplingParams { temperature: 0.0, ..Default::default() }),
        ("sampled", SamplingParams { temperature: 1.0, top_p: 0.9, top_k: 50 }),
    ] {
        let label = format!("decode graph vs eager, {name} ({dev})");
        let shape = format!("{} requests, blocks of 4, pool of 40", reqs.len());
        let kv = KvLayout::Paged(PagedKv { block_size: 4, blocks: 40, share_prompts: true });
        let run = |decode| {
            generate_run(&model, &reqs, &params, &[], &GenerateOptions { kv, decode, ..Default::default() }, |_, _| {})
        };
        rows.push(match (run(DecodeMode::Eager), run(DecodeMode::Graph)) {
            (Ok(e), Ok(g)) => {
                let (diverged, worst) = compare(&e.generations, &g.generations);
                let mut row = CheckRow::new(&label, &shape, "f32", worst, 1e-4);
                row.note = format!(
                    "{diverged} of {} responses differ ({allowed} allowed); {} captures, {} replays, {} padding rows",
                    reqs.len(),
                    g.stats.graphs.captures,
                    g.stats.graphs.replays,
                    g.stats.graphs.padded_rows
                );
                row.pass &= diverged <= allowed
                    && g.stats.graphs.replays == g.stats.decode_steps
                    && g.stats.graphs.captures > 0;
                row
            }
            (Err(e), _) | (_, Err(e)) => CheckRow::failed(&label, &shape, "f32", e.to_string()),
        });
    }
    rows
}
