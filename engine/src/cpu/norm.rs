//! RMSNorm over the last dimension: y = x · rstd · w with rstd = (mean(x²) + eps)^(-1/2).
use super::storage::FloatKernel;
use super::Real;
use crate::error::Result;

/// Outputs (y, rstd[rows]).
pub struct RmsNormFwd {
    pub dim: usize,
    pub eps: f64,
}
impl FloatKernel for RmsNormFwd {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let (xs, w) = (x[0], x[1]);
        let rows = xs.len() / self.dim;
        let mut y = Vec::with_capacity(xs.len());
        let mut rstd = Vec::with_capacity(rows);
        for row in xs.chunks(self.dim) {
            let ms = T::of(row.iter().map(|&v| (v * v).f64()).sum::<f64>() / self.dim as f64);
            let r = T::one() / (ms + T::of(self.eps)).sqrt();
            rstd.push(r);
            y.extend(row.iter().zip(w).map(|(&v, &wc)| v * r * wc));
        }
        Ok(vec![y, rstd])
    }
}

/// Inputs (dy, x, w, rstd); outputs (dx, dw).
/// With g = dy·w: dx = rstd·g − x·rstd³·mean(g·x); dw = Σ_rows dy·x·rstd.
pub struct RmsNormBwd {
    pub dim: usize,
}
impl FloatKernel for RmsNormBwd {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let (dy, xs, w, rstd) = (x[0], x[1], x[2], x[3]);
        let d = self.dim;
        let mut dx = Vec::with_capacity(xs.len());
        let mut dw = vec![T::zero(); d];
        for (r, (row, dyr)) in xs.chunks(d).zip(dy.chunks(d)).enumerate() {
            let rs = rstd[r];
            let gx = T::of((0..d).map(|c| (dyr[c] * w[c] * row[c]).f64()).sum::<f64>());
            let k = rs * rs * rs * gx / T::of(d as f64);
            for c in 0..d {
                dx.push(rs * dyr[c] * w[c] - row[c] * k);
                dw[c] = dw[c] + dyr[c] * row[c] * rs;
            }
        }
        Ok(vec![dx, dw])
    }
}
