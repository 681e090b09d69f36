//! Which shipped version runs where a kernel family ships more than one (a candidate next to the default
//! until a GPU measures it): one typed value per CUDA device, set by the program that owns the device. The
//! engine reads no environment; the `entrl` binary parses `ENTRL_GEMM`, `ENTRL_SELECT_HIST`,
//! `ENTRL_SORT_SCATTER` and `ENTRL_ATTENTION` into the value new devices start with ([`set_default_kernel_choices`]).
use super::attention::AttnVersion;
use super::gemm_lt::GemmBackend;
use super::select::{HistVersion, SortScatter};
use std::sync::Mutex;

/// The kernel versions a device runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelChoices {
    /// The library behind matmul (`gemm.rs` / `gemm_lt.rs`).
    pub gemm: GemmBackend,
    /// The radix select of `select_tails` / `select_random` (`select.rs`).
    pub select: HistVersion,
    /// The radix sort's scatter pass (`select.rs`).
    pub sort_scatter: SortScatter,
    /// The fused attention forward (`attention.rs`).
    pub attention: AttnVersion,
}

impl KernelChoices {
    /// The measured defaults: cuBLAS, the plain select, the match scatter, the mma.sync attention forward
    /// (the Hopper forward is a candidate until a GPU measures it).
    pub const DEFAULT: KernelChoices = KernelChoices {
        gemm: GemmBackend::Cublas,
        select: HistVersion::Plain,
        sort_scatter: SortScatter::Match,
        attention: AttnVersion::Mma,
    };
}

impl Default for KernelChoices {
    fn default() -> Self {
        Self::DEFAULT
    }
}

static NEW_DEVICES: Mutex<KernelChoices> = Mutex::new(KernelChoices::DEFAULT);

/// The choices every CUDA device created from now on starts with (each device can then be changed on its own,
/// `CudaDevice::set_kernel_choices`).
pub fn set_default_kernel_choices(c: KernelChoices) {
    *NEW_DEVICES.lock().unwrap_or_else(|e| e.into_inner()) = c;
}

/// What a new device starts with: [`KernelChoices::DEFAULT`] unless [`set_default_kernel_choices`] changed it.
pub fn default_kernel_choices() -> KernelChoices {
    *NEW_DEVICES.lock().unwrap_or_else(|e| e.into_inner())
}

/// `current`, then every other entry of `all` (what the self-test and the benchmarks run side by side).
pub fn current_first<T: Copy + PartialEq>(current: T, all: &[T]) -> Vec<T> {
    std::iter::once(current).chain(all.iter().copied().filter(|&v| v != current)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_choice_comes_first() {
        assert_eq!(current_first(1u8, &[0, 1, 2]), vec![1, 0, 2]);
        assert_eq!(current_first(HistVersion::Wide, &HistVersion::ALL), [HistVersion::Wide, HistVersion::Plain]);
        assert_eq!(KernelChoices::default(), KernelChoices::DEFAULT);
    }
}
