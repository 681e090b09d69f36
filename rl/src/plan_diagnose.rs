//! What `run.diagnose_every = N` costs (`entrl plan --diagnose-every N`), from the same input as the
//! step plan. The mechanism is `crate::diagnose`: per diagnosed update, four extra forward + backward
//! passes of the mini-batch (full, anchors, explorers, random; the trained set's gradient is the update's
//! own), and five gradients reduce-scattered bucket by bucket into this rank's shard, copied to the host
//! and kept there in bf16 together with the previous diagnosed update's five.
//!
//! | item | formula | assumption |
//! |---|---|---|
//! | GPU, extra | 4·B + 4·B/g (4·B unsharded) | one packed f32 bucket of B = BUCKET_ELEMENTS and its reduce-scattered piece, after the backward (the activations are freed, the gradients held): below the step buffers, so the peak does not grow when g > 1 |
//! | host per rank | 10 · 2 · ⌈P/g⌉ + 4·B/g | five current and five previous bf16 shards, plus one f32 piece read back |
//! | backward | 4 × update_s / updates | four more passes over the mini-batch at the step plan's training rate |
//! | reduce-scatter | 5 · 4P · (g − 1)/g / bus | the step plan's NCCL bus rate |
//! | read-back | 5 · 4P/g / 10 GB/s | pageable device-to-host copies (assumed rate) |
//! | host | 5 · ⌈P/g⌉ / (10⁹ · 16) + 25 · ⌈P/g⌉ / (2·10⁹ · 16) | the bf16 rounding of each read-back piece (assumed 1 ns an element a thread), then 25 f64 multiply-adds per element (5 norms, 10 pairs, 5 + 5 with the previous) on 16 host threads at an assumed 2·10⁹ a second each |
use super::{params, plan, PlanInput, TimePlan, GIB, NCCL_BUS_BYTES_PER_S};
use entrl_engine::dist::BUCKET_ELEMENTS;

/// Device-to-host copy rate of the shards' read-back (pageable memory; assumed).
pub const READBACK_BYTES_PER_S: f64 = 10e9;
/// Host multiply-adds per second per thread of the f64 sums (bf16 decode + FMA; assumed) and threads.
pub const HOST_FMA_PER_S: f64 = 2e9;
pub const HOST_THREADS: f64 = 16.0;
/// Seconds per element per thread of the f32 → bf16 rounding of a read-back piece (assumed).
pub const ROUND_S_PER_ELEMENT: f64 = 1e-9;

/// The cost of the diagnostics of one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DiagnosePlan {
    pub every: u64,
    /// Extra device bytes during a diagnosed update, and whether the step's peak already covers them.
    pub gpu_bytes: u64,
    pub within_peak: bool,
    /// Host bytes per rank held between diagnosed updates.
    pub host_bytes: u64,
    /// Seconds per diagnosed update, by part.
    pub backward_s: f64,
    pub comm_s: f64,
    pub readback_s: f64,
    pub host_s: f64,
    /// Diagnosed updates per diagnosed step.
    pub updates: usize,
}

impl DiagnosePlan {
    pub fn per_update_s(&self) -> f64 {
        self.backward_s + self.comm_s + self.readback_s + self.host_s
    }

    /// Mean seconds added to a step (a diagnosed step's extra time / `every`).
    pub fn per_step_s(&self) -> f64 {
        self.per_update_s() * self.updates as f64 / self.every.max(1) as f64
    }

    pub fn table(&self, time: &TimePlan) -> String {
        let mut s = format!("diagnostics every {} step(s) (run.diagnose_every)\n", self.every);
        s += &format!(
            "  GPU, extra       {:>7.2} GiB  one f32 bucket + its piece, after the backward{}\n",
            self.gpu_bytes as f64 / GIB,
            if self.within_peak { " (below the step buffers: peak unchanged)" } else { " (adds to the peak)" }
        );
        s += &format!(
            "  host per rank    {:>7.2} GiB  10 bf16 gradient shards (this update's 5 and the previous one's)\n",
            self.host_bytes as f64 / GIB
        );
        let line = |name: &str, t: f64, note: &str| format!("  {name:<16} {t:>7.1} s    {note}\n");
        s += &line("backward", self.backward_s, "4 extra forward + backward passes of the mini-batch");
        s += &line("reduce-scatter", self.comm_s, "5 f32 gradients into shards");
        s += &line("read-back", self.readback_s, "5 shards to the host");
        s += &line("host", self.host_s, "bf16 rounding, then norms and cosines in f64");
        s += &line("per update", self.per_update_s(), "one diagnosed update");
        s += &line(
            "per step",
            self.per_step_s(),
            &format!(
                "{} updates per diagnosed step / {}: {:+.1}% of the planned step",
                self.updates,
                self.every,
                100.0 * self.per_step_s() / time.total_s.max(1e-9)
            ),
        );
        s
    }
}

/// The diagnostics' cost for `input` diagnosed every `every` steps (`every` ≥ 1).
pub fn diagnose_plan(input: &PlanInput, every: u64) -> DiagnosePlan {
    let (mem, time) = plan(input);
    let g = input.gpus.max(1) as f64;
    let p = params(&input.model);
    let bucket = 4 * BUCKET_ELEMENTS as u64;
    // Without a communicator the packed bucket is the piece.
    let piece = if input.sharded { (bucket as f64 / g) as u64 } else { 0 };
    let gpu_bytes = bucket + piece;
    let shard = (p / g).ceil();
    let updates = input.updates_per_step.max(1);
    DiagnosePlan {
        every: every.max(1),
        gpu_bytes,
        within_peak: input.sharded && gpu_bytes <= mem.step_buffers,
        host_bytes: (20.0 * shard) as u64 + piece,
        backward_s: 4.0 * time.update_s / updates as f64,
        comm_s: 5.0 * 4.0 * p * (g - 1.0) / g / NCCL_BUS_BYTES_PER_S,
        readback_s: 5.0 * 4.0 * shard / READBACK_BYTES_PER_S,
        host_s: 5.0 * shard * ROUND_S_PER_ELEMENT / HOST_THREADS + 25.0 * shard / (HOST_FMA_PER_S * HOST_THREADS),
        updates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use entrl_qwen3::Qwen3Config;

    #[test]
    fn qwen3_8b_on_8_gpus_keeps_its_peak_and_needs_about_19_gib_of_host_per_rank() {
        let input = PlanInput::new(Qwen3Config::named("qwen3-8b").unwrap());
        let d = diagnose_plan(&input, 10);
        assert!(d.within_peak, "{d:?}");
        let host_gib = d.host_bytes as f64 / GIB;
        let p = params(&input.model);
        assert!((host_gib - 20.0 * p / 8.0 / GIB).abs() < 0.1, "{host_gib}");
        // Four extra passes dominate: 4/16 of the planned update time.
        let (_, time) = plan(&input);
        assert!((d.backward_s - time.update_s / 4.0).abs() < 1e-9);
        assert!(d.per_update_s() > d.backward_s);
        assert!((d.per_step_s() - d.per_update_s() * 16.0 / 10.0).abs() < 1e-9);
        // One GPU, unsharded: the host holds whole gradients; the extra bucket is not covered.
        let one = PlanInput { gpus: 1, sharded: false, ..input };
        let d1 = diagnose_plan(&one, 1);
        assert!(!d1.within_peak);
        assert_eq!(d1.comm_s, 0.0);
        assert!(d1.host_bytes > 7 * d.host_bytes);
    }
}
