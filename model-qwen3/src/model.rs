//! Qwen3 on the engine: embedding → layers (RMSNorm → q/k/v → per-head q/k RMSNorm → RoPE → fused
//! attention → o_proj → residual → RMSNorm → SwiGLU MLP → residual) → final RMSNorm → LM head, over packed
//! varlen batches, with per-layer attention entropy from the fused kernel and optional per-layer
//! activation checkpointing.
use crate::checkpoint::Checkpoint;
use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};
use entrl_engine::ops::{add_rms_norm, attention, qk_norm_rope, RopeSpec};
use entrl_engine::{checkpoint, DType, Device, Packing, Tensor};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Layer {
    pub input_norm: Tensor,
    pub q_proj: Tensor,
    pub k_proj: Tensor,
    pub v_proj: Tensor,
    pub o_proj: Tensor,
    pub q_norm: Tensor,
    pub k_norm: Tensor,
    pub post_norm: Tensor,
    pub gate_proj: Tensor,
    pub up_proj: Tensor,
    pub down_proj: Tensor,
}

pub struct Qwen3 {
    pub config: Qwen3Config,
    pub dtype: DType,
    pub device: Device,
    pub embed: Tensor,
    pub layers: Vec<Arc<Layer>>,
    pub norm: Tensor,
    /// None when the LM head is tied to the embedding.
    lm_head: Option<Tensor>,
    /// Every trainable parameter under its HF name (tied weights listed once).
    params: Vec<(String, Tensor)>,
}

/// What a training forward computes besides the final hidden states.
#[derive(Clone, Debug, Default)]
pub struct ForwardOptions {
    /// 0-based layers whose attention entropy to return (per token and head, natural log).
    pub entropy_layers: Vec<usize>,
    /// Recompute each layer's activations in backward instead of keeping them.
    pub checkpoint: bool,
}

pub struct ForwardOutput {
    /// Final-normed hidden states [T, hidden]; logits = hidden · lm_headᵀ.
    pub hidden: Tensor,
    /// (layer, entropy [T, Hq]) for each requested layer, in layer order.
    pub entropy: Vec<(usize, Tensor)>,
}

/// The HF names and shapes of one layer's tensors.
fn layer_tensors(c: &Qwen3Config, i: usize) -> Vec<(String, Vec<usize>)> {
    let (h, hd, it) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let p = |s: &str| format!("model.layers.{i}.{s}.weight");
    vec![
        (p("input_layernorm"), vec![h]),
        (p("self_attn.q_proj"), vec![q, h]),
        (p("self_attn.k_proj"), vec![kv, h]),
        (p("self_attn.v_proj"), vec![kv, h]),
        (p("self_attn.o_proj"), vec![h, q]),
        (p("self_attn.q_norm"), vec![hd]),
        (p("self_attn.k_norm"), vec![hd]),
        (p("post_attention_layernorm"), vec![h]),
        (p("mlp.gate_proj"), vec![it, h]),
        (p("mlp.up_proj"), vec![it, h]),
        (p("mlp.down_proj"), vec![h, it]),
    ]
}

/// Refuse a model whose weights (P parameters of `dtype`) exceed the memory `device` has available.
pub fn check_weights_fit(c: &Qwen3Config, dtype: DType, device: &Device) -> entrl_engine::Result<()> {
    let p = c.checked_num_params().unwrap_or(u64::MAX);
    let bytes = entrl_engine::memory::bytes_of(&[p, dtype.size_in_bytes() as u64]);
    device.ensure_fits(&format!("loading the weights ({p} parameters in {dtype})"), bytes)
}

/// All parameter names and shapes of a config, in checkpoint order.
pub fn parameter_shapes(c: &Qwen3Config) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![c.vocab_size, c.hidden_size])];
    for i in 0..c.num_hidden_layers {
        v.extend(layer_tensors(c, i));
    }
    v.push(("model.norm.weight".into(), vec![c.hidden_size]));
    if !c.tie_word_embeddings {
        v.push(("lm_head.weight".into(), vec![c.vocab_size, c.hidden_size]));
    }
    v
}

impl Qwen3 {
    /// Load `dir` (config.json + safetensors) as `dtype` trainable parameters on `device`. Every weight must
    /// be a float tensor of finite values; the weights must fit the device's available memory.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = Qwen3Config::from_file(&dir.join("config.json"))?;
        check_weights_fit(&config, dtype, device)
            .map_err(|e| ModelError::Checkpoint { file: dir.display().to_string(), msg: e.to_string() })?;
        let ck = Checkpoint::open(dir)?;
        if config.tie_word_embeddings && ck.contains("lm_head.weight") {
            // Some exports write the tied head anyway; it must equal the embedding, so it is not read.
        }
        Self::build(config, dtype, device, |name, shape| ck.load(name, shape, dtype, device))
    }

    /// Random weights (N(0, 0.02) matrices, unit norms) for benchmarks of the named shapes.
    pub fn random(config: Qwen3Config, dtype: DType, device: &Device, seed: u64) -> Result<Self> {
        config.validate().map_err(|e| ModelError::Invalid(format!("model config: {e}")))?;
        check_weights_fit(&config, dtype, device)?;
        let mut k = seed;
        Self::build(config, dtype, device, |name, shape| {
            k += 1;
            Ok(if shape.len() == 1 || name.ends_with("norm.weight") {
                Tensor::ones(shape.to_vec(), dtype, device)?
            } else {
                Tensor::randn_hashed(shape.to_vec(), 0.02, dtype, device, k)?
            })
        })
    }

    fn build(
        config: Qwen3Config,
        dtype: DType,
        device: &Device,
        mut get: impl FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Self> {
        let mut params = Vec::new();
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = get(name, shape)?.param();
            params.push((name.to_string(), t.clone()));
            Ok(t)
        };
        let (v, h) = (config.vocab_size, config.hidden_size);
        let embed = take("model.embed_tokens.weight", &[v, h])?;
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let t = layer_tensors(&config, i);
            let mut it = t.iter().map(|(n, s)| take(n, s));
            let mut next = || it.next().expect("11 tensors per layer");
            layers.push(Arc::new(Layer {
                input_norm: next()?,
                q_proj: next()?,
                k_proj: next()?,
                v_proj: next()?,
                o_proj: next()?,
                q_norm: next()?,
                k_norm: next()?,
                post_norm: next()?,
                gate_proj: next()?,
                up_proj: next()?,
                down_proj: next()?,
            }));
        }
        let norm = take("model.norm.weight", &[h])?;
        let lm_head = if config.tie_word_embeddings { None } else { Some(take("lm_head.weight", &[v, h])?) };
        Ok(Self { config, dtype, device: device.clone(), embed, layers, norm, lm_head, params })
    }

    /// The LM-head weight [vocab, hidden] (the embedding when tied).
    pub fn lm_head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Every trainable parameter with its HF name.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Training forward over packed sequences: `ids` i32 [T], `packing` covering T tokens.
    pub fn forward(&self, ids: &Tensor, packing: &Arc<Packing>, opts: &ForwardOptions) -> Result<ForwardOutput> {
        let c = &self.config;
        if ids.dims() != [packing.total()] {
            return Err(ModelError::Invalid(format!(
                "ids {} do not match the packing's {} tokens",
                ids.shape(),
                packing.total()
            )));
        }
        if let Some(&bad) = opts.entropy_layers.iter().find(|&&l| l >= c.num_hidden_layers) {
            return Err(ModelError::Invalid(format!(
                "entropy layer {bad} out of range (model has {})",
                c.num_hidden_layers
            )));
        }
        let pos = Tensor::from_vec(packing.positions(), [packing.total()], &self.device)?;
        let mut x = self.embed.embedding(ids)?;
        let mut entropy = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let want = opts.entropy_layers.contains(&i);
            if opts.checkpoint {
                // The entropy comes out of the first (unrecorded) run; the backward recompute skips it.
                let slot: Arc<Mutex<Option<Tensor>>> = Arc::new(Mutex::new(None));
                let first = Arc::new(AtomicBool::new(want));
                let (l, p, cfg, pk, s) = (layer.clone(), pos.clone(), c.clone(), packing.clone(), slot.clone());
                x = checkpoint(std::slice::from_ref(&x), move |xs| {
                    let want_now = first.swap(false, Ordering::Relaxed);
                    let (y, h) = layer_forward(&l, &cfg, &xs[0], &p, &pk, want_now).map_err(into_engine)?;
                    if let Some(h) = h {
                        *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
                    }
                    Ok(y)
                })?;
                let captured = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(h) = captured {
                    entropy.push((i, h));
                }
            } else {
                let (y, h) = layer_forward(layer, c, &x, &pos, packing, want)?;
                x = y;
                if let Some(h) = h {
                    entropy.push((i, h));
                }
            }
        }
        let hidden = x.rms_norm(&self.norm, c.rms_norm_eps)?;
        Ok(ForwardOutput { hidden, entropy })
    }
}

fn into_engine(e: ModelError) -> entrl_engine::EngineError {
    match e {
        ModelError::Engine(e) => e,
        other => entrl_engine::EngineError::invalid("qwen3 layer", other.to_string()),
    }
}

/// One decoder layer; returns the new residual stream and the attention entropy when asked for.
fn layer_forward(
    l: &Layer,
    c: &Qwen3Config,
    x: &Tensor,
    pos: &Tensor,
    packing: &Packing,
    want_entropy: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (q, k, v) = attention_inputs(l, c, x, pos)?;
    let a = attention(&q, &k, &v, packing, want_entropy)?;
    Ok((layer_output(l, c, x, &a.out)?, a.entropy))
}

/// Pre-attention half of a layer: q [T, Hq, D], k and v [T, Hkv, D] (q/k normed and rotated), by
/// `rms_norm` then `rope_with`, with backward rules: every training forward takes it, including its runs
/// under `no_grad` (checkpointing's first pass, old log-probs), so that they and the recompute or the
/// update's forward take exactly the same kernels.
pub(crate) fn attention_inputs(
    l: &Layer,
    c: &Qwen3Config,
    x: &Tensor,
    pos: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (q, k, v) = project_qkv(l, c, &x.rms_norm(&l.input_norm, c.rms_norm_eps)?)?;
    let (eps, rs) = (c.rms_norm_eps, rope_spec(c));
    Ok((q.rms_norm(&l.q_norm, eps)?.rope_with(pos, rs)?, k.rms_norm(&l.k_norm, eps)?.rope_with(pos, rs)?, v))
}

/// Generation's [`attention_inputs`], from the layer's normed input h = rms_norm(x, input_norm): q/k norm and
/// rope by `ops::qk_norm_rope` (one launch on a GPU instead of four; no gradients).
pub(crate) fn attention_inputs_fused(
    l: &Layer,
    c: &Qwen3Config,
    h: &Tensor,
    pos: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (q, k, v) = project_qkv(l, c, h)?;
    let (q, k) = qk_norm_rope(&q, &k, &l.q_norm, &l.k_norm, pos, c.rms_norm_eps, rope_spec(c))?;
    Ok((q, k, v))
}

/// q [T, Hq, D], k and v [T, Hkv, D] projected from the normed input h (not yet normed or rotated).
fn project_qkv(l: &Layer, c: &Qwen3Config, h: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let t = h.dims()[0];
    let (nq, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let q = h.linear(&l.q_proj)?.reshape([t, nq, hd])?;
    let k = h.linear(&l.k_proj)?.reshape([t, nkv, hd])?;
    let v = h.linear(&l.v_proj)?.reshape([t, nkv, hd])?;
    Ok((q, k, v))
}

fn rope_spec(c: &Qwen3Config) -> RopeSpec {
    RopeSpec { theta: c.rope_theta, bf16_inv_freq: c.rope_bf16_inv_freq }
}

/// Post-attention half: o_proj, residual, MLP, residual.
pub(crate) fn layer_output(l: &Layer, c: &Qwen3Config, x: &Tensor, attn: &Tensor) -> Result<Tensor> {
    let x = x.add(&o_proj(l, c, attn)?)?;
    let h2 = x.rms_norm(&l.post_norm, c.rms_norm_eps)?;
    Ok(x.add(&mlp(l, &h2)?)?)
}

/// Inference's post-attention half (no gradients): [`layer_output`] with each residual add fused with the
/// norm after it: the post-attention norm, then `next_norm` (the next layer's input norm, or the final norm
/// after the last layer). Returns the residual stream and its `next_norm`-normed copy.
pub(crate) fn layer_output_normed(
    l: &Layer,
    c: &Qwen3Config,
    x: &Tensor,
    attn: &Tensor,
    next_norm: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let eps = c.rms_norm_eps;
    let (x, h2) = add_rms_norm(x, &o_proj(l, c, attn)?, &l.post_norm, eps)?;
    Ok(add_rms_norm(&x, &mlp(l, &h2)?, next_norm, eps)?)
}

/// The attention output [T, Hq, D] through o_proj.
fn o_proj(l: &Layer, c: &Qwen3Config, attn: &Tensor) -> Result<Tensor> {
    let t = attn.dims()[0];
    Ok(attn.reshape([t, c.num_attention_heads * c.head_dim])?.linear(&l.o_proj)?)
}

/// The SwiGLU MLP of the post-attention-normed h2.
fn mlp(l: &Layer, h2: &Tensor) -> Result<Tensor> {
    Ok(h2.linear(&l.gate_proj)?.swiglu(&h2.linear(&l.up_proj)?)?.linear(&l.down_proj)?)
}
