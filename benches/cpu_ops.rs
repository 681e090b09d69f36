//! Criterion benches of the CPU reference backend, so regressions on CPU show too.
use criterion::{criterion_group, criterion_main, Criterion};
use entrl_engine::{DType, Device, Tensor};
use std::hint::black_box;

fn ops(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x = Tensor::randn([256, 512], 1.0, DType::F32, &dev, 1).unwrap();
    let w = Tensor::randn([512, 512], 0.05, DType::F32, &dev, 2).unwrap();
    let g = Tensor::ones([512], DType::F32, &dev).unwrap();
    let pos = Tensor::from_vec((0..256).collect::<Vec<i32>>(), [256], &dev).unwrap();
    c.bench_function("matmul 256x512x512 f32", |b| b.iter(|| black_box(x.linear(&w).unwrap())));
    c.bench_function("rms_norm 256x512 f32", |b| b.iter(|| black_box(x.rms_norm(&g, 1e-6).unwrap())));
    c.bench_function("softmax 256x512 f32", |b| b.iter(|| black_box(x.softmax().unwrap())));
    let xh = x.reshape([256, 4, 128]).unwrap();
    c.bench_function("rope 256x4x128 f32", |b| b.iter(|| black_box(xh.rope(&pos, 1e6).unwrap())));
    let wp = w.param();
    c.bench_function("linear+softmax fwd+bwd 256x512x512", |b| {
        b.iter(|| {
            x.linear(&wp).unwrap().softmax().unwrap().sum().unwrap().backward().unwrap();
            wp.zero_grad();
        })
    });
}

/// The CPU reference attention (materialising, f64 accumulation): fwd with entropy and fwd+bwd.
fn attention(c: &mut Criterion) {
    use entrl_engine::ops::{attention, RowStats};
    use entrl_engine::Packing;
    let dev = Device::Cpu;
    let packing = Packing::from_lengths(&[96, 33, 1]).unwrap();
    let t = packing.total();
    let q = Tensor::randn([t, 4, 32], 1.0, DType::F32, &dev, 1).unwrap().param();
    let k = Tensor::randn([t, 2, 32], 1.0, DType::F32, &dev, 2).unwrap().param();
    let v = Tensor::randn([t, 2, 32], 1.0, DType::F32, &dev, 3).unwrap().param();
    c.bench_function("attention fwd+entropy 130 tok 4/2 heads d32", |b| {
        b.iter(|| black_box(attention(&q, &k, &v, &packing, RowStats::ENTROPY).unwrap()))
    });
    c.bench_function("attention fwd+bwd 130 tok 4/2 heads d32", |b| {
        b.iter(|| {
            attention(&q, &k, &v, &packing, RowStats::NONE).unwrap().out.sum().unwrap().backward().unwrap();
            [&q, &k, &v].iter().for_each(|p| p.zero_grad());
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500));
    targets = ops, attention
}
criterion_main!(benches);
