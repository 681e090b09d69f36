//! The row statistics of the fused attention forward, as one table: each [`RowStat`] has a name, a shape,
//! an f64 reference over a row's attention distribution, and the rule that turns it into a per-token score
//! for the token strategies (`tokens.score`). Every consumer iterates the table: the CPU reference
//! (`cpu/attention.rs`), the CUDA launcher's slots (`cuda/attention.rs`), the self-test rows
//! (`check/cases.rs`), the model's probes and `rl`'s token scores. The kernel side is
//! `kernels-cu/cuda/attention_row_stats.cuh` (slot numbers and the online pass's steps) with its emulator
//! reference in `kernels-cu/emu/attention_ref.h`. ARCHITECTURE.md ("How to add a row statistic") is the
//! recipe.
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;

/// A row statistic. The online ones (computed per (token, head) inside the forward's online softmax) come
/// first and their number is their slot in `AttnFwdParams::stat` (`RowStatSlot` of
/// `attention_row_stats.cuh`); the head-mixture statistic is a second pass (`attention_hmix.cu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowStat {
    /// Softmax entropy H = −Σ_j p_j ln p_j, natural log.
    Entropy = 0,
    /// The largest probability max_j p_j (1/l of the online softmax, free).
    MaxProb = 1,
    /// The attention mass on the sequence's first [`RowStats::sink_keys`] keys ("attention sink" mass).
    Sink = 2,
    /// The mean key distance relative to the query's reach, Σ_j p_j (i − j) / i for the query at position
    /// i > 0 of its sequence (0 at i = 0): 0 = attends to itself, 1 = to the first token.
    Distance = 3,
    /// The entropy of the head-averaged distribution p̄_j = mean_h p_hj (natural log), per token.
    HeadMix = 4,
}

/// What a statistic is a function of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// Each head's distribution p_h·: one value per (token, head), [T, Hq].
    Head,
    /// The head mixture p̄ = mean_h p_h·: one value per token, [T].
    HeadMixture,
}

/// How `rl` turns a statistic into a per-token score (after this, a per-head statistic is averaged over
/// the heads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreNorm {
    /// Divided by ln(#keys) (0 at a sequence's first token), the paper's normalisation of the entropy.
    LnKeys,
    /// As it is.
    Raw,
}

/// One attention row as a statistic's reference sees it: the probabilities of keys 0 ..= `pos` of the
/// query's sequence (normalised, f64) and the request's parameters.
pub struct RowProbs<'a> {
    pub p: &'a [f64],
    pub sink_keys: usize,
}

/// A row statistic's entry in [`RowStat::SPECS`].
pub struct RowStatSpec {
    pub stat: RowStat,
    /// How selftest rows, benchmarks and plots name it.
    pub name: &'static str,
    /// Its `tokens.score` name.
    pub score_name: &'static str,
    pub over: Over,
    pub score_norm: ScoreNorm,
    /// The f64 reference on one row's distribution (a head's, or the head mixture for
    /// [`Over::HeadMixture`]).
    pub reference: fn(&RowProbs) -> f64,
    /// One line for `tokens.score`'s documentation.
    pub about: &'static str,
}

fn entropy(r: &RowProbs) -> f64 {
    r.p.iter().filter(|&&p| p > 0.0).map(|p| -p * p.ln()).sum()
}

fn max_prob(r: &RowProbs) -> f64 {
    r.p.iter().copied().fold(0.0, f64::max)
}

fn sink(r: &RowProbs) -> f64 {
    r.p.iter().take(r.sink_keys).sum()
}

fn distance(r: &RowProbs) -> f64 {
    let i = r.p.len() - 1;
    if i == 0 {
        return 0.0;
    }
    r.p.iter().enumerate().map(|(j, p)| p * (i - j) as f64).sum::<f64>() / i as f64
}

impl RowStat {
    /// Every statistic, in slot order.
    pub const SPECS: [RowStatSpec; 5] = [
        RowStatSpec {
            stat: RowStat::Entropy,
            name: "entropy",
            score_name: "hnorm",
            over: Over::Head,
            score_norm: ScoreNorm::LnKeys,
            reference: entropy,
            about: "the paper's: the head-mean normalised attention entropy H / ln(#keys)",
        },
        RowStatSpec {
            stat: RowStat::MaxProb,
            name: "max_prob",
            score_name: "max-prob",
            over: Over::Head,
            score_norm: ScoreNorm::Raw,
            reference: max_prob,
            about: "the head-mean largest attention probability (high = peaked)",
        },
        RowStatSpec {
            stat: RowStat::Sink,
            name: "sink",
            score_name: "sink",
            over: Over::Head,
            score_norm: ScoreNorm::Raw,
            reference: sink,
            about: "the head-mean attention mass on the sequence's first tokens.sink_keys keys",
        },
        RowStatSpec {
            stat: RowStat::Distance,
            name: "distance",
            score_name: "distance",
            over: Over::Head,
            score_norm: ScoreNorm::Raw,
            reference: distance,
            about: "the head-mean relative attention distance Σ_j p_j (i − j) / i (0 = local, 1 = the first token)",
        },
        RowStatSpec {
            stat: RowStat::HeadMix,
            name: "head_mix",
            score_name: "hmix",
            over: Over::HeadMixture,
            score_norm: ScoreNorm::LnKeys,
            reference: entropy,
            about: "the entropy of the head-averaged attention distribution / ln(#keys) (one reading of the \
                    paper's definition; a second pass over the keys)",
        },
    ];
    /// Every statistic, in slot order.
    pub const ALL: [RowStat; Self::SPECS.len()] = {
        let mut all = [RowStat::Entropy; Self::SPECS.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = Self::SPECS[i].stat;
            i += 1;
        }
        all
    };
    /// How many statistics the forward's online pass computes (slots 0 .. ONLINE of `AttnFwdParams::stat`).
    pub const ONLINE: usize = {
        let mut n = 0;
        while n < Self::SPECS.len() && matches!(Self::SPECS[n].over, Over::Head) {
            n += 1;
        }
        n
    };
    /// The `tokens.score` names, in slot order.
    pub const SCORE_NAMES: [&'static str; Self::SPECS.len()] = {
        let mut names = [""; Self::SPECS.len()];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::SPECS[i].score_name;
            i += 1;
        }
        names
    };

    pub fn spec(self) -> &'static RowStatSpec {
        &Self::SPECS[self as usize]
    }
    pub fn name(self) -> &'static str {
        self.spec().name
    }
    pub fn from_score_name(s: &str) -> Option<RowStat> {
        Self::SPECS.iter().find(|x| x.score_name == s).map(|x| x.stat)
    }
}

// The table is in slot order, and the online statistics come first.
const _: () = {
    let mut i = 0;
    while i < RowStat::SPECS.len() {
        assert!(RowStat::SPECS[i].stat as usize == i, "RowStat::SPECS is in slot order");
        assert!(matches!(RowStat::SPECS[i].over, Over::Head) == (i < RowStat::ONLINE), "online statistics first");
        i += 1;
    }
};

/// The row statistics a caller asks a forward for (each costs nothing when it is not asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowStats {
    set: u32,
    sink_keys: usize,
}

impl Default for RowStats {
    fn default() -> Self {
        Self::NONE
    }
}

impl RowStats {
    pub const NONE: Self = Self { set: 0, sink_keys: Self::DEFAULT_SINK_KEYS };
    pub const ENTROPY: Self = Self::NONE.with(RowStat::Entropy);
    /// Every statistic of the table.
    pub const ALL: Self = Self { set: (1 << RowStat::SPECS.len()) - 1, sink_keys: Self::DEFAULT_SINK_KEYS };
    pub const DEFAULT_SINK_KEYS: usize = 4;
    /// The sink keys lie in the forward kernel's first key tile.
    pub const MAX_SINK_KEYS: usize = 64;

    /// These statistics and `stat`.
    pub const fn with(self, stat: RowStat) -> Self {
        Self { set: self.set | 1 << stat as u32, sink_keys: self.sink_keys }
    }
    /// These statistics with [`RowStat::Sink`] counting the first `n` keys.
    pub const fn with_sink_keys(self, n: usize) -> Self {
        Self { set: self.set, sink_keys: n }
    }
    /// [`RowStat::Sink`]'s number of leading keys, 1 ..= [`RowStats::MAX_SINK_KEYS`].
    pub fn sink_keys(&self) -> usize {
        self.sink_keys
    }
    pub fn has(&self, stat: RowStat) -> bool {
        self.set & 1 << stat as u32 != 0
    }
    pub fn any(&self) -> bool {
        self.set != 0
    }
    /// Whether an online statistic other than entropy is asked for: the forward then runs its statistics
    /// entry (`attn_fwd_mma_stats_d*`), whose extra state the entropy-only entry does not carry.
    pub fn beyond_entropy(&self) -> bool {
        self.iter().any(|s| (s as usize) < RowStat::ONLINE && s != RowStat::Entropy)
    }
    /// The statistics asked for, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = RowStat> + '_ {
        RowStat::ALL.into_iter().filter(|&s| self.has(s))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.has(RowStat::Sink) && !(1..=Self::MAX_SINK_KEYS).contains(&self.sink_keys) {
            return Err(EngineError::invalid(
                "attention",
                format!("sink_keys {} must be 1 to {}", self.sink_keys, Self::MAX_SINK_KEYS),
            ));
        }
        Ok(())
    }
}

/// The row statistics a forward computed, each present when it was asked for; no gradient flows through
/// them. Per-head statistics are [tokens, Hq], head-mixture ones [tokens].
#[derive(Clone, Debug, Default)]
pub struct AttnStats {
    by_slot: [Option<Tensor>; RowStat::SPECS.len()],
}

impl AttnStats {
    pub fn get(&self, stat: RowStat) -> Option<&Tensor> {
        self.by_slot[stat as usize].as_ref()
    }
    /// `stat`'s tensor, or an error naming it when it was not asked for.
    pub fn require(&self, stat: RowStat) -> Result<&Tensor> {
        self.get(stat).ok_or_else(|| {
            EngineError::invalid("attention", format!("the row statistic {} was not asked for", stat.name()))
        })
    }
    pub fn take(&mut self, stat: RowStat) -> Option<Tensor> {
        self.by_slot[stat as usize].take()
    }
    pub(crate) fn set(&mut self, stat: RowStat, t: Tensor) {
        self.by_slot[stat as usize] = Some(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_numbers_and_names_every_statistic_once() {
        assert_eq!(RowStat::ONLINE, 4);
        for (i, s) in RowStat::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i);
            assert_eq!(RowStat::from_score_name(s.spec().score_name), Some(s));
        }
        let mut names: Vec<&str> = RowStat::SPECS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RowStat::SPECS.len());
        let r = RowStats::NONE.with(RowStat::Sink).with(RowStat::Entropy);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![RowStat::Entropy, RowStat::Sink]);
        assert!(!r.has(RowStat::MaxProb) && RowStats::ALL.iter().count() == RowStat::SPECS.len());
    }

    #[test]
    fn only_statistics_beyond_entropy_take_the_statistics_entry() {
        assert!(!RowStats::NONE.beyond_entropy() && !RowStats::ENTROPY.beyond_entropy());
        assert!(!RowStats::ENTROPY.with(RowStat::HeadMix).beyond_entropy(), "the head mixture is its own pass");
        for s in RowStat::ALL.into_iter().filter(|&s| (s as usize) < RowStat::ONLINE && s != RowStat::Entropy) {
            assert!(RowStats::NONE.with(s).beyond_entropy(), "{}", s.name());
        }
    }

    #[test]
    fn references_on_a_hand_made_row() {
        let p = [0.5, 0.25, 0.25];
        let r = RowProbs { p: &p, sink_keys: 2 };
        let h = 0.5 * 2f64.ln() + 2.0 * 0.25 * 4f64.ln();
        assert!((entropy(&r) - h).abs() < 1e-15);
        assert_eq!(max_prob(&r), 0.5);
        assert_eq!(sink(&r), 0.75);
        assert_eq!(distance(&r), (0.5 * 2.0 + 0.25) / 2.0);
        assert!(RowStats::NONE.with(RowStat::Sink).with_sink_keys(65).validate().is_err());
        assert!(RowStats::ENTROPY.with_sink_keys(65).validate().is_ok());
    }
}
