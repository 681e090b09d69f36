//! Qwen3 on the engine: embedding → layers (RMSNorm → q/k/v (one GEMM) → per-head q/k RMSNorm → RoPE → fused
//! attention → o_proj → residual → RMSNorm → SwiGLU MLP (gate/up one GEMM) → residual) → final RMSNorm → LM head, over packed
//! varlen batches, with per-layer attention entropy from the fused kernel and optional per-layer
//! activation checkpointing.
//!
//! Each layer holds q/k/v as one fused `qkv_proj` weight and gate/up as one `gate_up_proj` (the HF tensors'
//! rows concatenated at load); [`ParamSpec`] maps every parameter to the HF tensors it holds, which is how
//! loading, saving, the optimizer state and the reference check keep the HF names and layout.
use crate::checkpoint::Checkpoint;
use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};
use entrl_engine::dist::{flat_slice, flat_write_at};
use entrl_engine::ops::{add_rms_norm, attention, qk_norm_rope, AttnStats, RopeSpec, RowStats};
use entrl_engine::{checkpoint, DType, Device, Packing, Tensor};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Layer {
    pub input_norm: Tensor,
    /// q, k and v projections as one weight [(Hq + 2·Hkv)·D, hidden]: the rows of HF's q_proj, k_proj, v_proj.
    pub qkv_proj: Tensor,
    pub o_proj: Tensor,
    pub q_norm: Tensor,
    pub k_norm: Tensor,
    pub post_norm: Tensor,
    /// gate and up projections as one weight [2·I, hidden]: the rows of HF's gate_proj, then up_proj.
    pub gate_up_proj: Tensor,
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
    /// Every trainable parameter under its entrl name (tied weights listed once), in checkpoint order.
    params: Vec<(String, Tensor)>,
    /// The HF tensors each parameter of `params` holds (same order).
    specs: Vec<ParamSpec>,
}

/// One HF tensor held as consecutive rows of an entrl parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfPart {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A trainable parameter: its entrl name and shape, and the HF tensors it holds, in row order. An unfused
/// parameter holds one HF tensor of its own name and shape; a fused one (`qkv_proj`, `gate_up_proj`) holds
/// the HF tensors' rows concatenated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub hf: Vec<HfPart>,
}

impl ParamSpec {
    fn plain(name: String, shape: Vec<usize>) -> Self {
        Self { hf: vec![HfPart { name: name.clone(), shape: shape.clone() }], name, shape }
    }

    /// Rows of the HF tensors `parts`, concatenated under `name`.
    fn fused(name: String, parts: Vec<HfPart>) -> Self {
        let cols = parts[0].shape[1];
        let rows = parts.iter().map(|p| p.shape[0]).sum();
        Self { name, shape: vec![rows, cols], hf: parts }
    }

    pub fn is_fused(&self) -> bool {
        self.hf.len() > 1
    }

    /// `t` (this parameter's shape, or anything of as many elements laid out alike, e.g. its optimizer
    /// state) cut into its HF tensors, each named `{hf name}{suffix}`.
    pub fn split(&self, t: &Tensor, suffix: &str) -> Result<Vec<(String, Tensor)>> {
        let total: usize = self.hf.iter().map(|p| p.shape.iter().product::<usize>()).sum();
        if t.numel() != total {
            return Err(ModelError::Invalid(format!(
                "{} has {} elements; {} were expected for {}",
                self.name,
                t.numel(),
                total,
                self.hf.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(" + ")
            )));
        }
        if !self.is_fused() {
            return Ok(vec![(format!("{}{suffix}", self.hf[0].name), t.reshape(self.hf[0].shape.clone())?)]);
        }
        let flat = t.reshape([total])?;
        let mut out = Vec::with_capacity(self.hf.len());
        let mut off = 0;
        for p in &self.hf {
            let n = p.shape.iter().product::<usize>();
            out.push((format!("{}{suffix}", p.name), flat_slice(&flat, off, n)?.reshape(p.shape.clone())?));
            off += n;
        }
        Ok(out)
    }

    /// This parameter from its HF tensors: `get(hf name, hf shape)` for each part, rows concatenated.
    pub fn assemble(&self, mut get: impl FnMut(&str, &[usize]) -> Result<Tensor>) -> Result<Tensor> {
        if !self.is_fused() {
            return get(&self.hf[0].name, &self.hf[0].shape);
        }
        let mut parts = Vec::with_capacity(self.hf.len());
        for p in &self.hf {
            parts.push(get(&p.name, &p.shape)?);
        }
        let out = Tensor::zeros(self.shape.clone(), parts[0].dtype(), parts[0].device())?;
        let mut off = 0;
        for (p, t) in self.hf.iter().zip(&parts) {
            if t.dims() != p.shape.as_slice() || t.dtype() != out.dtype() {
                return Err(ModelError::Invalid(format!(
                    "{}: part {} is {} {}, expected {:?} {}",
                    self.name,
                    p.name,
                    t.shape(),
                    t.dtype(),
                    p.shape,
                    out.dtype()
                )));
            }
            flat_write_at(&out, off, t)?;
            off += t.numel();
        }
        Ok(out)
    }
}

/// What a training forward computes besides the final hidden states.
#[derive(Clone, Debug, Default)]
pub struct ForwardOptions {
    /// 0-based layers whose attention row statistics to return.
    pub probe_layers: Vec<usize>,
    /// Which row statistics (`ops::RowStat`) the probe layers' attention emits.
    pub probe_stats: RowStats,
    /// Recompute each layer's activations in backward instead of keeping them.
    pub checkpoint: bool,
}

impl ForwardOptions {
    /// The attention entropy of `layers` (per token and head, natural log), as the DAPO scores take it.
    pub fn entropy_at(layers: Vec<usize>, checkpoint: bool) -> Self {
        Self { probe_layers: layers, probe_stats: RowStats::ENTROPY, checkpoint }
    }
}

/// One probe layer's attention statistics.
#[derive(Clone, Debug)]
pub struct Probe {
    pub layer: usize,
    pub stats: AttnStats,
}

pub struct ForwardOutput {
    /// Final-normed hidden states [T, hidden]; logits = hidden · lm_headᵀ.
    pub hidden: Tensor,
    /// Each probe layer's statistics, in layer order.
    pub probes: Vec<Probe>,
}

/// The parameters of one layer, in the order of [`Layer`]'s fields.
fn layer_params(c: &Qwen3Config, i: usize) -> Vec<ParamSpec> {
    let (h, hd, it) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let p = |s: &str| format!("model.layers.{i}.{s}.weight");
    let part = |s: &str, shape: Vec<usize>| HfPart { name: p(s), shape };
    vec![
        ParamSpec::plain(p("input_layernorm"), vec![h]),
        ParamSpec::fused(
            p("self_attn.qkv_proj"),
            vec![
                part("self_attn.q_proj", vec![q, h]),
                part("self_attn.k_proj", vec![kv, h]),
                part("self_attn.v_proj", vec![kv, h]),
            ],
        ),
        ParamSpec::plain(p("self_attn.o_proj"), vec![h, q]),
        ParamSpec::plain(p("self_attn.q_norm"), vec![hd]),
        ParamSpec::plain(p("self_attn.k_norm"), vec![hd]),
        ParamSpec::plain(p("post_attention_layernorm"), vec![h]),
        ParamSpec::fused(
            p("mlp.gate_up_proj"),
            vec![part("mlp.gate_proj", vec![it, h]), part("mlp.up_proj", vec![it, h])],
        ),
        ParamSpec::plain(p("mlp.down_proj"), vec![h, it]),
    ]
}

/// Refuse a model whose weights (P parameters of `dtype`) exceed the memory `device` has available.
pub fn check_weights_fit(c: &Qwen3Config, dtype: DType, device: &Device) -> entrl_engine::Result<()> {
    let p = c.checked_num_params().unwrap_or(u64::MAX);
    let bytes = entrl_engine::memory::bytes_of(&[p, dtype.size_in_bytes() as u64]);
    device.ensure_fits(&format!("loading the weights ({p} parameters in {dtype})"), bytes)
}

/// The fused parameter a per-parameter state key `{param name}{suffix}` (e.g. AdamW's
/// `model.layers.0.self_attn.qkv_proj.weight.exp_avg`) belongs to, with the suffix (`.exp_avg`); None for
/// the key of an unfused parameter or of anything else.
pub fn fused_state_key<'a>(specs: &'a [ParamSpec], key: &'a str) -> Option<(&'a ParamSpec, &'a str)> {
    specs.iter().filter(|s| s.is_fused()).find_map(|s| {
        key.strip_prefix(s.name.as_str()).filter(|rest| rest.is_empty() || rest.starts_with('.')).map(|rest| (s, rest))
    })
}

/// Per-parameter state (`{param name}{suffix}` → a tensor of the parameter's layout) under HF names: the
/// entries of fused parameters cut into their HF tensors (`{hf name}{suffix}`), the others unchanged.
pub fn state_to_hf(specs: &[ParamSpec], state: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::with_capacity(state.len());
    for (k, t) in state {
        match fused_state_key(specs, &k) {
            Some((spec, suffix)) => out.extend(spec.split(&t, suffix)?),
            None => out.push((k, t)),
        }
    }
    Ok(out)
}

/// Every trainable parameter of a config with the HF tensors it holds, in checkpoint order.
pub fn parameter_specs(c: &Qwen3Config) -> Vec<ParamSpec> {
    let mut v = vec![ParamSpec::plain("model.embed_tokens.weight".into(), vec![c.vocab_size, c.hidden_size])];
    for i in 0..c.num_hidden_layers {
        v.extend(layer_params(c, i));
    }
    v.push(ParamSpec::plain("model.norm.weight".into(), vec![c.hidden_size]));
    if !c.tie_word_embeddings {
        v.push(ParamSpec::plain("lm_head.weight".into(), vec![c.vocab_size, c.hidden_size]));
    }
    v
}

/// All HF tensor names and shapes of a config, in checkpoint order.
pub fn parameter_shapes(c: &Qwen3Config) -> Vec<(String, Vec<usize>)> {
    parameter_specs(c).into_iter().flat_map(|s| s.hf).map(|p| (p.name, p.shape)).collect()
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

    /// The model from its HF tensors: `get(hf name, hf shape)` (fused parameters concatenate their parts).
    fn build(
        config: Qwen3Config,
        dtype: DType,
        device: &Device,
        mut get: impl FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Self> {
        let (mut params, mut specs) = (Vec::new(), Vec::new());
        let mut take = |spec: ParamSpec| -> Result<Tensor> {
            let t = spec.assemble(&mut get)?.param();
            params.push((spec.name.clone(), t.clone()));
            specs.push(spec);
            Ok(t)
        };
        let (v, h) = (config.vocab_size, config.hidden_size);
        let embed = take(ParamSpec::plain("model.embed_tokens.weight".into(), vec![v, h]))?;
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let mut it = layer_params(&config, i).into_iter();
            let mut next = || match it.next() {
                Some(spec) => take(spec),
                None => Err(ModelError::Invalid(format!("layer {i}: fewer parameters than a layer holds"))),
            };
            layers.push(Arc::new(Layer {
                input_norm: next()?,
                qkv_proj: next()?,
                o_proj: next()?,
                q_norm: next()?,
                k_norm: next()?,
                post_norm: next()?,
                gate_up_proj: next()?,
                down_proj: next()?,
            }));
        }
        let norm = take(ParamSpec::plain("model.norm.weight".into(), vec![h]))?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(take(ParamSpec::plain("lm_head.weight".into(), vec![v, h]))?)
        };
        Ok(Self { config, dtype, device: device.clone(), embed, layers, norm, lm_head, params, specs })
    }

    /// The LM-head weight [vocab, hidden] (the embedding when tied).
    pub fn lm_head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Every trainable parameter with its entrl name: the HF name, or `qkv_proj` / `gate_up_proj` for the
    /// fused projections ([`Qwen3::param_specs`] says which HF tensors each holds).
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The HF tensors each parameter of [`Qwen3::params`] holds (same order).
    pub fn param_specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Every weight under its HF name and shape (the fused projections split; detached views or copies).
    pub fn hf_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (spec, (_, t)) in self.specs.iter().zip(&self.params) {
            out.extend(spec.split(&t.detach(), "")?);
        }
        Ok(out)
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
        if let Some(&bad) = opts.probe_layers.iter().find(|&&l| l >= c.num_hidden_layers) {
            return Err(ModelError::Invalid(format!(
                "probe layer {bad} out of range (model has {})",
                c.num_hidden_layers
            )));
        }
        let pos = Tensor::from_vec(packing.positions(), [packing.total()], &self.device)?;
        let mut x = self.embed.embedding(ids)?;
        let mut probes = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let want = if opts.probe_layers.contains(&i) { opts.probe_stats } else { RowStats::NONE };
            if opts.checkpoint {
                // The statistics come out of the first (unrecorded) run; the backward recompute skips them.
                let slot: Arc<Mutex<Option<AttnStats>>> = Arc::new(Mutex::new(None));
                let first = Arc::new(AtomicBool::new(want.any()));
                let (l, p, cfg, pk, s) = (layer.clone(), pos.clone(), c.clone(), packing.clone(), slot.clone());
                x = checkpoint(std::slice::from_ref(&x), move |xs| {
                    let now = if first.swap(false, Ordering::Relaxed) { want } else { RowStats::NONE };
                    let (y, st) = layer_forward(&l, &cfg, &xs[0], &p, &pk, now).map_err(into_engine)?;
                    if now.any() {
                        *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(st);
                    }
                    Ok(y)
                })?;
                let captured = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(stats) = captured {
                    probes.push(Probe { layer: i, stats });
                }
            } else {
                let (y, stats) = layer_forward(layer, c, &x, &pos, packing, want)?;
                x = y;
                if want.any() {
                    probes.push(Probe { layer: i, stats });
                }
            }
        }
        let hidden = x.rms_norm(&self.norm, c.rms_norm_eps)?;
        Ok(ForwardOutput { hidden, probes })
    }
}

fn into_engine(e: ModelError) -> entrl_engine::EngineError {
    match e {
        ModelError::Engine(e) => e,
        other => entrl_engine::EngineError::invalid("qwen3 layer", other.to_string()),
    }
}

/// One decoder layer; returns the new residual stream and the attention row statistics asked for.
fn layer_forward(
    l: &Layer,
    c: &Qwen3Config,
    x: &Tensor,
    pos: &Tensor,
    packing: &Packing,
    stats: RowStats,
) -> Result<(Tensor, AttnStats)> {
    let (q, k, v) = attention_inputs(l, c, x, pos)?;
    let a = attention(&q, &k, &v, packing, stats)?;
    Ok((layer_output(l, c, x, &a.out)?, a.stats))
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

/// q [T, Hq, D], k and v [T, Hkv, D] projected from the normed input h (not yet normed or rotated): one
/// GEMM by the fused qkv_proj, its output columns split into q, k and v.
fn project_qkv(l: &Layer, c: &Qwen3Config, h: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let t = h.dims()[0];
    let (nq, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let parts = h.linear(&l.qkv_proj)?.split_last(&[nq * hd, nkv * hd, nkv * hd])?;
    let [q, k, v]: [Tensor; 3] =
        parts.try_into().map_err(|_| ModelError::Invalid("split_last returned other than 3 parts for q/k/v".into()))?;
    Ok((q.reshape([t, nq, hd])?, k.reshape([t, nkv, hd])?, v.reshape([t, nkv, hd])?))
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

/// The SwiGLU MLP of the post-attention-normed h2: one GEMM by the fused gate_up_proj, split into gate and up.
fn mlp(l: &Layer, h2: &Tensor) -> Result<Tensor> {
    let it = l.down_proj.dims()[1];
    let parts = h2.linear(&l.gate_up_proj)?.split_last(&[it, it])?;
    let [gate, up]: [Tensor; 2] = parts
        .try_into()
        .map_err(|_| ModelError::Invalid("split_last returned other than 2 parts for gate/up".into()))?;
    Ok(gate.swiglu(&up)?.linear(&l.down_proj)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::tests::{scratch, tiny};
    use safetensors::SafeTensors;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// The HF tensor `name` of `model` (its fused parameter's rows cut out).
    fn hf(model: &Qwen3, name: &str) -> Tensor {
        model.hf_tensors().unwrap().into_iter().find(|(n, _)| n == name).unwrap().1
    }

    /// One GEMM by the fused weight, split, equals q/k/v and gate/up by separate GEMMs of the HF weights.
    #[test]
    fn fused_projections_equal_the_separate_matmuls() {
        let mut c = tiny();
        c.num_hidden_layers = 2;
        let m = Qwen3::random(c.clone(), DType::F32, &Device::Cpu, 5).unwrap();
        let (t, h) = (5, c.hidden_size);
        let x = Tensor::randn([t, h], 1.0, DType::F32, &Device::Cpu, 9).unwrap();
        for (i, l) in m.layers.iter().enumerate() {
            let w = |s: &str| hf(&m, &format!("model.layers.{i}.{s}.weight"));
            let (q, k, v) = project_qkv(l, &c, &x).unwrap();
            let (nq, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
            let q_ref = x.linear(&w("self_attn.q_proj")).unwrap().reshape([t, nq, hd]).unwrap();
            let k_ref = x.linear(&w("self_attn.k_proj")).unwrap().reshape([t, nkv, hd]).unwrap();
            let v_ref = x.linear(&w("self_attn.v_proj")).unwrap().reshape([t, nkv, hd]).unwrap();
            for (ours, want) in [(&q, &q_ref), (&k, &k_ref), (&v, &v_ref)] {
                assert!(max_abs_diff(ours, want) < 1e-6, "layer {i}");
            }
            let gate = x.linear(&w("mlp.gate_proj")).unwrap();
            let up = x.linear(&w("mlp.up_proj")).unwrap();
            let mlp_ref = gate.swiglu(&up).unwrap().linear(&l.down_proj).unwrap();
            assert!(max_abs_diff(&mlp(l, &x).unwrap(), &mlp_ref) < 1e-6, "layer {i}");
        }
    }

    /// The gradient of a fused weight is the HF weights' gradients stacked: the same as the unfused math.
    #[test]
    fn fused_projection_gradients_equal_the_separate_ones() {
        let c = tiny();
        let m = Qwen3::random(c.clone(), DType::F32, &Device::Cpu, 3).unwrap();
        let l = &m.layers[0];
        let x = Tensor::randn([4, c.hidden_size], 1.0, DType::F32, &Device::Cpu, 2).unwrap();
        let (q, k, v) = project_qkv(l, &c, &x).unwrap();
        let loss =
            q.mul(&q).unwrap().sum().unwrap().add(&k.sum().unwrap()).unwrap().add(&v.mul(&v).unwrap().sum().unwrap());
        loss.unwrap().backward().unwrap();
        let g = l.qkv_proj.grad().unwrap();
        let spec = &m.param_specs()[2];
        assert_eq!(spec.name, "model.layers.0.self_attn.qkv_proj.weight");
        let parts = spec.split(&g, "").unwrap();
        let mut ws: Vec<Tensor> = Vec::new();
        for p in ["q_proj", "k_proj", "v_proj"] {
            ws.push(hf(&m, &format!("model.layers.0.self_attn.{p}.weight")).detach_copy().unwrap().param());
        }
        let (qs, ks, vs) = (x.linear(&ws[0]).unwrap(), x.linear(&ws[1]).unwrap(), x.linear(&ws[2]).unwrap());
        let l2 = qs.mul(&qs).unwrap().sum().unwrap().add(&ks.sum().unwrap()).unwrap();
        l2.add(&vs.mul(&vs).unwrap().sum().unwrap()).unwrap().backward().unwrap();
        for ((_, ours), w) in parts.iter().zip(&ws) {
            assert!(max_abs_diff(ours, &w.grad().unwrap()) < 1e-5);
        }
    }

    /// Load then save gives back the HF folder's tensors byte for byte (names, dtypes, shapes, data).
    #[test]
    fn a_saved_model_round_trips_to_the_same_hf_tensors() {
        for (dtype, tied) in [(DType::F32, true), (DType::BF16, false)] {
            let mut c = tiny();
            c.tie_word_embeddings = tied;
            c.num_hidden_layers = 2;
            let (a, b) = (scratch(&format!("rt-a-{tied}")), scratch(&format!("rt-b-{tied}")));
            // an HF folder written tensor by tensor, without the model
            let mut tensors = Vec::new();
            for (k, (name, shape)) in parameter_shapes(&c).into_iter().enumerate() {
                tensors.push((name, Tensor::randn_hashed(shape, 0.5, dtype, &Device::Cpu, 100 + k as u64).unwrap()));
            }
            crate::save::write_safetensors(&a.join("model.safetensors"), &tensors).unwrap();
            crate::save::write_atomic(&a.join("config.json"), c.to_hf_json().as_bytes()).unwrap();
            let m = Qwen3::load(&a, dtype, &Device::Cpu).unwrap();
            assert!(m.params().iter().any(|(n, _)| n == "model.layers.1.self_attn.qkv_proj.weight"));
            assert!(m.params().iter().all(|(n, _)| !n.contains("q_proj") && !n.contains("gate_proj.")));
            m.save(&b).unwrap();
            let (fa, fb) = (
                std::fs::read(a.join("model.safetensors")).unwrap(),
                std::fs::read(b.join("model.safetensors")).unwrap(),
            );
            let (sa, sb) = (SafeTensors::deserialize(&fa).unwrap(), SafeTensors::deserialize(&fb).unwrap());
            let (mut na, mut nb) = (sa.names(), sb.names());
            na.sort();
            nb.sort();
            assert_eq!(na, nb);
            for n in na {
                let (x, y) = (sa.tensor(n).unwrap(), sb.tensor(n).unwrap());
                assert_eq!((x.dtype(), x.shape()), (y.dtype(), y.shape()), "{n}");
                assert!(x.data() == y.data(), "{n} differs after a load and save");
            }
            let _ = std::fs::remove_dir_all(&a);
            let _ = std::fs::remove_dir_all(&b);
        }
    }

    #[test]
    fn state_keys_of_fused_parameters_split_into_hf_names() {
        let c = tiny();
        let specs = parameter_specs(&c);
        let (spec, suffix) = fused_state_key(&specs, "model.layers.0.mlp.gate_up_proj.weight.exp_avg").unwrap();
        assert_eq!((spec.name.as_str(), suffix), ("model.layers.0.mlp.gate_up_proj.weight", ".exp_avg"));
        assert!(fused_state_key(&specs, "model.layers.0.mlp.down_proj.weight.exp_avg").is_none());
        assert!(fused_state_key(&specs, "shard.exp_avg").is_none());
        let state = vec![
            (
                "model.layers.0.self_attn.qkv_proj.weight.master".to_string(),
                Tensor::ones(spec_shape(&specs, 2), DType::F32, &Device::Cpu).unwrap(),
            ),
            ("model.norm.weight.exp_avg".to_string(), Tensor::ones([c.hidden_size], DType::F32, &Device::Cpu).unwrap()),
        ];
        let names: Vec<String> = state_to_hf(&specs, state).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "model.layers.0.self_attn.q_proj.weight.master",
                "model.layers.0.self_attn.k_proj.weight.master",
                "model.layers.0.self_attn.v_proj.weight.master",
                "model.norm.weight.exp_avg"
            ]
        );
        // a tensor of the wrong size is an error naming the parameter, not a panic
        let bad = vec![(
            "model.layers.0.self_attn.qkv_proj.weight.exp_avg".to_string(),
            Tensor::ones([3], DType::F32, &Device::Cpu).unwrap(),
        )];
        let e = state_to_hf(&specs, bad).unwrap_err().to_string();
        assert!(e.contains("qkv_proj") && e.contains("q_proj"), "{e}");
    }

    fn spec_shape(specs: &[ParamSpec], i: usize) -> Vec<usize> {
        specs[i].shape.clone()
    }
}
