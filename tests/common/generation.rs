//! Generation tests' fixture model, workload and comparison.
use entrl_engine::{DType, Device};
use entrl_qwen3::{Generation, Qwen3, Request};
use rand::{Rng, SeedableRng};
use std::path::Path;

/// The tiny Qwen3 fixture on the CPU in f32.
pub fn model() -> Qwen3 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen3-tiny");
    Qwen3::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

/// Prompts of mixed lengths (1..=40, the first of length 1), each asked for `samples` responses in a row
/// (as a rollout asks), with response lengths from 1 to 24.
pub fn workload(m: &Qwen3, prompts: usize, samples: usize, seed: u64) -> Vec<Request> {
    let mut g = rand::rngs::StdRng::seed_from_u64(seed);
    let vocab = m.config.vocab_size as u32;
    let mut reqs = Vec::new();
    for p in 0..prompts {
        let len = if p == 0 { 1 } else { g.random_range(1..=40) };
        let prompt: Vec<u32> = (0..len).map(|_| g.random_range(0..vocab)).collect();
        for s in 0..samples {
            let max_new_tokens = g.random_range(1..=24);
            reqs.push(Request { prompt: prompt.clone(), max_new_tokens, seed: (p * 100 + s) as u64 });
        }
    }
    reqs
}

/// Same tokens and finish reasons, log-probs within 1e-6.
pub fn assert_same(a: &[Generation], b: &[Generation], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: generations");
    for (r, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.tokens, y.tokens, "{what}: request {r} tokens");
        assert_eq!(x.finish, y.finish, "{what}: request {r} finish");
        for (lx, ly) in x.logprobs.iter().zip(&y.logprobs) {
            assert!((lx - ly).abs() < 1e-6, "{what}: request {r} log-prob {lx} vs {ly}");
        }
    }
}
