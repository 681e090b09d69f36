//! bf16 gradient storage ([`crate::GradStorage::Bf16`]) through the optimizer and clipping: bf16 gradients
//! holding the same values as f32 ones give the same norm, the same clipped values (up to bf16 rounding of
//! the scaled result) and the same AdamW update; non-finite ones are still detected.
use super::{clip_grad_norm, global_grad_norm, AdamW, AdamWConfig};
use crate::{bf16, DType, Device, GradStorage, Tensor};

const CFG: AdamWConfig = AdamWConfig { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };

/// Two bf16 parameters and gradient values exact in bf16.
fn setup(storage: GradStorage) -> Vec<Tensor> {
    let dev = Device::Cpu;
    let a = Tensor::from_f64(&[1.0, -0.5, 0.25, 2.0], [2, 2], DType::BF16, &dev).unwrap().param();
    let b = Tensor::from_f64(&[0.75, -1.25], [2], DType::BF16, &dev).unwrap().param();
    let grads = [vec![3.0, -0.5, 0.125, 1.5], vec![-2.0, 0.0625]];
    for (p, g) in [&a, &b].into_iter().zip(grads) {
        p.set_grad_storage(storage).unwrap();
        let gd = p.grad_dtype().unwrap();
        p.set_grad(Some(Tensor::from_f64(&g, p.shape().clone(), gd, &dev).unwrap())).unwrap();
    }
    vec![a, b]
}

#[test]
fn bf16_gradients_update_like_f32_ones() {
    let (f, h) = (setup(GradStorage::F32), setup(GradStorage::Bf16));
    assert_eq!(h[0].grad().unwrap().dtype(), DType::BF16);
    assert_eq!(global_grad_norm(&f).unwrap(), global_grad_norm(&h).unwrap());
    let (nf, nh) = (clip_grad_norm(&f, 1.0).unwrap(), clip_grad_norm(&h, 1.0).unwrap());
    assert_eq!(nf, nh);
    for (pf, ph) in f.iter().zip(&h) {
        let (gf, gh) = (pf.grad().unwrap().to_vec_f32().unwrap(), ph.grad().unwrap().to_vec_f32().unwrap());
        assert_eq!(ph.grad().unwrap().dtype(), DType::BF16, "clipping keeps the storage");
        for (x, y) in gf.iter().zip(&gh) {
            assert_eq!(bf16::from_f32(*x).to_f32(), *y, "the clipped bf16 gradient is the f32 one rounded");
        }
    }
    // Same gradient values in both storages: the same update.
    let (f, h) = (setup(GradStorage::F32), setup(GradStorage::Bf16));
    AdamW::new(&f, CFG).unwrap().step(CFG.lr, None).unwrap();
    AdamW::new(&h, CFG).unwrap().step(CFG.lr, None).unwrap();
    for (pf, ph) in f.iter().zip(&h) {
        assert_eq!(pf.to_vec_f64().unwrap(), ph.to_vec_f64().unwrap());
    }
    // And through a grad_scale (the sharded optimizer's clip coefficient).
    let (f, h) = (setup(GradStorage::F32), setup(GradStorage::Bf16));
    let s = Tensor::scalar(0.5, DType::F32, &Device::Cpu).unwrap();
    AdamW::new(&f, CFG).unwrap().step(CFG.lr, Some(&s)).unwrap();
    AdamW::new(&h, CFG).unwrap().step(CFG.lr, Some(&s)).unwrap();
    for (pf, ph) in f.iter().zip(&h) {
        assert_eq!(pf.to_vec_f64().unwrap(), ph.to_vec_f64().unwrap());
    }
}

#[test]
fn a_non_finite_bf16_gradient_gives_a_non_finite_norm() {
    for bad in [f64::NAN, f64::INFINITY] {
        let h = setup(GradStorage::Bf16);
        let g = Tensor::from_f64(&[1.0, bad], [2], DType::BF16, &Device::Cpu).unwrap();
        h[1].set_grad(Some(g)).unwrap();
        let before = h[0].grad().unwrap().to_vec_f64().unwrap();
        let norm = clip_grad_norm(&h, 1.0).unwrap();
        assert!(!norm.is_finite(), "{bad}: {norm}");
        assert_eq!(h[0].grad().unwrap().to_vec_f64().unwrap(), before, "left unchanged for the caller to skip");
    }
    // A sum that overflows bf16 (as f32 would) is infinite, not wrapped.
    let x = Tensor::from_f64(&[0.0], [1], DType::BF16, &Device::Cpu).unwrap().param();
    x.set_grad_storage(GradStorage::Bf16).unwrap();
    let big = Tensor::from_f64(&[3.0e38], [1], DType::F32, &Device::Cpu).unwrap();
    x.backward_with(big.to_dtype(DType::BF16).unwrap()).unwrap();
    x.backward_with(big.to_dtype(DType::BF16).unwrap()).unwrap();
    assert!(!global_grad_norm(&[x]).unwrap().is_finite());
}
