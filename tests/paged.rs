//! The paged KV cache against the contiguous one on the fixture model (CPU, f32): identical greedy
//! tokens and log-probs with shared prompts, across block sizes, and with preemption forced by tiny
//! pools; sampled responses independent of batch and preemption; bad pools refused before allocating.
use entrl_engine::{DType, Device};
use entrl_qwen3::{
    generate_batched, generate_run, FinishReason, GenerateOptions, Generation, KvLayout, PagedKv, Qwen3, Request,
    SamplingParams,
};
use rand::{Rng, SeedableRng};
use std::path::Path;

fn model() -> Qwen3 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen3-tiny");
    Qwen3::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

/// Prompts of mixed lengths (1..=40), each asked for `samples` responses in a row (as a rollout asks),
/// with response lengths from 1 to 24.
fn workload(m: &Qwen3, prompts: usize, samples: usize, seed: u64) -> Vec<Request> {
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

fn paged(block_size: usize, blocks: usize, share_prompts: bool) -> GenerateOptions {
    let kv = KvLayout::Paged(PagedKv { block_size, blocks, share_prompts });
    GenerateOptions { max_seqs: 0, kv, ..GenerateOptions::default() }
}

fn assert_same(a: &[Generation], b: &[Generation], what: &str) {
    for (r, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.tokens, y.tokens, "{what}: request {r} tokens");
        assert_eq!(x.finish, y.finish, "{what}: request {r} finish");
        for (lx, ly) in x.logprobs.iter().zip(&y.logprobs) {
            assert!((lx - ly).abs() < 1e-6, "{what}: request {r} log-prob {lx} vs {ly}");
        }
    }
}

#[test]
fn paged_and_contiguous_caches_give_the_same_greedy_generations_with_sharing_and_preemption() {
    let m = model();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let reqs = workload(&m, 6, 3, 11);
    let contiguous = generate_batched(&m, &reqs, &greedy, &[], 4, |_, _| {}).unwrap();
    // the longest request needs ceil(64 / bs) blocks: pools just above that force preemption
    for (bs, blocks) in [(1, 0), (3, 0), (16, 0), (1, 70), (3, 25), (16, 5), (7, 10)] {
        for share in [true, false] {
            let run = generate_run(&m, &reqs, &greedy, &[], &paged(bs, blocks, share), |_, _| {}).unwrap();
            let what = format!("block size {bs}, {blocks} blocks, shared prompts {share}");
            assert_same(&contiguous, &run.generations, &what);
            let st = run.stats;
            assert!(st.peak_blocks <= st.pool_blocks, "{what}: {st:?}");
            if blocks > 0 {
                assert!(st.preemptions > 0, "{what}: a tiny pool preempts: {st:?}");
            } else {
                assert_eq!(st.preemptions, 0, "{what}: an ample pool never preempts");
                assert_eq!(st.peak_running, reqs.len(), "{what}: every request runs at once");
            }
            if share && blocks == 0 {
                assert!(st.shared_prompt_tokens > 0, "{what}: {st:?}");
            }
        }
    }
}

#[test]
fn a_sampled_response_is_the_same_alone_in_a_batch_and_after_preemption() {
    let m = model();
    let params = SamplingParams { temperature: 1.0, top_p: 0.9, top_k: 0 };
    let reqs = workload(&m, 5, 4, 5);
    let all = generate_run(&m, &reqs, &params, &[], &paged(4, 0, true), |_, _| {}).unwrap();
    let tight = generate_run(&m, &reqs, &params, &[], &paged(2, 40, true), |_, _| {}).unwrap();
    assert!(tight.stats.preemptions > 0, "{:?}", tight.stats);
    assert_same(&all.generations, &tight.generations, "tight pool");
    for r in [0, 7, reqs.len() - 1] {
        let alone = generate_run(&m, &reqs[r..=r], &params, &[], &paged(4, 0, true), |_, _| {}).unwrap();
        assert_same(&all.generations[r..=r], &alone.generations, &format!("request {r} alone"));
    }
}

#[test]
fn stop_tokens_and_the_running_limit_hold_in_the_paged_cache() {
    let m = model();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let reqs = workload(&m, 4, 2, 3);
    let free = generate_run(&m, &reqs, &greedy, &[], &paged(4, 0, true), |_, _| {}).unwrap();
    // stop at each request's third token where it has one
    let stop = free.generations.iter().find(|g| g.tokens.len() >= 3).map(|g| g.tokens[2]).unwrap();
    let opts = GenerateOptions { max_seqs: 3, ..paged(4, 0, true) };
    let run = generate_run(&m, &reqs, &greedy, &[stop], &opts, |_, _| {}).unwrap();
    assert!(run.stats.peak_running <= 3, "{:?}", run.stats);
    for (g, full) in run.generations.iter().zip(&free.generations) {
        match full.tokens.iter().position(|&t| t == stop) {
            Some(i) => {
                assert_eq!(g.tokens, full.tokens[..=i]);
                assert_eq!(g.finish, FinishReason::Stop);
            }
            None => assert_eq!(g.tokens, full.tokens),
        }
    }
}

#[test]
fn bad_pools_are_refused_before_allocating() {
    let m = model();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let reqs = vec![Request { prompt: vec![1; 30], max_new_tokens: 10, seed: 0 }];
    let e = generate_run(&m, &reqs, &greedy, &[], &paged(0, 0, true), |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("kv_block_size") && e.contains("got 0"), "{e}");
    let e = generate_run(&m, &reqs, &greedy, &[], &paged(4, 9, true), |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("needs 10 blocks") && e.contains("holds 9"), "{e}");
    let e = generate_run(&m, &reqs, &greedy, &[], &paged(16, 1 << 30, true), |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("i32") || e.contains("KV cache"), "{e}");
}

#[test]
fn a_prefill_budget_splits_admission_into_more_passes_with_the_same_results() {
    let m = model();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let reqs = workload(&m, 6, 2, 21);
    let whole = generate_run(&m, &reqs, &greedy, &[], &paged(4, 0, true), |_, _| {}).unwrap();
    // 30 positions a pass: most prompts go alone, a longer one still goes (alone)
    let opts = GenerateOptions { max_prefill_tokens: 30, ..paged(4, 0, true) };
    let split = generate_run(&m, &reqs, &greedy, &[], &opts, |_, _| {}).unwrap();
    assert_same(&whole.generations, &split.generations, "prefill budget 30");
    assert!(split.stats.prefills > whole.stats.prefills, "{:?} vs {:?}", split.stats, whole.stats);
    assert_eq!(whole.stats.prefills, 1, "one pass admits everything without a budget");
}
