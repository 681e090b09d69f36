//! ZeRO-2 data parallelism on CPU through the in-process communicator: world sizes 2 and 4 reach the same
//! parameters as one process with plain AdamW on the whole batch.
use entrl_engine::dist::{Communicator, ThreadComm};
use entrl_engine::optim::{clip_grad_norm, AdamW, AdamWConfig, ShardedAdamW};
use entrl_engine::{DType, Device, Tensor};
use std::sync::Arc;
use std::time::Duration;

const N: usize = 12;

fn params() -> Vec<Tensor> {
    let w = Tensor::randn([5, 3], 0.5, DType::F32, &Device::Cpu, 1).unwrap().param();
    let b = Tensor::randn([3], 0.5, DType::F32, &Device::Cpu, 2).unwrap().param();
    vec![w, b]
}

/// Σ over samples `rows` of Σ_j tanh(x·W + b)_j², divided by the global sample count N.
fn loss(p: &[Tensor], rows: std::ops::Range<usize>, step: u64) -> Tensor {
    let x = Tensor::randn([N, 5], 1.0, DType::F32, &Device::Cpu, 100 + step).unwrap().to_vec_f64().unwrap();
    let xs = Tensor::from_f64(&x[rows.start * 5..rows.end * 5], [rows.len(), 5], DType::F32, &Device::Cpu).unwrap();
    let y = xs.matmul(&p[0]).unwrap().add(&p[1]).unwrap();
    y.mul(&y).unwrap().sum().unwrap().scale(1.0 / N as f64).unwrap()
}

const CFG: AdamWConfig = AdamWConfig { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };

fn single(steps: u64) -> Vec<Vec<f64>> {
    let p = params();
    let mut opt = AdamW::new(&p, CFG).unwrap();
    for s in 0..steps {
        loss(&p, 0..N, s).backward().unwrap();
        clip_grad_norm(&p, 0.5).unwrap();
        opt.step(CFG.lr, None).unwrap();
        p.iter().for_each(Tensor::zero_grad);
    }
    p.iter().map(|t| t.to_vec_f64().unwrap()).collect()
}

/// `f` on one thread per rank of a `world`-rank in-process group; the results by rank.
fn on_ranks<T: Send>(world: usize, f: impl Fn(ThreadComm) -> T + Sync) -> Vec<T> {
    let comms = ThreadComm::group(world, Duration::from_secs(30));
    std::thread::scope(|sc| {
        let hs: Vec<_> = comms.into_iter().map(|c| sc.spawn(|| f(c))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn sharded(world: usize, steps: u64) -> Vec<Vec<Vec<f64>>> {
    on_ranks(world, |c| {
        let rank = c.rank();
        let p = params();
        // Buckets of 8 flat elements: 18 parameters span several, some straddling two.
        let mut opt = ShardedAdamW::with_buckets(&p, CFG, Arc::new(c), 8).unwrap();
        let per = N / world;
        for s in 0..steps {
            loss(&p, rank * per..(rank + 1) * per, s).backward().unwrap();
            assert!(opt.step(CFG.lr, 0.5).unwrap().applied);
        }
        p.iter().map(|t| t.to_vec_f64().unwrap()).collect::<Vec<_>>()
    })
}

#[test]
fn world_sizes_2_and_4_match_one_process() {
    let want = single(4);
    for world in [1, 2, 4] {
        for (rank, got) in sharded(world, 4).into_iter().enumerate() {
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() < 1e-5, "world {world} rank {rank}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn sharded_state_round_trips() {
    let comms = ThreadComm::group(1, Duration::from_secs(5));
    let c: Arc<dyn Communicator> = Arc::new(comms.into_iter().next().unwrap());
    let p = params();
    let mut opt = ShardedAdamW::with_buckets(&p, CFG, c.clone(), 4).unwrap();
    loss(&p, 0..N, 0).backward().unwrap();
    opt.step(0.05, 1.0).unwrap();
    let (state, steps) = opt.state_tensors().unwrap();
    let q = params();
    let mut opt2 = ShardedAdamW::with_buckets(&q, CFG, c.clone(), 4).unwrap();
    opt2.load_state(steps, |k, _| state.iter().find(|(n, _)| n == k).map(|(_, t)| t.clone())).unwrap();
    for (a, b) in p.iter().zip(&q) {
        assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    }
    assert_eq!(opt2.steps(), 1);
    // A different bucketing is a different layout: refused, not misread.
    let mut opt3 = ShardedAdamW::with_buckets(&params(), CFG, c, 6).unwrap();
    let e = opt3.load_state(steps, |k, s| state.iter().find(|(n, t)| n == k && t.dims() == s).map(|(_, t)| t.clone()));
    assert!(e.unwrap_err().to_string().contains("does not match this layout"));
}

/// bf16 parameters stepped by ZeRO-2 over 2 ranks, their gradients (values exact in bf16, different per
/// rank, NaN on rank 1 when `nan`) stored as `storage`: the parameters after one step, and whether it applied.
fn bf16_step(storage: entrl_engine::GradStorage, nan: bool) -> Vec<(Vec<Vec<f64>>, bool)> {
    on_ranks(2, |c| {
        let rank = c.rank();
        let p: Vec<Tensor> = params().iter().map(|t| t.to_dtype(DType::BF16).unwrap().detach().param()).collect();
        let mut opt = ShardedAdamW::with_buckets(&p, CFG, Arc::new(c), 8).unwrap();
        for (i, t) in p.iter().enumerate() {
            t.set_grad_storage(storage).unwrap();
            let mut g: Vec<f64> = (0..t.numel()).map(|j| ((j + i + rank) % 7) as f64 * 0.125 - 0.25).collect();
            if nan && rank == 1 && i == 1 {
                g[0] = f64::NAN;
            }
            let gd = t.grad_dtype().unwrap();
            t.set_grad(Some(Tensor::from_f64(&g, t.shape().clone(), gd, &Device::Cpu).unwrap())).unwrap();
        }
        let applied = opt.step(CFG.lr, 0.5).unwrap().applied;
        (p.iter().map(|t| t.to_vec_f64().unwrap()).collect::<Vec<_>>(), applied)
    })
}

#[test]
fn bf16_gradients_reduce_scatter_like_f32_ones() {
    use entrl_engine::GradStorage;
    let (f, h) = (bf16_step(GradStorage::F32, false), bf16_step(GradStorage::Bf16, false));
    for ((pf, af), (ph, ah)) in f.iter().zip(&h) {
        assert!(*af && *ah);
        assert_eq!(pf, ph, "the same gradient values give the same update whatever their storage");
    }
    // A NaN in one rank's bf16 gradient skips the update on every rank.
    for (_, applied) in bf16_step(GradStorage::Bf16, true) {
        assert!(!applied);
    }
}
