//! Token selection (`select_tails`, `select_random`) and `radix_sort` against brute-force definitions
//! written here (O(n²) ranks with plain IEEE comparisons): the CPU path is the reference the GPU is checked
//! against. The CUDA kernels themselves run on the CPU in `kernels-cu/tests/emulated_kernels.rs` (the real
//! `select.cu` / `select_wide.cu` under the emulator, against a host sort) and on a GPU in the selftest.
use entrl_engine::check::select::select_checks;
use entrl_engine::ops::{radix_sort, select_random, select_tails, tail_count};
use entrl_engine::{DType, Device, EngineError, Packing, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CPU: Device = Device::Cpu;

fn t(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), [v.len()], &CPU).unwrap()
}

fn spans(lengths: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut start = 0;
    lengths
        .iter()
        .map(|&l| {
            start += l;
            start - l..start
        })
        .collect()
}

/// (top, bottom) by definition: a valid token is in the bottom tail iff fewer than k valid tokens of its
/// pool come before it in (score ascending, index ascending) order; top: (score descending, index ascending).
fn brute_tails(scores: &[f32], valid: &[f32], lengths: &[usize], frac: f64) -> (Vec<f32>, Vec<f32>) {
    let n = scores.len();
    let (mut top, mut bottom) = (vec![0f32; n], vec![0f32; n]);
    for span in spans(lengths) {
        let members: Vec<usize> = span.filter(|&i| valid[i] != 0.0).collect();
        let k = tail_count(frac, members.len());
        for &i in &members {
            let x = scores[i];
            let below = members.iter().filter(|&&j| scores[j] < x || (scores[j] == x && j < i)).count();
            let above = members.iter().filter(|&&j| scores[j] > x || (scores[j] == x && j < i)).count();
            bottom[i] = (below < k) as u8 as f32;
            top[i] = (above < k) as u8 as f32;
        }
    }
    (top, bottom)
}

fn tails(scores: &[f32], valid: &[f32], lengths: &[usize], frac: f64) -> (Vec<f32>, Vec<f32>) {
    let m = select_tails(&t(scores), &t(valid), frac, &Packing::from_lengths(lengths).unwrap()).unwrap();
    (m.top.to_vec_f32().unwrap(), m.bottom.to_vec_f32().unwrap())
}

const TIED: [f32; 9] = [f32::NEG_INFINITY, -2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, f32::INFINITY];

fn random_scores(rng: &mut StdRng, n: usize, tied: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if tied || rng.random_bool(0.02) {
                TIED[rng.random_range(0..TIED.len())]
            } else {
                rng.random_range(-10.0f32..10.0)
            }
        })
        .collect()
}

fn random_lengths(rng: &mut StdRng, pools: usize, max: usize) -> Vec<usize> {
    (0..pools)
        .map(|_| match rng.random_range(0..6) {
            0 => 0,
            1 => 1,
            2 => rng.random_range(2..6),
            _ => rng.random_range(0..=max),
        })
        .collect()
}

fn random_valid(rng: &mut StdRng, n: usize, p: f64) -> Vec<f32> {
    (0..n).map(|_| rng.random_bool(p) as u8 as f32).collect()
}

fn pool_sum(mask: &[f32], span: std::ops::Range<usize>) -> usize {
    mask[span].iter().map(|&x| x as usize).sum()
}

// ------------------------------------------------------------------------------------------------ counts

#[test]
fn tail_count_is_ceil_without_rounding_artifacts() {
    let cases = [
        (0.2, 0, 0),
        (0.2, 1, 1),
        (0.2, 4, 1),
        (0.2, 5, 1),
        (0.2, 6, 2),
        (0.2, 7, 2),
        (0.2, 10, 2),
        (0.2, 11, 3),
        (0.2, 15, 3), // 0.2·15 = 3.0000000000000004 in f64
        (0.3, 10, 3), // 0.3·10 = 3.0000000000000004
        (0.1, 30, 3),
        (0.7, 10, 7),
        (0.0, 100, 0),
        (1.0, 0, 0),
        (1.0, 1, 1),
        (1.0, 12345, 12345),
        (0.5, 3, 2),
        (1e-9, 1000, 1),
        (0.2, 2_000_000_000, 400_000_000),
        (0.2, 2_000_000_001, 400_000_001),
        (1.0, i32::MAX as usize, i32::MAX as usize),
    ];
    for (frac, n, want) in cases {
        assert_eq!(tail_count(frac, n), want, "tail_count({frac}, {n})");
    }
}

// ------------------------------------------------------------------------------------------------ tails

#[test]
fn tails_match_brute_force_on_random_pools() {
    let mut rng = StdRng::seed_from_u64(11);
    for trial in 0..150 {
        let pools = rng.random_range(1..12);
        let lengths = random_lengths(&mut rng, pools, 60);
        let n: usize = lengths.iter().sum();
        let scores = random_scores(&mut rng, n, trial % 3 == 0);
        let p = [0.0, 0.3, 0.8, 1.0][trial % 4];
        let valid = random_valid(&mut rng, n, p);
        let frac = match trial % 7 {
            0 => 0.0,
            1 => 1.0,
            2 => 0.2,
            3 => 0.5,
            _ => rng.random_range(0.0..1.0),
        };
        let (top, bottom) = tails(&scores, &valid, &lengths, frac);
        let (bt, bb) = brute_tails(&scores, &valid, &lengths, frac);
        assert_eq!(top, bt, "top, trial {trial}: lengths {lengths:?} frac {frac}");
        assert_eq!(bottom, bb, "bottom, trial {trial}: lengths {lengths:?} frac {frac}");
        for span in spans(&lengths) {
            let nv = pool_sum(&valid, span.clone());
            assert_eq!(pool_sum(&top, span.clone()), tail_count(frac, nv));
            assert_eq!(pool_sum(&bottom, span), tail_count(frac, nv));
        }
        for i in 0..n {
            if valid[i] == 0.0 {
                assert_eq!((top[i], bottom[i]), (0.0, 0.0), "an invalid token was selected");
            }
        }
    }
}

#[test]
fn ties_break_by_lower_index_in_both_tails() {
    // All equal: both tails take the first k valid tokens.
    let scores = vec![1.0f32; 10];
    let mut valid = vec![1.0f32; 10];
    valid[1] = 0.0;
    let (top, bottom) = tails(&scores, &valid, &[10], 0.3); // 9 valid -> ceil(2.7) = 3
    let want = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(top, want);
    assert_eq!(bottom, want);
    // -0.0 and +0.0 are the same key; ±inf are ordinary extremes.
    let scores = [0.0f32, -0.0, f32::INFINITY, -0.0, f32::NEG_INFINITY, 0.0, 5.0];
    let (top, bottom) = tails(&scores, &[1.0; 7], &[7], 0.5); // k = 4
    assert_eq!(bottom, [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]); // -inf, then the zeros at 0, 1, 3
    assert_eq!(top, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]); // inf, 5, then the zeros at 0, 1
}

#[test]
fn frac_zero_and_one_and_empty_pools() {
    let scores = [3.0f32, 1.0, 2.0, -1.0, 0.0];
    let valid = [1.0f32, 0.0, 1.0, 1.0, 1.0];
    let lengths = [0, 2, 0, 1, 2, 0];
    let (top, bottom) = tails(&scores, &valid, &lengths, 0.0);
    assert_eq!(top, [0.0; 5]);
    assert_eq!(bottom, [0.0; 5]);
    let (top, bottom) = tails(&scores, &valid, &lengths, 1.0);
    assert_eq!(top, valid);
    assert_eq!(bottom, valid);
    // No tokens at all.
    for lengths in [vec![], vec![0, 0, 0]] {
        let m = select_tails(&t(&[]), &t(&[]), 0.2, &Packing::from_lengths(&lengths).unwrap()).unwrap();
        assert_eq!(m.top.dims(), &[0]);
        assert_eq!(m.bottom.to_vec_f32().unwrap(), Vec::<f32>::new());
    }
}

#[test]
fn counts_round_up_per_pool() {
    // Pools of 7, 5 and 15 valid tokens, frac 0.2: ceil(1.4) = 2, 1, 3.
    let lengths = [7, 5, 15];
    let n = 27;
    let scores: Vec<f32> = (0..n).map(|i| ((i * 7919) % 31) as f32).collect();
    let (top, bottom) = tails(&scores, &[1.0; 27], &lengths, 0.2);
    for (span, want) in spans(&lengths).into_iter().zip([2, 1, 3]) {
        assert_eq!(pool_sum(&top, span.clone()), want);
        assert_eq!(pool_sum(&bottom, span), want);
    }
    // The same tokens as one pool: ceil(0.2·27) = 6.
    let (top, bottom) = tails(&scores, &[1.0; 27], &[27], 0.2);
    assert_eq!((pool_sum(&top, 0..27), pool_sum(&bottom, 0..27)), (6, 6));
}

#[test]
fn many_pools_match_brute_force() {
    let mut rng = StdRng::seed_from_u64(5);
    let lengths = random_lengths(&mut rng, 700, 40);
    let n: usize = lengths.iter().sum();
    let scores = random_scores(&mut rng, n, true);
    let valid = random_valid(&mut rng, n, 0.7);
    let (top, bottom) = tails(&scores, &valid, &lengths, 0.2);
    assert_eq!((top, bottom), brute_tails(&scores, &valid, &lengths, 0.2));
}

#[test]
fn nan_on_a_valid_token_is_an_error_and_ignored_elsewhere() {
    let mut scores = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    scores[4] = f32::NAN;
    let mut valid = vec![1.0f32; 6];
    let pools = Packing::from_lengths(&[3, 3]).unwrap();
    match select_tails(&t(&scores), &t(&valid), 0.5, &pools) {
        Err(EngineError::Invalid { op: "select_tails", msg }) => assert!(msg.contains("NaN"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("NaN on a valid token was accepted"),
    }
    valid[4] = 0.0;
    let (top, bottom) = tails(&scores, &valid, &[3, 3], 0.5);
    let mut clean = scores.clone();
    clean[4] = -100.0;
    assert_eq!((top.clone(), bottom.clone()), tails(&clean, &valid, &[3, 3], 0.5));
    assert_eq!(top, [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
    assert_eq!(bottom, [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn invalid_arguments_are_typed_errors() {
    let s = t(&[1.0, 2.0, 3.0]);
    let v = t(&[1.0, 1.0, 1.0]);
    let p3 = Packing::single(3).unwrap();
    for frac in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
        assert!(matches!(select_tails(&s, &v, frac, &p3), Err(EngineError::Invalid { .. })), "frac {frac}");
        assert!(matches!(select_random(&v, frac, 1, &p3), Err(EngineError::Invalid { .. })), "frac {frac}");
    }
    let p4 = Packing::from_lengths(&[2, 2]).unwrap();
    assert!(matches!(select_tails(&s, &v, 0.2, &p4), Err(EngineError::Shape { .. })));
    assert!(matches!(select_random(&v, 0.2, 1, &p4), Err(EngineError::Shape { .. })));
    let v2 = t(&[1.0, 1.0]);
    assert!(matches!(select_tails(&s, &v2, 0.2, &p3), Err(EngineError::Shape { .. })));
    let s2d = Tensor::from_vec(vec![1.0f32; 4], [2, 2], &CPU).unwrap();
    let p4one = Packing::single(4).unwrap();
    assert!(matches!(select_tails(&s2d, &t(&[1.0; 4]), 0.2, &p4one), Err(EngineError::Shape { .. })));
    assert!(matches!(radix_sort(&s2d), Err(EngineError::Shape { .. })));
    let si = Tensor::from_vec(vec![1i32, 2, 3], [3], &CPU).unwrap();
    assert!(matches!(select_tails(&si, &v, 0.2, &p3), Err(EngineError::DType { .. })));
    assert!(matches!(select_tails(&s, &si, 0.2, &p3), Err(EngineError::DType { .. })));
    assert!(matches!(select_random(&si, 0.2, 1, &p3), Err(EngineError::DType { .. })));
    assert!(matches!(radix_sort(&si), Err(EngineError::DType { .. })));
    let sb = s.to_dtype(DType::BF16).unwrap();
    assert!(matches!(select_tails(&sb, &v, 0.2, &p3), Err(EngineError::DType { .. })));
    // No gradients: results are plain leaves.
    let m = select_tails(&s.param(), &v, 0.5, &p3).unwrap();
    assert!(!m.top.requires_grad() && !m.bottom.requires_grad());
}

// ------------------------------------------------------------------------------------------------ random

fn random_mask(valid: &[f32], lengths: &[usize], frac: f64, seed: u64) -> Vec<f32> {
    select_random(&t(valid), frac, seed, &Packing::from_lengths(lengths).unwrap()).unwrap().to_vec_f32().unwrap()
}

#[test]
fn random_selection_is_exact_deterministic_and_seeded() {
    let mut rng = StdRng::seed_from_u64(21);
    let lengths = random_lengths(&mut rng, 40, 300);
    let n: usize = lengths.iter().sum();
    let valid = random_valid(&mut rng, n, 0.6);
    for frac in [0.0, 0.2, 0.37, 1.0] {
        let a = random_mask(&valid, &lengths, frac, 42);
        assert_eq!(a, random_mask(&valid, &lengths, frac, 42), "not deterministic");
        for span in spans(&lengths) {
            assert_eq!(pool_sum(&a, span.clone()), tail_count(frac, pool_sum(&valid, span)));
        }
        for i in 0..n {
            assert!(a[i] == 0.0 || valid[i] != 0.0, "an invalid token was selected");
        }
        if frac == 0.2 || frac == 0.37 {
            assert_ne!(a, random_mask(&valid, &lengths, frac, 43), "seeds 42 and 43 gave the same mask");
        }
    }
}

#[test]
fn random_selection_is_roughly_uniform() {
    // 10 valid tokens, k = 3: over 4000 seeds every token should be picked ~1200 times.
    let valid = [1.0f32; 10];
    let mut hits = [0usize; 10];
    for seed in 0..4000u64 {
        let m = random_mask(&valid, &[10], 0.3, seed);
        assert_eq!(m.iter().sum::<f32>(), 3.0);
        for (h, x) in hits.iter_mut().zip(m) {
            *h += x as usize;
        }
    }
    for h in hits {
        assert!((1050..1350).contains(&h), "hits {hits:?}");
    }
}

// ------------------------------------------------------------------------------------------------ sort

/// Stable ascending sort by definition: the position of element i is the number of elements that must come
/// before it (smaller key, or equal key and smaller index); NaNs after everything else.
fn brute_sort(x: &[f32]) -> (Vec<f32>, Vec<i32>) {
    let before = |j: usize, i: usize| -> bool {
        match (x[j].is_nan(), x[i].is_nan()) {
            (false, true) => true,
            (true, false) => false,
            (true, true) => j < i,
            (false, false) => x[j] < x[i] || (x[j] == x[i] && j < i),
        }
    };
    let mut idx = vec![0i32; x.len()];
    for i in 0..x.len() {
        let pos = (0..x.len()).filter(|&j| before(j, i)).count();
        idx[pos] = i as i32;
    }
    (idx.iter().map(|&i| x[i as usize]).collect(), idx)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn radix_sort_is_a_stable_sort() {
    let mut rng = StdRng::seed_from_u64(3);
    for trial in 0..40 {
        let n = [0, 1, 2, 17, 300, 1000][trial % 6];
        let mut x = random_scores(&mut rng, n, trial % 2 == 0);
        if trial % 5 == 0 && n > 3 {
            x[1] = f32::NAN;
            x[n - 1] = -f32::NAN;
        }
        let (k, i) = radix_sort(&t(&x)).unwrap();
        let (bk, bi) = brute_sort(&x);
        assert_eq!(i.to_vec_i32().unwrap(), bi, "trial {trial}");
        assert_eq!(bits(&k.to_vec_f32().unwrap()), bits(&bk), "trial {trial}");
        assert_eq!(i.dtype(), DType::I32);
    }
    let (k, i) = radix_sort(&t(&[2.0, -1.0, 2.0, -0.0, 0.0, -1.0])).unwrap();
    assert_eq!(i.to_vec_i32().unwrap(), [1, 5, 3, 4, 0, 2]);
    assert_eq!(bits(&k.to_vec_f32().unwrap()), bits(&[-1.0, -1.0, -0.0, 0.0, 2.0, 2.0]));
}

// ------------------------------------------------------------------------------------------------ harness

#[test]
fn select_self_check_harness_passes_on_cpu() {
    let rows = select_checks(&CPU, 9);
    assert!(rows.len() >= 13);
    for r in &rows {
        assert!(r.pass, "{r:?}");
    }
}

// ------------------------------------------------------------------------------------------------ packing

#[test]
fn packing_tiles_cut_every_pool_without_crossing() {
    let p = Packing::from_lengths(&[0, 5, 16, 3, 0, 33]).unwrap();
    // tiles of at most 16: (start, end, pool)
    let want = vec![0, 5, 1, 5, 21, 2, 21, 24, 3, 24, 40, 5, 40, 56, 5, 56, 57, 5];
    assert_eq!(p.tiles(16), want);
    let t = p.tiles_on(&Device::Cpu, 16).unwrap();
    assert_eq!(t.dims(), [6, 3]);
    assert_eq!(t.to_vec_i32().unwrap(), want);
    assert!(Packing::from_lengths(&[0, 0]).unwrap().tiles(4).is_empty());
}
