//! `entrl train` configuration: a preset's defaults, then a TOML file, then `key=value` overrides (any
//! dotted key, e.g. `train.lr=2e-6`, `tokens.strategy="anchors:0.2"`). Unknown keys are errors.
//!
//! Presets: `dapo` (verl's DAPO recipe, `shared/docs/dapo.md` §8: 512 prompts × 16 responses, mini-batches
//! of 32 prompts, lr 1e-6 with 10 warm-up steps, ε 0.2/0.28, c = 10, lengths 1024/8192, overlong buffer
//! 4096) and `builtin` (the tiny Qwen3 learning the built-in addition task on a laptop in minutes).
use crate::strategy::Strategy;
use entrl_engine::ops::SoftWeightSchedule;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `dapo` or `builtin`: which defaults the file and overrides start from.
    pub preset: String,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub rollout: RolloutConfig,
    pub reward: RewardConfig,
    pub train: OptimConfig,
    pub tokens: TokenConfig,
    pub run: RunConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// An HF Qwen3 folder, `builtin` (random-init tiny Qwen3 with the built-in tokenizer), or
    /// `random:<shape>` (qwen3-0.6b … qwen3-8b with random weights, for benchmarks; needs `tokenizer`).
    pub path: String,
    /// Tokenizer folder when not the model folder ("" = the model folder).
    pub tokenizer: String,
    /// `auto` (bf16 on a GPU, f32 on CPU), `bf16` or `f32`.
    pub dtype: String,
    /// `auto` (the first GPU if there is one), `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Activation checkpointing per layer: `auto` (on for sequences ≥ 2048 tokens), `on`, `off`.
    pub checkpoint_activations: String,
}

impl ModelConfig {
    /// Whether a forward over sequences up to `longest` tokens checkpoints its layers (`auto`: from 2048).
    pub fn checkpoint_for(&self, longest: usize) -> bool {
        match self.checkpoint_activations.as_str() {
            "on" => true,
            "off" => false,
            _ => longest >= 2048,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// verl-layout prompts (`.jsonl` or `.parquet`), or `builtin` (the addition task).
    pub train: String,
    /// Held-out prompts for `run.eval_every` ("" = none; `builtin` = the built-in task).
    pub eval: String,
    /// Largest sum in the built-in task (≤ 9).
    pub builtin_max_sum: usize,
    /// Shuffle the prompts each epoch (seeded).
    pub shuffle: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Responses per prompt.
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    pub max_prompt_len: usize,
    pub max_response_len: usize,
    /// Prompts generated per dynamic-sampling round (verl's gen_batch_size).
    pub gen_batch_size: usize,
    /// Drop prompt groups whose responses are all correct or all wrong, and refill.
    pub dynamic_sampling: bool,
    /// Cap on generation rounds per step (0 = unlimited).
    pub max_gen_rounds: usize,
    /// At the cap: `error` (verl) or `train` on the informative groups found so far (none: no update).
    pub on_short_batch: String,
    /// Sequences decoding at once: KV-cache slots of continuous batching (bounds the preallocated cache).
    /// 0 = auto: on a GPU 90% of what the memory plan fits (`entrl plan` prints it), on the CPU 32.
    pub max_concurrent: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    /// DAPO's soft overlong punishment.
    pub overlong_penalty: bool,
    pub overlong_buffer: usize,
    pub overlong_factor: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Rollout steps to run.
    pub steps: u64,
    /// Prompts per rollout step (each with `rollout.n` responses).
    pub batch_size: usize,
    /// Prompts per optimizer update (mini-batch); batch_size / mini_batch_size updates per step.
    pub mini_batch_size: usize,
    pub epochs: usize,
    /// Token budget of one forward/backward (micro-batch); sequences are packed up to it.
    pub micro_batch_tokens: usize,
    pub lr: f64,
    /// Linear warm-up over this many rollout steps, starting at lr 0 (verl).
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub grad_clip: f64,
    pub eps_low: f64,
    pub eps_high: f64,
    /// Dual-clip ratio c for negative advantages (verl's clip_ratio_c).
    pub clip_ratio_c: f64,
    /// Divide advantages by the group's std (GRPO/DAPO); false = Dr.GRPO's R − mean.
    pub norm_adv_by_std: bool,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// full, random:K, anchors:K, explorers:K, pred-top:K, pred-bottom:K, position-random:K, soft.
    pub strategy: String,
    /// 0-based layers whose head-mean normalised attention entropy (averaged) is the token score.
    pub entropy_layers: Vec<usize>,
    /// Selection pool: `micro-batch`, `mini-batch` or `sequence`.
    pub pool: String,
    /// Loss normaliser: `all` (response tokens of the mini-batch, DAPO) or `selected` (Σ weights).
    pub normalizer: String,
    pub soft_temperature: f64,
    pub soft_direction_start: f64,
    pub soft_direction_end: f64,
    pub soft_ramp_steps: u64,
    pub soft_floor: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run directory: config.toml, metrics.jsonl, checkpoints/, plots/.
    pub out_dir: String,
    /// Save a checkpoint every N steps (0 = none along the way).
    pub save_every: u64,
    /// Save a checkpoint when the run ends.
    pub save_final: bool,
    /// Evaluate mean@k on `data.eval` every N steps (0 = never).
    pub eval_every: u64,
    pub eval_k: usize,
    pub eval_temperature: f64,
    pub eval_top_p: f64,
    /// Gradient geometry and anchor/explorer statistics per update (costs a second backward).
    pub diagnose: bool,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Print a metrics line every N steps (0 = quiet: nothing on stdout).
    pub log_every: u64,
    /// Stop early once the step's accuracy reaches this (0 = never); the built-in demo uses it.
    pub stop_at_accuracy: f64,
    /// Write the plots at the end of the run.
    pub plot: bool,
    /// Data-parallel ranks (one worker thread each): 0 = every visible GPU (1 on CPU). On a machine
    /// without GPUs, or with model.device = "cpu", N > 1 runs N CPU ranks (the CI path).
    pub world_size: usize,
    /// Collectives: `auto` (none for one rank, NCCL across GPUs, threads across CPU ranks), `nccl`, `threads`
    /// (`nccl`/`threads` with one rank run the sharded path anyway, e.g. to check NCCL on one GPU).
    pub comm: String,
    /// A rank waiting longer than this for the others at a host exchange fails the run (seconds).
    pub comm_timeout_s: u64,
    /// Test hook: "RANK:STEP" makes that rank fail when it starts that step (1-based), "RANK:STEP:panic"
    /// makes it panic; "" = never.
    pub debug_fail_at: String,
}

impl TrainConfig {
    /// verl's DAPO recipe on a model folder the user names.
    pub fn dapo() -> Self {
        Self {
            preset: "dapo".into(),
            model: ModelConfig {
                path: String::new(),
                tokenizer: String::new(),
                dtype: "auto".into(),
                device: "auto".into(),
                checkpoint_activations: "auto".into(),
            },
            data: DataConfig { train: String::new(), eval: String::new(), builtin_max_sum: 9, shuffle: true },
            rollout: RolloutConfig {
                n: 16,
                temperature: 1.0,
                top_p: 1.0,
                top_k: 0,
                max_prompt_len: 1024,
                max_response_len: 8192,
                gen_batch_size: 1536,
                dynamic_sampling: true,
                max_gen_rounds: 10,
                on_short_batch: "error".into(),
                max_concurrent: 0,
            },
            reward: RewardConfig { overlong_penalty: true, overlong_buffer: 4096, overlong_factor: 1.0 },
            train: OptimConfig {
                steps: 100,
                batch_size: 512,
                mini_batch_size: 32,
                epochs: 1,
                micro_batch_tokens: 18_432,
                lr: 1e-6,
                warmup_steps: 10,
                weight_decay: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                grad_clip: 1.0,
                eps_low: 0.2,
                eps_high: 0.28,
                clip_ratio_c: 10.0,
                norm_adv_by_std: true,
                seed: 1,
            },
            tokens: TokenConfig {
                strategy: "full".into(),
                entropy_layers: vec![20],
                pool: "micro-batch".into(),
                normalizer: "all".into(),
                soft_temperature: SoftWeightSchedule::default().temperature,
                soft_direction_start: SoftWeightSchedule::default().direction_start,
                soft_direction_end: SoftWeightSchedule::default().direction_end,
                soft_ramp_steps: SoftWeightSchedule::default().ramp_steps,
                soft_floor: SoftWeightSchedule::default().floor,
            },
            run: RunConfig {
                out_dir: "runs/dapo".into(),
                save_every: 20,
                save_final: true,
                eval_every: 0,
                eval_k: 8,
                eval_temperature: 1.0,
                eval_top_p: 0.7,
                diagnose: false,
                progress: true,
                log_every: 1,
                stop_at_accuracy: 0.0,
                plot: true,
                world_size: 0,
                comm: "auto".into(),
                comm_timeout_s: 7200,
                debug_fail_at: String::new(),
            },
        }
    }

    /// The built-in demo: tiny random-init Qwen3 learning single-digit addition on CPU in minutes.
    pub fn builtin() -> Self {
        let mut c = Self::dapo();
        c.preset = "builtin".into();
        c.model.path = "builtin".into();
        c.data = DataConfig { train: "builtin".into(), eval: "builtin".into(), builtin_max_sum: 9, shuffle: true };
        c.rollout.n = 16;
        c.rollout.max_prompt_len = 16;
        c.rollout.max_response_len = 3;
        c.rollout.gen_batch_size = 24;
        c.rollout.max_gen_rounds = 8;
        c.rollout.on_short_batch = "train".into();
        c.rollout.max_concurrent = 1024;
        c.reward.overlong_penalty = false;
        c.train.steps = 400;
        c.train.batch_size = 16;
        c.train.mini_batch_size = 8;
        c.train.micro_batch_tokens = 4096;
        c.train.lr = 1e-3;
        c.train.warmup_steps = 5;
        c.train.weight_decay = 0.0;
        c.tokens.entropy_layers = vec![1];
        c.run.out_dir = "runs/builtin".into();
        c.run.save_every = 0;
        c.run.eval_every = 25;
        c.run.eval_k = 4;
        c.run.stop_at_accuracy = 0.9;
        c
    }

    pub fn preset(name: &str) -> Result<Self, String> {
        match name {
            "dapo" => Ok(Self::dapo()),
            "builtin" => Ok(Self::builtin()),
            other => Err(format!("unknown preset {other:?} (known: dapo, builtin)")),
        }
    }

    /// Resolve: the preset (from the overrides, else the file, else `builtin` without a file and `dapo`
    /// with one), then the file's keys, then the overrides.
    pub fn resolve(file: Option<&Path>, overrides: &[String]) -> Result<Self, String> {
        let file_value: Option<toml::Table> = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Some(toml::from_str(&text).map_err(|e| format!("{}: not valid TOML: {e}", p.display()))?)
            }
            None => None,
        };
        let parsed: Vec<(Vec<String>, toml::Value)> =
            overrides.iter().map(|o| parse_override(o)).collect::<Result<_, _>>()?;
        let preset = parsed
            .iter()
            .rev()
            .find(|(k, _)| k.len() == 1 && k[0] == "preset")
            .map(|(_, v)| v.as_str().map(String::from).ok_or("preset must be a string".to_string()))
            .or_else(|| {
                file_value
                    .as_ref()
                    .and_then(|t| t.get("preset"))
                    .map(|v| v.as_str().map(String::from).ok_or("preset must be a string".to_string()))
            })
            .transpose()?
            .unwrap_or_else(|| if file.is_some() { "dapo".into() } else { "builtin".into() });
        let base = Self::preset(&preset)?;
        let mut tree = toml::Table::try_from(&base).map_err(|e| e.to_string())?;
        if let Some(f) = file_value {
            merge(&mut tree, f, "").map_err(|e| format!("{}: {e}", file.expect("file given").display()))?;
        }
        for (path, value) in parsed {
            set_path(&mut tree, &path, value)?;
        }
        tree.insert("preset".into(), toml::Value::String(preset));
        let cfg: TrainConfig = toml::Value::Table(tree).try_into().map_err(|e| format!("configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved configuration as TOML (printed at start and saved in the run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serializes")
    }

    pub fn strategy(&self) -> Result<Strategy, String> {
        let s: Strategy = self.tokens.strategy.parse()?;
        Ok(match s {
            Strategy::Soft(_) => Strategy::Soft(SoftWeightSchedule {
                temperature: self.tokens.soft_temperature,
                direction_start: self.tokens.soft_direction_start,
                direction_end: self.tokens.soft_direction_end,
                ramp_steps: self.tokens.soft_ramp_steps,
                floor: self.tokens.soft_floor,
            }),
            s => s,
        })
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.train;
        let r = &self.rollout;
        let check = |ok: bool, msg: String| if ok { Ok(()) } else { Err(msg) };
        self.strategy()?;
        check(!self.model.path.is_empty(), "model.path is empty: give an HF Qwen3 folder or \"builtin\"".into())?;
        check(!self.data.train.is_empty(), "data.train is empty: give a .jsonl file or \"builtin\"".into())?;
        check(r.n >= 1, "rollout.n must be at least 1".into())?;
        check(t.batch_size >= 1 && t.mini_batch_size >= 1, "train.batch_size and mini_batch_size must be ≥ 1".into())?;
        check(
            t.batch_size.is_multiple_of(t.mini_batch_size),
            format!(
                "train.batch_size {} is not a multiple of train.mini_batch_size {}",
                t.batch_size, t.mini_batch_size
            ),
        )?;
        check(r.gen_batch_size >= 1, "rollout.gen_batch_size must be ≥ 1".into())?;
        check(
            ["error", "train"].contains(&r.on_short_batch.as_str()),
            format!("rollout.on_short_batch {:?}: error or train", r.on_short_batch),
        )?;
        check(!r.dynamic_sampling || r.gen_batch_size > 0, "rollout.gen_batch_size must be positive".into())?;
        check(r.max_response_len >= 1 && r.max_prompt_len >= 1, "max prompt/response lengths must be ≥ 1".into())?;
        check(
            !self.reward.overlong_penalty || self.reward.overlong_buffer < r.max_response_len,
            format!(
                "reward.overlong_buffer {} must be below rollout.max_response_len {}",
                self.reward.overlong_buffer, r.max_response_len
            ),
        )?;
        check(
            r.temperature > 0.0 && r.top_p > 0.0 && r.top_p <= 1.0,
            "rollout needs temperature > 0, 0 < top_p ≤ 1".into(),
        )?;
        check(t.lr >= 0.0 && t.grad_clip > 0.0, "train.lr must be ≥ 0 and train.grad_clip > 0".into())?;
        check(t.epochs >= 1, "train.epochs must be ≥ 1".into())?;
        check(
            t.micro_batch_tokens >= r.max_prompt_len + r.max_response_len,
            format!(
                "train.micro_batch_tokens {} must hold one whole sequence (max_prompt_len + max_response_len = {})",
                t.micro_batch_tokens,
                r.max_prompt_len + r.max_response_len
            ),
        )?;
        check(
            ["micro-batch", "mini-batch", "sequence"].contains(&self.tokens.pool.as_str()),
            format!("tokens.pool {:?}: one of micro-batch, mini-batch, sequence", self.tokens.pool),
        )?;
        check(
            ["all", "selected"].contains(&self.tokens.normalizer.as_str()),
            format!("tokens.normalizer {:?}: all or selected", self.tokens.normalizer),
        )?;
        check(
            ["auto", "on", "off"].contains(&self.model.checkpoint_activations.as_str()),
            "model.checkpoint_activations: auto, on or off".into(),
        )?;
        check(["auto", "bf16", "f32"].contains(&self.model.dtype.as_str()), "model.dtype: auto, bf16 or f32".into())?;
        check(!self.tokens.entropy_layers.is_empty(), "tokens.entropy_layers must name at least one layer".into())?;
        check(self.run.eval_k >= 1, "run.eval_k must be ≥ 1".into())?;
        check(
            ["auto", "nccl", "threads"].contains(&self.run.comm.as_str()),
            format!("run.comm {:?}: auto, nccl or threads", self.run.comm),
        )?;
        check(
            !(self.run.diagnose && self.run.world_size > 1),
            "run.diagnose compares full and selected gradients in one process: use run.world_size = 1".into(),
        )
    }
}

/// `a.b.c=value`: the value is read as a TOML value (number, bool, string, array), else as a bare string.
fn parse_override(s: &str) -> Result<(Vec<String>, toml::Value), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("override {s:?} is not key=value"))?;
    let path: Vec<String> = k.trim().split('.').map(|p| p.trim().to_string()).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("override {s:?}: empty key segment"));
    }
    let v = v.trim();
    let value = toml::from_str::<toml::Table>(&format!("x = {v}"))
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()));
    Ok((path, value))
}

/// Merge `src` into `dst`; a key `dst` does not have is an error (typos must not pass silently).
fn merge(dst: &mut toml::Table, src: toml::Table, prefix: &str) -> Result<(), String> {
    for (k, v) in src {
        let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => merge(d, s, &name)?,
            (Some(slot), v) => *slot = v,
            (None, _) => return Err(format!("unknown configuration key {name:?}")),
        }
    }
    Ok(())
}

fn set_path(tree: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let name = path.join(".");
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = tree;
    for p in parents {
        t = match t.get_mut(p) {
            Some(toml::Value::Table(inner)) => inner,
            _ => return Err(format!("unknown configuration key {name:?}")),
        };
    }
    match t.get_mut(last) {
        Some(toml::Value::Table(_)) => Err(format!("{name:?} is a section; set one of its keys")),
        Some(slot) => {
            // A float key given as an integer (lr=1) is still a float.
            *slot = match (&*slot, value) {
                (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
                (_, v) => v,
            };
            Ok(())
        }
        None => Err(format!("unknown configuration key {name:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_overrides_and_errors() {
        let c = TrainConfig::resolve(None, &[]).unwrap();
        assert_eq!(c, TrainConfig::builtin());
        let c = TrainConfig::resolve(None, &["train.lr=1".into(), "tokens.strategy=anchors:0.2".into()]).unwrap();
        assert_eq!(c.train.lr, 1.0);
        assert_eq!(c.tokens.strategy, "anchors:0.2");
        let c =
            TrainConfig::resolve(None, &["preset=dapo".into(), "model.path=/m".into(), "data.train=x.jsonl".into()])
                .unwrap();
        assert_eq!(c.rollout.n, 16);
        assert_eq!(c.train.lr, 1e-6);
        let e = TrainConfig::resolve(None, &["train.lrr=1".into()]).unwrap_err();
        assert!(e.contains("unknown configuration key \"train.lrr\""), "{e}");
        let e = TrainConfig::resolve(None, &["tokens.strategy=middle:0.2".into()]).unwrap_err();
        assert!(e.contains("unknown token strategy"), "{e}");
        let e = TrainConfig::resolve(None, &["train.batch_size=5".into()]).unwrap_err();
        assert!(e.contains("not a multiple"), "{e}");
        let e = TrainConfig::resolve(None, &["preset=dapo".into()]).unwrap_err();
        assert!(e.contains("model.path is empty"), "{e}");
    }

    #[test]
    fn file_round_trip() {
        let dir = std::env::temp_dir().join(format!("entrl-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        let mut c = TrainConfig::builtin();
        c.train.steps = 7;
        std::fs::write(&p, c.to_toml()).unwrap();
        assert_eq!(TrainConfig::resolve(Some(&p), &[]).unwrap(), c);
        std::fs::write(&p, "[train]\nsteps = 3\nbogus = 1\n").unwrap();
        let e = TrainConfig::resolve(Some(&p), &["preset=builtin".into()]).unwrap_err();
        assert!(e.contains("train.bogus"), "{e}");
        std::fs::write(&p, "[train\n").unwrap();
        assert!(TrainConfig::resolve(Some(&p), &[]).unwrap_err().contains("not valid TOML"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
