//! Reading HF safetensors checkpoints through memmap2 (no copy of the whole file): a single
//! `model.safetensors` or a sharded `model.safetensors.index.json`. Errors name the file and tensor. Every
//! file is opened with [`files::open_regular`] (a FIFO or a device is refused without blocking), and the
//! shards an index lists must be plain names inside the model folder. [`Checkpoint::load`] refuses a
//! tensor holding NaN or ±Inf; [`Checkpoint::load_unchecked`] is for reference data that may hold them.
use crate::error::{ModelError, Result};
use crate::files;
use entrl_engine::{bf16, DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
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
        let shard_names: Vec<String> = if index_path.exists() {
            let text = files::read_to_string(&index_path)?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| err_file(&index_path, format!("malformed index: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| err_file(&index_path, "no \"weight_map\" object".into()))?;
            let mut names = Vec::with_capacity(map.len());
            for (tensor, file) in map {
                let file = file
                    .as_str()
                    .ok_or_else(|| err_file(&index_path, format!("weight_map entry {tensor:?} is not a file name")))?;
                let file = files::plain_name(file, "weight_map").map_err(|e| err_file(&index_path, e))?;
                names.push(file.to_string());
            }
            names.sort();
            names.dedup();
            names
        } else if single.exists() {
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
            let (mmap, st_names) = map_file(&path)?;
            for n in st_names {
                index.insert(n, files.len());
            }
            files.push((path, mmap));
        }
        Ok(Self { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Tensor `name` as `dtype` on `device`, checking its shape, that it is stored as a float (i32) tensor
    /// when `dtype` is a float (i32), and that every value is finite.
    pub fn load(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        self.load_impl(name, shape, dtype, device, true)
    }

    /// [`Checkpoint::load`] without the finiteness check (reference data that may hold NaN or ±Inf).
    pub fn load_unchecked(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        self.load_impl(name, shape, dtype, device, false)
    }

    fn load_impl(&self, name: &str, shape: &[usize], dtype: DType, device: &Device, finite: bool) -> Result<Tensor> {
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
        let stored_int = view.dtype() == Dtype::I32;
        if stored_int != (dtype == DType::I32) && matches!(view.dtype(), Dtype::BF16 | Dtype::F32 | Dtype::I32) {
            let want = if dtype == DType::I32 { "an i32" } else { "a float (bf16 or f32)" };
            return Err(bad(format!("stored as {:?}, but {want} tensor is expected", view.dtype())));
        }
        let data = view.data();
        // The first non-finite value (index, value), found while converting.
        let mut non_finite: Option<(usize, f32)> = None;
        let mut note = |i: usize, x: f32| {
            if finite && non_finite.is_none() && !x.is_finite() {
                non_finite = Some((i, x));
            }
        };
        let t = match view.dtype() {
            Dtype::BF16 => {
                let mut v = Vec::with_capacity(data.len() / 2);
                for (i, b) in data.chunks_exact(2).enumerate() {
                    let x = bf16::from_bits(u16::from_le_bytes([b[0], b[1]]));
                    note(i, x.to_f32());
                    v.push(x);
                }
                Tensor::from_vec(v, shape.to_vec(), &Device::Cpu)?
            }
            Dtype::F32 => {
                let mut v = Vec::with_capacity(data.len() / 4);
                for (i, b) in data.chunks_exact(4).enumerate() {
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    note(i, x);
                    v.push(x);
                }
                Tensor::from_vec(v, shape.to_vec(), &Device::Cpu)?
            }
            Dtype::I32 => {
                let v: Vec<i32> = data.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                Tensor::from_vec(v, shape.to_vec(), &Device::Cpu)?
            }
            other => return Err(bad(format!("unsupported dtype {other:?} (bf16, f32 and i32 are)"))),
        };
        if let Some((i, x)) = non_finite {
            return Err(bad(format!("holds a non-finite value ({x} at element {i}); entrl loads finite tensors only")));
        }
        let t = if t.dtype() == dtype { t } else { t.to_dtype(dtype)? };
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

    /// Open a single safetensors file (fixture inputs and references, optimizer state).
    pub fn open_file(path: &Path) -> Result<Self> {
        let (mmap, names) = map_file(path)?;
        let index = names.into_iter().map(|n| (n, 0)).collect();
        Ok(Self { files: vec![(path.to_path_buf(), mmap)], index })
    }

    /// Load a tensor whatever its shape (finite values only, as [`Checkpoint::load`]).
    pub fn load_any(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.load(name, &self.shape_of(name)?, dtype, device)
    }

    /// [`Checkpoint::load_any`] without the finiteness check.
    pub fn load_any_unchecked(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.load_unchecked(name, &self.shape_of(name)?, dtype, device)
    }

    fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        self.shapes()?.into_iter().find(|(n, _)| n == name).map(|(_, s)| s).ok_or_else(|| ModelError::Tensor {
            name: name.into(),
            file: self.files[0].0.display().to_string(),
            msg: "missing".into(),
        })
    }
}

/// Map the regular file `path` read-only and list its tensors.
fn map_file(path: &Path) -> Result<(Mmap, Vec<String>)> {
    let f = files::open_regular(path)?;
    // SAFETY: the file is opened read-only; entrl never writes a checkpoint it is reading.
    let mmap = unsafe { Mmap::map(&f) }.map_err(|e| err_file(path, e.to_string()))?;
    let st =
        SafeTensors::deserialize(&mmap).map_err(|e| err_file(path, format!("not a valid safetensors file ({e})")))?;
    let names = st.names().into_iter().map(String::from).collect();
    Ok((mmap, names))
}

fn err_file(path: &Path, msg: String) -> ModelError {
    ModelError::Checkpoint { file: path.display().to_string(), msg }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Qwen3, Qwen3Config, Tokenizer};
    use safetensors::tensor::TensorView;

    pub(crate) fn tiny() -> Qwen3Config {
        Qwen3Config {
            vocab_size: 8,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            max_position_embeddings: 64,
            rope_bf16_inv_freq: false,
        }
    }

    pub(crate) fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("entrl-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A folder with a random tiny model (config.json + model.safetensors).
    fn model_dir(name: &str) -> PathBuf {
        let d = scratch(name);
        Qwen3::random(tiny(), DType::F32, &Device::Cpu, 1).unwrap().save(&d).unwrap();
        d
    }

    /// Rewrite `d/model.safetensors` with tensor `name` stored as (dtype, bytes).
    fn replace(d: &Path, name: &str, dtype: Dtype, bytes: &[u8]) {
        let path = d.join("model.safetensors");
        let file = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&file).unwrap();
        let views: Vec<(String, TensorView)> = st
            .tensors()
            .into_iter()
            .map(
                |(n, v)| {
                    if n == name {
                        (n, TensorView::new(dtype, v.shape().to_vec(), bytes).unwrap())
                    } else {
                        (n, v)
                    }
                },
            )
            .collect();
        let out = safetensors::serialize(views, None).unwrap();
        std::fs::write(&path, out).unwrap();
    }

    fn mkfifo(path: &Path) {
        let _ = std::fs::remove_file(path);
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn index_shards_must_be_plain_names_inside_the_folder() {
        let d = model_dir("index");
        for bad in ["../model.safetensors", "/etc/passwd", "sub/model.safetensors"] {
            let index = serde_json::json!({ "weight_map": { "model.norm.weight": bad } });
            std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
            let e = Checkpoint::open(&d).err().unwrap().to_string();
            assert!(e.contains("model.safetensors.index.json") && e.contains("not a plain file name"), "{bad}: {e}");
        }
        let index = serde_json::json!({ "weight_map": { "model.norm.weight": 7 } });
        std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let e = Checkpoint::open(&d).err().unwrap().to_string();
        assert!(e.contains("\"model.norm.weight\" is not a file name"), "{e}");
        // a plain name is read
        let index = serde_json::json!({ "weight_map": { "model.norm.weight": "model.safetensors" } });
        std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
        assert!(Checkpoint::open(&d).unwrap().contains("model.norm.weight"));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Every file of a model folder is refused when it is a FIFO, without blocking (a FIFO shard hung every
    /// command that loaded the folder).
    #[test]
    fn a_fifo_in_place_of_any_model_file_is_refused() {
        let d = model_dir("fifo");
        // a shard listed by the index
        mkfifo(&d.join("shard.safetensors"));
        let index = serde_json::json!({ "weight_map": { "model.norm.weight": "shard.safetensors" } });
        std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let e = Checkpoint::open(&d).err().unwrap().to_string();
        assert!(e.contains("shard.safetensors") && e.contains("not a regular file"), "{e}");
        // the index itself
        mkfifo(&d.join("model.safetensors.index.json"));
        let e = Checkpoint::open(&d).err().unwrap().to_string();
        assert!(e.contains("model.safetensors.index.json") && e.contains("not a regular file"), "{e}");
        std::fs::remove_file(d.join("model.safetensors.index.json")).unwrap();
        // the single weights file, and a file opened on its own
        mkfifo(&d.join("model.safetensors"));
        let e = Checkpoint::open(&d).err().unwrap().to_string();
        assert!(e.contains("model.safetensors") && e.contains("not a regular file"), "{e}");
        let e = Checkpoint::open_file(&d.join("model.safetensors")).err().unwrap().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // config.json
        mkfifo(&d.join("config.json"));
        let e = Qwen3::load(&d, DType::F32, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("config.json") && e.contains("not a regular file"), "{e}");
        // tokenizer.json and tokenizer_config.json
        let vocab: Vec<(String, u32)> =
            ["a", "b", "<unk>"].iter().enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect();
        let wl = tokenizers::models::wordlevel::WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token("<unk>".into())
            .build()
            .unwrap();
        let tok = Tokenizer::from_parts(tokenizers::Tokenizer::new(wl), Some("{{ messages }}".into()), None);
        tok.save(&d).unwrap();
        assert!(Tokenizer::from_dir(&d).is_ok());
        mkfifo(&d.join("tokenizer_config.json"));
        let e = Tokenizer::from_dir(&d).err().unwrap().to_string();
        assert!(e.contains("tokenizer_config.json") && e.contains("not a regular file"), "{e}");
        mkfifo(&d.join("tokenizer.json"));
        let e = Tokenizer::from_dir(&d).err().unwrap().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn weights_must_be_finite_floats() {
        let d = model_dir("weights");
        let h = tiny().hidden_size;
        // an integer tensor where a weight belongs
        let ints: Vec<u8> = (0..h as i32).flat_map(|i| i.to_le_bytes()).collect();
        replace(&d, "model.norm.weight", Dtype::I32, &ints);
        let e = Qwen3::load(&d, DType::F32, &Device::Cpu).err().unwrap().to_string();
        assert!(
            e.contains("tensor model.norm.weight") && e.contains("model.safetensors") && e.contains("stored as I32"),
            "{e}"
        );
        // a NaN in an f32 weight
        let mut vals = vec![1f32; h];
        vals[3] = f32::NAN;
        replace(&d, "model.norm.weight", Dtype::F32, bytemuck::cast_slice(&vals));
        let e = Qwen3::load(&d, DType::F32, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("tensor model.norm.weight") && e.contains("non-finite value (NaN at element 3)"), "{e}");
        // the unchecked reader (reference data) reads it as stored
        let ck = Checkpoint::open(&d).unwrap();
        let t = ck.load_unchecked("model.norm.weight", &[h], DType::F32, &Device::Cpu).unwrap();
        assert!(t.to_vec_f32().unwrap()[3].is_nan());
        assert!(ck.load_any("model.norm.weight", DType::F32, &Device::Cpu).is_err());
        // an infinity in a bf16 weight
        let mut vals = vec![bf16::ONE; h];
        vals[5] = bf16::NEG_INFINITY;
        let bytes: Vec<u8> = vals.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
        replace(&d, "model.norm.weight", Dtype::BF16, &bytes);
        let e = Qwen3::load(&d, DType::BF16, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("tensor model.norm.weight") && e.contains("-inf at element 5"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
