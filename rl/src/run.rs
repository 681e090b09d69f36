//! `entrl train`: the run loop around [`Session::step`]: resolved config printed and saved, progress bars,
//! a JSONL metrics line per step, periodic mean@k evaluation, checkpoints ([`crate::checkpoints`]), exact
//! resume into the run a checkpoint belongs to, a stop at the next step boundary on request
//! ([`crate::interrupt`]), plots. A fresh run with `train.warmup_sft_steps` first runs the supervised
//! warm start ([`crate::sft`]), logged to `RUN_DIR/sft.jsonl`.
use crate::checkpoints;
use crate::config::{CommChoice, TrainConfig};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport};
use crate::metrics::{append_line, eval_json_line, truncate_after, StepMetrics};
use crate::plot::plot_run;
use crate::progress::Progress;
use crate::session::Session;
use entrl_engine::dist::{Communicator, NcclComm, ThreadComm};
use entrl_engine::Device;
use entrl_qwen3::save::write_atomic;
use entrl_qwen3::SamplingParams;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub steps: Vec<StepMetrics>,
    /// (step, held-out average: the unweighted mean over data sources of mean@k, `val/average`) of every
    /// evaluation, the initial one at step 0 included.
    pub evals: Vec<(u64, f64)>,
    pub checkpoint: Option<PathBuf>,
    pub plots: Vec<PathBuf>,
    pub seconds: f64,
    /// The run stopped early on [`crate::interrupt::request`] (after saving a checkpoint when it had
    /// trained since it started).
    pub interrupted: bool,
    /// The supervised warm start's updates (`train.warmup_sft_steps`; empty when resumed or off).
    pub sft: Vec<crate::sft::SftStep>,
}

/// Where to resume from: a checkpoint folder, or a run directory (its latest checkpoint; an interrupted
/// publication there is finished first).
pub fn find_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    if checkpoints::root(path).is_dir() {
        for note in checkpoints::repair(path)? {
            eprintln!("note: {note}");
        }
    }
    checkpoints::latest(path)?.ok_or_else(|| {
        Error::checkpoint(path, "neither a checkpoint folder (state.json) nor a run directory with checkpoints/latest")
    })
}

/// Whether two paths name the same existing folder.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Make `run.out_dir` ready before any rank starts, so that no run writes into another run's folder:
/// - a fresh run refuses a folder that holds an earlier run (unless `run.overwrite`);
/// - a resumed run continues in the folder its checkpoint belongs to, after checking that the
///   configuration equals the checkpoint's in every key that changes training; resumed into another
///   folder, that folder must hold no run, and it receives the history up to the checkpoint.
///
/// Leftovers of interrupted writes are removed. Returns the checkpoint and whether it is resumed in place.
fn prepare_run_dir(cfg: &TrainConfig, resume: Option<&Path>) -> Result<(Option<PathBuf>, bool)> {
    let run_dir = PathBuf::from(&cfg.run.out_dir);
    let ck = resume.map(find_checkpoint).transpose()?;
    let own = ck.as_deref().and_then(checkpoints::run_dir_of);
    let in_place = own.as_ref().is_some_and(|d| same_dir(d, &run_dir));
    if let Some(ck) = &ck {
        if let Some(saved) = checkpoints::saved_config(ck)? {
            let conflicts = cfg.resume_conflicts(&saved);
            if !conflicts.is_empty() {
                let msg = format!(
                    "this configuration differs from the one the checkpoint was trained with, in keys that \
                     change training (checkpoint's → this run's):\n  {}\n(a resumed run may change only {})",
                    conflicts.join("\n  "),
                    crate::config::RESUME_FREE
                        .iter()
                        .map(|k| if k.ends_with('.') { format!("{k}*") } else { k.to_string() })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Err(Error::checkpoint(ck, msg));
            }
        }
    }
    if !in_place {
        if let Some(what) = checkpoints::earlier_run(&run_dir) {
            if !cfg.run.overwrite {
                let how = match &ck {
                    None => format!("continue it with `entrl train --resume {}`, ", run_dir.display()),
                    Some(_) => String::new(),
                };
                let msg = format!(
                    "run.out_dir {} holds an earlier run ({what}): {how}choose another run.out_dir, or replace it \
                     with run.overwrite=true",
                    run_dir.display()
                );
                return Err(Error::config("run.out_dir", msg));
            }
            eprintln!("note: run.overwrite: deleting the earlier run in {} ({what})", run_dir.display());
            checkpoints::clear_run(&run_dir)?;
        }
    }
    std::fs::create_dir_all(&run_dir).map_err(Error::io("create", &run_dir))?;
    for note in checkpoints::repair(&run_dir)? {
        eprintln!("note: {note}");
    }
    if let (Some(from), false) = (&own, in_place) {
        // A branch: its metrics start with the history of the run it continues (cut at the checkpoint later).
        let src = from.join("metrics.jsonl");
        if src.is_file() {
            let dst = run_dir.join("metrics.jsonl");
            let history = std::fs::read(&src).map_err(Error::io("read", &src))?;
            write_atomic(&dst, &history)?;
        }
    }
    Ok((ck, in_place))
}

/// Evaluate the session's held-out prompts (mean@k with the eval sampling settings). With data
/// parallelism every rank evaluates its share and the counts are exchanged, so all ranks get the report.
pub fn evaluate_session(s: &Session) -> Result<EvalReport> {
    let r = &s.cfg.run;
    let params = SamplingParams { temperature: r.eval_temperature, top_p: r.eval_top_p, top_k: 0 };
    let verifier = s.verifier();
    let (world, rank) = (s.world_size(), s.rank());
    let n = s.eval_prompts.len();
    let share = (n * rank / world)..(n * (rank + 1) / world);
    let mut rep = evaluate(
        &s.model,
        &s.tok,
        &s.eval_prompts[share.clone()],
        share.start,
        r.eval_k,
        params,
        s.cfg.rollout.max_response_len,
        s.cfg.rollout.generate_options(s.rollout_slots),
        &verifier,
        s.cfg.train.seed ^ s.step,
    )?;
    if let Some(c) = &s.comm {
        let all = c.all_gather_host(serde_json::to_vec(&rep).expect("report serializes"))?;
        rep = EvalReport { per_source: Default::default(), k: r.eval_k };
        for b in all.iter() {
            let other = serde_json::from_slice(b)
                .map_err(|e| Error::Exchange(format!("eval report from another rank: {e}")))?;
            rep.merge(&other);
        }
    }
    Ok(rep)
}

/// CPU ranks (threads) allowed per core.
const CPU_RANKS_PER_CORE: usize = 8;

/// How many data-parallel ranks and on which devices: (world, GPU devices or empty for CPU ranks).
fn resolve_world(cfg: &TrainConfig) -> Result<(usize, Vec<Device>)> {
    let want = cfg.run.world_size;
    if cfg.run.comm == CommChoice::Threads && cfg.model.device.starts_with("cuda") {
        let msg = "run.comm = \"threads\" runs CPU ranks: set model.device = \"cpu\" (or use nccl on GPUs)";
        return Err(Error::config("run.comm", msg));
    }
    let gpus = if cfg.model.device == "cpu" || cfg.run.comm == CommChoice::Threads { 0 } else { Device::cuda_count() };
    if cfg.run.comm == CommChoice::Nccl && gpus == 0 {
        return Err(Error::config("run.comm", "run.comm = \"nccl\" needs a GPU"));
    }
    let single_gpu = want == 1 || (want == 0 && gpus == 1);
    if gpus == 0 || (single_gpu && cfg.run.comm != CommChoice::Nccl) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if want > CPU_RANKS_PER_CORE * cores {
            return Err(Error::config(
                "run.world_size",
                format!(
                    "run.world_size = {want} CPU ranks on a machine with {cores} core(s): at most {} ({CPU_RANKS_PER_CORE} per core)",
                    CPU_RANKS_PER_CORE * cores
                ),
            ));
        }
        return Ok((want.max(1), Vec::new()));
    }
    let world = if want == 0 { gpus } else { want };
    if world > gpus {
        return Err(Error::config(
            "run.world_size",
            format!("run.world_size = {world} but only {gpus} GPU(s) are visible"),
        ));
    }
    let devices = (0..world)
        .map(|i| Device::cuda(i).map_err(|e| Error::from(e).context(format!("GPU {i}"))))
        .collect::<Result<_>>()?;
    Ok((world, devices))
}

/// Train as configured; `resume` continues a run exactly where its checkpoint left it. With
/// `run.world_size` > 1 (or several GPUs), one worker thread per rank trains data-parallel (ZeRO-2).
pub fn train(cfg: TrainConfig, resume: Option<&Path>) -> Result<RunSummary> {
    let (world, devices) = resolve_world(&cfg)?;
    let (ck, in_place) = prepare_run_dir(&cfg, resume)?;
    let start = RunStart { checkpoint: ck.as_deref(), in_place };
    if world == 1 && cfg.run.comm == CommChoice::Auto {
        return run_rank(cfg, start, None);
    }
    let timeout = Duration::from_secs(cfg.run.comm_timeout_s);
    let comms: Vec<Arc<dyn Communicator>> = if devices.is_empty() {
        ThreadComm::group(world, timeout).into_iter().map(|c| Arc::new(c) as Arc<dyn Communicator>).collect()
    } else {
        let cuda: Vec<_> = devices.iter().filter_map(|d| d.as_cuda().cloned()).collect();
        NcclComm::group(&cuda, timeout)?.into_iter().map(|c| Arc::new(c) as Arc<dyn Communicator>).collect()
    };
    let results: Vec<Result<RunSummary>> = std::thread::scope(|sc| {
        let handles: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                let (cfg, dev) = (cfg.clone(), devices.get(rank).cloned().unwrap_or(Device::Cpu));
                let worker = comm.clone();
                let spawned = std::thread::Builder::new().name(format!("rank {rank}")).spawn_scoped(sc, move || {
                    let run = std::panic::AssertUnwindSafe(|| run_rank(cfg, start, Some((comm.clone(), dev))));
                    let r = std::panic::catch_unwind(run).unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(Error::Panicked(msg))
                    });
                    if let Err(e) = &r {
                        comm.abort(&e.to_string());
                    }
                    r
                });
                // A rank that cannot start aborts the group, so the others fail at once instead of waiting.
                spawned.map_err(|e| {
                    let e = Error::Spawn(e);
                    worker.abort(&format!("rank {rank}: {e}"));
                    e
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|_| Err(Error::Panicked("(no message)".into()))),
                Err(e) => Err(e),
            })
            .collect()
    });
    // Report the failure that started it, not the other ranks' "aborted" echoes.
    let mut first_err = None;
    let mut lead = None;
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(s) if rank == 0 => lead = Some(s),
            Ok(_) => {}
            Err(e) if !e.is_group_aborted() => return Err(Error::Rank { rank, source: Box::new(e) }),
            Err(e) => first_err = first_err.or(Some(Error::Rank { rank, source: Box::new(e) })),
        }
    }
    match (first_err, lead) {
        (Some(e), _) => Err(e),
        (None, Some(s)) => Ok(s),
        (None, None) => Err(Error::Internal("rank 0 returned no summary".into())),
    }
}

/// Where a run starts: the checkpoint it resumes (None: fresh) and whether that checkpoint is in the
/// run's own folder.
#[derive(Clone, Copy)]
struct RunStart<'a> {
    checkpoint: Option<&'a Path>,
    in_place: bool,
}

/// Whether a stop was requested; with data parallelism every rank takes the same decision at the same
/// step (a signal may reach the process between two ranks' reads).
fn stop_requested(comm: Option<&Arc<dyn Communicator>>) -> Result<bool> {
    let local = crate::interrupt::requested();
    match comm {
        None => Ok(local),
        Some(c) => Ok(c.all_reduce_host_many(&[local as u8 as f64])?[0] > 0.0),
    }
}

/// One rank's run (the only one without data parallelism). Rank 0 owns the run directory: metrics,
/// evaluation, progress and plots; every rank steps and writes its share of each checkpoint.
fn run_rank(cfg: TrainConfig, start: RunStart, dist: Option<(Arc<dyn Communicator>, Device)>) -> Result<RunSummary> {
    let t0 = Instant::now();
    let comm = dist.as_ref().map(|(c, _)| c.clone());
    let lead = comm.as_ref().is_none_or(|c| c.rank() == 0);
    let run_dir = PathBuf::from(&cfg.run.out_dir);
    let metrics_path = run_dir.join("metrics.jsonl");
    let ckpt = start.checkpoint.map(Path::to_path_buf);
    let mut s = match (dist, &ckpt) {
        (Some((c, d)), ck) => Session::new_rank(cfg, ck.as_deref(), c, d)?,
        (None, Some(ck)) => Session::resume(cfg, ck)?,
        (None, None) => Session::new(cfg)?,
    };
    let cfg = s.cfg.clone();
    if lead {
        if let Some(ck) = &ckpt {
            truncate_after(&metrics_path, s.step).map_err(Error::io("truncate", &metrics_path))?;
            eprintln!("resuming from {} (step {})", ck.display(), s.step);
        }
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    }
    if let Some(c) = &comm {
        c.barrier()?;
    }
    let verbose = lead && cfg.run.log_every > 0;
    if verbose {
        println!("# entrl train: resolved configuration\n{}", cfg.to_toml_annotated());
        println!(
            "# model: {} layers, hidden {}, {} parameters, {} on {} × {} rank(s); {} training prompts ({}), {} eval prompts ({})",
            s.model.config.num_hidden_layers,
            s.model.config.hidden_size,
            s.model.config.num_params(),
            s.model.dtype,
            s.device,
            s.world_size(),
            s.prompts.len(),
            s.prompt_counts,
            s.eval_prompts.len(),
            s.eval_prompt_counts
        );
        match cfg.rollout.kv_cache {
            crate::config::KvCacheChoice::Contiguous if cfg.rollout.max_concurrent == 0 => {
                println!("# rollout: {} KV-cache slots per rank (rollout.max_concurrent = 0: auto)", s.rollout_slots)
            }
            crate::config::KvCacheChoice::Contiguous => {}
            crate::config::KvCacheChoice::Paged => println!(
                "# rollout: paged KV cache, blocks of {} positions, {}, shared prompts {}",
                cfg.rollout.kv_block_size,
                match cfg.rollout.kv_blocks {
                    0 => "a pool of 80% of the free memory (rollout.kv_blocks = 0: auto)".to_string(),
                    n => format!("a pool of {n} blocks"),
                },
                if cfg.rollout.share_prompts { "on" } else { "off" }
            ),
        }
        if cfg.rollout.decode == crate::config::DecodeChoice::Graph {
            println!("# rollout: decode steps replayed as graphs (rollout.decode = graph)");
        }
        if s.device.is_cuda() {
            print!("# per-GPU memory plan (this GPU)\n{}", s.memory_plan);
        }
    }
    let progress = Progress::new(cfg.train.steps, s.step, lead && cfg.run.progress, verbose);
    let mut summary = RunSummary {
        run_dir: run_dir.clone(),
        steps: Vec::new(),
        evals: Vec::new(),
        checkpoint: None,
        plots: Vec::new(),
        seconds: 0.0,
        interrupted: false,
        sft: Vec::new(),
    };
    if ckpt.is_none() && cfg.train.warmup_sft_steps > 0 {
        // The supervised warm start of a fresh run (a resumed one's checkpoint already holds its weights).
        let sft_path = run_dir.join("sft.jsonl");
        if lead && sft_path.exists() {
            std::fs::remove_file(&sft_path).map_err(Error::io("remove", &sft_path))?;
        }
        let t = Instant::now();
        let total = cfg.train.warmup_sft_steps;
        let mut io_err = None;
        let steps = s.warm_start(|st| {
            if lead {
                if let Err(e) = append_line(&sft_path, &st.to_json_line()) {
                    io_err.get_or_insert(Error::io("append to", &sft_path)(e));
                }
                if verbose && (st.step == 1 || st.step.is_multiple_of(50) || st.step == total) {
                    progress.println(&format!(
                        "warm start {:>4}/{total}: nll {:.4} |g| {:.3} ({:.1} s)",
                        st.step,
                        st.nll,
                        st.grad_norm,
                        t.elapsed().as_secs_f64()
                    ));
                }
            }
        })?;
        if let Some(e) = io_err {
            return Err(e);
        }
        summary.sft = steps;
    }
    let has_eval = cfg.run.eval_every > 0 && !s.eval_prompts.is_empty();
    if has_eval && s.step == 0 {
        let rep = evaluate_session(&s)?;
        progress.println(&format!("step 0 (before training): eval {}", eval_summary(&rep)));
        if lead {
            append_line(&metrics_path, &eval_json_line(0, &rep)).map_err(Error::io("append to", &metrics_path))?;
        }
        summary.evals.push((0, rep.average()));
    }
    let fail_at = crate::config::parse_fail_at(&cfg.run.debug_fail_at)?;
    // The checkpoint a run resumes in place is already saved; saving it again would only rewrite it.
    let started_at = s.step;
    let mut saved_at = (ckpt.is_some() && start.in_place).then_some(s.step);
    while s.step < cfg.train.steps {
        if stop_requested(comm.as_ref())? {
            summary.interrupted = true;
            break;
        }
        if let Some(f) = fail_at.filter(|f| (f.rank, f.step) == (s.rank(), s.step + 1)) {
            let injected = Error::Injected { step: s.step + 1 };
            match f.kind {
                crate::config::FailKind::Panic => panic!("{injected}"),
                crate::config::FailKind::Error => return Err(injected),
                crate::config::FailKind::Kill(_) => {}
            }
        }
        let mut m = s.step(&progress)?;
        let held_out = if has_eval && m.step.is_multiple_of(cfg.run.eval_every) {
            let rep = evaluate_session(&s)?;
            m.eval_acc = Some(rep.pooled());
            summary.evals.push((m.step, rep.average()));
            Some(rep)
        } else {
            None
        };
        // Every rank merged the same eval reports in the same order, so every rank takes the same decision.
        let stop = held_out.as_ref().is_some_and(|r| r.reaches(cfg.run.stop_at_accuracy));
        if lead {
            append_line(&metrics_path, &m.to_json_line_with(held_out.as_ref()))
                .map_err(Error::io("append to", &metrics_path))?;
            progress.steps.set_position(m.step);
            progress.steps.set_message(format!("acc {:.2} reward {:+.2}", m.acc_generated, m.reward_mean));
            if m.step.is_multiple_of(cfg.run.log_every.max(1)) {
                progress.println(&step_line(&m, held_out.as_ref()));
            }
            if m.skipped_updates > 0 {
                progress.warn(&format!(
                    "step {}: skipped {} update(s) with a non-finite loss or gradient ({} in this run)",
                    m.step, m.skipped_updates, m.skipped_total
                ));
            }
        }
        summary.steps.push(m);
        if cfg.run.save_every > 0 && s.step.is_multiple_of(cfg.run.save_every) {
            summary.checkpoint = Some(s.save()?);
            saved_at = Some(s.step);
        }
        if stop {
            progress.println(&format!("step {}: held-out average reached run.stop_at_accuracy; stopping", s.step));
            break;
        }
    }
    progress.finish();
    if summary.interrupted {
        if s.step == started_at {
            progress
                .println(&format!("interrupted at step {}: nothing trained since the start, nothing saved", s.step));
        } else if saved_at != Some(s.step) {
            summary.checkpoint = Some(s.save()?);
        }
        if lead {
            let at = summary.checkpoint.as_ref().map(|c| format!(" (checkpoint {})", c.display())).unwrap_or_default();
            eprintln!("interrupted after step {}{at}; resume with: entrl train --resume {}", s.step, run_dir.display());
        }
    } else if cfg.run.save_final && saved_at != Some(s.step) {
        summary.checkpoint = Some(s.save()?);
    }
    if lead && cfg.run.plot && metrics_path.exists() {
        summary.plots = plot_run(&run_dir)?;
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    if verbose {
        if let Some(c) = &summary.checkpoint {
            println!("checkpoint: {}", c.display());
        }
        if let Some(p) = summary.plots.first() {
            println!("plots: {}", p.parent().unwrap_or(p).display());
        }
        println!("metrics: {}  ({:.1} s)", metrics_path.display(), summary.seconds);
    }
    Ok(summary)
}

/// The held-out result as the run prints it: the average over data sources first, then the pooled accuracy.
fn eval_summary(rep: &EvalReport) -> String {
    format!("mean@{} average {:.3} (pooled {:.3})", rep.k, rep.average(), rep.pooled())
}

fn step_line(m: &StepMetrics, held_out: Option<&EvalReport>) -> String {
    let eval = held_out.map(|r| format!(" eval {}", eval_summary(r))).unwrap_or_default();
    format!(
        "step {:>4}: acc {:.3} (gen {:.3}) reward {:+.3} len {:.1} kept {:.2} loss {:+.4} |g| {:.3} clip {:.3} kl {:+.4} lr {:.2e} \
         rounds {} | {:.2}s (roll {:.2} old {:.2} upd {:.2}) {:.0} tok/s{eval}",
        m.step,
        m.acc_mean,
        m.acc_generated,
        m.reward_mean,
        m.response_len_mean,
        m.kept_frac,
        m.loss,
        m.grad_norm,
        m.clip_frac,
        m.approx_kl,
        m.lr,
        m.gen_rounds,
        m.time_step_s,
        m.time_rollout_s,
        m.time_old_logprob_s,
        m.time_update_s,
        m.tokens_per_s
    )
}
