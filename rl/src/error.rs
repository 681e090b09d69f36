//! The RL crate's typed errors. Every fallible function returns [`Result`]; a variant names what a caller
//! may want to match on (a configuration key, a file and line, a checkpoint, a rank), and its one-line
//! message names the same thing for the user (`entrl` prints it after `error: `).
use entrl_engine::EngineError;
use entrl_qwen3::ModelError;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value out of its range, an unknown key, a malformed override or a setting the
    /// machine cannot honour. `key` is the dotted key (`train.lr`; empty when the problem is not one key,
    /// e.g. an override without `=`), `file` the configuration file it came from where known; `msg` is the
    /// whole sentence, which names the key (and usually its value and range) itself.
    #[error("{}{msg}", prefix(file.as_deref()))]
    Config { key: String, file: Option<PathBuf>, msg: String },
    /// A file system operation failed: `action` is the verb ("read", "create", "remove", ...).
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    /// A checkpoint (folder, `latest`, `state.json`, optimizer file) is missing, incomplete, malformed or
    /// does not belong to this run (different configuration, world size or step).
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// The content of an input file is wrong (a dataset, metrics.jsonl, a token trace, a sweep manifest):
    /// `file` where known (not for in-memory text), `line` 1-based where the problem is one line.
    #[error("{}{}{msg}", prefix(file.as_deref()), line.map_or_else(String::new, |l| format!("line {l}: ")))]
    Data { file: Option<PathBuf>, line: Option<usize>, msg: String },
    /// A value that must be finite is not (training diverged): `what` it is ("gradient norm"), at which
    /// `step` (1-based); `msg` is the whole sentence, naming both and what to do.
    #[error("{msg}")]
    NonFinite { what: &'static str, step: u64, msg: String },
    /// Dynamic sampling hit `rollout.max_gen_rounds` with the batch still short: `kept` of `wanted`
    /// informative prompt groups after `rounds` generation rounds (`rollout.on_short_batch = train` trains
    /// on them instead).
    #[error(
        "dynamic sampling: only {kept} of {wanted} informative prompt groups after {rounds} generation rounds \
         (every other group was all-correct or all-wrong); raise max_gen_rounds or the generation batch"
    )]
    ShortBatch { kept: usize, wanted: usize, rounds: usize },
    /// A configuration the memory plan refuses on this device: the message names the biggest items of the
    /// peak phase, then the plan's table.
    #[error("{0}")]
    Memory(String),
    /// A request the operation does not take (a command-line argument, a sweep grid, an evaluation `k`, a
    /// planner input, a data set the settings leave empty); the message names the argument.
    #[error("{0}")]
    Invalid(String),
    /// The chart library failed to draw (plots, comparison and analysis charts).
    #[error("cannot draw a chart: {0}")]
    Plot(String),
    /// A message exchanged between data-parallel ranks was truncated or malformed.
    #[error("{0}")]
    Exchange(String),
    /// The failure `run.debug_fail_at` injects at the start of a step (1-based), to test recovery.
    #[error("injected failure (run.debug_fail_at) at the start of step {step}")]
    Injected { step: u64 },
    /// A state the code should never reach (a missing statistic, a hook without its target): a bug.
    #[error("internal error: {0}")]
    Internal(String),
    /// One rank of a data-parallel run failed with `source`.
    #[error("rank {rank}: {source}")]
    Rank { rank: usize, source: Box<Error> },
    /// A rank's thread could not be started.
    #[error("cannot start its thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// A rank's thread panicked (the payload's message when it was a string).
    #[error("panicked: {0}")]
    Panicked(String),
    /// `source` with what was being done (a prompt row, a sweep cell, a grid value, a GPU).
    #[error("{context}: {source}")]
    Context { context: String, source: Box<Error> },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

fn prefix(file: Option<&Path>) -> String {
    file.map_or_else(String::new, |f| format!("{}: ", f.display()))
}

impl Error {
    /// A configuration error about `key`; `msg` names the key.
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Config { key: key.into(), file: None, msg: msg.into() }
    }

    /// The configuration error's file, when it is one and has none yet (other errors unchanged).
    pub fn in_config_file(self, path: &Path) -> Self {
        match self {
            Self::Config { key, file: None, msg } => Self::Config { key, file: Some(path.to_path_buf()), msg },
            e => e,
        }
    }

    /// A failed file system operation on `path`, for `map_err`.
    pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self::Io { action, path: path.to_path_buf(), source }
    }

    pub fn checkpoint(path: &Path, msg: impl Into<String>) -> Self {
        Self::Checkpoint { path: path.to_path_buf(), msg: msg.into() }
    }

    /// A problem with the content of `file` (at `line`, 1-based, where given).
    pub fn data(file: &Path, line: Option<usize>, msg: impl Into<String>) -> Self {
        Self::Data { file: Some(file.to_path_buf()), line, msg: msg.into() }
    }

    /// The data error's file, when it is one and has none yet (other errors gain the path as context).
    pub fn in_data_file(self, path: &Path) -> Self {
        match self {
            Self::Data { file: None, line, msg } => Self::Data { file: Some(path.to_path_buf()), line, msg },
            e => e.context(path.display()),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// This error with `context` in front ("context: error").
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        Self::Context { context: context.to_string(), source: Box::new(self) }
    }

    /// The error inside any [`Error::Rank`] and [`Error::Context`] wrappers (what to match on).
    pub fn innermost(&self) -> &Error {
        match self {
            Self::Rank { source, .. } | Self::Context { source, .. } => source.innermost(),
            e => e,
        }
    }

    /// Whether this is the echo of another rank's failure: a collective refused because the group was
    /// aborted (the error that caused the abort is the one to report).
    pub fn is_group_aborted(&self) -> bool {
        matches!(
            self.innermost(),
            Self::Engine(EngineError::Aborted(_)) | Self::Model(ModelError::Engine(EngineError::Aborted(_)))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_line_key_and_rank() {
        let e = Error::config("train.lr", "train.lr = inf: must be finite, ≥ 0").in_config_file(Path::new("c.toml"));
        assert_eq!(e.to_string(), "c.toml: train.lr = inf: must be finite, ≥ 0");
        let e = Error::data(Path::new("d.jsonl"), Some(3), "not JSON");
        assert_eq!(e.to_string(), "d.jsonl: line 3: not JSON");
        let e = Error::Data { file: None, line: None, msg: "no prompt rows".into() };
        assert_eq!(e.to_string(), "no prompt rows");
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = Error::io("read", Path::new("/x/y"))(missing);
        assert!(e.to_string().starts_with("cannot read /x/y: "), "{e}");
        let aborted = Error::Engine(EngineError::Aborted("the group was aborted: rank 1: boom".into()));
        let e = Error::Rank { rank: 0, source: Box::new(aborted.context("evaluation")) };
        assert!(e.is_group_aborted());
        assert_eq!(e.to_string(), "rank 0: evaluation: collective: the group was aborted: rank 1: boom");
        let e = Error::Rank { rank: 1, source: Box::new(Error::Engine(EngineError::Comm("timeout".into()))) };
        assert!(!e.is_group_aborted());
    }
}
