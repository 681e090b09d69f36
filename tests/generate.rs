//! Generation with the KV cache against full recomputation on the fixture model (CPU, f32).
use entrl_engine::{DType, Device, Packing, Tensor};
use entrl_qwen3::sampling::sample;
use entrl_qwen3::{
    generate, generate_batched, FinishReason, ForwardOptions, Qwen3, Request, SampleKey, SamplingParams,
};
use std::path::Path;
use std::sync::Arc;

fn model() -> Qwen3 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen3-tiny");
    Qwen3::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

/// log-softmax of the last position's logits, by a full forward over the whole sequence.
fn last_logp(m: &Qwen3, seq: &[u32]) -> Vec<f64> {
    let p = Arc::new(Packing::single(seq.len()).unwrap());
    let ids = Tensor::from_vec(seq.iter().map(|&t| t as i32).collect::<Vec<_>>(), [seq.len()], &Device::Cpu).unwrap();
    let h = m.forward(&ids, &p, &ForwardOptions::default()).unwrap().hidden;
    let lp = h.linear(m.lm_head()).unwrap().log_softmax().unwrap().to_vec_f64().unwrap();
    let v = m.config.vocab_size;
    lp[(seq.len() - 1) * v..].to_vec()
}

fn greedy() -> SamplingParams {
    SamplingParams { temperature: 0.0, ..Default::default() }
}

#[test]
fn cached_greedy_decoding_equals_full_recomputation() {
    let m = model();
    let reqs = vec![
        Request { prompt: vec![5, 17, 300, 2, 99], max_new_tokens: 10, seed: 1 },
        Request { prompt: vec![7], max_new_tokens: 10, seed: 2 },
        Request { prompt: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], max_new_tokens: 4, seed: 3 },
    ];
    let out = generate(&m, &reqs, &greedy(), &[], |_, _| {}).unwrap();
    for (r, g) in reqs.iter().zip(&out) {
        assert_eq!(g.tokens.len(), r.max_new_tokens);
        assert_eq!(g.finish, FinishReason::Length);
        let mut seq = r.prompt.clone();
        for (step, (&tok, &lp)) in g.tokens.iter().zip(&g.logprobs).enumerate() {
            let full = last_logp(&m, &seq);
            let best = (0..full.len()).fold(0, |b, i| if full[i] > full[b] { i } else { b });
            assert_eq!(tok as usize, best, "step {step} of prompt {:?}", r.prompt);
            assert!((full[best] - lp).abs() < 1e-4, "logprob {lp} vs {}", full[best]);
            seq.push(tok);
        }
    }
}

#[test]
fn batching_does_not_change_sampled_outputs_and_seeds_are_deterministic() {
    let m = model();
    let p = SamplingParams { temperature: 1.0, top_p: 0.9, top_k: 50 };
    let reqs = vec![
        Request { prompt: vec![3, 9, 27], max_new_tokens: 8, seed: 11 },
        Request { prompt: vec![81, 243], max_new_tokens: 8, seed: 12 },
    ];
    let batched = generate(&m, &reqs, &p, &[], |_, _| {}).unwrap();
    for (i, r) in reqs.iter().enumerate() {
        let alone = generate(&m, std::slice::from_ref(r), &p, &[], |_, _| {}).unwrap();
        assert_eq!(alone[0].tokens, batched[i].tokens);
    }
    let again = generate(&m, &reqs, &p, &[], |_, _| {}).unwrap();
    assert_eq!(again[0].tokens, batched[0].tokens);
    let other = generate(&m, &[Request { seed: 99, ..reqs[0].clone() }], &p, &[], |_, _| {}).unwrap();
    assert_ne!(other[0].tokens, batched[0].tokens, "a different seed should sample differently");
}

/// Logits (f32) of the last position, by a full forward over the whole sequence.
fn last_logits(m: &Qwen3, seq: &[u32]) -> Vec<f32> {
    let p = Arc::new(Packing::single(seq.len()).unwrap());
    let ids = Tensor::from_vec(seq.iter().map(|&t| t as i32).collect::<Vec<_>>(), [seq.len()], &Device::Cpu).unwrap();
    let h = m.forward(&ids, &p, &ForwardOptions::default()).unwrap().hidden;
    let z = h.linear(m.lm_head()).unwrap().to_vec_f32().unwrap();
    let v = m.config.vocab_size;
    z[(seq.len() - 1) * v..].to_vec()
}

/// Response token t of a request is drawn with the uniform keyed by (its seed, t) — nothing else — so the
/// response is the same alone, inside batches of other requests (in any place), with few slots, and each
/// token is the host sampler's pick for that key from a full recomputation of the logits.
#[test]
fn a_response_is_keyed_by_its_seed_and_positions_alone_or_in_any_batch() {
    let m = model();
    let p = SamplingParams { temperature: 1.0, top_p: 0.8, top_k: 0 };
    let me = Request { prompt: vec![11, 22, 33], max_new_tokens: 10, seed: 4242 };
    let others: Vec<Request> = (0..5)
        .map(|i| Request {
            prompt: (0..1 + i % 4).map(|t| (40 + 13 * i + t) as u32).collect(),
            max_new_tokens: 3 + 2 * i,
            seed: 4242 + 1 + i as u64,
        })
        .collect();
    let alone = generate(&m, std::slice::from_ref(&me), &p, &[], |_, _| {}).unwrap().remove(0);
    assert_eq!(alone.tokens.len(), 10);
    for at in [0, 2, 5] {
        let mut batch = others.clone();
        batch.insert(at, me.clone());
        for slots in [batch.len(), 2, 1] {
            let got = generate_batched(&m, &batch, &p, &[], slots, |_, _| {}).unwrap();
            assert_eq!(got[at].tokens, alone.tokens, "at {at} of the batch, {slots} slots");
            for (x, y) in got[at].logprobs.iter().zip(&alone.logprobs) {
                assert!((x - y).abs() < 1e-9, "at {at}, {slots} slots: log-prob {x} vs {y}");
            }
        }
    }
    // each token is `sample` of the recomputed logits with key (seed, position)
    let mut seq = me.prompt.clone();
    for (t, &tok) in alone.tokens.iter().enumerate() {
        let key = SampleKey { seed: me.seed, position: t as u64 };
        assert_eq!(sample(&last_logits(&m, &seq), &p, &key).token, tok, "position {t}");
        seq.push(tok);
    }
    let other_seed = generate(&m, &[Request { seed: 7, ..me.clone() }], &p, &[], |_, _| {}).unwrap();
    assert_ne!(other_seed[0].tokens, alone.tokens, "a different seed should sample differently");
}

#[test]
fn top_k_one_is_greedy_and_stop_tokens_end_a_request() {
    let m = model();
    let r = Request { prompt: vec![5, 6, 7], max_new_tokens: 6, seed: 4 };
    let g = generate(&m, std::slice::from_ref(&r), &greedy(), &[], |_, _| {}).unwrap();
    let k1 = SamplingParams { temperature: 0.8, top_p: 1.0, top_k: 1 };
    let s = generate(&m, std::slice::from_ref(&r), &k1, &[], |_, _| {}).unwrap();
    assert_eq!(g[0].tokens, s[0].tokens);
    let stop = g[0].tokens[2];
    let mut streamed = Vec::new();
    let st = generate(&m, std::slice::from_ref(&r), &greedy(), &[stop], |_, t| streamed.push(t)).unwrap();
    assert_eq!(st[0].finish, FinishReason::Stop);
    assert_eq!(st[0].tokens, g[0].tokens[..3].to_vec());
    assert_eq!(streamed, st[0].tokens);
}

#[test]
fn bad_requests_are_errors() {
    let m = model();
    let e = generate(&m, &[Request { prompt: vec![], max_new_tokens: 1, seed: 0 }], &greedy(), &[], |_, _| {});
    assert!(e.err().unwrap().to_string().contains("empty prompt"));
    let e = generate(&m, &[Request { prompt: vec![100_000], max_new_tokens: 1, seed: 0 }], &greedy(), &[], |_, _| {});
    assert!(e.err().unwrap().to_string().contains("outside the vocabulary"));
    let bad = SamplingParams { temperature: 1.0, top_p: 0.0, top_k: 0 };
    let e = generate(&m, &[Request { prompt: vec![1], max_new_tokens: 1, seed: 0 }], &bad, &[], |_, _| {});
    assert!(e.err().unwrap().to_string().contains("top_p"));
}

#[test]
fn continuous_batching_with_few_slots_gives_the_same_generations() {
    let m = model();
    let p = SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0 };
    let reqs: Vec<Request> = (0..7)
        .map(|i| Request {
            prompt: (0..(1 + i % 3)).map(|t| (5 + 7 * i + t) as u32).collect(),
            max_new_tokens: [1, 9, 3, 12, 0, 5, 7][i],
            seed: 100 + i as u64,
        })
        .collect();
    // a stop id that some sampled responses hit, so slots also free early
    let all = generate(&m, &reqs, &p, &[], |_, _| {}).unwrap();
    let stop = all[3].tokens[2];
    let reference = generate(&m, &reqs, &p, &[stop], |_, _| {}).unwrap();
    for slots in [1, 2, 3] {
        let mut stream = Vec::new(); // request of every produced token, in production order
        let got = generate_batched(&m, &reqs, &p, &[stop], slots, |r, _| stream.push(r)).unwrap();
        assert_eq!(stream.len(), got.iter().map(|g| g.tokens.len()).sum::<usize>());
        for (i, (a, b)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(a.tokens, b.tokens, "request {i} with {slots} slots");
            assert_eq!(a.finish, b.finish, "request {i} with {slots} slots");
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!((x - y).abs() < 1e-9, "request {i}: log-prob {x} vs {y}");
            }
        }
        // the slot bound: at no point of the stream are more than `slots` requests between their first and
        // last token (with one slot, each request's tokens form one run, in request order)
        let span = |r: usize| {
            let first = stream.iter().position(|&x| x == r);
            first.map(|f| (f, stream.iter().rposition(|&x| x == r).expect("seen")))
        };
        let spans: Vec<(usize, usize)> = (0..reqs.len()).filter_map(span).collect();
        for t in 0..stream.len() {
            let live = spans.iter().filter(|&&(f, l)| f <= t && t <= l).count();
            assert!(live <= slots, "{live} requests decoding at once with {slots} slots");
        }
        if slots == 1 {
            assert!(spans.windows(2).all(|w| w[0].1 < w[1].0), "one slot: requests one after another");
        }
    }
    // greedy, with a stop id that is one request's first token: it stops at admission and frees its slot
    let greedy = SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0 };
    let plain = generate(&m, &reqs, &greedy, &[], |_, _| {}).unwrap();
    let first = plain[2].tokens[0];
    let with_stop = generate(&m, &reqs, &greedy, &[first], |_, _| {}).unwrap();
    let slotted = generate_batched(&m, &reqs, &greedy, &[first], 2, |_, _| {}).unwrap();
    assert_eq!(with_stop[2].tokens, vec![first]);
    assert_eq!(with_stop[2].finish, FinishReason::Stop);
    for (a, b) in slotted.iter().zip(&with_stop) {
        assert_eq!((&a.tokens, a.finish), (&b.tokens, b.finish));
    }
    assert!(reference[3].finish == FinishReason::Stop && reference[3].tokens.len() == 3);
    assert!(reference[4].tokens.is_empty());
}

#[test]
fn a_kv_cache_beyond_memory_is_refused_before_allocating() {
    let m = model();
    // 10^12 new tokens: a KV cache of petabytes (this aborted with "memory allocation of … failed")
    let r = Request { prompt: vec![1, 2], max_new_tokens: 1_000_000_000_000, seed: 0 };
    let e = generate(&m, std::slice::from_ref(&r), &greedy(), &[], |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("positions are i32"), "{e}");
    let r = Request { prompt: vec![1, 2], max_new_tokens: i32::MAX as usize - 2, seed: 0 };
    let e = generate_batched(&m, &[r.clone(), r.clone()], &greedy(), &[], 2, |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("the KV cache (2 slots × 2147483647 positions × 3 layers") && e.contains("available"), "{e}");
    // the paged cache sizes its pool by the memory and refuses a request that cannot fit it alone
    let e = generate(&m, &[r.clone(), r.clone()], &greedy(), &[], |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("needs 134217728 blocks of 16 positions") && e.contains("all the memory allows"), "{e}");
    // prompt + max_new_tokens does not wrap
    let r = Request { prompt: vec![1, 2], max_new_tokens: usize::MAX, seed: 0 };
    let e = generate(&m, std::slice::from_ref(&r), &greedy(), &[], |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("positions are i32"), "{e}");
}

/// The fixture model with one element of the LM head (the tied embedding, or lm_head) set to `v`.
fn poisoned(v: f32) -> Qwen3 {
    let m = model();
    let head = m.lm_head();
    let mut w = head.to_vec_f32().unwrap();
    w[7 * m.config.hidden_size + 3] = v;
    head.copy_from(&Tensor::from_vec(w, head.dims().to_vec(), &Device::Cpu).unwrap()).unwrap();
    m
}

#[test]
fn non_finite_logits_are_an_error_not_garbage_tokens() {
    for (v, sampling) in [
        (f32::NAN, greedy()),
        (f32::NAN, SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0 }),
        (f32::INFINITY, SamplingParams { temperature: 0.8, top_p: 0.9, top_k: 20 }),
    ] {
        let m = poisoned(v);
        let reqs = [
            Request { prompt: vec![5, 6], max_new_tokens: 4, seed: 1 },
            Request { prompt: vec![9], max_new_tokens: 4, seed: 2 },
        ];
        let e = generate(&m, &reqs, &sampling, &[], |_, _| {}).unwrap_err().to_string();
        assert!(
            e.contains("request 0 (seed 1): the logits of response token 0 are not finite") && e.contains("NaN or Inf"),
            "{v} {sampling:?}: {e}"
        );
    }
}
