//! Memory a device has free for new allocations, and the check that a size taken from a user or a file is
//! held against before anything is allocated: [`Device::ensure_fits`] refuses with
//! [`EngineError::OutOfMemory`] (what, how much, how much is available) instead of letting the allocation
//! abort the process or exhaust the GPU.
//!
//! * CPU: the kernel's `MemAvailable` estimate from `/proc/meminfo` (free memory plus reclaimable caches),
//!   else the physical memory (`sysconf`). A cgroup limit below it is not read.
//! * CUDA: the driver's free memory (`cuMemGetInfo`) plus the blocks the caching allocator holds unused
//!   (they are returned to the driver before an allocation fails, `cuda/alloc.rs`).
//!
//! Sizes are computed with [`bytes_of`], whose products saturate at `u64::MAX` instead of wrapping, so a
//! product of absurd factors is refused rather than wrapped into a small number.
use crate::device::Device;
use crate::error::{EngineError, Result};

/// The product of `factors` (element counts, byte sizes), saturating at `u64::MAX`: a size that cannot be
/// represented is reported as "more than 16 EiB" and never fits.
pub fn bytes_of(factors: &[u64]) -> u64 {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f)).unwrap_or(u64::MAX)
}

/// `bytes` for people: "1.50 GiB", "512 B"; `u64::MAX` (a saturated size) reads "more than 16 EiB".
pub fn format_bytes(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "more than 16 EiB".into();
    }
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

/// Bytes of host memory available for new allocations: `MemAvailable` from `/proc/meminfo`, else the
/// physical memory.
pub fn host_available() -> Result<u64> {
    if let Some(b) = std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(mem_available_kib) {
        return Ok(b.saturating_mul(1024));
    }
    physical_memory().ok_or_else(|| EngineError::invalid("memory", "cannot tell how much host memory there is"))
}

/// `MemAvailable` in KiB from the text of `/proc/meminfo`.
fn mem_available_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut parts = line["MemAvailable:".len()..].split_whitespace();
    let value = parts.next()?.parse::<u64>().ok()?;
    (parts.next() == Some("kB")).then_some(value)
}

#[cfg(unix)]
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration values.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && page > 0).then(|| bytes_of(&[pages as u64, page as u64]))
}

#[cfg(not(unix))]
fn physical_memory() -> Option<u64> {
    None
}

impl Device {
    /// Bytes this device can hand out to new allocations now (see the module doc for each device).
    pub fn available_memory(&self) -> Result<u64> {
        match self {
            Device::Cpu => host_available(),
            Device::Cuda(d) => {
                d.bind()?;
                let (free, _) =
                    cudarc::driver::result::mem_get_info().map_err(|e| EngineError::cuda("cuMemGetInfo", e))?;
                let s = d.memory_stats();
                Ok((free as u64).saturating_add(s.reserved.saturating_sub(s.in_use) as u64))
            }
        }
    }

    /// Refuse to allocate `bytes` for `what` (e.g. "the KV cache (2 slots × 1024 positions × …)") when
    /// they exceed [`Device::available_memory`]. Call it before allocating any size a user or a file chose.
    pub fn ensure_fits(&self, what: &str, bytes: u64) -> Result<()> {
        let available = self.available_memory()?;
        if bytes <= available {
            return Ok(());
        }
        Err(EngineError::OutOfMemory { what: what.to_string(), bytes, available, device: self.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_saturate_instead_of_wrapping() {
        assert_eq!(bytes_of(&[2, 3, 4]), 24);
        assert_eq!(bytes_of(&[]), 1);
        // 10^12 × 10^12 wraps to a small number in u64 arithmetic; here it saturates.
        assert_eq!(bytes_of(&[1_000_000_000_000, 1_000_000_000_000, 4]), u64::MAX);
        assert_eq!(format_bytes(u64::MAX), "more than 16 EiB");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
    }

    #[test]
    fn meminfo_parsing_takes_mem_available() {
        let text = "MemTotal:       24683664 kB\nMemFree:        12986824 kB\nMemAvailable:   23797568 kB\n";
        assert_eq!(mem_available_kib(text), Some(23_797_568));
        assert_eq!(mem_available_kib("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available_kib("MemAvailable: lots\n"), None);
    }

    #[test]
    fn the_host_refuses_what_it_cannot_hold_and_says_so() {
        let avail = Device::Cpu.available_memory().unwrap();
        assert!(avail > 0);
        Device::Cpu.ensure_fits("a small buffer", 1024).unwrap();
        let e = Device::Cpu.ensure_fits("the KV cache", bytes_of(&[1_000_000_000_000, 1 << 20])).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, EngineError::OutOfMemory { .. }));
        assert!(msg.starts_with("the KV cache needs 931.32 PiB but cpu has ") && msg.ends_with(" available"), "{msg}");
        let e = Device::Cpu.ensure_fits("x", bytes_of(&[1 << 40, 1 << 40])).unwrap_err().to_string();
        assert!(e.contains("more than 16 EiB"), "{e}");
    }
}
