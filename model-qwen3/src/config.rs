//! Qwen3 hyper-parameters from an HF `config.json` (both the top-level `rope_theta` of released Qwen3
//! checkpoints and transformers-5's `rope_parameters`), plus the public model shapes by name.
use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// Upper bounds of config.json's sizes (checked by [`Qwen3Config::validate`]): each dimension is far above
/// any released model, token ids fit the i32 the kernels index with, and with the parameter bound every
/// product the model and `entrl plan` form fits in 64 bits.
pub const MAX_VOCAB: usize = i32::MAX as usize;
pub const MAX_HIDDEN: usize = 1 << 20;
pub const MAX_INTERMEDIATE: usize = 1 << 22;
pub const MAX_LAYERS: usize = 1 << 12;
pub const MAX_HEADS: usize = 1 << 12;
pub const MAX_HEAD_DIM: usize = 1 << 12;
/// Positions are i32 in the kernels.
pub const MAX_POSITIONS: usize = i32::MAX as usize;
/// 2^44 ≈ 17.6 trillion parameters.
pub const MAX_PARAMS: u64 = 1 << 44;

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
    /// Read and validate `path` (a regular file; errors name it and the key).
    pub fn from_file(path: &Path) -> Result<Self> {
        let p = path.display().to_string();
        let text = crate::files::read_to_string(path)?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::Config { msg, .. } => ModelError::Config { path: p, msg },
            e => e,
        })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let bad = |msg: String| ModelError::Config { path: "config.json".into(), msg };
        let raw: Raw =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(|e| {
                let key = e.path().to_string();
                let e = e.into_inner();
                if key == "." {
                    bad(format!("malformed config: {e}"))
                } else {
                    bad(format!("{key}: {e}"))
                }
            })?;
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

    /// Why this shape cannot be built, naming the config.json key: a size of 0 or above its bound (the
    /// `MAX_*` constants), a non-positive or non-finite `rms_norm_eps` / `rope_theta`, heads that do not
    /// group, an odd head_dim, or more than [`MAX_PARAMS`] parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size, MAX_VOCAB, " (token ids are i32)"),
            ("hidden_size", self.hidden_size, MAX_HIDDEN, ""),
            ("intermediate_size", self.intermediate_size, MAX_INTERMEDIATE, ""),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS, ""),
            ("num_attention_heads", self.num_attention_heads, MAX_HEADS, ""),
            ("num_key_value_heads", self.num_key_value_heads, MAX_HEADS, ""),
            ("head_dim", self.head_dim, MAX_HEAD_DIM, ""),
            ("max_position_embeddings", self.max_position_embeddings, MAX_POSITIONS, " (positions are i32)"),
        ];
        for (k, v, max, why) in sizes {
            if v == 0 {
                return Err(format!("{k} must be positive"));
            }
            if v > max {
                return Err(format!("{k} {v} is above the limit of {max}{why}"));
            }
        }
        for (k, v) in [("rms_norm_eps", self.rms_norm_eps), ("rope_theta", self.rope_theta)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{k} must be finite and > 0, not {v}"));
            }
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
        match self.checked_num_params() {
            Some(p) if p <= MAX_PARAMS => Ok(()),
            p => Err(format!(
                "the sizes give {} parameters, above the limit of 2^44 (vocab_size {}, hidden_size {}, \
                 intermediate_size {}, num_hidden_layers {})",
                p.map_or("more than 2^64".into(), |p| p.to_string()),
                self.vocab_size,
                self.hidden_size,
                self.intermediate_size,
                self.num_hidden_layers
            )),
        }
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

    /// Number of parameters (embeddings counted once when tied); `usize::MAX` when it overflows (a shape
    /// [`Qwen3Config::validate`] refuses).
    pub fn num_params(&self) -> usize {
        self.checked_num_params().and_then(|p| usize::try_from(p).ok()).unwrap_or(usize::MAX)
    }

    /// Number of parameters in checked arithmetic: None when it does not fit 64 bits.
    pub fn checked_num_params(&self) -> Option<u64> {
        let u = |x: usize| x as u64;
        let (h, hd, i) = (u(self.hidden_size), u(self.head_dim), u(self.intermediate_size));
        let q = u(self.num_attention_heads).checked_mul(hd)?;
        let kv = u(self.num_key_value_heads).checked_mul(hd)?;
        // q_proj + o_proj (h·q each), k_proj + v_proj (h·kv each), the MLP (3·h·i), two norms of h, q/k norms.
        let layer = [
            h.checked_mul(q)?.checked_mul(2)?,
            h.checked_mul(kv)?.checked_mul(2)?,
            h.checked_mul(i)?.checked_mul(3)?,
            h.checked_mul(2)?,
            hd.checked_mul(2)?,
        ]
        .into_iter()
        .try_fold(0u64, |a, b| a.checked_add(b))?;
        let embed = u(self.vocab_size).checked_mul(h)?.checked_mul(if self.tie_word_embeddings { 1 } else { 2 })?;
        embed.checked_add(u(self.num_hidden_layers).checked_mul(layer)?)?.checked_add(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::from_str(&Qwen3Config::named("qwen3-0.6b").unwrap().to_hf_json()).unwrap()
    }

    #[test]
    fn released_shapes_pass_and_absurd_sizes_are_refused_by_key() {
        for name in ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b"] {
            Qwen3Config::named(name).unwrap().validate().unwrap();
        }
        assert!(Qwen3Config::from_json(&base().to_string()).is_ok());
        let cases: &[(&str, serde_json::Value, &str)] = &[
            ("rms_norm_eps", serde_json::json!(-1.0), "rms_norm_eps must be finite and > 0"),
            ("rms_norm_eps", serde_json::json!(0.0), "rms_norm_eps must be finite and > 0"),
            ("rope_theta", serde_json::json!(-1.0), "rope_theta must be finite and > 0"),
            ("rope_theta", serde_json::json!(0), "rope_theta must be finite and > 0"),
            ("vocab_size", serde_json::json!(1u64 << 62), "vocab_size 4611686018427387904 is above the limit"),
            ("vocab_size", serde_json::json!(1u64 << 31), "(token ids are i32)"),
            ("hidden_size", serde_json::json!(1u64 << 40), "hidden_size 1099511627776 is above the limit"),
            ("intermediate_size", serde_json::json!(1u64 << 23), "intermediate_size"),
            ("num_hidden_layers", serde_json::json!(100_000), "num_hidden_layers 100000 is above the limit"),
            ("num_attention_heads", serde_json::json!(1 << 13), "num_attention_heads"),
            ("head_dim", serde_json::json!(1 << 14), "head_dim 16384 is above the limit"),
            ("max_position_embeddings", serde_json::json!(0), "max_position_embeddings must be positive"),
            ("max_position_embeddings", serde_json::json!(1u64 << 40), "(positions are i32)"),
            // wrong types and negative numbers name the key
            ("vocab_size", serde_json::json!(-1), "vocab_size: invalid value"),
            ("hidden_size", serde_json::json!("big"), "hidden_size: invalid type"),
        ];
        for (key, value, want) in cases {
            let mut v = base();
            v[*key] = value.clone();
            let e = Qwen3Config::from_json(&v.to_string()).unwrap_err().to_string();
            assert!(e.contains(want) && e.starts_with("config.json: "), "{key} = {value}: {e}");
        }
        // each size within its bound, their product not: 2^31 × 2^20 × 2 embedding parameters
        let mut v = base();
        v["vocab_size"] = serde_json::json!(i32::MAX);
        v["hidden_size"] = serde_json::json!(1 << 20);
        v["tie_word_embeddings"] = serde_json::json!(false);
        let e = Qwen3Config::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("parameters, above the limit of 2^44") && e.contains("vocab_size 2147483647"), "{e}");
    }

    #[test]
    fn errors_name_the_file() {
        let d = std::env::temp_dir().join(format!("entrl-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut v = base();
        v["rope_theta"] = serde_json::json!(-1.0);
        std::fs::write(d.join("config.json"), v.to_string()).unwrap();
        let e = Qwen3Config::from_file(&d.join("config.json")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", d.join("config.json").display())) && e.contains("rope_theta"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn parameter_counts_are_checked() {
        let mut c = Qwen3Config::named("qwen3-8b").unwrap();
        let p = c.checked_num_params().unwrap();
        assert_eq!(p as usize, c.num_params());
        c.vocab_size = 1 << 62;
        assert_eq!(c.checked_num_params(), None, "2^62 × 4096 does not fit 64 bits");
        assert_eq!(c.num_params(), usize::MAX);
        assert!(c.validate().unwrap_err().contains("vocab_size"));
    }
}
