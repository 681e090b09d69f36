//! Qwen3 on the entrl engine. Not built yet: checkpoint loading, the training forward/backward with
//! per-layer attention entropy and KV-cache generation land with issue #5. This crate holds its place in
//! the dependency chain rl -> model-qwen3 -> engine -> kernels-cu.
pub use entrl_engine as engine;
