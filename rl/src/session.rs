//! A training session: the model, tokenizer, optimizer, prompt stream and loop state of one run, built
//! from a [`TrainConfig`] (fresh) or from a checkpoint (resume), and saved atomically as
//! `RUN_DIR/checkpoints/step_NNNNNN/` (HF model folder + optimizer state + loop state).
use crate::checkpoints::{self, SavePhase};
use crate::config::{DtypeChoice, FailKind, TrainConfig};
use crate::data::{read_prompts, PromptRow};
use crate::error::{Error, Result};
use crate::plan::{cpu_training_bytes, plan, PlanInput};
use crate::reward::{verifier_by_choice, Verifier};
use crate::rollout::{EncodedPrompt, PromptCounts, PromptEncoder, PromptStream};
use crate::strategy::Strategy;
use crate::task::{builtin_model_config, builtin_prompts, builtin_tokenizer_for};
use entrl_engine::dist::{Communicator, FlatLayout, BUCKET_ELEMENTS};
use entrl_engine::optim::{AdamW, AdamWConfig, ShardedAdamW};
use entrl_engine::{DType, Device, Tensor};
use entrl_qwen3::checkpoint::Checkpoint;
use entrl_qwen3::model::{fused_state_key, state_to_hf};
use entrl_qwen3::save::{write_atomic, write_safetensors_tagged};
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
    pub(crate) names: Vec<String>,
    pub prompts: Vec<EncodedPrompt>,
    pub eval_prompts: Vec<EncodedPrompt>,
    pub(crate) stream: PromptStream,
    pub(crate) strategy: Strategy,
    /// Rollout steps completed.
    pub step: u64,
    pub(crate) next_group: usize,
    pub(crate) skipped_total: u64,
    /// Updates skipped in a row for a non-finite loss or gradient (reset by an applied update).
    pub(crate) consecutive_skips: u64,
    /// Mean response length of the last step: balances the rollout shares of data-parallel ranks (saved,
    /// since on a GPU the batch composition can change the last bits of the logits).
    pub(crate) expected_response: usize,
    /// Training and held-out prompts longer than max_prompt_len: truncated or dropped (`rollout.long_prompts`).
    pub prompt_counts: PromptCounts,
    pub eval_prompt_counts: PromptCounts,
    /// The per-GPU memory plan of this configuration (`entrl plan`'s table).
    pub memory_plan: String,
    /// KV-cache slots of the rollouts: `rollout.max_concurrent`, or what auto (0) resolved to here (the
    /// config keeps 0, so a resumed run resolves it again for its own GPU).
    pub rollout_slots: usize,
    /// This rank's gradient shards at the previous diagnosed update (`crate::diagnose`; not checkpointed).
    pub(crate) diag_prev: Option<crate::diagnose::UpdateShards>,
}

/// The loop state saved next to the weights.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoopState {
    pub step: u64,
    pub stream: PromptStream,
    pub next_group: usize,
    pub skipped_total: u64,
    #[serde(default)]
    pub consecutive_skips: u64,
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
pub fn resolve_device(name: &str) -> Result<Device> {
    if name != "auto" {
        return Device::parse(name).map_err(|e| Error::config("model.device", format!("model.device {name:?}: {e}")));
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

/// The rows `data.train` (`eval` false) or `data.eval` names; `builtin:chain` is the chain task's
/// training or held-out set.
pub(crate) fn load_rows(spec: &str, cfg: &TrainConfig, eval: bool) -> Result<Vec<PromptRow>> {
    use crate::task::{chain_eval_problems, chain_rows, chain_train_problems, CHAIN_SPEC, CHAIN_TRAIN_SEED};
    if spec == "builtin" {
        Ok(builtin_prompts(cfg.data.builtin_max_sum))
    } else if spec == CHAIN_SPEC && eval {
        Ok(chain_rows(&chain_eval_problems()))
    } else if spec == CHAIN_SPEC {
        Ok(chain_rows(&chain_train_problems(CHAIN_TRAIN_SEED)))
    } else {
        read_prompts(Path::new(spec))
    }
}

impl Session {
    /// A fresh run (random init for the built-in model).
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        Self::build(cfg, None, None)
    }

    /// Continue from a checkpoint folder written by [`Session::save`].
    pub fn resume(cfg: TrainConfig, ckpt: &Path) -> Result<Self> {
        Self::build(cfg, Some(ckpt), None)
    }

    /// One rank of a data-parallel group on `device` (fresh, or resumed from `ckpt`).
    pub fn new_rank(
        cfg: TrainConfig,
        ckpt: Option<&Path>,
        comm: Arc<dyn Communicator>,
        device: Device,
    ) -> Result<Self> {
        Self::build(cfg, ckpt, Some((comm, device)))
    }

    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank())
    }

    pub fn world_size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.world_size())
    }

    fn build(cfg: TrainConfig, ckpt: Option<&Path>, dist: Option<(Arc<dyn Communicator>, Device)>) -> Result<Self> {
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
            (Some(dir), _, _) => Tokenizer::from_dir(dir)?,
            (None, ModelSource::Builtin, _) => builtin_tokenizer_for(&cfg.data.train, &cfg.data.eval),
            (None, ModelSource::Random(shape), "") => {
                let msg = format!("model.path \"random:{shape}\" needs model.tokenizer (a tokenizer folder)");
                return Err(Error::config("model.tokenizer", msg));
            }
            (None, ModelSource::Folder(dir), "") => Tokenizer::from_dir(dir)?,
            (None, _, t) => Tokenizer::from_dir(Path::new(t))?,
        };
        let encoder = PromptEncoder::new(&tok, cfg.rollout.max_prompt_len, cfg.rollout.long_prompts);
        let train_set = encoder
            .encode(&load_rows(&cfg.data.train, &cfg, false)?)
            .map_err(|e| e.in_data_file(Path::new(&cfg.data.train)))?;
        let (prompts, prompt_counts) = (train_set.prompts, train_set.counts);
        let (eval_prompts, eval_prompt_counts) = if cfg.data.eval.is_empty() {
            (Vec::new(), PromptCounts::default())
        } else {
            let set = encoder
                .encode(&load_rows(&cfg.data.eval, &cfg, true)?)
                .map_err(|e| e.in_data_file(Path::new(&cfg.data.eval)))?;
            (set.prompts, set.counts)
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
        }?;
        let world = comm.as_ref().map_or(1, |c| c.world_size());
        let sharded = comm.is_some();
        // The plan sizes this GPU (its total memory), not the 80 GiB H100 `entrl plan` assumes.
        let mut input = PlanInput { sharded, ..PlanInput::from_config(model_cfg.clone(), &cfg, world) };
        if let Some(c) = device.as_cuda() {
            input.gpu_mem_gib = c.total_memory()? as f64 / (1u64 << 30) as f64;
        }
        input.resolve_max_concurrent(device.is_cuda());
        let rollout_slots = input.max_concurrent;
        let (mem, _) = plan(&input);
        if device.is_cuda() {
            if let Some(refusal) = mem.refusal() {
                return Err(Error::Memory(format!("{refusal}\n{}", mem.table())));
            }
        } else {
            // CPU ranks share this process's memory: the whole group's training footprint must be available,
            // and every rank checks it before any rank allocates.
            let bytes = cpu_training_bytes(&model_cfg, dtype.size_in_bytes(), cfg.train.grad_dtype, world);
            let grads = cfg.train.grad_dtype.storage().grad_dtype(dtype);
            let what = format!(
                "training this model on the CPU ({} parameters in {dtype}, {world} rank(s): weights, {grads} \
                 gradients, AdamW state)",
                model_cfg.num_params()
            );
            Device::Cpu
                .ensure_fits(&what, bytes)
                .map_err(|e| Error::from(e).context(format!("model.path {:?}", cfg.model.path)))?;
            if let Some(c) = &comm {
                c.barrier()?;
            }
        }
        let seed = cfg.train.seed;
        let model = match weights_dir {
            Some(dir) => Qwen3::load(dir, dtype, &device),
            None => Qwen3::random(model_cfg, dtype, &device, seed),
        }?;
        if model.config.vocab_size < tok.vocab_size() {
            return Err(Error::invalid(format!(
                "the tokenizer has {} tokens but the model's vocabulary only {}",
                tok.vocab_size(),
                model.config.vocab_size
            )));
        }
        let layers = model.config.num_hidden_layers;
        if let Some(&l) = cfg.tokens.entropy_layers.iter().find(|&&l| l >= layers) {
            return Err(Error::config(
                "tokens.entropy_layers",
                format!("tokens.entropy_layers: layer {l} does not exist (the model has {layers} layers, 0-based)"),
            ));
        }
        let (names, params): (Vec<String>, Vec<Tensor>) = model.params().iter().cloned().unzip();
        let t = &cfg.train;
        // `train.grad_dtype`: how the bf16 parameters store their gradients (f32 ones keep f32).
        for p in &params {
            p.set_grad_storage(t.grad_dtype.storage())?;
        }
        let opt_cfg = AdamWConfig { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: 1e-8, weight_decay: t.weight_decay };
        let mut opt = match &comm {
            Some(c) => Optim::Sharded(ShardedAdamW::new(&params, opt_cfg, c.clone())?),
            None => Optim::Plain(AdamW::new(&params, opt_cfg)?),
        };
        let world = comm.as_ref().map_or(1, |c| c.world_size());
        let rank = comm.as_ref().map_or(0, |c| c.rank());
        let strategy = cfg.strategy()?;
        let mut stream = PromptStream::new(prompts.len(), cfg.train.seed, cfg.data.shuffle);
        let (mut step, mut next_group, mut skipped_total, mut expected_response) = (0, 0, 0, 0);
        let mut consecutive_skips = 0;
        let mut diag_prev = None;
        if let Some(dir) = ckpt {
            let state_file = dir.join("state.json");
            let text = entrl_qwen3::files::read_to_string(&state_file)?;
            let st: LoopState =
                serde_json::from_str(&text).map_err(|e| Error::checkpoint(&state_file, e.to_string()))?;
            if st.dtype != format!("{dtype}") {
                return Err(Error::checkpoint(
                    dir,
                    format!(
                        "this checkpoint was trained in {}; this run would use {dtype} (set model.dtype = \"{}\" or \
                         model.device to match)",
                        st.dtype, st.dtype
                    ),
                ));
            }
            if st.stream.len != prompts.len() {
                return Err(Error::checkpoint(
                    dir,
                    format!(
                        "this checkpoint was taken over {} prompts, the data now has {}",
                        st.stream.len,
                        prompts.len()
                    ),
                ));
            }
            if st.world_size != world {
                return Err(Error::checkpoint(
                    dir,
                    format!(
                        "this checkpoint holds optimizer state for {} rank(s); this run has {world}",
                        st.world_size
                    ),
                ));
            }
            let file = dir.join(optimizer_file(rank, world));
            check_optimizer_tags(&file, &st, rank, world)?;
            let ost = Checkpoint::open_file(&file)?;
            // The first tensor that fails to load (missing, wrong shape, non-finite) is the error.
            let failed = std::cell::RefCell::new(None);
            // The file holds HF names: a fused parameter's state is assembled from its HF tensors' rows.
            let specs = model.param_specs();
            let lookup = |k: &str, shape: &[usize]| {
                let t = match fused_state_key(specs, k) {
                    Some((spec, suffix)) => {
                        spec.assemble(|name, s| ost.load(&format!("{name}{suffix}"), s, DType::F32, &device))
                    }
                    None => ost.load(k, shape, DType::F32, &device),
                };
                t.map_err(|e| {
                    failed.borrow_mut().get_or_insert(Error::from(e));
                })
                .ok()
            };
            let loaded = match &mut opt {
                Optim::Plain(o) => o.load_state(&names, st.optimizer_steps, lookup),
                Optim::Sharded(o) => o.load_state(st.optimizer_steps, lookup),
            };
            if let Some(e) = failed.into_inner() {
                return Err(e);
            }
            loaded.map_err(|e| Error::checkpoint(&file, e.to_string()))?;
            (step, next_group, skipped_total, stream) = (st.step, st.next_group, st.skipped_total, st.stream);
            expected_response = st.expected_response;
            consecutive_skips = st.consecutive_skips;
            let shard_len = FlatLayout::new(&params, world, BUCKET_ELEMENTS).shard_len();
            diag_prev = crate::diagnose::load_prev(dir, rank, shard_len)?;
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
            consecutive_skips,
            expected_response,
            prompt_counts,
            eval_prompt_counts,
            memory_plan: mem.table(),
            rollout_slots,
            diag_prev,
        })
    }

    /// The verifier for each data source as `reward.verifier` chooses ([`verifier_by_choice`]).
    pub fn verifier(&self) -> impl Fn(&str) -> Box<dyn Verifier> + Copy {
        let choice = self.cfg.reward.verifier;
        move |source: &str| verifier_by_choice(choice, source)
    }

    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(&self.cfg.run.out_dir)
    }

    /// Write `RUN_DIR/checkpoints/step_NNNNNN/` and point `RUN_DIR/checkpoints/latest` at it, as
    /// [`crate::checkpoints`] publishes (a kill at any instant leaves `latest` naming a complete
    /// checkpoint). Returns the folder. With data parallelism every rank calls it: rank 0 writes the
    /// weights, tokenizer, configuration and loop state, each rank its optimizer shard (tagged with the step
    /// it belongs to), and the folder is published only after every rank has written. Writing refuses
    /// non-finite weights or optimizer state, naming the tensor.
    pub fn save(&self) -> Result<PathBuf> {
        let run_dir = self.run_dir();
        let (rank, world) = (self.rank(), self.world_size());
        let barrier = || self.comm.as_ref().map_or(Ok(()), |c| c.barrier().map_err(Error::from));
        let kill_at = crate::config::parse_fail_at(&self.cfg.run.debug_fail_at)?
            .filter(|f| (f.rank, f.step) == (rank, self.step))
            .and_then(|f| match f.kind {
                FailKind::Kill(phase) => Some(phase),
                _ => None,
            });
        let at = |phase: SavePhase| {
            if kill_at == Some(phase) {
                eprintln!("injected kill (run.debug_fail_at) at checkpoint phase {}", phase.name());
                std::process::exit(137);
            }
        };
        let tmp = checkpoints::root(&run_dir).join(format!(".{}.tmp", checkpoints::step_name(self.step)));
        if rank == 0 {
            checkpoints::begin(&run_dir, self.step)?;
            self.model.save(&tmp)?;
            self.tok.save(&tmp)?;
        }
        barrier()?;
        let (state, steps) = match &self.opt {
            Optim::Plain(o) => o.state_tensors(&self.names),
            Optim::Sharded(o) => o.state_tensors(),
        }?;
        // HF names and shapes, as the weights (the fused projections' state cut into their HF tensors).
        let state = state_to_hf(self.model.param_specs(), state)?;
        let tags = [
            (TAG_STEP, self.step.to_string()),
            (TAG_OPTIMIZER_STEPS, steps.to_string()),
            (TAG_RANK, rank.to_string()),
            (TAG_WORLD, world.to_string()),
        ];
        write_safetensors_tagged(&tmp.join(optimizer_file(rank, world)), &state, &tags)?;
        if let Some(prev) = &self.diag_prev {
            crate::diagnose::save_prev(&tmp, rank, prev)?;
        }
        barrier()?;
        let published = if rank == 0 {
            at(SavePhase::Written);
            let st = LoopState {
                step: self.step,
                stream: self.stream.clone(),
                next_group: self.next_group,
                skipped_total: self.skipped_total,
                consecutive_skips: self.consecutive_skips,
                optimizer_steps: steps,
                dtype: format!("{}", self.model.dtype),
                world_size: world,
                expected_response: self.expected_response,
            };
            write_atomic(&tmp.join("config.toml"), self.cfg.to_toml().as_bytes())?;
            let json = serde_json::to_string_pretty(&st).expect("loop state serializes");
            write_atomic(&tmp.join("state.json"), json.as_bytes())?;
            checkpoints::publish(&run_dir, self.step, &at)
        } else {
            Ok(checkpoints::root(&run_dir).join(checkpoints::step_name(self.step)))
        };
        // Every rank passes this barrier, so a rank-0 failure above cannot leave the others waiting.
        barrier()?;
        if published.is_err() && rank == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        published
    }
}

/// Tags of an optimizer-state file: the step and optimizer step it belongs to, and which rank of how many
/// wrote it, so that a file from another checkpoint or rank is refused.
const TAG_STEP: &str = "entrl.step";
const TAG_OPTIMIZER_STEPS: &str = "entrl.optimizer_steps";
const TAG_RANK: &str = "entrl.rank";
const TAG_WORLD: &str = "entrl.world_size";

/// Refuse an optimizer-state file that does not belong to this checkpoint's step, rank and world size.
fn check_optimizer_tags(file: &Path, st: &LoopState, rank: usize, world: usize) -> Result<()> {
    let tags = checkpoints::read_tags(file)?;
    let want = [
        (TAG_STEP, st.step.to_string()),
        (TAG_OPTIMIZER_STEPS, st.optimizer_steps.to_string()),
        (TAG_RANK, rank.to_string()),
        (TAG_WORLD, world.to_string()),
    ];
    for (k, v) in want {
        match tags.get(k) {
            Some(have) if *have == v => {}
            Some(have) => {
                let msg = format!("optimizer state of another checkpoint ({k} = {have}, its state.json says {v})");
                return Err(Error::checkpoint(file, msg));
            }
            None => {
                let msg = format!("optimizer state without the {k} tag (not written by this entrl)");
                return Err(Error::checkpoint(file, msg));
            }
        }
    }
    Ok(())
}

/// The optimizer-state file of `rank` (one file without data parallelism).
fn optimizer_file(rank: usize, world: usize) -> String {
    if world == 1 {
        "optimizer.safetensors".into()
    } else {
        format!("optimizer.rank{rank}.safetensors")
    }
}
