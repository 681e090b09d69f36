//! The DAPO loop with attention-entropy token strategies (issue #6): rollouts with dynamic sampling,
//! group advantages, old log-probs and token scores (attention entropy from the fused kernel, predictive
//! entropy from the fused loss), strategy weights, mini-batch updates with the fused DAPO loss; the run
//! loop with metrics, checkpoints, exact resume, evaluation and plots; and the built-in task.
pub mod advantage;
pub mod analyze;
pub mod batch;
pub mod checkpoints;
pub mod codec;
pub mod compare;
pub mod config;
pub mod data;
pub mod diagnose;
pub mod dynamic_sampling;
pub mod entropy_stats;
pub mod error;
pub mod eval;
pub mod interrupt;
pub mod metrics;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod regress;
pub mod reward;
pub mod rollout;
pub mod run;
pub mod session;
pub mod sft;
pub mod stats;
pub mod strategy;
pub mod sweep;
pub mod task;
pub mod trace;
pub mod trainer;

pub use config::TrainConfig;
pub use entrl_qwen3 as model;
pub use error::{Error, Result};
pub use run::{train, RunSummary};
pub use session::Session;
