//! Errors of the model crate: bad checkpoints and configs name the file and tensor.
use entrl_engine::EngineError;

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{path}: {msg}")]
    Config { path: String, msg: String },
    #[error("{file}: {msg}")]
    Checkpoint { file: String, msg: String },
    #[error("tensor {name} (in {file}): {msg}")]
    Tensor { name: String, file: String, msg: String },
    #[error("{0}")]
    Invalid(String),
}
