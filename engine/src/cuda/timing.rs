//! GPU timing with CUDA events: warm up, then time each repetition on the stream and report the median.
use super::CudaDevice;
use crate::error::{EngineError, Result};
use cudarc::driver::sys::CUevent_flags;

/// Per-repetition times in milliseconds (sorted ascending) of `f`, after `warmup` untimed runs.
pub fn time_ms(dev: &CudaDevice, warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    dev.synchronize()?;
    let ev = |what: &str| {
        dev.stream()
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| EngineError::cuda(what.to_string(), e))
    };
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = ev("timing start event")?;
        f()?;
        let end = ev("timing end event")?;
        let ms = start.elapsed_ms(&end).map_err(|e| EngineError::cuda("event elapsed time", e))?;
        times.push(ms as f64);
    }
    dev.synchronize()?;
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times)
}

/// Median of a sorted, non-empty slice.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}
