//! Gradient geometry, the seed paper's diagnostics (`run.diagnose_every = N`). On every update of every
//! N-th rollout step, on that update's mini-batch, five gradients of the same DAPO loss with different
//! token weights: the full token set, anchors@k and explorers@k (lowest / highest head-mean normalised
//! attention entropy per pool), random@k, and the set the strategy trains (k = the strategy's fraction,
//! 0.2 for `full` and `soft`). Reported: each gradient's norm, the 10 pairwise cosines, and each one's
//! cosine with the same set's gradient at the previous diagnosed update (the paper's "volatile").
//!
//! How it runs at node scale (ZeRO-2): each set's gradient is formed by an ordinary backward pass over
//! this rank's micro-batches (the loss divided by the global normaliser, as in training), then
//! reduce-scattered bucket by bucket into this rank's 1/world shard ([`reduce_scatter_pieces`]: one
//! bucket and one piece on the device at a time). The shards live on the host in bf16, five for this
//! update and five for the previous one (2 bytes × parameters / world × 10 per rank), and every norm and
//! dot product is a sum over the shards, formed on the host in f64 and all-reduced: no rank ever holds a
//! whole gradient twice. The trained set's gradient is the update's own (read before the optimizer
//! step), the four others cost one forward + backward each.
//!
//! Normalisers follow `tokens.normalizer`: with `all-tokens` every set's loss is divided by the
//! mini-batch's response tokens, with `selected` by the set's own weight sum. The previous update's shards
//! go into each checkpoint (`diag_prev.rank{r}.safetensors`, 2 bytes × P/g × 5 per rank), so a resumed run reports
//! the same `cos_prev` as an uninterrupted one; shards holding a non-finite value are not saved (the first
//! diagnosed update after such a resume reports null).
use crate::config::Normalizer;
use crate::strategy::Strategy;
use crate::trainer::MiniBatch;
use crate::Session;
use entrl_engine::cpu::CpuStorage;
use entrl_engine::dist::{reduce_scatter_pieces, FlatLayout, BUCKET_ELEMENTS};
use entrl_engine::{bf16, DType, Device, Tensor};
use entrl_qwen3::checkpoint::Checkpoint;
use entrl_qwen3::save::write_safetensors;
use std::path::{Path, PathBuf};

type Res<T> = crate::Result<T>;

/// The five gradients of a diagnosed update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagGrad {
    Full,
    Anchors,
    Explorers,
    Random,
    /// The token weights the strategy trains with.
    Selected,
}

/// Number of [`DiagGrad`] kinds.
pub const KINDS: usize = 5;

impl DiagGrad {
    pub const ALL: [DiagGrad; KINDS] =
        [DiagGrad::Full, DiagGrad::Anchors, DiagGrad::Explorers, DiagGrad::Random, DiagGrad::Selected];

    pub fn name(self) -> &'static str {
        match self {
            DiagGrad::Full => "full",
            DiagGrad::Anchors => "anchors",
            DiagGrad::Explorers => "explorers",
            DiagGrad::Random => "random",
            DiagGrad::Selected => "selected",
        }
    }
}

/// (threads, elements per thread) for host work over `n` elements: the machine's cores, at least 64 Ki
/// elements each.
fn host_split(n: usize) -> (usize, usize) {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n.div_ceil(1 << 16)).max(1);
    (threads, n.div_ceil(threads).max(1))
}

/// dst[i] = bf16(src[i]) (round to nearest even) on the machine's cores.
fn round_into(dst: &mut [bf16], src: &[f32]) {
    let (_, chunk) = host_split(src.len());
    std::thread::scope(|sc| {
        for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
            sc.spawn(move || d.iter_mut().zip(s).for_each(|(h, &x)| *h = bf16::from_f32(x)));
        }
    });
}

/// This rank's shard of one gradient, on the host in bf16.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostShard(pub Vec<bf16>);

/// The five shards of one diagnosed update, in [`DiagGrad::ALL`] order.
pub type UpdateShards = Vec<HostShard>;

/// The file of rank `rank`'s previous shards in a checkpoint folder (a safetensors file of five bf16
/// tensors named by [`DiagGrad::name`]).
fn prev_file(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("diag_prev.rank{rank}.safetensors"))
}

/// Write `prev` into checkpoint folder `dir` (atomically, by the checkpoint writer), unless a value is not
/// finite: then nothing is written and a resume reports no `cos_prev` at first.
pub(crate) fn save_prev(dir: &Path, rank: usize, prev: &[HostShard]) -> Res<()> {
    if prev.iter().any(|s| s.0.iter().any(|x| !x.is_finite())) {
        return Ok(());
    }
    let tensors = DiagGrad::ALL
        .iter()
        .zip(prev)
        .map(|(k, s)| Ok((k.name().to_string(), Tensor::from_vec(s.0.clone(), [s.0.len()], &Device::Cpu)?)))
        .collect::<entrl_engine::Result<Vec<_>>>()?;
    Ok(write_safetensors(&prev_file(dir, rank), &tensors)?)
}

/// The previous shards saved in checkpoint folder `dir` for `rank`, each `len` long (None when the
/// checkpoint has none); a tensor that is missing, of another length or not finite is an error naming it.
pub(crate) fn load_prev(dir: &Path, rank: usize, len: usize) -> Res<Option<UpdateShards>> {
    let path = prev_file(dir, rank);
    if !path.is_file() {
        return Ok(None);
    }
    let file = Checkpoint::open_file(&path)?;
    let shard = |k: DiagGrad| -> entrl_qwen3::Result<HostShard> {
        match file.load(k.name(), &[len], DType::BF16, &Device::Cpu)?.to_cpu_storage()? {
            CpuStorage::BF16(v) => Ok(HostShard(v)),
            _ => unreachable!("loaded as bf16"),
        }
    };
    Ok(DiagGrad::ALL.into_iter().map(shard).collect::<entrl_qwen3::Result<Vec<_>>>().map(Some)?)
}

/// Index of the pair (i, j), i < j, in the 10 pairwise entries.
fn pair_index(i: usize, j: usize) -> usize {
    debug_assert!(i < j && j < KINDS);
    (0..i).map(|a| KINDS - 1 - a).sum::<usize>() + (j - i - 1)
}

const PAIRS: usize = KINDS * (KINDS - 1) / 2;
/// Layout of [`partial_sums`]: ‖g_i‖² (5), g_i·g_j (10), g_i·p_i (5), ‖p_i‖² (5).
const SUMS: usize = KINDS + PAIRS + 2 * KINDS;

/// This rank's partial sums over its shards (f64), in the layout of [`SUMS`]; without `prev` the last ten
/// are 0. Chunks run on the machine's cores.
pub fn partial_sums(cur: &[HostShard], prev: Option<&[HostShard]>) -> Vec<f64> {
    let n = cur.first().map_or(0, |s| s.0.len());
    let (threads, chunk) = host_split(n);
    let part = |r: std::ops::Range<usize>| {
        let mut s = vec![0f64; SUMS];
        for e in r {
            let g: [f64; KINDS] = std::array::from_fn(|k| cur[k].0[e].to_f64());
            for i in 0..KINDS {
                s[i] += g[i] * g[i];
                for j in i + 1..KINDS {
                    s[KINDS + pair_index(i, j)] += g[i] * g[j];
                }
            }
            if let Some(p) = prev {
                for k in 0..KINDS {
                    let q = p[k].0[e].to_f64();
                    s[KINDS + PAIRS + k] += g[k] * q;
                    s[2 * KINDS + PAIRS + k] += q * q;
                }
            }
        }
        s
    };
    std::thread::scope(|sc| {
        let handles: Vec<_> =
            (0..threads).map(|t| sc.spawn(move || part(t * chunk..((t + 1) * chunk).min(n)))).collect();
        let mut total = vec![0f64; SUMS];
        for h in handles {
            let s = h.join().expect("diagnostics worker");
            total.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        }
        total
    })
}

/// Norms and cosines of one diagnosed update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GradGeometry {
    /// ‖g‖ per [`DiagGrad`].
    pub norm: [f64; KINDS],
    /// cos(g_i, g_j) for i < j, indexed by [`DiagGrad`] (the matrix is symmetric; the diagonal is 1).
    pub cos: [[f64; KINDS]; KINDS],
    /// cos(g_i, g_i at the previous diagnosed update); None on the first one.
    pub cos_prev: [Option<f64>; KINDS],
}

fn cosine(dot: f64, a2: f64, b2: f64) -> f64 {
    let d = (a2 * b2).sqrt();
    if d > 0.0 {
        (dot / d).clamp(-1.0, 1.0)
    } else {
        f64::NAN
    }
}

impl GradGeometry {
    /// From the global sums (every rank's [`partial_sums`] added).
    pub fn from_sums(s: &[f64], has_prev: bool) -> Self {
        let mut cos = [[1.0; KINDS]; KINDS];
        for i in 0..KINDS {
            for j in i + 1..KINDS {
                let c = cosine(s[KINDS + pair_index(i, j)], s[i], s[j]);
                cos[i][j] = c;
                cos[j][i] = c;
            }
        }
        Self {
            norm: std::array::from_fn(|k| s[k].sqrt()),
            cos,
            cos_prev: std::array::from_fn(|k| {
                has_prev.then(|| cosine(s[KINDS + PAIRS + k], s[k], s[2 * KINDS + PAIRS + k]))
            }),
        }
    }
}

/// Means over the anchor and explorer tails of the mini-batch (response tokens).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TailStats {
    pub anchor_hnorm: f64,
    pub explorer_hnorm: f64,
    pub anchor_pred_entropy: f64,
    pub explorer_pred_entropy: f64,
    /// Mean relative position (position / response length).
    pub anchor_position: f64,
    pub explorer_position: f64,
}

/// One diagnosed update, or the mean of a step's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics {
    pub geometry: GradGeometry,
    pub tails: TailStats,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Diagnostics {
    /// The `diag_*` keys of the metrics line (undefined values are None, written as null):
    /// `diag_norm_{set}`, `diag_cos_{a}_{b}`, `diag_cos_prev_{set}`, `diag_{anchor,explorer}_{hnorm,pred_entropy,position}`.
    pub fn fields(&self) -> Vec<(String, Option<f64>)> {
        let g = &self.geometry;
        let mut v = Vec::with_capacity(SUMS + 6);
        for k in DiagGrad::ALL {
            v.push((format!("diag_norm_{}", k.name()), finite(g.norm[k as usize])));
        }
        for i in 0..KINDS {
            for j in i + 1..KINDS {
                let (a, b) = (DiagGrad::ALL[i].name(), DiagGrad::ALL[j].name());
                v.push((format!("diag_cos_{a}_{b}"), finite(g.cos[i][j])));
            }
        }
        for k in DiagGrad::ALL {
            v.push((format!("diag_cos_prev_{}", k.name()), g.cos_prev[k as usize].and_then(finite)));
        }
        let t = &self.tails;
        for (name, x) in [
            ("diag_anchor_hnorm", t.anchor_hnorm),
            ("diag_explorer_hnorm", t.explorer_hnorm),
            ("diag_anchor_pred_entropy", t.anchor_pred_entropy),
            ("diag_explorer_pred_entropy", t.explorer_pred_entropy),
            ("diag_anchor_position", t.anchor_position),
            ("diag_explorer_position", t.explorer_position),
        ] {
            v.push((name.to_string(), finite(x)));
        }
        v
    }

    /// Mean over a step's diagnosed updates (a `cos_prev` over the updates that have one).
    pub fn mean(d: &[Diagnostics]) -> Diagnostics {
        let n = d.len().max(1) as f64;
        let m = |f: &dyn Fn(&Diagnostics) -> f64| d.iter().map(f).sum::<f64>() / n;
        let geometry = GradGeometry {
            norm: std::array::from_fn(|k| m(&|x| x.geometry.norm[k])),
            cos: std::array::from_fn(|i| std::array::from_fn(|j| m(&|x| x.geometry.cos[i][j]))),
            cos_prev: std::array::from_fn(|k| {
                let v: Vec<f64> = d.iter().filter_map(|x| x.geometry.cos_prev[k]).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            }),
        };
        let tails = TailStats {
            anchor_hnorm: m(&|x| x.tails.anchor_hnorm),
            explorer_hnorm: m(&|x| x.tails.explorer_hnorm),
            anchor_pred_entropy: m(&|x| x.tails.anchor_pred_entropy),
            explorer_pred_entropy: m(&|x| x.tails.explorer_pred_entropy),
            anchor_position: m(&|x| x.tails.anchor_position),
            explorer_position: m(&|x| x.tails.explorer_position),
        };
        Diagnostics { geometry, tails }
    }
}

/// The four gradients a diagnosed update forms before its own backward pass, and the tails' statistics.
pub(crate) struct Pending {
    shards: Vec<HostShard>,
    tails: TailStats,
}

impl Session {
    /// Whether rollout step `step` (0-based) is diagnosed.
    pub(crate) fn diagnosed(&self, step: u64) -> bool {
        let every = self.cfg.run.diagnose_every;
        every > 0 && (step + 1).is_multiple_of(every)
    }

    /// The fraction k of the anchor, explorer and random sets: the strategy's, 0.2 for full and soft.
    fn diag_fraction(&self) -> f64 {
        match self.strategy {
            Strategy::Random(k)
            | Strategy::Anchors(k)
            | Strategy::Explorers(k)
            | Strategy::PredTop(k)
            | Strategy::PredBottom(k)
            | Strategy::PositionRandom(k)
            | Strategy::PositionRandomExplorers(k)
            | Strategy::AnchorsMatched(k)
            | Strategy::ExplorersMatched(k) => k,
            Strategy::Full | Strategy::Soft(_) => 0.2,
        }
    }

    /// This rank's shard of Σ_ranks of the current gradients, on the host in bf16 (gradients untouched).
    pub(crate) fn grad_shard(&self) -> Res<HostShard> {
        let layout = FlatLayout::new(&self.params, self.world_size(), BUCKET_ELEMENTS);
        let grads: Vec<Option<Tensor>> = self.params.iter().map(Tensor::grad).collect();
        let k = layout.bucket;
        let mut host = vec![bf16::ZERO; layout.shard_len()];
        reduce_scatter_pieces(&grads, &layout, self.comm.as_deref(), &self.device, |j, piece| {
            round_into(&mut host[j * k..(j + 1) * k], &piece.to_vec_f32()?);
            Ok(())
        })?;
        Ok(HostShard(host))
    }

    /// Before a diagnosed update's own backward pass: the full, anchor, explorer and random gradients of
    /// `mb` (each from zeroed gradients; the gradients are zero again afterwards).
    pub(crate) fn diagnose_begin(&self, mb: &MiniBatch, step: u64, mb_index: usize) -> Res<Pending> {
        let k = self.diag_fraction();
        let valid = mb.cat(|m| &m.rows.mask);
        let n_valid: f64 = valid.iter().map(|&v| v as f64).sum();
        let mut shards = Vec::with_capacity(KINDS);
        let mut tails = TailStats::default();
        for kind in [DiagGrad::Full, DiagGrad::Anchors, DiagGrad::Explorers, DiagGrad::Random] {
            let w = match kind {
                DiagGrad::Full => valid.clone(),
                DiagGrad::Anchors => self.weights_for(&Strategy::Anchors(k), mb, step, mb_index, 0xd1a6a)?,
                DiagGrad::Explorers => self.weights_for(&Strategy::Explorers(k), mb, step, mb_index, 0xd1a6e)?,
                _ => self.weights_for(&Strategy::Random(k), mb, step, mb_index, 0xd1a65)?,
            };
            let kept: f64 = valid.iter().zip(&w).map(|(&v, &x)| (v * x) as f64).sum();
            let z = if self.cfg.tokens.normalizer == Normalizer::Selected { kept } else { n_valid };
            self.zero_grads();
            if z > 0.0 {
                self.backward_pass(mb, &w, z, None)?;
            }
            shards.push(self.grad_shard()?);
            match kind {
                DiagGrad::Anchors => {
                    [tails.anchor_hnorm, tails.anchor_pred_entropy, tails.anchor_position] = tail_means(mb, &w)
                }
                DiagGrad::Explorers => {
                    [tails.explorer_hnorm, tails.explorer_pred_entropy, tails.explorer_position] = tail_means(mb, &w)
                }
                _ => {}
            }
        }
        self.zero_grads();
        Ok(Pending { shards, tails })
    }

    /// After the update's own backward pass (its gradients are the trained set's): the geometry, with the
    /// previous diagnosed update's shards, which this update's then replace.
    pub(crate) fn diagnose_end(&mut self, pending: Pending) -> Res<Diagnostics> {
        let Pending { mut shards, tails } = pending;
        shards.push(self.grad_shard()?);
        let prev = self.diag_prev.take().filter(|p| p.len() == KINDS && p[0].0.len() == shards[0].0.len());
        let local = partial_sums(&shards, prev.as_deref());
        let sums = match &self.comm {
            None => local,
            Some(c) => c.all_reduce_host_many(&local)?,
        };
        let geometry = GradGeometry::from_sums(&sums, prev.is_some());
        self.diag_prev = Some(shards);
        Ok(Diagnostics { geometry, tails })
    }
}

/// Mean head-mean Hnorm, predictive entropy and relative position over the rows with a non-zero weight
/// (NaN when there are none; predictive entropy 0 when the pass did not form it).
fn tail_means(mb: &MiniBatch, weights: &[f32]) -> [f64; 3] {
    let (attn, pred) = (mb.cat(|m| &m.attn), mb.cat(|m| &m.pred));
    let (pos, len) = (mb.cat(|m| &m.rows.position), mb.cat(|m| &m.rows.response_len));
    let (mut s, mut c) = ([0.0; 3], 0.0);
    for i in (0..weights.len()).filter(|&i| weights[i] != 0.0) {
        s[0] += attn[i] as f64;
        s[1] += pred.get(i).copied().unwrap_or(0.0) as f64;
        s[2] += pos[i] as f64 / len[i].max(1) as f64;
        c += 1.0;
    }
    s.map(|x| x / c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_to_nearest_even_bf16() {
        let mut out = [bf16::ZERO; 4];
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        round_into(&mut out, &[1.0, -3.5, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]);
        assert_eq!(out.map(|x| x.to_f32()), [1.0, -3.5, 1.0, 1.0 + 4.0 / 256.0]);
    }

    fn shard(v: &[f32]) -> HostShard {
        HostShard(v.iter().map(|&x| bf16::from_f32(x)).collect())
    }

    #[test]
    fn geometry_from_hand_computed_vectors() {
        // full = (1,0,0), anchors = (0,2,0), explorers = (1,1,0), random = (-1,0,0), selected = (3,0,4).
        let cur: Vec<HostShard> =
            [[1., 0., 0.], [0., 2., 0.], [1., 1., 0.], [-1., 0., 0.], [3., 0., 4.]].iter().map(|v| shard(v)).collect();
        let g = GradGeometry::from_sums(&partial_sums(&cur, None), false);
        assert_eq!(g.norm, [1.0, 2.0, 2f64.sqrt(), 1.0, 5.0]);
        let (f, a, e, r, s) = (0, 1, 2, 3, 4);
        assert_eq!(g.cos[f][a], 0.0);
        assert!((g.cos[f][e] - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(g.cos[f][r], -1.0);
        assert_eq!(g.cos[r][f], -1.0);
        assert!((g.cos[f][s] - 0.6).abs() < 1e-12);
        assert!((g.cos[a][e] - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(g.cos_prev, [None; KINDS]);
        // Against a previous update: cos with itself is 1, with its negation −1, with a zero vector undefined.
        let prev: Vec<HostShard> = [[2., 0., 0.], [0., -1., 0.], [0., 0., 0.], [-1., 0., 0.], [4., 0., -3.]]
            .iter()
            .map(|v| shard(v))
            .collect();
        let g = GradGeometry::from_sums(&partial_sums(&cur, Some(&prev)), true);
        assert_eq!(g.cos_prev[f], Some(1.0));
        assert_eq!(g.cos_prev[a], Some(-1.0));
        assert!(g.cos_prev[e].unwrap().is_nan());
        assert_eq!(g.cos_prev[s], Some(0.0));
        let d = Diagnostics { geometry: g, tails: TailStats::default() };
        let fields = d.fields();
        assert_eq!(fields.len(), 26);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("{k}")).1;
        assert_eq!(get("diag_norm_selected"), Some(5.0));
        assert_eq!(get("diag_cos_full_random"), Some(-1.0));
        assert_eq!(get("diag_cos_prev_explorers"), None, "undefined is None (null), never NaN");
    }

    #[test]
    fn sums_split_over_shards_add_up_to_the_whole() {
        // Two ranks' shards of the same five vectors give the whole vectors' sums once added (ZeRO-2).
        let whole: Vec<Vec<f32>> =
            (0..KINDS).map(|k| (0..300_001).map(|e| ((e * 7 + k * 13) % 17) as f32 - 8.0).collect()).collect();
        let cut = 123_457;
        let part =
            |r: std::ops::Range<usize>| -> Vec<HostShard> { whole.iter().map(|v| shard(&v[r.clone()])).collect() };
        let all = partial_sums(&part(0..300_001), Some(&part(0..300_001)));
        let a = partial_sums(&part(0..cut), Some(&part(0..cut)));
        let b = partial_sums(&part(cut..300_001), Some(&part(cut..300_001)));
        for ((x, y), z) in a.iter().zip(&b).zip(&all) {
            assert_eq!(x + y, *z, "integers are exact in f64");
        }
        let g = GradGeometry::from_sums(&all, true);
        assert!(g.cos_prev.iter().all(|c| (c.unwrap() - 1.0).abs() < 1e-12));
    }

    #[test]
    fn the_mean_keeps_cos_prev_of_the_updates_that_have_one() {
        let mut a = Diagnostics::default();
        let mut b = Diagnostics::default();
        a.geometry.norm[0] = 1.0;
        b.geometry.norm[0] = 3.0;
        b.geometry.cos_prev[4] = Some(0.5);
        let m = Diagnostics::mean(&[a, b]);
        assert_eq!(m.geometry.norm[0], 2.0);
        assert_eq!(m.geometry.cos_prev[4], Some(0.5));
        assert_eq!(m.geometry.cos_prev[0], None);
    }

    #[test]
    fn previous_shards_round_trip_through_a_checkpoint_file() {
        let dir = std::env::temp_dir().join(format!("entrl-diag-prev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load_prev(&dir, 0, 3).unwrap(), None);
        let prev: Vec<HostShard> = (0..KINDS).map(|k| shard(&[k as f32, -1.5, 0.25])).collect();
        save_prev(&dir, 1, &prev).unwrap();
        assert_eq!(load_prev(&dir, 1, 3).unwrap(), Some(prev.clone()));
        // Another layout's shard length is refused by name.
        let e = load_prev(&dir, 1, 4).unwrap_err().to_string();
        assert!(e.contains("diag_prev.rank1.safetensors") && e.contains("expected [4]"), "{e}");
        // A non-finite shard is not saved; a truncated file is an error naming it.
        let mut bad = prev.clone();
        bad[2] = shard(&[f32::NAN, 0.0, 0.0]);
        save_prev(&dir, 2, &bad).unwrap();
        assert_eq!(load_prev(&dir, 2, 3).unwrap(), None);
        let f = prev_file(&dir, 1);
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
        let e = load_prev(&dir, 1, 3).unwrap_err().to_string();
        assert!(e.contains("diag_prev.rank1.safetensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pair_indices_cover_the_ten_pairs_once() {
        let mut seen = [false; PAIRS];
        for i in 0..KINDS {
            for j in i + 1..KINDS {
                assert!(!seen[pair_index(i, j)]);
                seen[pair_index(i, j)] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
