//! A training session: the model, tokenizer, optimizer, prompt stream and loop state of one run, built
//! from a [`TrainConfig`] (fresh) or from a checkpoint (resume), and saved atomically as
//! `RUN_DIR/checkpoints/step_NNNNNN/` (HF model folder + optimizer state + loop state).
use crate::config::{DtypeChoice, TrainConfig};
use crate::data::{read_prompts, PromptRow};
use crate::plan::{cpu_training_bytes, plan, PlanInput};
use crate::reward::{verifier_for, Verifier};
use crate::rollout::{encode_prompts, EncodedPrompt, PromptStream};
use crate::strategy::Strategy;
use crate::task::{builtin_model_config, builtin_prompts, builtin_tokenizer};
use entrl_engine::dist::Communicator;
use entrl_engine::optim::{AdamW, AdamWConfig, ShardedAdamW};
use entrl_engine::{DType, Device, Tensor};
use entrl_qwen3::checkpoint::Checkpoint;
use entrl_qwen3::save::{write_atomic, write_safetensors};
use entrl_qwen3::{Qwen3, Qwen3Config, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The optimizer of a session: plain AdamW in one process, ZeRO-2 sharded AdamW across ranks.
pub(crate) enum Optim {
    Plain(AdamW),
    Sharded(ShardedAdamW),
}

pub struct Session {
    pub cfg: TrainConfig,
    pub device: Device,
    pub model: Qwen3,
    pub tok: Tokenizer,
    pub(crate) opt: Optim,
    /// The data-parallel group this session is one rank of (None: a single process).
    pub(crate) comm: Option<Arc<dyn Communicator>>,
    pub(crate) params: Vec<Tensor>,
    names: Vec<String>,
    pub prompts: Vec<EncodedPrompt>,
    pub eval_prompts: Vec<EncodedPrompt>,
    pub(crate) stream: PromptStream,
    pub(crate) strategy: Strategy,
    /// Rollout steps completed.
    pub step: u64,
    pub(crate) next_group: usize,
    pub(crate) skipped_total: u64,
    /// Mean response length of the last step: balances the rollout shares of data-parallel ranks (saved,
    /// since on a GPU the batch composition can change the last bits of the logits).
    pub(crate) expected_response: usize,
    /// Prompts dropped for exceeding max_prompt_len.
    pub dropped_prompts: usize,
    /// The per-GPU memory plan of this configuration (`entrl plan`'s table).
    pub memory_plan: String,
    /// KV-cache slots of the rollouts: `rollout.max_concurrent`, or what auto (0) resolved to here (the
    /// config keeps 0, so a resumed run resolves it again for its own GPU).
    pub rollout_slots: usize,
}

/// The loop state saved next to the weights.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoopState {
    pub step: u64,
    pub stream: PromptStream,
    pub next_group: usize,
    pub skipped_total: u64,
    pub optimizer_steps: u64,
    pub dtype: String,
    /// Data-parallel ranks that wrote the checkpoint (optimizer shards must be read by as many).
    #[serde(default = "one")]
    pub world_size: usize,
    /// The last step's mean response length (balances the next rollout's shares).
    #[serde(default)]
    pub expected_response: usize,
}

fn one() -> usize {
    1
}

/// The device named by `model.device` ([`Device::parse`]); `auto` says why a present GPU is not used.
pub fn resolve_device(name: &str) -> Result<Device, String> {
    if name != "auto" {
        return Device::parse(name).map_err(|e| format!("model.device {name:?}: {e}"));
    }
    let (device, why) = Device::best();
    if let Some(why) = why.filter(|_| Device::cuda_count() > 0) {
        eprintln!("note: training on the CPU: the GPU cannot be used ({why})");
    }
    Ok(device)
}

/// What `model.path` names.
enum ModelSource {
    /// The built-in tiny Qwen3 with the built-in tokenizer.
    Builtin,
    /// `random:qwen3-0.6b` etc.: a named shape with random weights (benchmarks), tokenizer from model.tokenizer.
    Random(String),
    Folder(PathBuf),
}

impl ModelSource {
    fn parse(path: &str) -> Self {
        match path {
            "builtin" => Self::Builtin,
            p => match p.strip_prefix("random:") {
                Some(shape) => Self::Random(shape.to_string()),
                None => Self::Folder(PathBuf::from(p)),
            },
        }
    }
}

fn load_rows(spec: &str, cfg: &TrainConfig) -> Result<Vec<PromptRow>, String> {
    if spec == "builtin" {
        Ok(builtin_prompts(cfg.data.builtin_max_sum))
    } else {
        read_prompts(Path::new(spec))
    }
}

impl Session {
    /// A fresh run (random init for the built-in model).
    pub fn new(cfg: TrainConfig) -> Result<Self, String> {
        Self::build(cfg, None, None)
    }

    /// Continue from a checkpoint folder written by [`Session::save`].
    pub fn resume(cfg: TrainConfig, ckpt: &Path) -> Result<Self, String> {
        Self::build(cfg, Some(ckpt), None)
    }

    /// One rank of a data-parallel group on `device` (fresh, or resumed from `ckpt`).
    pub fn new_rank(
        cfg: TrainConfig,
        ckpt: Option<&Path>,
        comm: Arc<dyn Communicator>,
        device: Device,
    ) -> Result<Self, String> {
        Self::build(cfg, ckpt, Some((comm, device)))
    }

    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank())
    }

    pub fn world_size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.world_size())
    }

    fn build(
        cfg: TrainConfig,
        ckpt: Option<&Path>,
        dist: Option<(Arc<dyn Communicator>, Device)>,
    ) -> Result<Self, String> {
        let (comm, device) = match dist {
            Some((c, d)) => (Some(c), d),
            None => (None, resolve_device(&cfg.model.device)?),
        };
        let dtype = match cfg.model.dtype {
            DtypeChoice::Bf16 => DType::BF16,
            DtypeChoice::Auto => device.default_dtype(),
            DtypeChoice::F32 => DType::F32,
        };
        let source = ModelSource::parse(&cfg.model.path);
        let tok = match (ckpt, &source, cfg.model.tokenizer.as_str()) {
            (Some(dir), _, _) => Tokenizer::from_dir(dir).map_err(|e| e.to_string())?,
            (None, ModelSource::Builtin, _) => builtin_tokenizer(),
            (None, ModelSource::Random(shape), "") => {
                return Err(format!("model.path \"random:{shape}\" needs model.tokenizer (a tokenizer folder)"))
            }
            (None, ModelSource::Folder(dir), "") => Tokenizer::from_dir(dir).map_err(|e| e.to_string())?,
            (None, _, t) => Tokenizer::from_dir(Path::new(t)).map_err(|e| e.to_string())?,
        };
        let (prompts, dropped) = encode_prompts(&load_rows(&cfg.data.train, &cfg)?, &tok, cfg.rollout.max_prompt_len)
            .map_err(|e| format!("{}: {e}", cfg.data.train))?;
        let eval_prompts = if cfg.data.eval.is_empty() {
            Vec::new()
        } else {
            encode_prompts(&load_rows(&cfg.data.eval, &cfg)?, &tok, cfg.rollout.max_prompt_len)
                .map_err(|e| format!("{}: {e}", cfg.data.eval))?
                .0
        };
        // The memory plan comes before any allocation: a configuration that cannot fit is refused here.
        let weights_dir: Option<&Path> = match (ckpt, &source) {
            (Some(dir), _) => Some(dir),
            (None, ModelSource::Folder(dir)) => Some(dir.as_path()),
            _ => None,
        };
        let model_cfg = match (weights_dir, &source) {
            (Some(dir), _) => Qwen3Config::from_file(&dir.join("config.json")),
            (None, ModelSource::Random(shape)) => Qwen3Config::named(shape),
            (None, _) => Ok(builtin_model_config(tok.vocab_size())),
        }
        .map_err(|e| e.to_string())?;
        let world = comm.as_ref().map_or(1, |c| c.world_size());
        let sharded = comm.is_some();
        // The plan sizes this GPU (its total memory), not the 80 GiB H100 `entrl plan` assumes.
        let mut input = PlanInput { sharded, ..PlanInput::from_config(model_cfg.clone(), &cfg, world) };
        if let Some(c) = device.as_cuda() {
            input.gpu_mem_gib = c.total_memory().map_err(|e| e.to_string())? as f64 / (1u64 << 30) as f64;
        }
        input.resolve_max_concurrent(device.is_cuda());
        let rollout_slots = input.max_concurrent;
        let (mem, _) = plan(&input);
        if device.is_cuda() {
            if let Some(refusal) = mem.refusal() {
                return Err(format!("{refusal}\n{}", mem.table()));
            }
        } else {
            // CPU ranks share this process's memory: the whole group's training footprint must be available,
            // and every rank checks it before any rank allocates.
            let bytes = cpu_training_bytes(&model_cfg, dtype.size_in_bytes(), world);
            let what = format!(
                "training this model on the CPU ({} parameters in {dtype}, {world} rank(s): weights, f32 gradients, \
                 AdamW state)",
                model_cfg.num_params()
            );
            Device::Cpu.ensure_fits(&what, bytes).map_err(|e| format!("model.path {:?}: {e}", cfg.model.path))?;
            if let Some(c) = &comm {
                c.barrier().map_err(|e| e.to_string())?;
            }
        }
        let seed = cfg.train.seed;
        let model = match weights_dir {
            Some(dir) => Qwen3::load(dir, dtype, &device),
            None => Qwen3::random(model_cfg, dtype, &device, seed),
        }
        .map_err(|e| e.to_string())?;
        if model.config.vocab_size < tok.vocab_size() {
            return Err(format!(
                "the tokenizer has {} tokens but the model's vocabulary only {}",
                tok.vocab_size(),
                model.config.vocab_size
            ));
        }
        let layers = model.config.num_hidden_layers;
        if let Some(&l) = cfg.tokens.entropy_layers.iter().find(|&&l| l >= layers) {
            return Err(format!(
                "tokens.entropy_layers: layer {l} does not exist (the model has {layers} layers, 0-based)"
            ));
        }
        let (names, params): (Vec<String>, Vec<Tensor>) = model.params().iter().cloned().unzip();
        let t = &cfg.train;
        let opt_cfg = AdamWConfig { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: 1e-8, weight_decay: t.weight_decay };
        let mut opt = match &comm {
            Some(c) => Optim::Sharded(ShardedAdamW::new(&params, opt_cfg, c.clone()).map_err(|e| e.to_string())?),
            None => Optim::Plain(AdamW::new(&params, opt_cfg).map_err(|e| e.to_string())?),
        };
        let world = comm.as_ref().map_or(1, |c| c.world_size());
        let rank = comm.as_ref().map_or(0, |c| c.rank());
        let strategy = cfg.strategy()?;
        let mut stream = PromptStream::new(prompts.len(), cfg.train.seed, cfg.data.shuffle);
        let (mut step, mut next_group, mut skipped_total, mut expected_response) = (0, 0, 0, 0);
        if let Some(dir) = ckpt {
            let text = std::fs::read_to_string(dir.join("state.json"))
                .map_err(|e| format!("{}: {e}", dir.join("state.json").display()))?;
            let st: LoopState = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dir.display()))?;
            if st.stream.len != prompts.len() {
                return Err(format!(
                    "checkpoint {} was taken over {} prompts, the data now has {}",
                    dir.display(),
                    st.stream.len,
                    prompts.len()
                ));
            }
            if st.world_size != world {
                return Err(format!(
                    "checkpoint {} holds optimizer state for {} rank(s); this run has {world}",
                    dir.display(),
                    st.world_size
                ));
            }
            let file = dir.join(optimizer_file(rank, world));
            let ost = Checkpoint::open_file(&file).map_err(|e| e.to_string())?;
            let lookup = |k: &str, shape: &[usize]| ost.load(k, shape, DType::F32, &device).ok();
            match &mut opt {
                Optim::Plain(o) => o.load_state(&names, st.optimizer_steps, lookup),
                Optim::Sharded(o) => o.load_state(st.optimizer_steps, lookup),
            }
            .map_err(|e| format!("{}: {e}", file.display()))?;
            (step, next_group, skipped_total, stream) = (st.step, st.next_group, st.skipped_total, st.stream);
            expected_response = st.expected_response;
        }
        Ok(Self {
            cfg,
            device,
            model,
            tok,
            opt,
            comm,
            params,
            names,
            prompts,
            eval_prompts,
            stream,
            strategy,
            step,
            next_group,
            skipped_total,
            expected_response,
            dropped_prompts: dropped,
            memory_plan: mem.table(),
            rollout_slots,
        })
    }

    /// The verifier for each data source (the built-in task's own, else verl's dispatch).
    pub fn verifier(&self) -> fn(&str) -> Box<dyn Verifier> {
        verifier_for
    }

    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(&self.cfg.run.out_dir)
    }

    /// Write `RUN_DIR/checkpoints/step_NNNNNN/` (into a temporary folder, renamed when complete) and point
    /// `RUN_DIR/checkpoints/latest` at it. Returns the folder. With data parallelism every rank calls it:
    /// rank 0 writes the weights and loop state, each rank its optimizer shard, and the folder is renamed
    /// only after every rank has written (a rank that fails first leaves no checkpoint behind).
    pub fn save(&self) -> Result<PathBuf, String> {
        let root = self.run_dir().join("checkpoints");
        let name = format!("step_{:06}", self.step);
        let (dir, tmp) = (root.join(&name), root.join(format!(".{name}.tmp")));
        let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        let (rank, world) = (self.rank(), self.world_size());
        let barrier = || self.comm.as_ref().map_or(Ok(()), |c| c.barrier().map_err(|e| e.to_string()));
        if rank == 0 {
            std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
            }
            self.model.save(&tmp).map_err(|e| e.to_string())?;
            self.tok.save(&tmp).map_err(|e| e.to_string())?;
        }
        barrier()?;
        let (state, steps) = match &self.opt {
            Optim::Plain(o) => o.state_tensors(&self.names),
            Optim::Sharded(o) => o.state_tensors(),
        }
        .map_err(|e| e.to_string())?;
        write_safetensors(&tmp.join(optimizer_file(rank, world)), &state).map_err(|e| e.to_string())?;
        barrier()?;
        if rank == 0 {
            let st = LoopState {
                step: self.step,
                stream: self.stream.clone(),
                next_group: self.next_group,
                skipped_total: self.skipped_total,
                optimizer_steps: steps,
                dtype: format!("{}", self.model.dtype),
                world_size: world,
                expected_response: self.expected_response,
            };
            let json = serde_json::to_string_pretty(&st).expect("loop state serializes");
            write_atomic(&tmp.join("state.json"), json.as_bytes()).map_err(|e| e.to_string())?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
            }
            std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
            write_atomic(&root.join("latest"), name.as_bytes()).map_err(|e| e.to_string())?;
        }
        barrier()?;
        Ok(dir)
    }
}

/// The optimizer-state file of `rank` (one file without data parallelism).
fn optimizer_file(rank: usize, world: usize) -> String {
    if world == 1 {
        "optimizer.safetensors".into()
    } else {
        format!("optimizer.rank{rank}.safetensors")
    }
}

/// The newest checkpoint of a run directory (`checkpoints/latest`), if any.
pub fn latest_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    let root = run_dir.join("checkpoints");
    let name = std::fs::read_to_string(root.join("latest")).ok()?;
    let dir = root.join(name.trim());
    dir.join("state.json").is_file().then_some(dir)
}

/// The phases of publishing a checkpoint (`Session::save`), each a point where `run.debug_fail_at =
/// "RANK:STEP:kill@PHASE"` can end the process to test that `latest` never names a missing checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavePhase {
    /// The weights, tokenizer and optimizer state are in the temporary folder; state.json is not.
    Written,
    /// The temporary folder is complete (state.json and config.toml written).
    Complete,
    /// (Replacing an existing step folder) `latest` names the temporary folder.
    LatestToTemporary,
    /// (Replacing) the old step folder has been moved aside.
    OldMoved,
    /// The temporary folder has its final name.
    Renamed,
    /// `latest` names the new folder.
    Published,
}

impl SavePhase {
    pub const NAMES: &'static [&'static str] =
        &["written", "complete", "latest-to-temporary", "old-moved", "renamed", "published"];
    pub const ALL: [SavePhase; 6] = [
        SavePhase::Written,
        SavePhase::Complete,
        SavePhase::LatestToTemporary,
        SavePhase::OldMoved,
        SavePhase::Renamed,
        SavePhase::Published,
    ];
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|&p| p == self).expect("listed")]
    }
}

impl std::str::FromStr for SavePhase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| format!("unknown checkpoint phase {s:?}"))
    }
}
