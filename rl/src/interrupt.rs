//! A request to stop a run at the next step boundary (the first Ctrl-C or SIGTERM): the binary's signal
//! handler calls [`request`], which only stores into an atomic (async-signal-safe); the run loop reads
//! [`requested`] after each step, saves a checkpoint and ends with [`crate::RunSummary::interrupted`].
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Ask the running training loop to stop after its current step (safe to call from a signal handler).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop has been requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Forget a request (a library user running several trainings in one process).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
