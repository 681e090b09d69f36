//! Writing HF-layout model folders: `config.json` and `model.safetensors` (the weights in their current
//! dtype). Every file is written to a temporary name and renamed, so a crash never leaves half a file.
use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};
use crate::model::Qwen3;
use entrl_engine::cpu::CpuStorage;
use entrl_engine::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// Write `bytes` to `path` atomically (temporary sibling, fsync, rename); the temporary file is removed
/// when any step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let err = |e: std::io::Error| ModelError::Checkpoint { file: path.display().to_string(), msg: e.to_string() };
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Serialize named tensors (f32, bf16, f64 or i32, any device) into a safetensors file, atomically. A
/// tensor holding NaN or ±Inf is refused by name: entrl never writes a non-finite checkpoint.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write_safetensors_tagged(path, tensors, &[])
}

/// [`write_safetensors`] with string tags in the file's `__metadata__` header.
pub fn write_safetensors_tagged(path: &Path, tensors: &[(String, Tensor)], tags: &[(&str, String)]) -> Result<()> {
    let mut host: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let storage = t.to_cpu_storage()?;
        let first_bad: Option<(usize, f64)> = match &storage {
            CpuStorage::F32(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i] as f64)),
            CpuStorage::F64(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
            CpuStorage::BF16(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i].to_f64())),
            CpuStorage::I32(_) => None,
        };
        if let Some((i, x)) = first_bad {
            return Err(ModelError::Tensor {
                name: name.clone(),
                file: path.display().to_string(),
                msg: format!("element {i} is {x}; never write a non-finite checkpoint"),
            });
        }
        let (dtype, bytes) = match storage {
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
    /// Write `dir/config.json` and `dir/model.safetensors` (creating `dir`) in the HF layout (q/k/v and
    /// gate/up as separate tensors); loadable with [`Qwen3::load`] and by HF transformers.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ModelError::Checkpoint { file: dir.display().to_string(), msg: e.to_string() })?;
        // The HF layout: the fused projections are written as their HF tensors.
        write_safetensors(&dir.join("model.safetensors"), &self.hf_tensors()?)?;
        write_atomic(&dir.join("config.json"), self.config.to_hf_json().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::tests::scratch;
    use entrl_engine::Device;

    #[test]
    fn a_non_finite_tensor_is_never_written() {
        let d = scratch("save-nan");
        let path = d.join("state.safetensors");
        let ok = Tensor::from_vec(vec![1f32, 2.0], [2], &Device::Cpu).unwrap();
        for bad in [f32::NAN, f32::INFINITY] {
            let t = Tensor::from_vec(vec![0f32, 1.0, bad], [3], &Device::Cpu).unwrap();
            let e = write_safetensors(&path, &[("a".into(), ok.clone()), ("b.exp_avg".into(), t)]).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("tensor b.exp_avg") && e.contains("element 2") && e.contains("non-finite"), "{e}");
            assert!(!path.exists() && !d.join("state.safetensors.tmp").exists());
        }
        write_safetensors(&path, &[("a".into(), ok)]).unwrap();
        assert!(path.is_file());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary_file() {
        let d = scratch("save-tmp");
        // the rename fails: the target is a directory
        let target = d.join("config.json");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        let e = write_atomic(&target, b"{}").unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        assert!(!d.join("config.json.tmp").exists(), "the temporary file was left behind");
        let _ = std::fs::remove_dir_all(&d);
    }
}
