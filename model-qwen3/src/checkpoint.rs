//! Reading HF safetensors checkpoints through memmap2 (no copy of the whole file): a single
//! `model.safetensors` or a sharded `model.safetensors.index.json`. Errors name the file and tensor.
use crate::error::{ModelError, Result};
use entrl_engine::{bf16, DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The memory-mapped files of one checkpoint and which file holds each tensor.
pub struct Checkpoint {
    files: Vec<(PathBuf, Mmap)>,
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Open `dir/model.safetensors` or the shards listed by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let shard_names: Vec<String> = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| err_file(&index_path, e.to_string()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| err_file(&index_path, format!("malformed index: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| err_file(&index_path, "no \"weight_map\" object".into()))?;
            let mut names: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
            names.sort();
            names.dedup();
            names
        } else if single.is_file() {
            vec!["model.safetensors".into()]
        } else {
            return Err(ModelError::Checkpoint {
                file: dir.display().to_string(),
                msg: "no model.safetensors or model.safetensors.index.json in this directory".into(),
            });
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for name in shard_names {
            let path = dir.join(&name);
            let f = File::open(&path).map_err(|e| err_file(&path, e.to_string()))?;
            // SAFETY: the file is opened read-only; entrl never writes a checkpoint it is reading.
            let mmap = unsafe { Mmap::map(&f) }.map_err(|e| err_file(&path, e.to_string()))?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| err_file(&path, format!("not a valid safetensors file ({e})")))?;
            for n in st.names() {
                index.insert(n.to_string(), files.len());
            }
            files.push((path, mmap));
        }
        Ok(Self { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Tensor `name` as `dtype` on `device`, checking its shape.
    pub fn load(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let Some(&fi) = self.index.get(name) else {
            let file = self.files.first().map(|f| f.0.display().to_string()).unwrap_or_default();
            return Err(ModelError::Tensor { name: name.into(), file, msg: "missing from the checkpoint".into() });
        };
        let (path, mmap) = &self.files[fi];
        let file = path.display().to_string();
        let bad = |msg: String| ModelError::Tensor { name: name.into(), file: file.clone(), msg };
        let st = SafeTensors::deserialize(mmap).map_err(|e| bad(e.to_string()))?;
        let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
        if view.shape() != shape {
            return Err(bad(format!("shape {:?}, expected {shape:?}", view.shape())));
        }
        let data = view.data();
        let t = match view.dtype() {
            Dtype::BF16 => {
                let v: Vec<bf16> =
                    data.chunks_exact(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))).collect();
                Tensor::from_vec(v, shape.to_vec(), &Device::Cpu)?
            }
            Dtype::F32 => {
                let v: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                Tensor::from_vec(v, shape.to_vec(), &Device::Cpu)?
            }
            Dtype::I32 => {
                let v: Vec<i32> = data.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                Tensor::from_vec(v, shape.to_vec(), &Device::Cpu)?
            }
            other => return Err(bad(format!("unsupported dtype {other:?} (bf16, f32 and i32 are)"))),
        };
        let t = if t.dtype() == DType::I32 || t.dtype() == dtype { t } else { t.to_dtype(dtype)? };
        Ok(t.to_device(device)?)
    }

    /// Names and shapes of every tensor (for fixture files whose shapes are not known up front).
    pub fn shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let mut out = Vec::new();
        for (path, mmap) in &self.files {
            let st = SafeTensors::deserialize(mmap).map_err(|e| err_file(path, e.to_string()))?;
            for (n, v) in st.tensors() {
                out.push((n, v.shape().to_vec()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Open a single safetensors file (fixture inputs and references).
    pub fn open_file(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| err_file(path, e.to_string()))?;
        // SAFETY: read-only mapping of a file entrl does not modify.
        let mmap = unsafe { Mmap::map(&f) }.map_err(|e| err_file(path, e.to_string()))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| err_file(path, format!("not a valid safetensors file ({e})")))?;
        let index = st.names().into_iter().map(|n| (n.to_string(), 0)).collect();
        Ok(Self { files: vec![(path.to_path_buf(), mmap)], index })
    }

    /// Load a tensor whatever its shape.
    pub fn load_any(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = self.shapes()?.into_iter().find(|(n, _)| n == name).map(|(_, s)| s).ok_or_else(|| {
            ModelError::Tensor { name: name.into(), file: self.files[0].0.display().to_string(), msg: "missing".into() }
        })?;
        self.load(name, &shape, dtype, device)
    }
}

fn err_file(path: &Path, msg: String) -> ModelError {
    ModelError::Checkpoint { file: path.display().to_string(), msg }
}
