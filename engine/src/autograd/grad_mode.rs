//! Thread-local grad mode: under `no_grad()` ops record nothing (inference, backward rules, recompute).
use std::cell::Cell;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

pub fn is_grad_enabled() -> bool {
    ENABLED.with(|e| e.get())
}

/// Restores the previous grad mode when dropped.
pub struct GradModeGuard {
    prev: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        ENABLED.with(|e| e.set(self.prev));
    }
}

fn set(on: bool) -> GradModeGuard {
    let prev = ENABLED.with(|e| e.replace(on));
    GradModeGuard { prev }
}

/// Disable recording until the guard drops.
pub fn no_grad() -> GradModeGuard {
    set(false)
}

/// Re-enable recording until the guard drops (used by checkpoint recomputation inside backward).
pub fn enable_grad() -> GradModeGuard {
    set(true)
}
