//! The on-disk layout of a run folder and how checkpoints are published in it, so that a kill at any
//! instant never leaves `latest` naming a missing or half-written checkpoint, and a run never writes into
//! another run's folder.
//!
//! ```text
//! RUN_DIR/config.toml                 resolved configuration of the run
//! RUN_DIR/metrics.jsonl               one line per step (and per evaluation)
//! RUN_DIR/plots/                      entrl plot
//! RUN_DIR/checkpoints/latest          the name of the newest complete checkpoint folder
//! RUN_DIR/checkpoints/step_NNNNNN/    HF model folder + optimizer state + state.json + config.toml
//! ```
//!
//! Publishing step N (rank 0; [`SavePhase`] names each point):
//! 1. everything is written into `checkpoints/.step_N.tmp/`, `state.json` last ([`SavePhase::Written`],
//!    [`SavePhase::Complete`]);
//! 2. when `step_N/` already exists (a resumed run saving a step again): `latest` is pointed at the
//!    complete temporary folder ([`SavePhase::LatestToTemporary`]) and the old folder is moved to
//!    `.step_N.old` ([`SavePhase::OldMoved`]);
//! 3. `.step_N.tmp` is renamed to `step_N` ([`SavePhase::Renamed`]);
//! 4. `latest` is rewritten (temporary file + rename) to `step_N` ([`SavePhase::Published`]), and
//!    `.step_N.old` is removed.
//!
//! Every rename is atomic, so `latest` always names a folder with a `state.json`, with one exception that
//! readers resolve: between 3 and 4 it names `.step_N.tmp`, which has just become `step_N`
//! ([`latest`] maps the one to the other). [`repair`], run at the start of every run, finishes an
//! interrupted publication and removes leftover temporary folders and files.
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The phases of publishing a checkpoint, each a point where `run.debug_fail_at = "RANK:STEP:kill@PHASE"`
/// ends the process, to test that every interruption leaves a resumable run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavePhase {
    /// The weights, tokenizer and optimizer state are in the temporary folder; `state.json` is not.
    Written,
    /// The temporary folder is complete (`config.toml` and `state.json` written).
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
    pub const ALL: [SavePhase; 6] = [
        SavePhase::Written,
        SavePhase::Complete,
        SavePhase::LatestToTemporary,
        SavePhase::OldMoved,
        SavePhase::Renamed,
        SavePhase::Published,
    ];
    pub const NAMES: &'static [&'static str] =
        &["written", "complete", "latest-to-temporary", "old-moved", "renamed", "published"];

    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|&p| p == self).expect("every phase is listed")]
    }
}

impl std::str::FromStr for SavePhase {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::invalid(format!("unknown checkpoint phase {s:?}")))
    }
}

/// `RUN_DIR/checkpoints`.
pub fn root(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// `step_NNNNNN`.
pub fn step_name(step: u64) -> String {
    format!("step_{step:06}")
}

fn temporary_name(step: u64) -> String {
    format!(".{}.tmp", step_name(step))
}

fn old_name(step: u64) -> String {
    format!(".{}.old", step_name(step))
}

fn write_latest(root: &Path, name: &str) -> Result<()> {
    Ok(entrl_qwen3::save::write_atomic(&root.join("latest"), name.as_bytes())?)
}

/// Create `checkpoints/` and an empty `.step_N.tmp/` for step `step` (removing a stale one); returns it.
pub fn begin(run_dir: &Path, step: u64) -> Result<PathBuf> {
    let root = root(run_dir);
    std::fs::create_dir_all(&root).map_err(Error::io("create", &root))?;
    let tmp = root.join(temporary_name(step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(Error::io("remove", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(Error::io("create", &tmp))?;
    Ok(tmp)
}

/// Publish the complete `.step_N.tmp/` as `step_N/` and point `latest` at it (steps 2–4 of the module
/// doc); `at` is called at each phase. Returns the published folder.
pub fn publish(run_dir: &Path, step: u64, at: &dyn Fn(SavePhase)) -> Result<PathBuf> {
    let root = root(run_dir);
    let (name, tmp, old) = (step_name(step), root.join(temporary_name(step)), root.join(old_name(step)));
    let dir = root.join(&name);
    at(SavePhase::Complete);
    if dir.exists() {
        write_latest(&root, &temporary_name(step))?;
        at(SavePhase::LatestToTemporary);
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(Error::io("remove", &old))?;
        }
        std::fs::rename(&dir, &old).map_err(Error::io("move aside", &dir))?;
        at(SavePhase::OldMoved);
    }
    std::fs::rename(&tmp, &dir).map_err(Error::io("publish", &dir))?;
    at(SavePhase::Renamed);
    write_latest(&root, &name)?;
    at(SavePhase::Published);
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(Error::io("remove", &old))?;
    }
    Ok(dir)
}

/// `step_N` or `.step_N.tmp` → N.
fn parse_step_name(name: &str) -> Option<(u64, bool)> {
    let (inner, temporary) = match name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
        Some(inner) => (inner, true),
        None => (name, false),
    };
    let digits = inner.strip_prefix("step_")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok().map(|n| (n, temporary)))?
}

fn is_checkpoint(dir: &Path) -> bool {
    dir.join("state.json").is_file()
}

/// The checkpoint `RUN_DIR/checkpoints/latest` names (None when there is no `latest`). `latest` must hold
/// the plain name of a sibling step folder; one that names anything else, or a folder without
/// `state.json`, is an error naming it.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    let root = root(run_dir);
    let file = root.join("latest");
    if !file.exists() {
        return Ok(None);
    }
    let text = entrl_qwen3::files::read_to_string(&file)?;
    // The errors name the checkpoints folder, then "latest names ...".
    let name = entrl_qwen3::files::plain_name(text.trim(), "latest").map_err(|e| Error::checkpoint(&root, e))?;
    let Some((step, temporary)) = parse_step_name(name) else {
        return Err(Error::checkpoint(
            &root,
            format!("latest names {name:?}, which is not a step_N checkpoint folder"),
        ));
    };
    let dir = root.join(name);
    if is_checkpoint(&dir) {
        return Ok(Some(dir));
    }
    // Between the rename of `.step_N.tmp` and the rewrite of `latest` (publication step 3 → 4).
    let published = root.join(step_name(step));
    if temporary && is_checkpoint(&published) {
        return Ok(Some(published));
    }
    Err(Error::checkpoint(&root, format!("latest names {name:?}, which is not a complete checkpoint (no state.json)")))
}

/// Finish a publication a kill interrupted and remove leftovers (`.step_N.tmp`, `.step_N.old`, temporary
/// files of atomic writes). Returns a note per repair for the log.
pub fn repair(run_dir: &Path) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let root = root(run_dir);
    if !root.is_dir() {
        return Ok(notes);
    }
    if let Ok(text) = std::fs::read_to_string(root.join("latest")) {
        if let Some((step, true)) = parse_step_name(text.trim()) {
            // `latest` names a complete temporary folder (steps 2–3 were interrupted): finish them.
            let (tmp, dir) = (root.join(temporary_name(step)), root.join(step_name(step)));
            if is_checkpoint(&tmp) {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(Error::io("remove", &dir))?;
                }
                std::fs::rename(&tmp, &dir).map_err(Error::io("publish", &dir))?;
            }
            if is_checkpoint(&dir) {
                write_latest(&root, &step_name(step))?;
                notes.push(format!("finished publishing {}", dir.display()));
            }
        }
    }
    for entry in std::fs::read_dir(&root).map_err(Error::io("list", &root))? {
        let path = entry.map_err(Error::io("list", &root))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let leftover = (name.starts_with(".step_") && (name.ends_with(".tmp") || name.ends_with(".old")))
            || (name.starts_with("latest") && name.ends_with(".tmp"));
        if leftover {
            let r = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            r.map_err(Error::io("remove", &path))?;
            notes.push(format!("removed the leftover {}", path.display()));
        }
    }
    for name in ["metrics.jsonl.tmp", "config.toml.tmp"] {
        let p = run_dir.join(name);
        if p.is_file() {
            std::fs::remove_file(&p).map_err(Error::io("remove", &p))?;
            notes.push(format!("removed the leftover {}", p.display()));
        }
    }
    Ok(notes)
}

/// What a folder holds of an earlier run (metric lines, checkpoints), described for a message; None when
/// it holds none (missing, empty, or only files a run rewrites anyway).
pub fn earlier_run(run_dir: &Path) -> Option<String> {
    let lines = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    let steps: Vec<String> = std::fs::read_dir(root(run_dir))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| parse_step_name(n).is_some()).collect()
        })
        .unwrap_or_default();
    if lines == 0 && steps.is_empty() {
        return None;
    }
    let newest = steps.iter().filter_map(|n| parse_step_name(n)).map(|(s, _)| s).max();
    Some(format!(
        "{lines} metric line(s){}",
        newest.map(|s| format!(" and checkpoints up to {}", step_name(s))).unwrap_or_default()
    ))
}

/// Delete what a run writes into its folder (for `run.overwrite`), leaving other files alone.
pub fn clear_run(run_dir: &Path) -> Result<()> {
    for name in ["metrics.jsonl", "sft.jsonl", "config.toml"] {
        let p = run_dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(Error::io("remove", &p))?;
        }
    }
    for dir in [root(run_dir), run_dir.join("plots"), crate::trace::trace_dir(run_dir)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(Error::io("remove", &dir))?;
        }
    }
    Ok(())
}

/// The run folder a checkpoint folder belongs to (`RUN_DIR/checkpoints/step_N` → `RUN_DIR`), if it sits in one.
pub fn run_dir_of(checkpoint: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(checkpoint).ok()?;
    let parent = abs.parent()?;
    (parent.file_name()? == "checkpoints").then(|| parent.parent().map(Path::to_path_buf))?
}

/// The configuration a checkpoint was trained with: its own `config.toml`, else (checkpoints written before
/// they carried one) its run folder's. None when neither exists.
pub fn saved_config(checkpoint: &Path) -> Result<Option<TrainConfig>> {
    let own = checkpoint.join("config.toml");
    let run = run_dir_of(checkpoint).map(|d| d.join("config.toml"));
    let Some(file) = std::iter::once(own).chain(run).find(|p| p.is_file()) else { return Ok(None) };
    let table = crate::config::read_table(&file)?;
    TrainConfig::from_table(table).map(Some).map_err(|e| e.in_config_file(&file))
}

/// The `__metadata__` tags of a safetensors file (read from its header only).
pub fn read_tags(file: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let at = |m: String| Error::checkpoint(file, m);
    let mut f = entrl_qwen3::files::open_regular(file)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| at(format!("no safetensors header ({e})")))?;
    let len = u64::from_le_bytes(len);
    let size = f.metadata().map_err(|e| at(e.to_string()))?.len();
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(at(format!("safetensors header of {len} bytes does not fit the file")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| at(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&header).map_err(|e| at(format!("bad header ({e})")))?;
    Ok(v.get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(dir: &Path, step: u64) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("state.json"), format!("{{\"step\": {step}}}")).unwrap();
    }

    /// Every prefix of a publication, replacing an existing step folder or not, leaves `latest` naming a
    /// complete checkpoint (the newest one once it is renamed), and `repair` then leaves a clean folder.
    #[test]
    fn a_kill_at_any_phase_leaves_latest_resolvable() {
        for replacing in [false, true] {
            for stop in SavePhase::ALL {
                // `Written` comes before `publish` (Session::save); the others are its own.
                let skipped = matches!(stop, SavePhase::LatestToTemporary | SavePhase::OldMoved) && !replacing;
                if stop == SavePhase::Written || skipped {
                    continue;
                }
                let run = std::env::temp_dir().join(format!("entrl-ckpt-{}-{replacing}-{stop:?}", std::process::id()));
                let _ = std::fs::remove_dir_all(&run);
                // Step 1 published, and (replacing) a step 2 from an earlier attempt.
                complete(&begin(&run, 1).unwrap(), 1);
                publish(&run, 1, &|_| {}).unwrap();
                if replacing {
                    complete(&begin(&run, 2).unwrap(), 2);
                    publish(&run, 2, &|_| {}).unwrap();
                }
                complete(&begin(&run, 2).unwrap(), 2);
                // Run the publication up to `stop` by unwinding out of it there.
                let r = std::panic::catch_unwind(|| {
                    publish(&run, 2, &|p| {
                        if p == stop {
                            std::panic::panic_any("stop")
                        }
                    })
                });
                assert!(r.is_err(), "{stop:?} was reached");
                let found = latest(&run).unwrap().expect("latest exists");
                assert!(is_checkpoint(&found), "{replacing} {stop:?}: {}", found.display());
                repair(&run).unwrap();
                let found = latest(&run).unwrap().unwrap();
                assert!(found.ends_with("step_000001") || found.ends_with("step_000002"), "{}", found.display());
                let names: Vec<String> = std::fs::read_dir(root(&run))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
                    .collect();
                assert!(names.is_empty(), "{replacing} {stop:?}: leftovers {names:?}");
                std::fs::remove_dir_all(&run).unwrap();
            }
        }
    }

    #[test]
    fn latest_must_name_a_sibling_step_folder() {
        let run = std::env::temp_dir().join(format!("entrl-latest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        assert_eq!(latest(&run).unwrap(), None);
        std::fs::create_dir_all(root(&run)).unwrap();
        for bad in ["../../etc", "/tmp", "step_000001/../..", "model", "step_"] {
            std::fs::write(root(&run).join("latest"), bad).unwrap();
            let e = latest(&run).unwrap_err();
            assert!(matches!(&e, Error::Checkpoint { path, .. } if path == &root(&run)), "{e:?}");
            assert!(e.to_string().contains("latest names"), "{bad}: {e}");
        }
        std::fs::write(root(&run).join("latest"), "step_000003").unwrap();
        assert!(latest(&run).unwrap_err().to_string().contains("not a complete checkpoint"));
        std::fs::remove_dir_all(&run).unwrap();
    }

    #[test]
    fn earlier_runs_are_recognised_and_cleared() {
        let run = std::env::temp_dir().join(format!("entrl-earlier-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        assert_eq!(earlier_run(&run), None);
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("config.toml"), "x").unwrap();
        std::fs::write(run.join("notes.txt"), "mine").unwrap();
        assert_eq!(earlier_run(&run), None, "a config alone is rewritten by the next run");
        std::fs::write(run.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
        complete(&root(&run).join("step_000004"), 4);
        assert_eq!(earlier_run(&run).unwrap(), "1 metric line(s) and checkpoints up to step_000004");
        clear_run(&run).unwrap();
        assert_eq!(earlier_run(&run), None);
        assert!(run.join("notes.txt").is_file(), "other files stay");
        std::fs::remove_dir_all(&run).unwrap();
    }
}
