//! Soft token weights: direction, temperature, floor, validity, pools and the step schedule.
use entrl_engine::ops::{soft_weights, SoftWeightSchedule};
use entrl_engine::{DType, Device, Packing, Tensor};

fn weights(s: &[f32], valid: &[f32], pools: &[usize], sched: &SoftWeightSchedule, step: u64) -> Vec<f64> {
    let dev = Device::Cpu;
    let n = s.len();
    let st = Tensor::from_vec(s.to_vec(), [n], &dev).unwrap();
    let vt = Tensor::from_vec(valid.to_vec(), [n], &dev).unwrap();
    soft_weights(&st, &vt, &Packing::from_lengths(pools).unwrap(), sched, step).unwrap().to_vec_f64().unwrap()
}

#[test]
fn direction_orders_the_weights_and_invalid_tokens_get_zero() {
    let s = [0.1f32, 0.9, 0.5, 0.3, 0.7, 0.2];
    let valid = [1.0f32, 1.0, 1.0, 0.0, 1.0, 1.0];
    let explorers = SoftWeightSchedule { direction_start: 2.0, direction_end: 2.0, floor: 0.0, ..Default::default() };
    let w = weights(&s, &valid, &[6], &explorers, 0);
    assert_eq!(w[3], 0.0);
    assert!(w[1] > w[4] && w[4] > w[2] && w[2] > w[5] && w[5] > w[0], "{w:?}");
    let anchors = SoftWeightSchedule { direction_start: -2.0, direction_end: -2.0, ..explorers };
    let a = weights(&s, &valid, &[6], &anchors, 0);
    assert!(a[0] > a[5] && a[5] > a[2] && a[2] > a[4] && a[4] > a[1], "{a:?}");
    // symmetric: σ(z) + σ(−z) = 1
    for i in [0, 1, 2, 4, 5] {
        assert!((w[i] + a[i] - 1.0).abs() < 1e-6);
    }
}

#[test]
fn zero_direction_is_uniform_and_floor_bounds_below() {
    let s = [3.0f32, -1.0, 0.5, 8.0];
    let flat = SoftWeightSchedule { direction_start: 0.0, direction_end: 0.0, floor: 0.2, ..Default::default() };
    let w = weights(&s, &[1.0; 4], &[4], &flat, 0);
    assert!(w.iter().all(|&x| (x - 0.6).abs() < 1e-6), "{w:?}");
    let sharp = SoftWeightSchedule {
        direction_start: 1.0,
        direction_end: 1.0,
        temperature: 0.01,
        floor: 0.2,
        ..Default::default()
    };
    let w = weights(&s, &[1.0; 4], &[4], &sharp, 0);
    assert!(w.iter().all(|&x| (0.2 - 1e-6..=1.0 + 1e-6).contains(&x)));
    assert!((w[1] - 0.2).abs() < 1e-3 && (w[3] - 1.0).abs() < 1e-3, "τ → 0 approaches a hard split: {w:?}");
}

#[test]
fn pools_standardise_separately() {
    // The same relative pattern at different offsets gives the same weights in each pool.
    let s = [0.0f32, 1.0, 2.0, 100.0, 101.0, 102.0];
    let sched = SoftWeightSchedule { direction_start: 1.0, direction_end: 1.0, ..Default::default() };
    let w = weights(&s, &[1.0; 6], &[3, 0, 3], &sched, 0);
    for i in 0..3 {
        assert!((w[i] - w[i + 3]).abs() < 1e-6, "{w:?}");
    }
}

#[test]
fn direction_ramps_over_steps() {
    let sched = SoftWeightSchedule { direction_start: -1.0, direction_end: 1.0, ramp_steps: 100, ..Default::default() };
    assert_eq!(sched.direction(0), -1.0);
    assert_eq!(sched.direction(50), 0.0);
    assert_eq!(sched.direction(100), 1.0);
    assert_eq!(sched.direction(1000), 1.0);
}

#[test]
fn bad_schedule_and_shapes_are_errors() {
    let dev = Device::Cpu;
    let s = Tensor::zeros([4], DType::F32, &dev).unwrap();
    let p = Packing::from_lengths(&[4]).unwrap();
    let bad = SoftWeightSchedule { temperature: 0.0, ..Default::default() };
    assert!(soft_weights(&s, &s, &p, &bad, 0).err().unwrap().to_string().contains("temperature > 0"));
    let p5 = Packing::from_lengths(&[5]).unwrap();
    let e = soft_weights(&s, &s, &p5, &Default::default(), 0).err().unwrap().to_string();
    assert!(e.contains("scores must be f32 [5]"), "{e}");
}
