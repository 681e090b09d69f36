//! Small models shared by the integration tests.
#![allow(dead_code)]
use entrl_engine::{checkpoint, DType, Device, Result, Tensor};

pub mod generation;
pub mod runs;

/// Parameters of one pre-norm transformer block (attention with RoPE and a causal mask, SwiGLU MLP).
pub struct Block {
    pub norm1: Tensor,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub norm2: Tensor,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
    pub heads: usize,
}

impl Block {
    pub fn new(d: usize, heads: usize, ffn: usize, seed: u64, dtype: DType, dev: &Device) -> Result<Self> {
        let w = |o: usize, i: usize, s: u64| -> Result<Tensor> {
            Ok(Tensor::randn([o, i], 1.0 / (i as f64).sqrt(), dtype, dev, seed * 100 + s)?.param())
        };
        Ok(Self {
            norm1: Tensor::ones([d], dtype, dev)?.param(),
            wq: w(d, d, 1)?,
            wk: w(d, d, 2)?,
            wv: w(d, d, 3)?,
            wo: w(d, d, 4)?,
            norm2: Tensor::ones([d], dtype, dev)?.param(),
            w_gate: w(ffn, d, 5)?,
            w_up: w(ffn, d, 6)?,
            w_down: w(d, ffn, 7)?,
            heads,
        })
    }

    pub fn params(&self) -> Vec<Tensor> {
        [&self.norm1, &self.wq, &self.wk, &self.wv, &self.wo, &self.norm2, &self.w_gate, &self.w_up, &self.w_down]
            .into_iter()
            .cloned()
            .collect()
    }

    /// x [S, D] -> [S, D]; `pos` i32 [S]; `mask` [S, S] (0 or -1e9).
    pub fn forward(&self, x: &Tensor, pos: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (s, d) = (x.dims()[0], x.dims()[1]);
        let (h, hd) = (self.heads, d / self.heads);
        let n = x.rms_norm(&self.norm1, 1e-6)?;
        let split = |t: Tensor| -> Result<Tensor> { t.reshape([s, h, hd])?.rope(pos, 10_000.0) };
        let q = split(n.linear(&self.wq)?)?.permute(&[1, 0, 2])?;
        let k = split(n.linear(&self.wk)?)?.permute(&[1, 0, 2])?;
        let v = n.linear(&self.wv)?.reshape([s, h, hd])?.permute(&[1, 0, 2])?;
        let scores = q
            .matmul_ex(&k, entrl_engine::MatmulSpec { trans_a: false, trans_b: true })?
            .scale(1.0 / (hd as f64).sqrt())?
            .add(mask)?;
        let att = scores.softmax()?.matmul(&v)?.permute(&[1, 0, 2])?.reshape([s, d])?;
        let x = x.add(&att.linear(&self.wo)?)?;
        let n2 = x.rms_norm(&self.norm2, 1e-6)?;
        let mlp = n2.linear(&self.w_gate)?.swiglu(&n2.linear(&self.w_up)?)?.linear(&self.w_down)?;
        x.add(&mlp)
    }

    /// The same block with its activations recomputed in backward.
    pub fn forward_checkpointed(
        self: &std::sync::Arc<Self>,
        x: &Tensor,
        pos: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let me = self.clone();
        let (pos, mask) = (pos.clone(), mask.clone());
        checkpoint(std::slice::from_ref(x), move |xs| me.forward(&xs[0], &pos, &mask))
    }
}

pub fn causal_mask(s: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let v: Vec<f64> = (0..s * s).map(|i| if i % s > i / s { -1e9 } else { 0.0 }).collect();
    Tensor::from_f64(&v, [s, s], dtype, dev)
}

pub fn positions(s: usize, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec((0..s as i32).collect::<Vec<_>>(), [s], dev)
}
