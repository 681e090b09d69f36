//! Token selection and radix sort on a device against the CPU reference, on the same random inputs:
//! one pool of 1,000,003 tokens, 997 pools of mixed lengths (including 0 and 1) with heavy ties, and a
//! single heavily tied pool; on a GPU both select versions and both sort scatters. The error of a row is the number of mismatching mask entries (or sorted
//! keys / indices), tolerance 0. On the CPU this compares the CPU path with itself (exercising the harness).
use super::{f32_bits_eq, mismatches, CheckRow};
use crate::cuda::choices::current_first;
use crate::cuda::select::{HistVersion, SortScatter};
use crate::cuda::KernelChoices;
use crate::device::Device;
use crate::error::Result;
use crate::ops::{radix_sort, select_random, select_tails};
use crate::packing::Packing;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};

/// Score distributions of the cases.
#[derive(Clone, Copy)]
enum Scores {
    /// Continuous (almost no ties), both signs.
    Normal,
    /// Drawn from a handful of values including ±0.0 and ±inf (heavy ties).
    Tied,
}

struct Case {
    name: &'static str,
    lengths: Vec<usize>,
    scores: Scores,
    valid_p: f64,
    frac: f64,
}

fn cases(rng: &mut impl Rng) -> Vec<Case> {
    let mixed: Vec<usize> = (0..997)
        .map(|p| match p % 9 {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => rng.random_range(3..40),
            _ => rng.random_range(40..1500),
        })
        .collect();
    vec![
        Case { name: "1 pool", lengths: vec![1_000_003], scores: Scores::Normal, valid_p: 0.7, frac: 0.2 },
        Case { name: "997 pools", lengths: mixed.clone(), scores: Scores::Tied, valid_p: 0.6, frac: 0.2 },
        Case { name: "997 pools", lengths: mixed, scores: Scores::Normal, valid_p: 0.9, frac: 0.37 },
        Case { name: "1 pool tied", lengths: vec![262_147], scores: Scores::Tied, valid_p: 0.5, frac: 0.2 },
    ]
}

fn draw_scores(rng: &mut impl Rng, n: usize, kind: Scores) -> Vec<f32> {
    const TIED: [f32; 8] = [f32::NEG_INFINITY, -1.5, -0.0, 0.0, 0.25, 1.0, 3.0, f32::INFINITY];
    (0..n)
        .map(|_| match kind {
            Scores::Normal => {
                let (a, b): (f32, f32) = (rng.random(), rng.random());
                a - b + 0.01 * (a * 7.0).sin()
            }
            Scores::Tied => TIED[rng.random_range(0..TIED.len())],
        })
        .collect()
}

/// The versions to check on `dev`: [None] on the CPU (it has one path), on a GPU every one of `all`, the
/// device's current choice (`pick` of its `KernelChoices`) first.
fn gpu_choices<T: Copy + PartialEq>(dev: &Device, pick: fn(KernelChoices) -> T, all: &[T]) -> Vec<Option<T>> {
    match dev.as_cuda() {
        None => vec![None],
        Some(c) => current_first(pick(c.kernel_choices()), all).into_iter().map(Some).collect(),
    }
}

/// Runs `f` with `dev`'s kernel choices changed by `change` (then put back); on the CPU, `f` as is.
fn chosen<T>(dev: &Device, change: impl FnOnce(KernelChoices) -> KernelChoices, f: impl FnOnce() -> T) -> T {
    match dev.as_cuda() {
        Some(c) => c.with_kernel_choices(change(c.kernel_choices()), f),
        None => f(),
    }
}

/// select_tails / select_random / radix_sort on `dev` vs the CPU, tolerance 0 (mismatch counts).
pub fn select_checks(dev: &Device, seed: u64) -> Vec<CheckRow> {
    if let Some(c) = dev.as_cuda() {
        c.set_poison(true);
        c.set_debug_sync(true);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut rows = Vec::new();
    // [None] on the CPU; on a GPU every select version and every sort scatter, the device's choice first.
    let versions = gpu_choices(dev, |c| c.select, &HistVersion::ALL);
    let scatters = gpu_choices(dev, |c| c.sort_scatter, &SortScatter::ALL);
    for case in cases(&mut rng) {
        let n: usize = case.lengths.iter().sum();
        let shape = format!("{} x{} n={n}", case.name, case.lengths.len());
        let scores = draw_scores(&mut rng, n, case.scores);
        let valid: Vec<f32> = (0..n).map(|_| if rng.random_bool(case.valid_p) { 1.0 } else { 0.0 }).collect();
        let pools = match Packing::from_lengths(&case.lengths) {
            Ok(p) => p,
            Err(e) => {
                rows.push(CheckRow::failed("select", &shape, "f32", e.to_string()));
                continue;
            }
        };
        let on_cpu = run_tails(&Device::Cpu, &scores, &valid, case.frac, &pools, None);
        // On a GPU every select version (cuda/select.rs: HistVersion), the device's choice first.
        for (i, version) in versions.iter().enumerate() {
            let tails = || -> Result<f64> {
                let on_dev = run_tails(dev, &scores, &valid, case.frac, &pools, *version)?;
                let on_cpu = on_cpu.as_ref().map_err(|e| crate::EngineError::invalid("select_tails", e.to_string()))?;
                Ok(mismatches(&on_dev, on_cpu, f32_bits_eq))
            };
            let label = labelled(&format!("select_tails frac {}", case.frac), i, version.map(HistVersion::name));
            rows.push(row(&label, &shape, "f32", tails()));
        }
        let random = || -> Result<f64> {
            let s = seed ^ 0x5eed;
            let on_dev = run_random(dev, &valid, case.frac, s, &pools)?;
            let on_cpu = run_random(&Device::Cpu, &valid, case.frac, s, &pools)?;
            Ok(mismatches(&on_dev, &on_cpu, f32_bits_eq))
        };
        rows.push(row(&format!("select_random frac {}", case.frac), &shape, "f32", random()));
        // The sort also gets a few NaNs of both signs (they sort last, in index order).
        let mut keys = scores.clone();
        for (j, i) in (7..n).step_by(4099).enumerate() {
            keys[i] = if j % 2 == 0 { f32::NAN } else { -f32::NAN };
        }
        let on_cpu = run_sort(&Device::Cpu, &keys, None);
        for (i, scatter) in scatters.iter().enumerate() {
            let sort = || -> Result<f64> {
                let (k, i) = run_sort(dev, &keys, *scatter)?;
                let (kr, ir) = on_cpu.as_ref().map_err(|e| crate::EngineError::invalid("radix_sort", e.to_string()))?;
                Ok(mismatches(&k, kr, f32_bits_eq) + mismatches(&i, ir, |a, b| a == b))
            };
            let label = labelled("radix_sort", i, scatter.map(SortScatter::name));
            rows.push(row(&label, &format!("[{n}]"), "f32", sort()));
        }
    }
    rows.extend(nan_rows(dev, &versions));
    if let Some(c) = dev.as_cuda() {
        c.set_debug_sync(false);
        c.set_poison(false);
    }
    rows
}

fn row(op: &str, shape: &str, dtype: &str, r: Result<f64>) -> CheckRow {
    match r {
        Ok(err) => CheckRow::new(op, shape, dtype, err, 0.0),
        Err(e) => CheckRow::failed(op, shape, dtype, e.to_string()),
    }
}

/// Top mask followed by the bottom mask.
fn run_tails(
    dev: &Device,
    scores: &[f32],
    valid: &[f32],
    frac: f64,
    pools: &Packing,
    version: Option<HistVersion>,
) -> Result<Vec<f32>> {
    let n = scores.len();
    let s = Tensor::from_vec(scores.to_vec(), [n], dev)?;
    let v = Tensor::from_vec(valid.to_vec(), [n], dev)?;
    let m = chosen(
        dev,
        |c| KernelChoices { select: version.unwrap_or(c.select), ..c },
        || select_tails(&s, &v, frac, pools),
    )?;
    let mut out = m.top.to_vec_f32()?;
    out.extend(m.bottom.to_vec_f32()?);
    Ok(out)
}

fn run_random(dev: &Device, valid: &[f32], frac: f64, seed: u64, pools: &Packing) -> Result<Vec<f32>> {
    let v = Tensor::from_vec(valid.to_vec(), [valid.len()], dev)?;
    select_random(&v, frac, seed, pools)?.to_vec_f32()
}

fn run_sort(dev: &Device, keys: &[f32], scatter: Option<SortScatter>) -> Result<(Vec<f32>, Vec<i32>)> {
    let k = Tensor::from_vec(keys.to_vec(), [keys.len()], dev)?;
    let (sorted, idx) =
        chosen(dev, |c| KernelChoices { sort_scatter: scatter.unwrap_or(c.sort_scatter), ..c }, || radix_sort(&k))?;
    Ok((sorted.to_vec_f32()?, idx.to_vec_i32()?))
}

/// A NaN score on a valid token must be an error; on an invalid token it must be ignored (and the masks
/// must match the CPU's). Checked for every version, in mixed pools and inside one long pool (where the
/// tiled versions take their one-pool path). Error = 0 when all hold, 1 otherwise.
fn nan_rows(dev: &Device, versions: &[Option<HistVersion>]) -> Vec<CheckRow> {
    let long: Vec<f32> = (0..40_000).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
    let cases: [(&str, Vec<usize>, Vec<f32>, usize); 2] = [
        ("3 pools n=10", vec![4, 0, 6], vec![0.5, -1.0, 2.0, 0.0, 1.0, 1.0, -3.0, 7.0, 0.1, 0.2], 5),
        ("1 pool n=40000", vec![40_000], long, 23_456),
    ];
    let mut rows = Vec::new();
    for (shape, lengths, mut scores, at) in cases {
        scores[at] = f32::NAN;
        let valid = vec![1.0f32; scores.len()];
        let mut masked = valid.clone();
        masked[at] = 0.0;
        // The pools and the CPU's masks with the NaN token masked out, once per case.
        let reference = Packing::from_lengths(&lengths)
            .and_then(|pools| Ok((run_tails(&Device::Cpu, &scores, &masked, 0.5, &pools, None)?, pools)));
        for (i, version) in versions.iter().enumerate() {
            let op = labelled("select_tails NaN -> error", i, version.map(HistVersion::name));
            let run = || -> Result<std::result::Result<(), String>> {
                let (on_cpu, pools) =
                    reference.as_ref().map_err(|e| crate::EngineError::invalid("select_tails", e.to_string()))?;
                if run_tails(dev, &scores, &valid, 0.2, pools, *version).is_ok() {
                    return Ok(Err("NaN on a valid token was accepted".into()));
                }
                let on_dev = run_tails(dev, &scores, &masked, 0.5, pools, *version)?;
                if mismatches(&on_dev, on_cpu, f32_bits_eq) != 0.0 {
                    return Ok(Err("NaN on an invalid token changed the masks".into()));
                }
                Ok(Ok(()))
            };
            rows.push(match run() {
                Ok(Ok(())) => CheckRow::new(&op, shape, "f32", 0.0, 0.0),
                Ok(Err(why)) => CheckRow::failed(&op, shape, "f32", why),
                Err(e) => CheckRow::failed(&op, shape, "f32", e.to_string()),
            });
        }
    }
    rows
}

/// A row's op: `base`, and for a version other than the first (the device's choice) its name in brackets.
fn labelled(base: &str, i: usize, version: Option<&'static str>) -> String {
    match version {
        Some(name) if i > 0 => format!("{base} [{name}]"),
        _ => base.to_string(),
    }
}
