//! Reductions: sum over any set of axes (with a scale, so it also gives means), sum of squares.
use super::elementwise::strided_offset;
use super::storage::FloatKernel;
use super::Real;
use crate::error::Result;

/// out[o] = scale · Σ_r x[off(o) + off(r)], accumulated in f64 for a deterministic, accurate reference.
pub struct ReduceSum<'a> {
    pub out_dims: &'a [usize],
    pub out_strides: &'a [usize],
    pub red_dims: &'a [usize],
    pub red_strides: &'a [usize],
    pub scale: f64,
}
impl FloatKernel for ReduceSum<'_> {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let n_out: usize = self.out_dims.iter().product();
        let n_red: usize = self.red_dims.iter().product();
        let out = (0..n_out)
            .map(|o| {
                let base = strided_offset(o, self.out_dims, self.out_strides);
                let s: f64 =
                    (0..n_red).map(|r| x[0][base + strided_offset(r, self.red_dims, self.red_strides)].f64()).sum();
                T::of(s * self.scale)
            })
            .collect();
        Ok(vec![out])
    }
}

/// Σ x² in f64.
pub fn sum_squares<T: Real>(x: &[T]) -> f64 {
    x.iter().map(|v| v.f64() * v.f64()).sum()
}
