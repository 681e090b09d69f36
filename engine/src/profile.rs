//! [`ProfileMode::Synchronised`] (`ENTRL_PROFILE=1` in the `entrl` binary, which calls [`set_mode`]): wall
//! time per named region, with the device synchronised at both ends so queued kernels are charged to the
//! region that launched them. Off by default (one relaxed load per region); when on it serialises the GPU,
//! so use it to find where time goes, not to measure throughput.
//! [`ProfileMode::HostOnly`] (`ENTRL_PROFILE=host`): the same regions without the synchronisation, i.e. the host's time to enqueue
//! the region's work (plus any wait the region itself does, such as reading results back): a region whose
//! host time matches its synchronised time is bound by launch overhead, not by the GPU.
//! Regions nest (an autograd rule inside "backward", a checkpointed layer's recompute inside its rule):
//! each row is inclusive of what ran inside it.
use crate::device::Device;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

#[derive(Default, Clone, Copy)]
struct Row {
    calls: u64,
    secs: f64,
}

fn table() -> &'static Mutex<HashMap<&'static str, Row>> {
    static T: OnceLock<Mutex<HashMap<&'static str, Row>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// What the regions record, process-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileMode {
    Off,
    /// Wall time with the device synchronised at both ends of a region.
    Synchronised,
    /// The host's time only (also per kernel launch, cuBLAS call and allocation).
    HostOnly,
}

const MODES: [ProfileMode; 3] = [ProfileMode::Off, ProfileMode::Synchronised, ProfileMode::HostOnly];
static MODE: AtomicU8 = AtomicU8::new(0);

/// Profile in mode `m` from now on (off until called).
pub fn set_mode(m: ProfileMode) {
    MODE.store(MODES.iter().position(|&x| x == m).expect("listed") as u8, Ordering::Relaxed);
}

fn mode() -> ProfileMode {
    MODES[MODE.load(Ordering::Relaxed) as usize]
}

/// True when profiling is on (either mode).
pub fn enabled() -> bool {
    mode() != ProfileMode::Off
}

/// Runs `f`, charging its synchronised wall time to `name` when profiling is on.
pub fn region<T>(name: &'static str, dev: &Device, f: impl FnOnce() -> T) -> T {
    let m = mode();
    // a step graph's body is timed as one replay, not region by region (nothing runs while capturing)
    if m == ProfileMode::Off || crate::graph::capturing() {
        return f();
    }
    if m == ProfileMode::Synchronised {
        let _ = dev.synchronize();
    }
    let t0 = Instant::now();
    let out = f();
    if m == ProfileMode::Synchronised {
        let _ = dev.synchronize();
    }
    record(name, t0.elapsed().as_secs_f64());
    out
}

/// Runs `f`, charging its host wall time to `name` in [`ProfileMode::HostOnly`] only (never synchronises):
/// for calls too fine to synchronise around, such as one kernel launch.
pub fn host_region<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    if mode() != ProfileMode::HostOnly {
        return f();
    }
    let t0 = Instant::now();
    let out = f();
    record(name, t0.elapsed().as_secs_f64());
    out
}

fn record(name: &'static str, secs: f64) {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    let r = t.entry(name).or_default();
    r.calls += 1;
    r.secs += secs;
}

/// The regions recorded since the last call, slowest first, as a table; clears them. None when profiling
/// is off or nothing was recorded.
pub fn take_report() -> Option<String> {
    if !enabled() {
        return None;
    }
    let rows: Vec<(&'static str, Row)> = table().lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
    if rows.is_empty() {
        return None;
    }
    Some(format_rows(rows))
}

fn format_rows(mut rows: Vec<(&'static str, Row)>) -> String {
    rows.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs).then(a.0.cmp(b.0)));
    let what = if mode() == ProfileMode::HostOnly { "region (inclusive, host time)" } else { "region (inclusive)" };
    let mut s = format!("{what:<40} {:>8} {:>11} {:>11}\n", "calls", "total ms", "ms/call");
    for (name, r) in rows {
        s.push_str(&format!(
            "{name:<40} {:>8} {:>11.2} {:>11.3}\n",
            r.calls,
            r.secs * 1e3,
            r.secs * 1e3 / r.calls.max(1) as f64
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sort_slowest_first_with_per_call_means() {
        let s = format_rows(vec![("fast", Row { calls: 4, secs: 0.002 }), ("slow", Row { calls: 2, secs: 0.010 })]);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[1].starts_with("slow") && lines[1].contains("10.00") && lines[1].contains("5.000"), "{s}");
        assert!(lines[2].starts_with("fast") && lines[2].contains("0.500"), "{s}");
    }
}
