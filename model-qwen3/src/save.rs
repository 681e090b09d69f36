//! Writing HF-layout model folders: `config.json` and `model.safetensors` (the weights in their current
//! dtype). Every file is written to a temporary name and renamed, so a crash never leaves half a file.
use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};
use crate::model::Qwen3;
use entrl_engine::cpu::CpuStorage;
use entrl_engine::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// Write `bytes` to `path` atomically (temporary sibling, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let err = |e: std::io::Error| ModelError::Checkpoint { file: path.display().to_string(), msg: e.to_string() };
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Serialize named tensors (f32, bf16, f64 or i32, any device) into a safetensors file, atomically.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write_safetensors_tagged(path, tensors, &[])
}

/// [`write_safetensors`] with string tags in the file's `__metadata__` header.
pub fn write_safetensors_tagged(path: &Path, tensors: &[(String, Tensor)], tags: &[(&str, String)]) -> Result<()> {
    let mut host: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (dtype, bytes) = match t.to_cpu_storage()? {
            CpuStorage::F32(v) => (Dtype::F32, bytemuck::cast_slice::<f32, u8>(&v).to_vec()),
            CpuStorage::F64(v) => (Dtype::F64, bytemuck::cast_slice::<f64, u8>(&v).to_vec()),
            CpuStorage::BF16(v) => (Dtype::BF16, v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()),
            CpuStorage::I32(v) => (Dtype::I32, bytemuck::cast_slice::<i32, u8>(&v).to_vec()),
        };
        host.push((name.clone(), dtype, t.dims().to_vec(), bytes));
    }
    let views = host
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ModelError::Checkpoint { file: path.display().to_string(), msg: e.to_string() })?;
    let meta = (!tags.is_empty()).then(|| tags.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
    let bytes = safetensors::serialize(views, meta)
        .map_err(|e| ModelError::Checkpoint { file: path.display().to_string(), msg: e.to_string() })?;
    write_atomic(path, &bytes)
}

impl Qwen3Config {
    /// The HF `config.json` of this shape (top-level `rope_theta`, as released Qwen3 checkpoints).
    pub fn to_hf_json(&self) -> String {
        let v = serde_json::json!({
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "attention_bias": false,
        });
        serde_json::to_string_pretty(&v).expect("a JSON object serializes")
    }
}

impl Qwen3 {
    /// Write `dir/config.json` and `dir/model.safetensors` (creating `dir`); loadable with [`Qwen3::load`].
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ModelError::Checkpoint { file: dir.display().to_string(), msg: e.to_string() })?;
        let tensors: Vec<(String, Tensor)> = self.params().iter().map(|(n, t)| (n.clone(), t.detach())).collect();
        write_safetensors(&dir.join("model.safetensors"), &tensors)?;
        write_atomic(&dir.join("config.json"), self.config.to_hf_json().as_bytes())
    }
}
