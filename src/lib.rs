//! entrl-suite: the workspace-level integration tests (`tests/`) and criterion benches (`benches/`).
//! It only re-exports the crates they exercise.
pub use entrl_engine as engine;
