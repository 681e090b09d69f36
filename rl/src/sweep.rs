//! `entrl sweep`: every cell of a grid of configuration values × seeds trained in its own run folder under
//! a sweep folder, described by a manifest (`sweep.json`, written atomically before any cell runs). A
//! sweep resumes: a finished cell (its completion marker) is skipped, a cell with a partial run resumes
//! from its latest checkpoint, a cell never started starts; a sweep folder whose manifest differs is
//! refused. Cells run one after another, or `jobs` at a time on CPU cores.
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The configuration key a seed sets.
pub const SEED_KEY: &str = "train.seed";
/// The manifest in a sweep folder.
pub const MANIFEST: &str = "sweep.json";
/// Written into a cell's run folder when its run finished (not interrupted): the cell is skipped on resume.
pub const DONE: &str = "sweep_cell_done";

/// One cell: its run folder (relative to the sweep folder), its grid overrides and its seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub dir: String,
    pub overrides: Vec<String>,
    pub seed: u64,
}

impl Cell {
    /// The cell's arm: its grid overrides, the seed left out.
    pub fn arm_label(&self) -> String {
        self.overrides.join(" ")
    }
}

/// What a sweep runs: the configuration file, the overrides shared by every cell, the grid, the seeds
/// and the cells (grid values × seeds, in order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub config: Option<String>,
    pub overrides: Vec<String>,
    pub grid: Vec<(String, Vec<String>)>,
    pub seeds: Vec<u64>,
    pub cells: Vec<Cell>,
}

/// A folder name for a cell: its grid values (each key's last part) and seed, with only `[A-Za-z0-9._-]`.
fn cell_dir(parts: &[(String, String)], seed: u64) -> String {
    let mut name: String =
        parts.iter().map(|(k, v)| format!("{}-{v}", k.rsplit('.').next().unwrap_or(k))).collect::<Vec<_>>().join("_");
    name = name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-".contains(c) { c } else { '_' }).collect();
    format!("{name}_seed{seed}")
}

impl Manifest {
    /// Plan a sweep: `grid` entries are `KEY=V1,V2,...` (several keys: their Cartesian product), `seeds`
    /// seeds from the configuration's `train.seed` on. Every grid value is checked against the
    /// configuration.
    pub fn plan(config: Option<&Path>, grid: &[String], seeds: usize, overrides: &[String]) -> Result<Self> {
        if grid.is_empty() {
            return Err(Error::invalid("--grid: give at least one KEY=V1,V2,... (an empty grid has no cells)"));
        }
        if seeds == 0 {
            return Err(Error::invalid("--seeds 0: a sweep needs at least one seed"));
        }
        let base = TrainConfig::resolve(config, overrides)?;
        let mut axes: Vec<(String, Vec<String>)> = Vec::new();
        for g in grid {
            let (key, values) = g.split_once('=').ok_or_else(|| {
                Error::invalid(format!("--grid {g:?}: expected KEY=V1,V2,... (e.g. tokens.strategy=full,anchors:0.2)"))
            })?;
            let key = key.trim().to_string();
            if key == SEED_KEY || key == "run.out_dir" {
                return Err(Error::invalid(format!("--grid {key}: set by the sweep itself (use --seeds / --out)")));
            }
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
            if values.iter().any(String::is_empty) {
                return Err(Error::invalid(format!("--grid {key}: an empty value in {g:?}")));
            }
            if axes.iter().any(|(k, _)| *k == key) {
                return Err(Error::invalid(format!("--grid {key}: given twice")));
            }
            for v in &values {
                let mut o = overrides.to_vec();
                o.push(format!("{key}={v}"));
                TrainConfig::resolve(config, &o).map_err(|e| e.context(format!("--grid {key}={v}")))?;
            }
            axes.push((key, values));
        }
        let seeds: Vec<u64> = (0..seeds as u64).map(|i| base.train.seed.wrapping_add(i)).collect();
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, vs) in &axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    vs.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((k.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let cells = combos
            .iter()
            .flat_map(|c| {
                seeds.iter().map(move |&seed| Cell {
                    dir: cell_dir(c, seed),
                    overrides: c.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    seed,
                })
            })
            .collect();
        Ok(Manifest {
            config: config.map(|p| p.display().to_string()),
            overrides: overrides.to_vec(),
            grid: axes,
            seeds,
            cells,
        })
    }

    /// The manifest of a sweep folder, None when it has none.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let file = dir.join(MANIFEST);
        if !file.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file).map_err(Error::io("read", &file))?;
        serde_json::from_str(&text).map(Some).map_err(|e| Error::data(&file, None, e.to_string()))
    }

    /// How `self` (a folder's manifest) differs from `other` (the requested sweep), None when equal.
    pub fn difference(&self, other: &Manifest) -> Option<String> {
        let show = |v: &dyn std::fmt::Debug| format!("{v:?}");
        if self.config != other.config {
            return Some(format!("config {} → {}", show(&self.config), show(&other.config)));
        }
        if self.overrides != other.overrides {
            return Some(format!("overrides {} → {}", show(&self.overrides), show(&other.overrides)));
        }
        if self.grid != other.grid {
            return Some(format!("grid {} → {}", show(&self.grid), show(&other.grid)));
        }
        if self.seeds != other.seeds {
            return Some(format!("seeds {} → {}", show(&self.seeds), show(&other.seeds)));
        }
        (self.cells != other.cells).then(|| "cells".to_string())
    }

    /// The configuration of a cell run in sweep folder `out`.
    pub fn cell_config(&self, out: &Path, cell: &Cell, extra: &[String]) -> Result<TrainConfig> {
        let mut o = self.overrides.clone();
        o.extend(cell.overrides.iter().cloned());
        o.push(format!("{SEED_KEY}={}", cell.seed));
        o.push(format!("run.out_dir={:?}", out.join(&cell.dir).display().to_string()));
        o.extend(extra.iter().cloned());
        TrainConfig::resolve(self.config.as_deref().map(Path::new), &o)
            .map_err(|e| e.context(format!("cell {}", cell.dir)))
    }
}

/// What became of each cell in [`run_sweep`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellOutcome {
    /// Finished before: skipped.
    Skipped,
    Resumed,
    Started,
}

/// A sweep's end: each cell's outcome (in manifest order), and whether it stopped on request.
#[derive(Debug)]
pub struct SweepSummary {
    pub outcomes: Vec<(String, CellOutcome)>,
    pub interrupted: bool,
}

/// Write the manifest into `out` (or check that the one there is the same) and run every unfinished cell,
/// `jobs` at a time (more than one only on CPU). `extra` overrides apply to every cell without entering the
/// manifest (test settings: quiet output).
pub fn run_sweep(out: &Path, m: &Manifest, jobs: usize, extra: &[String]) -> Result<SweepSummary> {
    let jobs = jobs.max(1);
    let cfgs: Vec<TrainConfig> = m.cells.iter().map(|c| m.cell_config(out, c, extra)).collect::<Result<_>>()?;
    if jobs > 1 {
        if let Some(c) = cfgs.iter().find(|c| c.model.device != "cpu") {
            return Err(Error::invalid(format!(
                "--jobs {jobs}: parallel cells run on CPU cores only, but model.device = {:?}; run the cells one \
                 at a time (--jobs 1) on a GPU, or set model.device=cpu",
                c.model.device
            )));
        }
    }
    match Manifest::read(out)? {
        Some(old) => {
            if let Some(d) = old.difference(m) {
                return Err(Error::invalid(format!(
                    "{}: this sweep folder holds a different sweep ({d}); choose another --out or repeat its command",
                    out.join(MANIFEST).display()
                )));
            }
        }
        None => {
            std::fs::create_dir_all(out).map_err(Error::io("create", out))?;
            let text = serde_json::to_string_pretty(m).expect("manifest serializes");
            let file = out.join(MANIFEST);
            entrl_qwen3::save::write_atomic(&file, text.as_bytes())?;
        }
    }
    let outcomes: Mutex<Vec<Option<CellOutcome>>> = Mutex::new(vec![None; m.cells.len()]);
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let interrupted = std::sync::atomic::AtomicBool::new(false);
    let worker = || loop {
        if failed.lock().unwrap().is_some() || interrupted.load(Ordering::SeqCst) {
            return;
        }
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(cell) = m.cells.get(i) else { return };
        match run_cell(&cfgs[i], &out.join(&cell.dir)) {
            Ok((o, stopped)) => {
                outcomes.lock().unwrap()[i] = Some(o);
                if stopped {
                    interrupted.store(true, Ordering::SeqCst);
                }
            }
            Err(e) => {
                failed.lock().unwrap().get_or_insert(e.context(format!("cell {}", cell.dir)));
            }
        }
    };
    if jobs == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..jobs.min(m.cells.len()) {
                s.spawn(worker);
            }
        });
    }
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    let outcomes = outcomes.into_inner().unwrap();
    Ok(SweepSummary {
        outcomes: m.cells.iter().zip(&outcomes).filter_map(|(c, o)| o.map(|o| (c.dir.clone(), o))).collect(),
        interrupted: interrupted.into_inner() || outcomes.iter().any(Option::is_none),
    })
}

/// Run one cell in `dir`: skipped when finished, resumed from its latest checkpoint when partial (started
/// over when it has no checkpoint), else started. Returns its outcome and whether it stopped on request.
fn run_cell(cfg: &TrainConfig, dir: &Path) -> Result<(CellOutcome, bool)> {
    if dir.join(DONE).is_file() {
        return Ok((CellOutcome::Skipped, false));
    }
    let mut cfg = cfg.clone();
    let (outcome, ck): (CellOutcome, Option<PathBuf>) = match crate::checkpoints::earlier_run(dir) {
        None => (CellOutcome::Started, None),
        Some(_) => match crate::checkpoints::latest(dir).ok().flatten() {
            Some(_) => (CellOutcome::Resumed, Some(crate::run::find_checkpoint(dir)?)),
            None => {
                cfg.run.overwrite = true;
                (CellOutcome::Started, None)
            }
        },
    };
    let summary = crate::train(cfg, ck.as_deref())?;
    if summary.interrupted {
        return Ok((outcome, true));
    }
    let marker = dir.join(DONE);
    let last = summary.steps.last().map_or(0, |s| s.step);
    entrl_qwen3::save::write_atomic(&marker, format!("finished at step {last}\n").as_bytes())?;
    Ok((outcome, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_the_product_of_the_grid_and_seeds() {
        let m = Manifest::plan(
            None,
            &["tokens.strategy=full,anchors:0.2".into(), "train.lr=1e-6,2e-6".into()],
            2,
            &["train.seed=5".into()],
        )
        .unwrap();
        assert_eq!(m.seeds, vec![5, 6]);
        assert_eq!(m.cells.len(), 8);
        assert_eq!(m.cells[0].overrides, vec!["tokens.strategy=full", "train.lr=1e-6"]);
        assert_eq!(m.cells[0].dir, "strategy-full_lr-1e-6_seed5");
        assert_eq!(m.cells[7].dir, "strategy-anchors_0.2_lr-2e-6_seed6");
        let dirs: std::collections::BTreeSet<_> = m.cells.iter().map(|c| &c.dir).collect();
        assert_eq!(dirs.len(), 8);
    }

    #[test]
    fn bad_grids_name_the_problem() {
        let e = |g: &[&str], seeds| {
            Manifest::plan(None, &g.iter().map(|s| s.to_string()).collect::<Vec<_>>(), seeds, &[])
                .unwrap_err()
                .to_string()
        };
        assert!(e(&[], 1).contains("empty grid"));
        assert!(e(&["tokens.strategy=full"], 0).contains("--seeds 0"));
        assert!(e(&["train.lrr=1,2"], 1).contains("unknown configuration key \"train.lrr\""));
        assert!(e(&["tokens.strategy=full,"], 1).contains("empty value"));
        assert!(e(&["tokens.strategy"], 1).contains("expected KEY=V1,V2"));
        assert!(e(&["train.seed=1,2"], 1).contains("--seeds"));
    }

    #[test]
    fn a_different_manifest_is_refused_and_named() {
        let out = std::env::temp_dir().join(format!("entrl-sweep-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let a = Manifest::plan(None, &["tokens.strategy=full,anchors:0.2".into()], 1, &[]).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(MANIFEST), serde_json::to_string(&a).unwrap()).unwrap();
        let b = Manifest::plan(None, &["tokens.strategy=full,explorers:0.2".into()], 1, &[]).unwrap();
        let e = run_sweep(&out, &b, 1, &[]).unwrap_err().to_string();
        assert!(e.contains("holds a different sweep (grid") && e.contains("explorers:0.2"), "{e}");
        let c = Manifest::plan(None, &["tokens.strategy=full,anchors:0.2".into()], 2, &[]).unwrap();
        assert!(run_sweep(&out, &c, 1, &[]).unwrap_err().to_string().contains("(seeds [1] → [1, 2])"));
        let g = Manifest::plan(None, &["tokens.strategy=full".into()], 1, &["model.device=cuda".into()]).unwrap();
        assert!(run_sweep(&out, &g, 2, &[])
            .unwrap_err()
            .to_string()
            .contains("--jobs 2: parallel cells run on CPU cores only"));
        let _ = std::fs::remove_dir_all(&out);
    }
}
