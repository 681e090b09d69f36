//! The DAPO loop with attention-entropy token strategies (issue #6). Landed so far: group advantages,
//! dynamic sampling, the verl-layout JSONL reader, token strategies (masks and soft weights from the engine's selection ops) and the
//! reward verifiers; the rollout/update loop and `entrl train` come next.
pub mod advantage;
pub mod data;
pub mod dynamic_sampling;
pub mod reward;
pub mod strategy;

pub use entrl_qwen3 as model;
