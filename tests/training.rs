//! End-to-end CPU training: an MLP and a 2-layer transformer learn, with falling loss.
mod common;

use common::{causal_mask, positions, Block};
use entrl_engine::optim::{clip_grad_norm, AdamW, AdamWConfig};
use entrl_engine::{DType, Device, Tensor};
use std::sync::Arc;

#[test]
fn mlp_learns_a_classification_task() {
    let dev = Device::Cpu;
    // Two Gaussian blobs per class in 8-D; labels from the sign pattern of two coordinates.
    let n = 256;
    let x = Tensor::randn([n, 8], 1.0, DType::F32, &dev, 7).unwrap();
    let xv = x.to_vec_f64().unwrap();
    let labels: Vec<i32> = (0..n).map(|i| ((xv[i * 8] > 0.0) as i32) * 2 + (xv[i * 8 + 1] > 0.0) as i32).collect();
    let y = Tensor::from_vec(labels, [n], &dev).unwrap();
    let w1 = Tensor::randn([32, 8], 0.35, DType::F32, &dev, 1).unwrap().param();
    let w2 = Tensor::randn([32, 8], 0.35, DType::F32, &dev, 2).unwrap().param();
    let w3 = Tensor::randn([4, 32], 0.18, DType::F32, &dev, 3).unwrap().param();
    let params = vec![w1.clone(), w2.clone(), w3.clone()];
    let mut opt = AdamW::new(&params, AdamWConfig { lr: 3e-2, weight_decay: 0.0, ..Default::default() }).unwrap();
    let mut losses = Vec::new();
    for _ in 0..150 {
        let h = x.linear(&w1).unwrap().swiglu(&x.linear(&w2).unwrap()).unwrap();
        let loss = h.linear(&w3).unwrap().cross_entropy(&y).unwrap();
        losses.push(loss.to_scalar().unwrap());
        loss.backward().unwrap();
        clip_grad_norm(&params, 1.0).unwrap();
        opt.step(3e-2, None).unwrap();
        params.iter().for_each(|p| p.zero_grad());
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(first > 1.2, "initial loss should be near ln 4, got {first}");
    assert!(last < 0.25 * first, "loss did not fall enough: {first} -> {last}");
}

/// A 2-layer transformer (embedding, two blocks, LM head) learns to predict a repeating sequence.
#[test]
fn two_layer_transformer_learns_next_token() {
    let dev = Device::Cpu;
    let (vocab, d, s) = (16usize, 32usize, 24usize);
    let tokens: Vec<i32> = (0..=s as i32).map(|i| (i * 5 + 3) % vocab as i32).collect();
    let inp = Tensor::from_vec(tokens[..s].to_vec(), [s], &dev).unwrap();
    let tgt = Tensor::from_vec(tokens[1..].to_vec(), [s], &dev).unwrap();
    let emb = Tensor::randn([vocab, d], 0.5, DType::F32, &dev, 11).unwrap().param();
    let head = Tensor::randn([vocab, d], 0.1, DType::F32, &dev, 12).unwrap().param();
    let blocks: Vec<Arc<Block>> =
        (0..2).map(|i| Arc::new(Block::new(d, 4, 64, 20 + i, DType::F32, &dev).unwrap())).collect();
    let mut params = vec![emb.clone(), head.clone()];
    blocks.iter().for_each(|b| params.extend(b.params()));
    let (pos, mask) = (positions(s, &dev).unwrap(), causal_mask(s, DType::F32, &dev).unwrap());
    let mut opt = AdamW::new(&params, AdamWConfig { lr: 1e-2, weight_decay: 0.01, ..Default::default() }).unwrap();
    let mut losses = Vec::new();
    for step in 0..60 {
        let mut h = emb.embedding(&inp).unwrap();
        for b in &blocks {
            // Alternate plain and checkpointed layers: both paths must train.
            h = if step % 2 == 0 {
                b.forward(&h, &pos, &mask).unwrap()
            } else {
                b.forward_checkpointed(&h, &pos, &mask).unwrap()
            };
        }
        let loss = h.linear(&head).unwrap().cross_entropy(&tgt).unwrap();
        losses.push(loss.to_scalar().unwrap());
        loss.backward().unwrap();
        clip_grad_norm(&params, 1.0).unwrap();
        opt.step(1e-2, None).unwrap();
        params.iter().for_each(|p| p.zero_grad());
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.1 * first, "transformer loss did not fall: {first} -> {last} ({losses:?})");
}
