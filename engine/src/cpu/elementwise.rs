//! Elementwise reference kernels: scale, broadcast binary ops, strided copy (permute), SwiGLU.
use super::storage::FloatKernel;
use super::Real;
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
        }
    }
    pub fn apply<T: Real>(self, a: T, b: T) -> T {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
        }
    }
}

/// Offset into a strided input of the row-major linear index `i` of an array with `dims`.
pub fn strided_offset(mut i: usize, dims: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for d in (0..dims.len()).rev() {
        off += (i % dims[d]) * strides[d];
        i /= dims[d];
    }
    off
}

/// out = a ∘ b with numpy broadcasting: `out_dims` is the broadcast shape, strides are 0 on stretched dims.
pub struct Binary<'a> {
    pub op: BinaryOp,
    pub out_dims: &'a [usize],
    pub a_strides: &'a [usize],
    pub b_strides: &'a [usize],
}

impl FloatKernel for Binary<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let (a, b) = (x[0], x[1]);
        let n: usize = self.out_dims.iter().product();
        let out = if a.len() == n && b.len() == n {
            a.iter().zip(b).map(|(&p, &q)| self.op.apply(p, q)).collect()
        } else {
            (0..n)
                .map(|i| {
                    let pa = strided_offset(i, self.out_dims, self.a_strides);
                    let pb = strided_offset(i, self.out_dims, self.b_strides);
                    self.op.apply(a[pa], b[pb])
                })
                .collect()
        };
        Ok(vec![out])
    }
}

/// out = s · x
pub struct Scale(pub f64);
impl FloatKernel for Scale {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let s = T::of(self.0);
        Ok(vec![x[0].iter().map(|&v| v * s).collect()])
    }
}

/// out[i] = x[offset(i)]: materialises a permuted view (`dims` = output dims, `strides` = input strides).
pub struct CopyStrided<'a> {
    pub dims: &'a [usize],
    pub strides: &'a [usize],
}
impl FloatKernel for CopyStrided<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        Ok(vec![copy_strided(x[0], self.dims, self.strides)])
    }
}
pub fn copy_strided<T: Copy>(x: &[T], dims: &[usize], strides: &[usize]) -> Vec<T> {
    let n: usize = dims.iter().product();
    (0..n).map(|i| x[strided_offset(i, dims, strides)]).collect()
}

/// SwiGLU forward: out = silu(g)·u, silu(g) = g·σ(g).
pub struct SwigluFwd;
impl FloatKernel for SwigluFwd {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        Ok(vec![x[0].iter().zip(x[1]).map(|(&g, &u)| g * sigmoid(g) * u).collect()])
    }
}

/// SwiGLU backward: dg = dout·u·σ(g)(1 + g(1−σ(g))), du = dout·silu(g). Inputs (dout, g, u).
pub struct SwigluBwd;
impl FloatKernel for SwigluBwd {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let (dout, g, u) = (x[0], x[1], x[2]);
        let one = T::one();
        let mut dg = Vec::with_capacity(g.len());
        let mut du = Vec::with_capacity(g.len());
        for i in 0..g.len() {
            let s = sigmoid(g[i]);
            dg.push(dout[i] * u[i] * s * (one + g[i] * (one - s)));
            du.push(dout[i] * g[i] * s);
        }
        Ok(vec![dg, du])
    }
}

pub fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}
