//! The DAPO loop's pieces: group advantages, dynamic sampling, token strategies.
use entrl_engine::{DType, Device, Packing, Tensor};
use entrl_rl::advantage::group_advantages;
use entrl_rl::dynamic_sampling::{informative_groups, DynamicSampler, Outcome, SamplerState};
use entrl_rl::strategy::{Strategy, TokenScores, POSITION_BINS};

#[test]
fn advantages_follow_verl() {
    // group 0: rewards 1, -1, -1, 1 -> mean 0, unbiased std sqrt(4/3)
    let a = group_advantages(&[1.0, -1.0, -1.0, 1.0, 0.5], &[0, 0, 0, 0, 7], true);
    let s = (4.0f64 / 3.0).sqrt();
    assert!((a[0] - 1.0 / (s + 1e-6)).abs() < 1e-12 && (a[1] + 1.0 / (s + 1e-6)).abs() < 1e-12);
    assert!((a[4] - 0.5 / (1.0 + 1e-6)).abs() < 1e-12, "a single-sample group has mean 0, std 1");
    let same = group_advantages(&[1.0, 1.0, 1.0], &[2, 2, 2], true);
    assert!(same.iter().all(|&x| x == 0.0));
    let dr = group_advantages(&[1.0, -1.0], &[0, 0], false);
    assert_eq!(dr, vec![1.0, -1.0]);
}

fn outcomes(spec: &[(usize, &[bool])]) -> Vec<Outcome> {
    spec.iter().flat_map(|(g, c)| c.iter().map(move |&correct| Outcome { group: *g, correct })).collect()
}

#[test]
fn dynamic_sampling_keeps_mixed_groups_refills_and_cuts() {
    let round1 = outcomes(&[(0, &[true, true]), (1, &[true, false]), (2, &[false, false]), (3, &[false, true])]);
    assert_eq!(informative_groups(&round1), vec![1, 3]);
    let mut s = DynamicSampler::new(3, 3);
    assert_eq!(s.add_round(&round1).unwrap(), SamplerState::NeedMore { kept: 2 });
    let round2 = outcomes(&[(4, &[true, false]), (5, &[false, true]), (6, &[true, true])]);
    assert_eq!(s.add_round(&round2).unwrap(), SamplerState::Full(vec![1, 3, 4]), "surplus group 5 is cut");
    let mut capped = DynamicSampler::new(5, 2);
    let dull = outcomes(&[(0, &[true, true])]);
    capped.add_round(&dull).unwrap();
    let e = capped.add_round(&dull).unwrap_err();
    assert!(matches!(e, entrl_rl::Error::ShortBatch { kept: 0, wanted: 5, rounds: 2 }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("only 0 of 5 informative prompt groups after 2 generation rounds"), "{e}");
}

#[test]
fn strategies_parse_with_clear_errors() {
    assert_eq!("anchors:0.2".parse::<Strategy>().unwrap(), Strategy::Anchors(0.2));
    assert_eq!("explorers:20%".parse::<Strategy>().unwrap(), Strategy::Explorers(0.2));
    assert_eq!("full".parse::<Strategy>().unwrap(), Strategy::Full);
    assert!(matches!("soft".parse::<Strategy>().unwrap(), Strategy::Soft(_)));
    assert!("anchors".parse::<Strategy>().unwrap_err().to_string().contains("needs a fraction"));
    assert!("anchors:1.5".parse::<Strategy>().unwrap_err().to_string().contains("outside (0, 1]"));
    assert!("middle:0.2".parse::<Strategy>().unwrap_err().to_string().contains("unknown token strategy"));
}

/// Two responses of 10 tokens each (one pool per response), 2 prompt tokens each invalid.
fn batch() -> (Tensor, Tensor, Tensor, Vec<usize>, Vec<usize>, Packing) {
    let dev = Device::Cpu;
    let n: usize = 24;
    let valid: Vec<f32> = (0..n).map(|i| if i % 12 < 2 { 0.0 } else { 1.0 }).collect();
    let attn: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 / 23.0).collect();
    let pred: Vec<f32> = (0..n).map(|i| ((i * 11) % 19) as f32).collect();
    let position: Vec<usize> = (0..n).map(|i| (i % 12).saturating_sub(2)).collect();
    let len = vec![10; n];
    let t = |v: Vec<f32>| Tensor::from_vec(v, [n], &dev).unwrap();
    (t(valid), t(attn), t(pred), position, len, Packing::from_lengths(&[12, 12]).unwrap())
}

#[test]
fn each_strategy_selects_what_it_claims() {
    let (valid, attn, pred, position, len, pools) = batch();
    let s = TokenScores {
        valid: &valid,
        attn_entropy: Some(&attn),
        pred_entropy: Some(&pred),
        position: &position,
        response_len: &len,
    };
    let (v, a, p) = (valid.to_vec_f64().unwrap(), attn.to_vec_f64().unwrap(), pred.to_vec_f64().unwrap());
    let w = |st: Strategy| st.weights(&s, &pools, 0, 42).unwrap().to_vec_f64().unwrap();
    assert_eq!(w(Strategy::Full), v);
    for (st, score, low) in [
        (Strategy::Anchors(0.2), &a, true),
        (Strategy::Explorers(0.2), &a, false),
        (Strategy::PredBottom(0.3), &p, true),
        (Strategy::PredTop(0.3), &p, false),
    ] {
        let m = w(st);
        for pool in 0..2 {
            let idx: Vec<usize> = (pool * 12..pool * 12 + 12).filter(|&i| v[i] != 0.0).collect();
            let k = if matches!(st, Strategy::Anchors(_) | Strategy::Explorers(_)) { 2 } else { 3 };
            let chosen: Vec<usize> = idx.iter().copied().filter(|&i| m[i] == 1.0).collect();
            assert_eq!(chosen.len(), k, "{st:?} pool {pool}");
            let rest: Vec<usize> = idx.iter().copied().filter(|&i| m[i] == 0.0).collect();
            for &c in &chosen {
                for &r in &rest {
                    assert!(if low { score[c] <= score[r] } else { score[c] >= score[r] }, "{st:?}: {c} vs {r}");
                }
            }
        }
        assert!((0..24).all(|i| v[i] != 0.0 || m[i] == 0.0), "{st:?} selected a prompt token");
    }
    let r = w(Strategy::Random(0.5));
    assert_eq!(r.iter().filter(|&&x| x == 1.0).count(), 10);
    let soft = w("soft".parse().unwrap());
    assert!((0..24).all(|i| if v[i] == 0.0 { soft[i] == 0.0 } else { soft[i] > 0.0 && soft[i] <= 1.0 }));
}

#[test]
fn position_matched_control_matches_the_anchor_position_histogram() {
    let (valid, attn, _, position, len, pools) = batch();
    let s = TokenScores {
        valid: &valid,
        attn_entropy: Some(&attn),
        pred_entropy: None,
        position: &position,
        response_len: &len,
    };
    let anchors = Strategy::Anchors(0.4).weights(&s, &pools, 0, 1).unwrap().to_vec_f64().unwrap();
    let control = Strategy::PositionRandom(0.4).weights(&s, &pools, 0, 1).unwrap().to_vec_f64().unwrap();
    let hist = |m: &[f64]| {
        let mut h = vec![0; 2 * POSITION_BINS];
        for i in 0..24 {
            if m[i] != 0.0 {
                h[(i / 12) * POSITION_BINS + (position[i] * POSITION_BINS / len[i]).min(POSITION_BINS - 1)] += 1;
            }
        }
        h
    };
    assert_eq!(hist(&anchors), hist(&control));
    let e = Strategy::PredTop(0.2)
        .weights(&TokenScores { pred_entropy: None, ..s }, &pools, 0, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs the predictive-entropy scores"), "{e}");
    let _ = DType::F32;
}

#[test]
fn evaluation_bounds_its_requests_and_refuses_non_finite_logits() {
    use entrl_qwen3::{Qwen3, SamplingParams};
    use entrl_rl::eval::evaluate;
    use entrl_rl::rollout::{encode_prompts, rollout, EncodedPrompt, RolloutSpec};
    use entrl_rl::task::{builtin_model_config, builtin_prompts, builtin_tokenizer};
    let tok = builtin_tokenizer();
    let model = Qwen3::random(builtin_model_config(tok.vocab_size()), DType::F32, &Device::Cpu, 5).unwrap();
    let prompts =
        encode_prompts(&builtin_prompts(9)[..4], &tok, 64, entrl_rl::config::LongPrompts::Drop).unwrap().prompts;
    let params = SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0 };
    let verifier = entrl_rl::reward::verifier_for;
    let eval = |m: &Qwen3, k: usize| evaluate(m, &tok, &prompts, 0, k, params, 3, Default::default(), &verifier, 0);
    // a billion samples per prompt aborted building the requests
    for k in [0, 1025, 1_000_000_000] {
        let e = eval(&model, k).unwrap_err().to_string();
        assert!(e.contains("mean@k takes 1 to 1024 samples per prompt"), "{e}");
    }
    assert_eq!(eval(&model, 2).unwrap().per_source.values().map(|v| v.1).sum::<usize>(), 8);
    // a rollout of more than 2^24 requests is refused before any is built
    let refs: Vec<&EncodedPrompt> = prompts.iter().collect();
    let spec = RolloutSpec {
        n: 1 << 23,
        params,
        max_response_len: 3,
        generate: Default::default(),
        overlong: None,
        verifier: &verifier,
    };
    let e = rollout(&model, &tok, &refs, 0, &spec, 0, || {}).unwrap_err().to_string();
    assert!(e.contains("4 prompts × 8388608 responses each are more than 16777216 requests"), "{e}");
    // NaN weights: an error, not a mean@k over garbage tokens
    let mut w = model.embed.to_vec_f32().unwrap();
    w[5] = f32::NAN;
    model.embed.copy_from(&Tensor::from_vec(w, model.embed.dims().to_vec(), &Device::Cpu).unwrap()).unwrap();
    let e = eval(&model, 2).unwrap_err().to_string();
    assert!(e.contains("are not finite") && e.contains("NaN or Inf"), "{e}");
}
