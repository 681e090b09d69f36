//! The paged KV cache against the contiguous one on the fixture model (CPU, f32): identical greedy
//! tokens and log-probs with shared prompts, across block sizes, and with preemption forced by tiny
//! pools; sampled responses independent of batch and preemption; bad pools refused before allocating.
mod common;
use common::generation::{assert_same, model, workload};
use entrl_qwen3::{
    generate_batched, generate_run, FinishReason, GenerateOptions, KvLayout, PagedKv, Qwen3, Request, SamplingParams,
};
use rand::{Rng, SeedableRng};

fn paged(block_size: usize, blocks: usize, share_prompts: bool) -> GenerateOptions {
    let kv = KvLayout::Paged(PagedKv { block_size, blocks, share_prompts });
    GenerateOptions { max_seqs: 0, kv, ..GenerateOptions::default() }
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

fn greedy() -> SamplingParams {
    SamplingParams { temperature: 0.0, ..Default::default() }
}

/// The invariant: greedy paged results equal the contiguous ones (and `generate_run` errors if any
/// block is still held at the end).
fn check(m: &Qwen3, reqs: &[Request], stop: &[u32], opts: &GenerateOptions, what: &str) -> entrl_qwen3::GenerateStats {
    let contiguous = generate_batched(m, reqs, &greedy(), stop, 3, |_, _| {}).unwrap();
    let mut streamed = vec![Vec::new(); reqs.len()];
    let run = generate_run(m, reqs, &greedy(), stop, opts, |r, t| streamed[r].push(t))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(run.generations.len(), reqs.len());
    for (r, (s, g)) in streamed.iter().zip(&run.generations).enumerate() {
        assert_eq!(s, &g.tokens, "{what}: request {r}: each token streamed once, in order (preemption included)");
    }
    assert_same(&contiguous, &run.generations, what);
    for (r, (g, q)) in run.generations.iter().zip(reqs).enumerate() {
        assert!(g.tokens.len() <= q.max_new_tokens, "{what}: request {r}");
        assert_eq!(g.tokens.len(), g.logprobs.len(), "{what}: request {r}");
    }
    let st = run.stats;
    assert!(st.peak_blocks <= st.pool_blocks, "{what}: {st:?}");
    if opts.max_seqs > 0 {
        assert!(st.peak_running <= opts.max_seqs, "{what}: {st:?}");
    }
    st
}

/// Prompts whose lengths are exact multiples of 4 and 8 (no partial block), block size 1, a block size
/// larger than every sequence, requests asking for no tokens, duplicate prompts that are not adjacent,
/// one running request at a time and pools of exactly the minimum size.
#[test]
fn edge_shapes_match_the_contiguous_cache() {
    let m = model();
    let p8: Vec<u32> = (10..18).collect();
    let p5: Vec<u32> = vec![3, 1, 4, 1, 5];
    let p1: Vec<u32> = vec![42];
    let r = |prompt: &Vec<u32>, n: usize, seed: u64| Request { prompt: prompt.clone(), max_new_tokens: n, seed };
    let reqs = vec![
        r(&p8, 5, 0),
        r(&p8, 0, 1),
        r(&p8, 3, 2),
        r(&p5, 6, 3),
        r(&p8, 4, 4), // duplicate of 0 and 2, not adjacent
        r(&p1, 0, 5),
        r(&p5, 7, 6),
        r(&p5, 2, 7),
        r(&p1, 4, 8),
        r(&p5, 6, 9), // duplicate of 3, 6, 7 after another prompt
    ];
    // the longest is 8 + 5 = 13 positions (5 + 7 = 12)
    for bs in [1usize, 4, 8, 13, 64] {
        let most = 13usize.div_ceil(bs);
        for share in [true, false] {
            for (blocks, max_seqs) in [(0, 0), (0, 1), (most, 0), (most, 1), (most + 1, 2)] {
                let opts = GenerateOptions { max_seqs, ..paged(bs, blocks, share) };
                check(&m, &reqs, &[], &opts, &format!("bs {bs} blocks {blocks} max_seqs {max_seqs} share {share}"));
            }
        }
    }
    // nothing to generate at all, and no requests
    let none: Vec<Request> = reqs.iter().map(|q| Request { max_new_tokens: 0, ..q.clone() }).collect();
    let run = generate_run(&m, &none, &greedy(), &[], &paged(4, 0, true), |_, _| {}).unwrap();
    assert!(run.generations.iter().all(|g| g.tokens.is_empty() && g.finish == FinishReason::Length));
    assert!(generate_run(&m, &[], &greedy(), &[], &paged(4, 0, true), |_, _| {}).unwrap().generations.is_empty());
}

/// A stop token produced first by every request (shared prompts end at admission, their blocks freed
/// through the shared references), mixed with requests that run on.
#[test]
fn stop_tokens_on_the_first_token_free_shared_blocks() {
    let m = model();
    let a: Vec<u32> = vec![7, 8, 9, 10, 11, 12];
    let b: Vec<u32> = vec![100, 200, 300];
    let reqs: Vec<Request> = (0..6)
        .map(|i| Request { prompt: if i % 3 == 2 { b.clone() } else { a.clone() }, max_new_tokens: 6, seed: i })
        .collect();
    let free = generate_run(&m, &reqs, &greedy(), &[], &paged(4, 0, true), |_, _| {}).unwrap();
    let first = free.generations[0].tokens[0];
    for bs in [1, 3, 4, 16] {
        for share in [true, false] {
            for blocks in [0, 12usize.div_ceil(bs)] {
                let what = format!("stop on the first token: bs {bs} blocks {blocks} share {share}");
                check(&m, &reqs, &[first], &paged(bs, blocks, share), &what);
            }
        }
    }
    let run = generate_run(&m, &reqs, &greedy(), &[first], &paged(4, 0, true), |_, _| {}).unwrap();
    assert_eq!(run.generations[0].tokens, vec![first]);
    assert_eq!(run.generations[0].finish, FinishReason::Stop);
}

/// A shared prompt group that fits only in part (split across admissions), whose members hold shared
/// blocks when they are preempted, several times each, in pools from the minimum upwards.
#[test]
fn shared_groups_split_and_preempted_repeatedly_match_the_contiguous_cache() {
    let m = model();
    let prompt: Vec<u32> = (0..10).map(|i| (i * 37 + 5) % 512).collect();
    let other: Vec<u32> = vec![9, 99, 199, 299];
    let mut reqs: Vec<Request> =
        (0..5).map(|i| Request { prompt: prompt.clone(), max_new_tokens: 10 + 2 * i, seed: i as u64 }).collect();
    reqs.push(Request { prompt: other.clone(), max_new_tokens: 12, seed: 50 });
    reqs.push(Request { prompt: prompt.clone(), max_new_tokens: 9, seed: 51 });
    // the longest is 10 + 18 = 28 positions
    let mut preempted = 0;
    for bs in [2usize, 4, 5] {
        let most = 28usize.div_ceil(bs);
        for blocks in [most, most + 1, most + 3, 2 * most] {
            for share in [true, false] {
                let what = format!("bs {bs} blocks {blocks} share {share}");
                let st = check(&m, &reqs, &[], &paged(bs, blocks, share), &what);
                preempted = preempted.max(st.preemptions);
            }
        }
    }
    assert!(preempted > reqs.len(), "some request is preempted several times ({preempted} preemptions)");
}

#[test]
fn plan_errors_are_clear_and_come_before_allocating() {
    let m = model();
    let one = |prompt_len: usize, max_new_tokens: usize| {
        vec![
            Request { prompt: vec![1; 3], max_new_tokens: 2, seed: 0 },
            Request { prompt: vec![1; prompt_len], max_new_tokens, seed: 1 },
        ]
    };
    let err = |reqs: &[Request], opts: GenerateOptions| {
        generate_run(&m, reqs, &greedy(), &[], &opts, |_, _| {}).unwrap_err().to_string()
    };
    // a block size of 0 (with or without an explicit pool)
    for blocks in [0, 5] {
        let e = err(&one(3, 2), paged(0, blocks, true));
        assert!(e.contains("kv_block_size") && e.contains("got 0"), "{e}");
    }
    // a request longer than the whole pool names the request and both sizes
    let e = err(&one(20, 5), paged(4, 6, true));
    assert!(e.contains("request 1") && e.contains("needs 7 blocks") && e.contains("holds 6"), "{e}");
    // huge sizes: positions past i32, pools past i32 rows or the memory, in either layout
    for opts in [
        paged(16, 0, true),
        paged(16, 4, true),
        GenerateOptions { max_seqs: 2, kv: KvLayout::Contiguous, ..Default::default() },
    ] {
        let e = err(&one(3, usize::MAX), opts);
        assert!(e.contains("i32"), "{e}");
        let e = err(&one(3, i32::MAX as usize - 3), opts);
        assert!(!e.is_empty(), "{e}");
    }
    for blocks in [usize::MAX, 1 << 40, 1 << 26] {
        let e = err(&one(3, 2), paged(16, blocks, true));
        assert!(e.contains("i32") || e.contains("KV cache"), "{blocks}: {e}");
    }
    let e = err(&one(3, 2), paged(usize::MAX, 1, true));
    assert!(e.contains("i32") || e.contains("KV cache"), "{e}");
}

/// A pool that holds every request's whole length (the automatic pool, capped at that) can never
/// preempt, so it keeps no watermark back: every request runs at once even when the requests only grow
/// inside their last prompt block.
#[test]
fn a_pool_holding_every_request_runs_them_all_at_once() {
    let m = model();
    let reqs: Vec<Request> =
        (0..120u32).map(|i| Request { prompt: vec![i % 512, 7], max_new_tokens: 2, seed: i as u64 }).collect();
    // each request needs one block of 16 positions: the pool is exactly 120 blocks
    for blocks in [0, 120] {
        let st = check(&m, &reqs, &[], &paged(16, blocks, true), &format!("{blocks} blocks"));
        assert_eq!((st.pool_blocks, st.preemptions), (120, 0), "{st:?}");
        assert_eq!(st.peak_running, reqs.len(), "{st:?}");
        assert_eq!(st.prefills, 1, "{st:?}");
    }
}

/// Random small workloads (repeated and interleaved prompts, zero-length requests, stop tokens) under
/// random block sizes, pools from the minimum up, running limits and sharing.
#[test]
fn random_options_match_the_contiguous_cache() {
    let m = model();
    let mut g = rand::rngs::StdRng::seed_from_u64(7);
    for case in 0..60 {
        let prompts: Vec<Vec<u32>> =
            (0..3).map(|_| (0..g.random_range(1..=12)).map(|_| g.random_range(0..512)).collect()).collect();
        let reqs: Vec<Request> = (0..g.random_range(1..=7))
            .map(|i| Request {
                prompt: prompts[g.random_range(0..3)].clone(),
                max_new_tokens: g.random_range(0..=9),
                seed: i,
            })
            .collect();
        let bs = [1, 2, 3, 4, 8, 32][g.random_range(0..6)];
        let most = reqs.iter().map(|r| (r.prompt.len() + r.max_new_tokens).div_ceil(bs)).max().unwrap().max(1);
        let blocks = if g.random_bool(0.2) { 0 } else { most + g.random_range(0..=most) };
        let max_seqs = g.random_range(0..=3);
        // a stop token some response produces (at a random place), or none
        let free = generate_batched(&m, &reqs, &greedy(), &[], 2, |_, _| {}).unwrap();
        let produced: Vec<u32> = free.iter().flat_map(|x| x.tokens.iter().copied()).collect();
        let stop: Vec<u32> = match produced.len() {
            0 => vec![],
            n if g.random_bool(0.6) => vec![produced[g.random_range(0..n)]],
            _ => vec![],
        };
        let opts = GenerateOptions { max_seqs, ..paged(bs, blocks, g.random_bool(0.7)) };
        check(&m, &reqs, &stop, &opts, &format!("case {case}: {opts:?}"));
    }
}
