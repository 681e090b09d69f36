//! Autograd semantics: accumulation, no_grad, checkpointing, optimizer and clipping, on the CPU.
mod common;

use common::{causal_mask, positions, Block};
use entrl_engine::check::gradcheck::cpu_gradient_checks;
use entrl_engine::check::{format_table, max_rel_err};
use entrl_engine::optim::{clip_grad_norm, global_grad_norm, AdamW, AdamWConfig};
use entrl_engine::{no_grad, DType, Device, Tensor};
use std::sync::Arc;

#[test]
fn every_op_passes_finite_difference_gradient_check() {
    let rows = cpu_gradient_checks(12345);
    assert!(rows.len() >= 20, "expected a row per op case, got {}", rows.len());
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).cloned().collect();
    assert!(failed.is_empty(), "gradient checks failed:\n{}", format_table(&failed));
}

#[test]
fn gradients_accumulate_across_backward_calls() {
    let dev = Device::Cpu;
    let w = Tensor::randn([3, 4], 1.0, DType::F32, &dev, 1).unwrap().param();
    let x = Tensor::randn([2, 4], 1.0, DType::F32, &dev, 2).unwrap();
    x.linear(&w).unwrap().sum().unwrap().backward().unwrap();
    let g1 = w.grad().unwrap().to_vec_f64().unwrap();
    x.linear(&w).unwrap().sum().unwrap().backward().unwrap();
    let g2 = w.grad().unwrap().to_vec_f64().unwrap();
    assert!(g1.iter().zip(&g2).all(|(a, b)| (2.0 * a - b).abs() < 1e-5));
    w.zero_grad();
    assert!(w.grad().is_none());
}

#[test]
fn no_grad_records_nothing() {
    let dev = Device::Cpu;
    let w = Tensor::randn([3, 4], 1.0, DType::F32, &dev, 1).unwrap().param();
    let y = {
        let _g = no_grad();
        w.scale(2.0).unwrap()
    };
    assert!(!y.requires_grad());
    let err = y.sum().unwrap().backward().unwrap_err().to_string();
    assert!(err.contains("does not require grad"), "{err}");
    assert!(w.scale(2.0).unwrap().requires_grad(), "grad mode must be restored after the guard drops");
}

#[test]
fn checkpointed_block_matches_plain_block_exactly() {
    let dev = Device::Cpu;
    let (s, d) = (9, 16);
    let block = Arc::new(Block::new(d, 2, 24, 3, DType::F64, &dev).unwrap());
    let x = Tensor::randn([s, d], 1.0, DType::F64, &dev, 5).unwrap().param();
    let (pos, mask) = (positions(s, &dev).unwrap(), causal_mask(s, DType::F64, &dev).unwrap());
    let seed = Tensor::randn([s, d], 1.0, DType::F64, &dev, 6).unwrap();

    block.forward(&x, &pos, &mask).unwrap().backward_with(seed.clone()).unwrap();
    let plain: Vec<Vec<f64>> = block.params().iter().map(|p| p.grad().unwrap().to_vec_f64().unwrap()).collect();
    let plain_x = x.grad().unwrap().to_vec_f64().unwrap();
    block.params().iter().for_each(|p| p.zero_grad());
    x.zero_grad();

    let y = block.forward_checkpointed(&x, &pos, &mask).unwrap();
    assert!(y.requires_grad());
    y.backward_with(seed).unwrap();
    for (p, g) in block.params().iter().zip(&plain) {
        assert!(max_rel_err(&p.grad().unwrap().to_vec_f64().unwrap(), g) < 1e-12);
    }
    assert!(max_rel_err(&x.grad().unwrap().to_vec_f64().unwrap(), &plain_x) < 1e-12);
}

#[test]
fn adamw_matches_torch_formula() {
    // One step by hand: p=1, g=0.5, lr=0.1, wd=0.1, bc1=0.1, bc2=0.001.
    let dev = Device::Cpu;
    let p = Tensor::from_vec(vec![1.0f64], [1], &dev).unwrap().param();
    p.set_grad(Some(Tensor::from_vec(vec![0.5f64], [1], &dev).unwrap())).unwrap();
    let cfg = AdamWConfig { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    AdamW::new(std::slice::from_ref(&p), cfg).unwrap().step(0.1, None).unwrap();
    let p1 = 1.0 - 0.1 * 0.1 * 1.0;
    let (m, v): (f64, f64) = (0.1 * 0.5, 0.001 * 0.25);
    let expect = p1 - (0.1 / 0.1) * m / (v.sqrt() / 0.001f64.sqrt() + 1e-8);
    assert!((p.to_scalar().unwrap() - expect).abs() < 1e-12, "{} vs {expect}", p.to_scalar().unwrap());
}

#[test]
fn adamw_keeps_an_f32_master_for_bf16_params() {
    let dev = Device::Cpu;
    let p = Tensor::from_vec(vec![entrl_engine::bf16::from_f32(1.0); 4], [4], &dev).unwrap().param();
    let mut opt =
        AdamW::new(std::slice::from_ref(&p), AdamWConfig { lr: 1e-4, weight_decay: 0.0, ..Default::default() })
            .unwrap();
    // 1e-4 steps are below bf16 resolution at 1.0 (2^-7): only an f32 master accumulates them.
    for _ in 0..200 {
        p.set_grad(Some(Tensor::ones([4], DType::F32, &dev).unwrap())).unwrap();
        opt.step(1e-4, None).unwrap();
    }
    let v = p.to_vec_f64().unwrap()[0];
    assert!(v < 0.985 && v > 0.975, "bf16 working copy should track the master (~0.98), got {v}");
}

#[test]
fn clipping_scales_to_max_norm() {
    let dev = Device::Cpu;
    let a = Tensor::zeros([2], DType::F32, &dev).unwrap().param();
    let b = Tensor::zeros([1], DType::F32, &dev).unwrap().param();
    a.set_grad(Some(Tensor::from_vec(vec![3.0f32, 0.0], [2], &dev).unwrap())).unwrap();
    b.set_grad(Some(Tensor::from_vec(vec![4.0f32], [1], &dev).unwrap())).unwrap();
    let params = [a.clone(), b.clone()];
    assert!((global_grad_norm(&params).unwrap() - 5.0).abs() < 1e-6);
    let pre = clip_grad_norm(&params, 1.0).unwrap();
    assert!((pre - 5.0).abs() < 1e-6);
    assert!((global_grad_norm(&params).unwrap() - 1.0).abs() < 1e-5);
    assert!((a.grad().unwrap().to_vec_f64().unwrap()[0] - 0.6).abs() < 1e-5);
}

#[test]
fn reshape_shares_storage_and_routes_gradients() {
    let dev = Device::Cpu;
    let x = Tensor::randn([2, 6], 1.0, DType::F64, &dev, 1).unwrap().param();
    let y = x.reshape([3, 4]).unwrap();
    assert!(y.shares_storage(&x));
    y.mul(&y).unwrap().sum().unwrap().backward().unwrap();
    let (g, xv) = (x.grad().unwrap().to_vec_f64().unwrap(), x.to_vec_f64().unwrap());
    assert!(g.iter().zip(&xv).all(|(g, x)| (g - 2.0 * x).abs() < 1e-12));
}

/// The harness `entrl selftest` runs on the GPU, run on the CPU's f32 and bf16 paths against f64:
/// checks the harness itself and the bf16 tolerances before any GPU sees them.
#[test]
fn cpu_f32_and_bf16_paths_match_the_f64_reference() {
    let rows = entrl_engine::check::gpu::backend_checks(&Device::Cpu, 99);
    assert!(rows.len() > 100, "{} rows", rows.len());
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).cloned().collect();
    assert!(failed.is_empty(), "{}", format_table(&failed));
}

/// split_last's backward by central differences in f64: the gradient of the input is the parts' gradients
/// side by side, zero in the columns of a part the loss does not use.
#[test]
fn split_last_gradient_matches_finite_differences() {
    let dev = Device::Cpu;
    let (rows, sizes) = (3, [2usize, 4, 1]);
    let cols: usize = sizes.iter().sum();
    let x0: Vec<f64> = (0..rows * cols).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
    let c0: Vec<f64> = (0..rows * sizes[0]).map(|i| 0.5 + i as f64).collect();
    let c2: Vec<f64> = (0..rows * sizes[2]).map(|i| 1.5 - i as f64).collect();
    let loss = |x: &Tensor| -> Tensor {
        let p = x.split_last(&sizes).unwrap();
        assert_eq!(
            p.iter().map(|t| t.dims().to_vec()).collect::<Vec<_>>(),
            vec![vec![rows, 2], vec![rows, 4], vec![rows, 1]]
        );
        let a = Tensor::from_f64(&c0, [rows, sizes[0]], DType::F64, &dev).unwrap();
        let b = Tensor::from_f64(&c2, [rows, sizes[2]], DType::F64, &dev).unwrap();
        // part 1 is not used: its columns get a zero gradient
        let l0 = p[0].mul(&p[0]).unwrap().mul(&a).unwrap().sum().unwrap();
        l0.add(&p[2].mul(&b).unwrap().sum().unwrap()).unwrap()
    };
    let x = Tensor::from_f64(&x0, [rows, cols], DType::F64, &dev).unwrap().param();
    loss(&x).backward().unwrap();
    let analytic = x.grad().unwrap().to_vec_f64().unwrap();
    let eps = 1e-6;
    let _ng = no_grad();
    for i in 0..x0.len() {
        let at = |d: f64| {
            let mut v = x0.clone();
            v[i] += d;
            loss(&Tensor::from_f64(&v, [rows, cols], DType::F64, &dev).unwrap()).to_vec_f64().unwrap()[0]
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!((numeric - analytic[i]).abs() < 1e-6, "element {i}: analytic {} numeric {numeric}", analytic[i]);
        let col = i % cols;
        if (2..6).contains(&col) {
            assert_eq!(analytic[i], 0.0, "an unused part's columns get zeros");
        }
    }
    // parts that do not add up to the last dimension are an error, not a panic
    for bad in [&[2usize, 4][..], &[3, 4, 1], &[]] {
        let e = x.split_last(bad).unwrap_err().to_string();
        assert!(e.contains("split_last"), "{e}");
    }
}
