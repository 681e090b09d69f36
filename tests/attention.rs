//! The attention op against a naive implementation written here (plain loops, explicit −Σ p ln p),
//! on packed sequences with length-1 and odd lengths and GQA ratios 1, 4 and 6.
use entrl_engine::check::max_rel_err;
use entrl_engine::ops::{attention, normalized_entropy, RowStat, RowStats};
use entrl_engine::{DType, Device, Packing, Tensor};

struct Naive {
    o: Vec<f64>,
    h: Vec<f64>,
}

/// Causal softmax attention per sequence, written independently of the engine.
fn naive(q: &[f64], k: &[f64], v: &[f64], lens: &[usize], hq: usize, hkv: usize, d: usize) -> Naive {
    let total: usize = lens.iter().sum();
    let (mut o, mut h) = (vec![0.0; total * hq * d], vec![0.0; total * hq]);
    let mut start = 0;
    for &len in lens {
        for i in 0..len {
            for head in 0..hq {
                let kh = head * hkv / hq;
                let qi = &q[((start + i) * hq + head) * d..][..d];
                let s: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[((start + j) * hkv + kh) * d..][..d];
                        qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let z: f64 = s.iter().map(|x| x.exp()).sum();
                let p: Vec<f64> = s.iter().map(|x| x.exp() / z).collect();
                h[(start + i) * hq + head] = -p.iter().map(|pj| pj * pj.ln()).sum::<f64>();
                for c in 0..d {
                    o[((start + i) * hq + head) * d + c] =
                        (0..=i).map(|j| p[j] * v[((start + j) * hkv + kh) * d + c]).sum::<f64>();
                }
            }
        }
        start += len;
    }
    Naive { o, h }
}

fn check(lens: &[usize], hq: usize, hkv: usize, d: usize, seed: u64) {
    let dev = Device::Cpu;
    let packing = Packing::from_lengths(lens).unwrap();
    let t = packing.total();
    let q = Tensor::randn([t, hq, d], 1.0, DType::F64, &dev, seed).unwrap();
    let k = Tensor::randn([t, hkv, d], 1.0, DType::F64, &dev, seed + 1).unwrap();
    let v = Tensor::randn([t, hkv, d], 1.0, DType::F64, &dev, seed + 2).unwrap();
    let a = attention(&q, &k, &v, &packing, RowStats::ENTROPY).unwrap();
    let n = naive(&q.to_vec_f64().unwrap(), &k.to_vec_f64().unwrap(), &v.to_vec_f64().unwrap(), lens, hq, hkv, d);
    let eo = max_rel_err(&a.out.to_vec_f64().unwrap(), &n.o);
    let eh = max_rel_err(&a.stats.require(RowStat::Entropy).unwrap().to_vec_f64().unwrap(), &n.h);
    assert!(eo < 1e-12, "output differs from naive: {eo} ({lens:?}, {hq}/{hkv})");
    assert!(eh < 1e-12, "entropy differs from naive: {eh} ({lens:?}, {hq}/{hkv})");
    // The first token of every sequence attends to one key: H = 0 exactly.
    let hv = a.stats.require(RowStat::Entropy).unwrap().clone().to_vec_f64().unwrap();
    for (start, _) in packing.spans().filter(|s| s.1 > 0) {
        for head in 0..hq {
            assert_eq!(hv[start * hq + head], 0.0);
        }
    }
}

#[test]
fn matches_naive_for_gqa_ratios_and_packs() {
    check(&[5, 1, 8, 3], 2, 2, 8, 1);
    check(&[1, 7, 2], 4, 1, 6, 2);
    check(&[9, 1], 6, 1, 4, 3);
    check(&[1], 4, 4, 3, 4);
    check(&[0, 4, 0, 2], 2, 1, 5, 5);
}

#[test]
fn normalized_entropy_divides_by_log_key_count() {
    let dev = Device::Cpu;
    let packing = Packing::from_lengths(&[3, 2]).unwrap();
    let h = Tensor::from_vec(vec![0.0f32, 0.0, 1.0, 3.0, 2.0, 2.0, 0.0, 0.0, 1.0, 1.0], [5, 2], &dev).unwrap();
    let (norm, mean) = normalized_entropy(&h, &packing).unwrap();
    let n = norm.to_vec_f64().unwrap();
    let l2 = 2f64.ln();
    let l3 = 3f64.ln();
    let expect = [0.0, 0.0, 1.0 / l2, 3.0 / l2, 2.0 / l3, 2.0 / l3, 0.0, 0.0, 1.0 / l2, 1.0 / l2];
    assert!(max_rel_err(&n, &expect) < 1e-6, "{n:?}");
    let m = mean.to_vec_f64().unwrap();
    assert!((m[1] - 2.0 / l2).abs() < 1e-6 && m[0] == 0.0 && m[3] == 0.0);
}

#[test]
fn entropy_is_optional_and_carries_no_gradient() {
    let dev = Device::Cpu;
    let packing = Packing::from_lengths(&[4]).unwrap();
    let q = Tensor::randn([4, 2, 4], 1.0, DType::F32, &dev, 1).unwrap().param();
    let k = Tensor::randn([4, 1, 4], 1.0, DType::F32, &dev, 2).unwrap().param();
    let v = Tensor::randn([4, 1, 4], 1.0, DType::F32, &dev, 3).unwrap().param();
    let none = attention(&q, &k, &v, &packing, RowStats::NONE).unwrap().stats;
    assert!(RowStat::ALL.iter().all(|&s| none.get(s).is_none()));
    let e = none.require(RowStat::Entropy).err().unwrap().to_string();
    assert!(e.contains("entropy was not asked for"), "{e}");
    let a = attention(&q, &k, &v, &packing, RowStats::ALL.with_sink_keys(2)).unwrap();
    assert!(a.out.requires_grad());
    for stat in RowStat::ALL {
        assert!(!a.stats.require(stat).unwrap().requires_grad(), "{}", stat.name());
    }
    let sink65 = RowStats::NONE.with(RowStat::Sink).with_sink_keys(65);
    let e = attention(&q, &k, &v, &packing, sink65).err().unwrap().to_string();
    assert!(e.contains("sink_keys 65"), "{e}");
}

#[test]
fn bad_shapes_are_clear_errors() {
    let dev = Device::Cpu;
    let packing = Packing::from_lengths(&[3, 2]).unwrap();
    let q = Tensor::zeros([5, 3, 4], DType::F32, &dev).unwrap();
    let k = Tensor::zeros([5, 2, 4], DType::F32, &dev).unwrap();
    let e = attention(&q, &k, &k, &packing, RowStats::NONE).err().unwrap().to_string();
    assert!(e.contains("Hq a multiple of Hkv"), "{e}");
    let other = Packing::from_lengths(&[4]).unwrap();
    let k1 = Tensor::zeros([5, 1, 4], DType::F32, &dev).unwrap();
    let e = attention(&q, &k1, &k1, &other, RowStats::NONE).err().unwrap().to_string();
    assert!(e.contains("packing covers 4 tokens but q has 5"), "{e}");
}

/// Every row statistic of the table on hand-computed distributions: one token of two keys where head 0 puts
/// 1/4, 3/4 and head 1 puts 3/4, 1/4 on them (so the heads' mixture is uniform: ln 2), after a one-key
/// token. A statistic without a hand-computed row here fails the test.
#[test]
fn row_statistics_match_hand_computed_values() {
    let dev = Device::Cpu;
    let packing = Packing::from_lengths(&[2]).unwrap();
    // d = 1, scale 1: scores q_h · k_j with k = (0, ln 3), q = (1, −1) per head.
    let q = Tensor::from_vec(vec![1.0f64, -1.0, 1.0, -1.0], [2, 2, 1], &dev).unwrap();
    let k = Tensor::from_vec(vec![0.0f64, 3f64.ln()], [2, 1, 1], &dev).unwrap();
    let v = Tensor::zeros([2, 1, 1], DType::F64, &dev).unwrap();
    let s = attention(&q, &k, &v, &packing, RowStats::ALL.with_sink_keys(1)).unwrap().stats;
    let h1 = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    let want = |stat: RowStat| -> Vec<f64> {
        match stat {
            RowStat::Entropy => vec![0.0, 0.0, h1, h1],
            RowStat::MaxProb => vec![1.0, 1.0, 0.75, 0.75],
            RowStat::Sink => vec![1.0, 1.0, 0.25, 0.75],
            // token 1 puts 1/4 (head 0) and 3/4 (head 1) on key 0, at distance 1 of its reach 1
            RowStat::Distance => vec![0.0, 0.0, 0.25, 0.75],
            RowStat::HeadMix => vec![0.0, 2f64.ln()],
        }
    };
    for stat in RowStat::ALL {
        let got = s.require(stat).unwrap().to_vec_f64().unwrap();
        assert!(max_rel_err(&got, &want(stat)) < 1e-12, "{}: {got:?} vs {:?}", stat.name(), want(stat));
    }
}
