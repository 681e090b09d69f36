//! Batched matmul on the CPU through `matrixmultiply` (strided GEMM, so transposes cost nothing).
//! C[b] = op(A[b]) · op(B[b]) with row-major storage; a batch stride of 0 broadcasts an operand.
use super::storage::FloatKernel;
use super::Real;
use crate::error::Result;
use std::any::TypeId;

#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub stride_a: usize,
    pub stride_b: usize,
}

impl FloatKernel for Gemm {
    fn run<T: Real>(&self, x: &[&[T]]) -> Result<Vec<Vec<T>>> {
        let (a, b) = (x[0], x[1]);
        let (m, n, k) = (self.m, self.n, self.k);
        let mut c = vec![T::zero(); self.batch * m * n];
        // Row/column strides of op(A) [m, k] and op(B) [k, n] in the row-major buffers.
        let (rsa, csa) = if self.trans_a { (1, m as isize) } else { (k as isize, 1) };
        let (rsb, csb) = if self.trans_b { (1, k as isize) } else { (n as isize, 1) };
        for bi in 0..self.batch {
            let pa = &a[bi * self.stride_a..];
            let pb = &b[bi * self.stride_b..];
            let pc = &mut c[bi * m * n..(bi + 1) * m * n];
            // SAFETY: the strides describe in-bounds [m,k], [k,n], [m,n] matrices of these slices
            // (shapes were validated by the caller).
            unsafe {
                if TypeId::of::<T>() == TypeId::of::<f32>() {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        pa.as_ptr() as *const f32,
                        rsa,
                        csa,
                        pb.as_ptr() as *const f32,
                        rsb,
                        csb,
                        0.0,
                        pc.as_mut_ptr() as *mut f32,
                        n as isize,
                        1,
                    );
                } else {
                    matrixmultiply::dgemm(
                        m,
                        k,
                        n,
                        1.0,
                        pa.as_ptr() as *const f64,
                        rsa,
                        csa,
                        pb.as_ptr() as *const f64,
                        rsb,
                        csb,
                        0.0,
                        pc.as_mut_ptr() as *mut f64,
                        n as isize,
                        1,
                    );
                }
            }
        }
        Ok(vec![c])
    }
}
