//! Optimizers and gradient utilities.
mod adamw;
mod clip;
mod sharded;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_coef, clip_grad_norm, global_grad_norm, grad_sumsq};
pub use sharded::{ShardedAdamW, ShardedStep};

#[cfg(test)]
mod grad_storage_tests;
