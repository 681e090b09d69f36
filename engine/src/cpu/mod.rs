//! The CPU reference backend: plain, readable loops over contiguous slices, generic over the compute type
//! (`f32` for f32/bf16 tensors, `f64` for gradient checks). Every CUDA kernel is checked against these.
pub mod adamw;
pub mod attention;
pub mod decode;
pub mod elementwise;
pub mod index;
pub mod matmul;
pub mod norm;
pub mod policy_loss;
pub mod random;
pub mod reduce;
pub mod rope;
pub mod sampling;
pub mod softmax;
pub mod storage;

pub use storage::CpuStorage;

/// The float types the CPU kernels compute in.
pub trait Real: num_traits::Float + Default + Send + Sync + std::iter::Sum + std::fmt::Debug + 'static {
    fn of(x: f64) -> Self;
    fn f64(self) -> f64;
}
impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
}
impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self
    }
}
