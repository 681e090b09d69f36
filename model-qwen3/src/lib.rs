//! Qwen3 for entrl: HF checkpoint loading (config.json, safetensors through memmap2), the training
//! forward over packed sequences with per-layer attention entropy from the fused kernel, and the
//! verification against HF references.
mod blocks;
pub mod checkpoint;
pub mod config;
mod decode_graph;
pub mod error;
pub mod files;
pub mod generate;
pub mod model;
pub mod sampling;
pub mod save;
pub mod tokenizer;
pub mod verify;

pub use config::Qwen3Config;
pub use decode_graph::{batch_bucket, key_bucket};
pub use entrl_engine as engine;
pub use error::{ModelError, Result};
pub use generate::{
    generate, generate_batched, generate_run, generate_with, DecodeMode, FinishReason, GenerateOptions, GenerateRun,
    GenerateStats, Generation, GraphStats, KvLayout, PagedKv, Request, KV_MEMORY_FRACTION, MAX_PREFILL_TOKENS,
};
pub use model::{ForwardOptions, ForwardOutput, Probe, Qwen3};
pub use sampling::{sample_uniform, Sample, SampleKey, SamplingParams};
pub use tokenizer::{Message, Tokenizer};
