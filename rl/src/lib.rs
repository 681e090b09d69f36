//! The DAPO loop with attention-entropy token strategies. Not built yet: it lands with issue #6.
pub use entrl_qwen3 as model;
