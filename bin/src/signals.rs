//! Ctrl-C and SIGTERM during `entrl train`: the first signal asks the run to stop after its current step
//! (it then saves a checkpoint, prints the resume command and exits 130); a second one exits at once.
use std::sync::atomic::{AtomicUsize, Ordering};

static RECEIVED: AtomicUsize = AtomicUsize::new(0);

const FIRST: &[u8] =
    b"\nentrl: stopping after the current step, then saving a checkpoint (signal again to exit at once)\n";
const SECOND: &[u8] = b"\nentrl: second signal: exiting at once\n";

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe calls here: an atomic, write(2) and _exit(2).
    let n = RECEIVED.fetch_add(1, Ordering::SeqCst);
    let msg = if n == 0 { FIRST } else { SECOND };
    // SAFETY: writing a static buffer to stderr; _exit ends the process without running any other code.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        if n > 0 {
            libc::_exit(130);
        }
    }
    entrl_rl::interrupt::request();
}

/// Install the handlers for SIGINT and SIGTERM.
pub fn stop_on_first_signal() {
    #[cfg(unix)]
    // SAFETY: installing a handler that only touches atomics and calls async-signal-safe functions.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}
