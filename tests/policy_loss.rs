//! The fused LM-head + DAPO loss against an independent implementation written here in verl's style
//! (pg_losses1/2/3 and torch.where), finite-difference gradients, both normalisers, and bad input.
use entrl_engine::check::gradcheck::check_gradients;
use entrl_engine::check::max_rel_err;
use entrl_engine::ops::{dapo_loss, DapoBatch, DapoLossConfig, LossNormalizer};
use entrl_engine::{DType, Device, Tensor};

struct Case {
    t: usize,
    v: usize,
    targets: Vec<i32>,
    old: Vec<f64>,
    adv: Vec<f64>,
    mask: Vec<f64>,
    w: Vec<f64>,
}

/// Tokens chosen to hit every branch: A = 0, weight 0, masked out, ratios far above and below the clip
/// range (old log-prob shifted by ±1.5), the dual clip (A < 0, ratio e³ > 10), and |δ| > 20.
fn case(t: usize, v: usize, x: &Tensor, lm: &Tensor) -> Case {
    let logits = x.linear(lm).unwrap().log_softmax().unwrap().to_vec_f64().unwrap();
    let targets: Vec<i32> = (0..t).map(|i| ((i * 7 + 3) % v) as i32).collect();
    let logp: Vec<f64> = (0..t).map(|i| logits[i * v + targets[i] as usize]).collect();
    let shifts = [0.0, 1.5, -1.5, 3.0, 0.3, -0.2, 25.0, 0.05];
    let advs = [1.0, -1.0, 0.7, -2.0, 0.0, 1.3, -0.5, -1.1];
    Case {
        t,
        v,
        old: (0..t).map(|i| logp[i] - shifts[i % shifts.len()]).collect(),
        adv: (0..t).map(|i| advs[(i * 3) % advs.len()]).collect(),
        mask: (0..t).map(|i| if i % 5 == 4 { 0.0 } else { 1.0 }).collect(),
        w: (0..t).map(|i| [1.0, 0.0, 0.5, 1.0, 2.0][i % 5]).collect(),
        targets,
    }
}

/// verl's compute_policy_loss_vanilla, token by token, then Σ mask·w·ℓ / Z.
#[allow(clippy::needless_range_loop)]
fn verl_loss(c: &Case, logp: &[f64], z: f64) -> (f64, f64) {
    let (mut total, mut clipped) = (0.0, 0.0);
    for i in 0..c.t {
        let nkl = (logp[i] - c.old[i]).clamp(-20.0, 20.0);
        let ratio = nkl.exp();
        let pg1 = -c.adv[i] * ratio;
        let pg2 = -c.adv[i] * ratio.clamp(0.8, 1.28);
        let clip1 = pg1.max(pg2);
        let pg3 = -c.adv[i] * 10.0;
        let clip2 = pg3.min(clip1);
        let pg = if c.adv[i] < 0.0 { clip2 } else { clip1 };
        total += c.mask[i] * c.w[i] * pg;
        clipped += c.mask[i] * ((pg2 > pg1) as i32 as f64);
    }
    (total / z, clipped / c.mask.iter().sum::<f64>())
}

fn tensors(c: &Case, dev: &Device) -> [Tensor; 5] {
    let f = |v: &[f64]| Tensor::from_f64(v, [c.t], DType::F32, dev).unwrap();
    [Tensor::from_vec(c.targets.clone(), [c.t], dev).unwrap(), f(&c.old), f(&c.adv), f(&c.mask), f(&c.w)]
}

fn setup(seed: u64) -> (Tensor, Tensor, Case) {
    let (t, h, v) = (16, 6, 11);
    let dev = Device::Cpu;
    let x = Tensor::randn([t, h], 1.0, DType::F64, &dev, seed).unwrap();
    let lm = Tensor::randn([v, h], 0.7, DType::F64, &dev, seed + 1).unwrap();
    let c = case(t, v, &x, &lm);
    (x, lm, c)
}

#[test]
fn matches_verl_for_both_normalizers() {
    let (x, lm, c) = setup(1);
    let [tg, old, adv, mask, w] = tensors(&c, &Device::Cpu);
    let batch = DapoBatch { targets: &tg, old_logp: &old, advantages: &adv, mask: &mask, weights: &w };
    for (norm, z) in [
        (LossNormalizer::AllTokens, c.mask.iter().sum::<f64>()),
        (LossNormalizer::SelectedWeight, c.mask.iter().zip(&c.w).map(|(a, b)| a * b).sum()),
        (LossNormalizer::Fixed(40.0), 40.0),
    ] {
        let cfg = DapoLossConfig { normalizer: norm, want_entropy: true, ..Default::default() };
        let out = dapo_loss(&x, &lm, &batch, &cfg).unwrap();
        let logp = out.logp.to_vec_f64().unwrap();
        let (expect, clipfrac) = verl_loss(&c, &logp, z);
        let got = out.loss.to_scalar().unwrap();
        assert!((got - expect).abs() < 1e-6 * expect.abs().max(1.0), "{norm:?}: {got} vs {expect}");
        let m = out.metrics().unwrap();
        assert!((m.clip_frac - clipfrac).abs() < 1e-12, "{} vs {clipfrac}", m.clip_frac);
        assert_eq!(m.response_tokens, c.mask.iter().sum::<f64>());
        assert!(m.clip_frac > 0.0 && m.clip_frac_lower > 0.0, "the case must exercise both clips: {m:?}");
        // log-probs against a log-softmax built from the engine's ordinary ops
        let ls = x.linear(&lm).unwrap().log_softmax().unwrap().to_vec_f64().unwrap();
        let ref_logp: Vec<f64> = (0..c.t).map(|i| ls[i * c.v + c.targets[i] as usize]).collect();
        assert!(max_rel_err(&logp, &ref_logp) < 1e-12);
        // predictive entropy −Σ p ln p
        let ent = out.entropy.unwrap().to_vec_f64().unwrap();
        for i in 0..c.t {
            let h: f64 = -(0..c.v).map(|j| ls[i * c.v + j].exp() * ls[i * c.v + j]).sum::<f64>();
            assert!((ent[i] - h).abs() < 1e-10);
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let (x, lm, c) = setup(2);
    for norm in [LossNormalizer::AllTokens, LossNormalizer::SelectedWeight] {
        let f = |xs: &[Tensor]| {
            let [tg, old, adv, mask, w] = tensors(&c, xs[0].device());
            let batch = DapoBatch { targets: &tg, old_logp: &old, advantages: &adv, mask: &mask, weights: &w };
            let cfg = DapoLossConfig { normalizer: norm, ..Default::default() };
            Ok(dapo_loss(&xs[0], &xs[1], &batch, &cfg)?.loss)
        };
        let err = check_gradients(&f, &[x.clone(), lm.clone()], 1e-6, 3).unwrap();
        assert!(err < 1e-6, "{norm:?}: gradient error {err}");
    }
}

#[test]
fn temperature_scales_the_logits() {
    let (x, lm, c) = setup(3);
    let [tg, old, adv, mask, w] = tensors(&c, &Device::Cpu);
    let batch = DapoBatch { targets: &tg, old_logp: &old, advantages: &adv, mask: &mask, weights: &w };
    let cfg = DapoLossConfig { temperature: 0.7, ..Default::default() };
    let logp = dapo_loss(&x, &lm, &batch, &cfg).unwrap().logp.to_vec_f64().unwrap();
    let ls = x.linear(&lm).unwrap().scale(1.0 / 0.7).unwrap().log_softmax().unwrap().to_vec_f64().unwrap();
    for i in 0..c.t {
        assert!((logp[i] - ls[i * c.v + c.targets[i] as usize]).abs() < 1e-12);
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let (x, lm, c) = setup(4);
    let [tg, old, adv, mask, w] = tensors(&c, &Device::Cpu);
    let short = Tensor::zeros([3], DType::F32, &Device::Cpu).unwrap();
    let batch = DapoBatch { targets: &tg, old_logp: &short, advantages: &adv, mask: &mask, weights: &w };
    let e = dapo_loss(&x, &lm, &batch, &Default::default()).err().unwrap().to_string();
    assert!(e.contains("old_logp must be [16], got [3]"), "{e}");
    let batch = DapoBatch { targets: &old, old_logp: &old, advantages: &adv, mask: &mask, weights: &w };
    let e = dapo_loss(&x, &lm, &batch, &Default::default()).err().unwrap().to_string();
    assert!(e.contains("indices must be i32"), "{e}");
    let batch = DapoBatch { targets: &tg, old_logp: &old, advantages: &adv, mask: &mask, weights: &w };
    let lm_bad = Tensor::zeros([11, 5], DType::F64, &Device::Cpu).unwrap();
    let e = dapo_loss(&x, &lm_bad, &batch, &Default::default()).err().unwrap().to_string();
    assert!(e.contains("hidden [T, H] and lm_head [V, H]"), "{e}");
    let mut cfg = DapoLossConfig::default();
    cfg.clip.clip_ratio_c = 1.0;
    let e = dapo_loss(&x, &lm, &batch, &cfg).err().unwrap().to_string();
    assert!(e.contains("clip_ratio_c > 1"), "{e}");
    let bad_t = Tensor::from_vec(vec![99i32; 16], [16], &Device::Cpu).unwrap();
    let batch = DapoBatch { targets: &bad_t, old_logp: &old, advantages: &adv, mask: &mask, weights: &w };
    assert!(dapo_loss(&x, &lm, &batch, &Default::default()).is_err());
}

/// The gradient-signal magnitude against the gradient itself: with the identity as LM head (H = V) the
/// hidden states are the logits, so the recorded dX rows are the logit-gradient rows the loss applies, and
/// each must have norm c_t·grad_norm_t (c_t = mask·w / Z). Tokens with A = 0 have magnitude 0; a token
/// with weight 0 keeps its (unweighted) magnitude.
#[test]
fn grad_norm_is_the_logit_gradient_row_norm_before_the_token_factor() {
    let (t, v) = (16, 11);
    let dev = Device::Cpu;
    let x = Tensor::randn([t, v], 1.5, DType::F64, &dev, 5).unwrap().param();
    let eye: Vec<f64> = (0..v * v).map(|i| (i / v == i % v) as i32 as f64).collect();
    let lm = Tensor::from_f64(&eye, [v, v], DType::F64, &dev).unwrap();
    let c = case(t, v, &x, &lm);
    let [tg, old, adv, mask, w] = tensors(&c, &dev);
    let batch = DapoBatch { targets: &tg, old_logp: &old, advantages: &adv, mask: &mask, weights: &w };
    let cfg = DapoLossConfig { temperature: 0.8, want_grad_norm: true, ..Default::default() };
    let out = dapo_loss(&x, &lm, &batch, &cfg).unwrap();
    let gn = out.grad_norm.as_ref().expect("asked for").to_vec_f64().unwrap();
    out.loss.backward().unwrap();
    let dx = x.grad().expect("gradient").to_vec_f64().unwrap();
    let z: f64 = c.mask.iter().sum();
    let (mut weighted_nonzero, mut unweighted_nonzero) = (0, 0);
    for i in 0..t {
        let row = (0..v).map(|j| dx[i * v + j].powi(2)).sum::<f64>().sqrt();
        let ct = c.mask[i] * c.w[i] / z;
        assert!((row - ct * gn[i]).abs() < 1e-9 * (1.0 + row), "token {i}: ‖dZ‖ {row} vs c·grad_norm {}", ct * gn[i]);
        if c.adv[i] == 0.0 {
            assert_eq!(gn[i], 0.0, "token {i}: A = 0");
        }
        weighted_nonzero += (row > 0.0) as usize;
        unweighted_nonzero += (ct == 0.0 && gn[i] > 0.0) as usize;
    }
    assert!(weighted_nonzero >= 3 && unweighted_nonzero >= 1, "{weighted_nonzero} {unweighted_nonzero}");
    // not asked for: absent
    let cfg = DapoLossConfig { want_grad_norm: false, ..cfg };
    assert!(dapo_loss(&x, &lm, &batch, &cfg).unwrap().grad_norm.is_none());
}
