//! Progress bars for `entrl train`: one bar over rollout steps and one for the phase in flight (tokens
//! generated, micro-batches scored, updates applied). Hidden when progress is off (tests, pipes).
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    multi: MultiProgress,
    pub steps: ProgressBar,
    pub phase: ProgressBar,
    /// Print step lines at all.
    verbose: bool,
}

impl Progress {
    pub fn new(total_steps: u64, done: u64, show: bool, verbose: bool) -> Self {
        let target = if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let multi = MultiProgress::with_draw_target(target);
        let steps = multi.add(ProgressBar::new(total_steps));
        steps.set_style(
            ProgressStyle::with_template("step {pos}/{len} [{bar:30}] {elapsed_precise} (eta {eta}) {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        steps.set_position(done);
        let phase = multi.add(ProgressBar::new(0));
        phase.set_style(
            ProgressStyle::with_template("  {prefix:>12} [{bar:30}] {pos}/{len} {per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Self { multi, steps, phase, verbose }
    }

    /// Start a phase of `len` units.
    pub fn phase(&self, name: &str, len: u64) {
        self.phase.set_prefix(name.to_string());
        self.phase.set_length(len);
        self.phase.set_position(0);
    }

    /// A line on stdout (the bars, on stderr, step aside while it prints).
    pub fn println(&self, line: &str) {
        if self.verbose {
            self.multi.suspend(|| println!("{line}"));
        }
    }

    /// A warning on stderr, printed even when step lines are off.
    pub fn warn(&self, line: &str) {
        self.multi.suspend(|| eprintln!("warning: {line}"));
    }

    pub fn finish(&self) {
        self.phase.finish_and_clear();
        self.steps.finish();
    }
}
