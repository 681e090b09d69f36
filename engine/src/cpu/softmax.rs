//! Softmax and log-softmax over the last dimension (max-subtracted), and their backward passes.
//! Row sums accumulate in f64 so the reference stays accurate for 152k-wide vocab rows.
use super::storage::FloatKernel;
use super::Real;
use crate::error::Result;

pub struct SoftmaxFwd {
    pub cols: usize,
    pub log: bool,
}
impl FloatKernel for SoftmaxFwd {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let mut y = Vec::with_capacity(x[0].len());
        for row in x[0].chunks(self.cols) {
            let m = row.iter().copied().fold(T::neg_infinity(), T::max);
            let s = T::of(row.iter().map(|&v| (v - m).exp().f64()).sum::<f64>());
            if self.log {
                let ls = s.ln();
                y.extend(row.iter().map(|&v| v - m - ls));
            } else {
                y.extend(row.iter().map(|&v| (v - m).exp() / s));
            }
        }
        Ok(vec![y])
    }
}

/// Inputs (dy, y). softmax: dx = y(dy − Σ dy·y); log-softmax: dx = dy − e^y · Σ dy.
pub struct SoftmaxBwd {
    pub cols: usize,
    pub log: bool,
}
impl FloatKernel for SoftmaxBwd {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let mut dx = Vec::with_capacity(x[0].len());
        for (dy, y) in x[0].chunks(self.cols).zip(x[1].chunks(self.cols)) {
            if self.log {
                let s = T::of(dy.iter().map(|g| g.f64()).sum::<f64>());
                dx.extend(dy.iter().zip(y).map(|(&g, &v)| g - v.exp() * s));
            } else {
                let s = T::of(dy.iter().zip(y).map(|(&g, &v)| (g * v).f64()).sum::<f64>());
                dx.extend(dy.iter().zip(y).map(|(&g, &v)| v * (g - s)));
            }
        }
        Ok(vec![dx])
    }
}
