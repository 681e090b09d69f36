//! Graph-replayed decode steps (`DecodeMode::Graph`) against the eager ones on the fixture model (CPU,
//! f32): the CPU stand-in captures one body per (batch, key-capacity) bucket and replays it from fixed
//! buffers under the no-transfer rule, so these tests check the graph path's scheduling (buckets,
//! padding rows, fixed-width tables, keyed sampling from buffers) gives the eager path's generations.
mod common;
use common::generation::{assert_same, model, workload};
use entrl_qwen3::{
    generate_run, DecodeMode, GenerateOptions, GenerateRun, KvLayout, PagedKv, Qwen3, Request, SamplingParams,
};
use rand::{Rng, SeedableRng};

fn run(m: &Qwen3, reqs: &[Request], params: &SamplingParams, opts: GenerateOptions, decode: DecodeMode) -> GenerateRun {
    generate_run(m, reqs, params, &[], &GenerateOptions { decode, ..opts }, |_, _| {}).unwrap()
}

fn paged(block_size: usize, blocks: usize) -> GenerateOptions {
    GenerateOptions { kv: KvLayout::Paged(PagedKv { block_size, blocks, share_prompts: true }), ..Default::default() }
}

#[test]
fn graph_replayed_steps_give_the_eager_generations() {
    let m = model();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let sampled = SamplingParams { temperature: 1.0, top_p: 0.9, top_k: 40 };
    let reqs = workload(&m, 5, 3, 3);
    let contiguous = GenerateOptions { max_seqs: 4, kv: KvLayout::Contiguous, ..Default::default() };
    // an ample pool, a tiny one (preemption), one running at most 5, and contiguous slots
    for (name, opts) in [
        ("ample", paged(4, 0)),
        ("tiny", paged(2, 40)),
        ("five", GenerateOptions { max_seqs: 5, ..paged(8, 0) }),
        ("slots", contiguous),
    ] {
        for (pname, params) in [("greedy", greedy), ("sampled", sampled)] {
            let what = format!("{name} pool, {pname}");
            let eager = run(&m, &reqs, &params, opts, DecodeMode::Eager);
            let graph = run(&m, &reqs, &params, opts, DecodeMode::Graph);
            assert_same(&eager.generations, &graph.generations, &what);
            let (e, g) = (eager.stats, graph.stats);
            assert_eq!(e.graphs, Default::default(), "{what}: the eager path captures nothing");
            assert_eq!(g.decode_steps, e.decode_steps, "{what}");
            assert_eq!(g.graphs.replays, g.decode_steps, "{what}: every decode step is a replay");
            assert!(g.graphs.captures >= 1 && g.graphs.captures < g.graphs.replays, "{what}: {:?}", g.graphs);
            if name == "tiny" {
                assert!(g.preemptions > 0, "{what}: {g:?}");
            }
        }
    }
}

#[test]
fn steps_of_uneven_batch_sizes_run_in_padded_buckets() {
    let m = model();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    // 11 requests finishing at different lengths: the running batch shrinks through sizes between
    // buckets, so steps run with padding rows whose writes and picks must go nowhere
    let reqs = workload(&m, 11, 1, 8);
    let eager = run(&m, &reqs, &greedy, paged(4, 0), DecodeMode::Eager);
    let graph = run(&m, &reqs, &greedy, paged(4, 0), DecodeMode::Graph);
    assert_same(&eager.generations, &graph.generations, "uneven batches");
    assert!(graph.stats.graphs.padded_rows > 0, "{:?}", graph.stats.graphs);
}

#[test]
fn a_sampled_graph_response_is_the_same_alone_and_in_a_batch() {
    let m = model();
    let params = SamplingParams { temperature: 0.7, top_p: 1.0, top_k: 0 };
    let reqs = workload(&m, 4, 3, 21);
    let all = run(&m, &reqs, &params, paged(4, 0), DecodeMode::Graph);
    for r in [0, 5, reqs.len() - 1] {
        let alone = run(&m, &reqs[r..=r], &params, paged(4, 0), DecodeMode::Graph);
        assert_same(&all.generations[r..=r], &alone.generations, &format!("request {r} alone"));
    }
}

#[test]
fn random_options_replay_like_eager_steps() {
    let m = model();
    let mut g = rand::rngs::StdRng::seed_from_u64(17);
    for case in 0..25 {
        let reqs = workload(&m, g.random_range(1..=4), g.random_range(1..=3), case);
        let bs = [1, 3, 4, 16][g.random_range(0..4)];
        let most = reqs.iter().map(|r| (r.prompt.len() + r.max_new_tokens).div_ceil(bs)).max().unwrap();
        let blocks = if g.random_bool(0.3) { 0 } else { most + g.random_range(0..=2 * most) };
        let kv = KvLayout::Paged(PagedKv { block_size: bs, blocks, share_prompts: g.random_bool(0.7) });
        let opts = GenerateOptions { max_seqs: g.random_range(0..=6), kv, ..Default::default() };
        let params = SamplingParams { temperature: [0.0, 1.0][g.random_range(0..2)], top_p: 0.95, top_k: 0 };
        let eager = run(&m, &reqs, &params, opts, DecodeMode::Eager);
        let graph = run(&m, &reqs, &params, opts, DecodeMode::Graph);
        assert_same(&eager.generations, &graph.generations, &format!("case {case}: {opts:?} {params:?}"));
    }
}

#[test]
fn prefix_grouped_attention_gives_the_same_generations_eager_and_replayed() {
    let m = model();
    let sampled = SamplingParams { temperature: 1.0, top_p: 0.95, top_k: 0 };
    // many responses of few prompts (groups larger than a device CTA takes are split), prompts shorter
    // than a block (no shared block), and a tiny pool (preempted members leave their group)
    let mut reqs = workload(&m, 2, 40, 31);
    reqs.extend(workload(&m, 3, 4, 32));
    for (name, base) in [("ample", paged(4, 0)), ("tiny", paged(4, 90)), ("block 16", paged(16, 0))] {
        let plain = run(&m, &reqs, &sampled, base, DecodeMode::Eager);
        let grouped = GenerateOptions { prefix_attention: true, ..base };
        let eager = run(&m, &reqs, &sampled, grouped, DecodeMode::Eager);
        let graph = run(&m, &reqs, &sampled, grouped, DecodeMode::Graph);
        assert_same(&plain.generations, &eager.generations, &format!("{name}: grouped eager"));
        assert_same(&plain.generations, &graph.generations, &format!("{name}: grouped graph"));
        assert_eq!(plain.stats.prefix_grouped_rows, 0);
        assert!(eager.stats.prefix_grouped_rows > 0, "{name}: {:?}", eager.stats);
        assert_eq!(eager.stats.prefix_grouped_rows, graph.stats.prefix_grouped_rows, "{name}");
        if name == "tiny" {
            assert!(eager.stats.preemptions > 0, "{name}: {:?}", eager.stats);
        }
    }
}
