//! entrl-engine: tensors over raw CUDA buffers (cudarc), a reverse-mode autograd tape with activation
//! checkpointing, a CPU reference backend for every op, AdamW and gradient clipping.
//!
//! ```
//! use entrl_engine::{Device, DType, Tensor};
//! let dev = Device::Cpu;
//! let w = Tensor::randn([4, 3], 0.5, DType::F32, &dev, 0).unwrap().param();
//! let x = Tensor::randn([2, 3], 1.0, DType::F32, &dev, 1).unwrap();
//! let loss = x.linear(&w).unwrap().softmax().unwrap().sum().unwrap();
//! loss.backward().unwrap();
//! assert_eq!(w.grad().unwrap().dims(), &[4, 3]);
//! ```
pub mod autograd;
pub mod check;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod dist;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod memory;
pub mod ops;
pub mod optim;
pub mod packing;
pub mod profile;
pub mod shape;
pub mod storage;
pub mod tensor;

pub use autograd::{checkpoint, is_grad_enabled, no_grad, GradStorage};
pub use device::Device;
pub use dtype::DType;
pub use error::{EngineError, Result};
pub use half::bf16;
pub use ops::MatmulSpec;
pub use packing::Packing;
pub use shape::Shape;
pub use tensor::Tensor;
