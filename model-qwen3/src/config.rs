//! Qwen3 hyper-parameters from an HF `config.json` (both the top-level `rope_theta` of released Qwen3
//! checkpoints and transformers-5's `rope_parameters`), plus the public model shapes by name.
use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// May differ from hidden_size / num_attention_heads (Qwen3 sets it explicitly).
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    /// Round RoPE's inv_freq to bf16, as HF does after casting the whole module with `.to(bfloat16)`
    /// (the shared fixtures were made that way). Not read from config.json; default false (f32, as verl).
    pub rope_bf16_inv_freq: bool,
}

#[derive(Deserialize)]
struct RawRope {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<RawRope>,
    rope_scaling: Option<serde_json::Value>,
    tie_word_embeddings: Option<bool>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
}

impl Qwen3Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let p = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ModelError::Config { path: p.clone(), msg: e.to_string() })?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::Config { msg, .. } => ModelError::Config { path: p, msg },
            e => e,
        })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let bad = |msg: String| ModelError::Config { path: "config.json".into(), msg };
        let raw: Raw = serde_json::from_str(text).map_err(|e| bad(format!("malformed config: {e}")))?;
        match raw.model_type.as_deref() {
            Some("qwen3") => {}
            Some(other) => return Err(bad(format!("unsupported model_type {other:?} (entrl implements \"qwen3\")"))),
            None => return Err(bad("missing model_type (expected \"qwen3\")".into())),
        }
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(bad(format!("unsupported hidden_act {act:?} (Qwen3 uses silu)")));
            }
        }
        if raw.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(bad("rope_scaling is not supported (default RoPE only)".into()));
        }
        if let Some(t) = raw.rope_parameters.as_ref().and_then(|r| r.rope_type.as_deref()) {
            if t != "default" {
                return Err(bad(format!("rope_type {t:?} is not supported (default RoPE only)")));
            }
        }
        let rope_theta = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(raw.rope_theta)
            .ok_or_else(|| bad("no rope_theta (top-level or in rope_parameters)".into()))?;
        let heads = raw.num_attention_heads;
        let c = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size.checked_div(heads).unwrap_or(0)),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(40_960),
            rope_bf16_inv_freq: false,
        };
        c.validate().map_err(bad)?;
        Ok(c)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let pos = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((k, _)) = pos.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{k} must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even (RoPE rotates pairs)", self.head_dim));
        }
        Ok(())
    }

    /// The public Qwen3 shapes (for benchmarks with random weights): qwen3-0.6b, -1.7b, -4b, -8b.
    pub fn named(name: &str) -> Result<Self> {
        let (hidden, inter, layers, heads, kv, tie) = match name {
            "qwen3-0.6b" => (1024, 3072, 28, 16, 8, true),
            "qwen3-1.7b" => (2048, 6144, 28, 16, 8, true),
            "qwen3-4b" => (2560, 9728, 36, 32, 8, true),
            "qwen3-8b" => (4096, 12288, 36, 32, 8, false),
            other => {
                return Err(ModelError::Invalid(format!(
                    "unknown model shape {other:?} (known: qwen3-0.6b, qwen3-1.7b, qwen3-4b, qwen3-8b)"
                )))
            }
        };
        Ok(Self {
            vocab_size: 151_936,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim: 128,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            tie_word_embeddings: tie,
            max_position_embeddings: 40_960,
            rope_bf16_inv_freq: false,
        })
    }

    /// Number of parameters (embeddings counted once when tied).
    pub fn num_params(&self) -> usize {
        let (h, hd, i) = (self.hidden_size, self.head_dim, self.intermediate_size);
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h + 2 * hd;
        let embed = self.vocab_size * h;
        embed * if self.tie_word_embeddings { 1 } else { 2 } + self.num_hidden_layers * layer + h
    }
}
