//! A resource that one owner thread uses and any thread may abort, freed exactly once and never used after
//! it is freed: the state machine behind each NCCL communicator of [`super::NcclComm`] (an abort from a
//! failing rank must release peers blocked in collectives without freeing a communicator under a call in
//! progress). Kept apart from NCCL so it is tested on CPU.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Guarded {
    /// Held by the owner from the `aborted` check to the end of each operation.
    in_use: Mutex<()>,
    /// No new operation once set.
    aborted: AtomicBool,
    /// Freed already (exactly one of `abort` / `release` frees).
    freed: AtomicBool,
}

impl Guarded {
    /// Run one operation unless the resource was aborted (then `None`, and `op` is not called).
    pub(crate) fn run<R>(&self, op: impl FnOnce() -> R) -> Option<R> {
        let _g = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if self.aborted.load(Ordering::SeqCst) {
            return None;
        }
        Some(op())
    }

    /// Stop new operations now.
    pub(crate) fn mark_aborted(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }

    /// Mark aborted, wait until `deadline` for an operation in progress to return, then `free` unless
    /// already freed. After the deadline the resource is freed even under a call that has not returned (a
    /// call blocked on a peer is exactly what an NCCL abort releases). A group aborts all its members against
    /// one deadline, so the wait does not add up over ranks.
    pub(crate) fn abort(&self, deadline: Instant, free: impl FnOnce()) {
        self.mark_aborted();
        let _g = loop {
            match self.in_use.try_lock() {
                Ok(g) => break Some(g),
                Err(TryLockError::Poisoned(p)) => break Some(p.into_inner()),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(TryLockError::WouldBlock) => break None,
            }
        };
        if !self.freed.swap(true, Ordering::SeqCst) {
            free();
        }
    }

    /// The owner is done: `free(aborted)` unless already freed (`aborted` also when the thread panics).
    pub(crate) fn release(&self, free: impl FnOnce(bool)) {
        let _g = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if !self.freed.swap(true, Ordering::SeqCst) {
            free(self.aborted.load(Ordering::SeqCst) || std::thread::panicking());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A fake communicator: counts frees and records any operation that ran after a free.
    #[derive(Default)]
    struct Fake {
        guard: Guarded,
        frees: AtomicUsize,
        live: AtomicBool,
        used_after_free: AtomicBool,
    }

    impl Fake {
        fn new() -> Arc<Self> {
            let f = Arc::new(Self::default());
            f.live.store(true, Ordering::SeqCst);
            f
        }
        fn free(&self) {
            self.frees.fetch_add(1, Ordering::SeqCst);
            self.live.store(false, Ordering::SeqCst);
        }
        fn op(&self) -> Option<()> {
            self.guard.run(|| {
                if !self.live.load(Ordering::SeqCst) {
                    self.used_after_free.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_micros(50));
            })
        }
    }

    #[test]
    fn an_abort_from_another_thread_frees_once_and_nothing_runs_after_it() {
        for round in 0..20 {
            let f = Fake::new();
            let owner = {
                let f = f.clone();
                // Operate until refused (the abort always comes: the main thread sends it), then release.
                std::thread::spawn(move || {
                    let mut ran = 0u64;
                    while f.op().is_some() {
                        ran += 1;
                        assert!(ran < 1_000_000, "never refused");
                    }
                    let refused_again = f.op().is_none();
                    f.guard.release(|aborted| {
                        assert!(aborted, "released after an abort");
                        f.free()
                    });
                    refused_again
                })
            };
            std::thread::sleep(Duration::from_micros(200 + 100 * round));
            f.guard.abort(Instant::now() + Duration::from_secs(1), || f.free());
            let refused_again = owner.join().expect("owner thread");
            assert_eq!(f.frees.load(Ordering::SeqCst), 1, "round {round}: freed exactly once");
            assert!(!f.used_after_free.load(Ordering::SeqCst), "round {round}: an operation ran on a freed resource");
            assert!(refused_again, "round {round}: operations after the abort stay refused");
        }
    }

    #[test]
    fn release_without_abort_frees_normally_and_a_later_abort_does_nothing() {
        let f = Fake::new();
        assert!(f.op().is_some());
        f.guard.release(|aborted| {
            assert!(!aborted);
            f.free()
        });
        f.guard.abort(Instant::now() + Duration::from_millis(10), || f.free());
        assert_eq!(f.frees.load(Ordering::SeqCst), 1);
        assert!(f.op().is_none(), "aborted: no operation runs");
    }

    #[test]
    fn an_abort_does_not_wait_forever_for_a_stuck_operation() {
        let f = Fake::new();
        let stuck = {
            let f = f.clone();
            std::thread::spawn(move || f.guard.run(|| std::thread::sleep(Duration::from_millis(300))))
        };
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        f.guard.abort(Instant::now() + Duration::from_millis(20), || f.free());
        assert!(t.elapsed() < Duration::from_millis(200), "the abort waited {:?}", t.elapsed());
        assert_eq!(f.frees.load(Ordering::SeqCst), 1);
        stuck.join().expect("stuck thread");
    }
}
