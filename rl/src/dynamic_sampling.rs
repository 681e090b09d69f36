//! DAPO dynamic sampling (verl-recipe `dapo_ray_trainer.fit`, dapo.md §7): keep only prompt groups whose
//! correctness is not all equal (or that have a single sample), accumulate them over generation rounds
//! until the train batch is full, cut the surplus, and fail after `max_rounds` rounds.

/// Outcome of one rollout: its prompt group and whether it was judged correct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub group: usize,
    pub correct: bool,
}

/// Groups (by id, in first-seen order) that carry a learning signal: std of correctness > 0, or size 1.
pub fn informative_groups(outcomes: &[Outcome]) -> Vec<usize> {
    let mut order = Vec::new();
    let mut stats: std::collections::HashMap<usize, (usize, usize)> = std::collections::HashMap::new();
    for o in outcomes {
        let e = stats.entry(o.group).or_insert_with(|| {
            order.push(o.group);
            (0, 0)
        });
        e.0 += 1;
        e.1 += o.correct as usize;
    }
    order
        .into_iter()
        .filter(|g| {
            let (n, c) = stats[g];
            n == 1 || (c > 0 && c < n)
        })
        .collect()
}

/// Accumulates informative groups over rounds until `target_groups` are kept.
#[derive(Debug)]
pub struct DynamicSampler {
    pub target_groups: usize,
    /// 0 = unlimited (verl's `max_num_gen_batches`).
    pub max_rounds: usize,
    kept: Vec<usize>,
    rounds: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SamplerState {
    /// Enough groups: the batch (first `target_groups` kept groups, surplus cut) is ready.
    Full(Vec<usize>),
    /// Generate another round.
    NeedMore { kept: usize },
}

impl DynamicSampler {
    pub fn new(target_groups: usize, max_rounds: usize) -> Self {
        Self { target_groups, max_rounds, kept: Vec::new(), rounds: 0 }
    }
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// The groups kept so far (a short batch), clearing the sampler.
    pub fn take_partial(&mut self) -> Vec<usize> {
        self.rounds = 0;
        std::mem::take(&mut self.kept)
    }

    /// Add one generation round; `Err` when the round cap is hit with the batch still short.
    pub fn add_round(&mut self, outcomes: &[Outcome]) -> crate::Result<SamplerState> {
        self.rounds += 1;
        for g in informative_groups(outcomes) {
            if !self.kept.contains(&g) {
                self.kept.push(g);
            }
        }
        if self.kept.len() >= self.target_groups {
            let mut batch = std::mem::take(&mut self.kept);
            batch.truncate(self.target_groups);
            self.rounds = 0;
            return Ok(SamplerState::Full(batch));
        }
        if self.max_rounds > 0 && self.rounds >= self.max_rounds {
            return Err(crate::Error::ShortBatch {
                kept: self.kept.len(),
                wanted: self.target_groups,
                rounds: self.rounds,
            });
        }
        Ok(SamplerState::NeedMore { kept: self.kept.len() })
    }
}
