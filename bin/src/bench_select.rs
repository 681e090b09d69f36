//! `entrl bench select`: the top and bottom tails of n scores by both versions of the radix
//! select and the radix sort by both scatters (vs torch in `benches/torch_select.py`), and with
//! `--wide-sweep` the wide version over a grid of its shapes.
use crate::bench::write_atomic;
use entrl_engine::cuda::choices::current_first;
use entrl_engine::cuda::select::{set_wide_shape, HistVersion, SortScatter, WideShape};
use entrl_engine::cuda::timing::{median, time_ms};
use entrl_engine::cuda::{CudaDevice, KernelChoices};
use entrl_engine::ops::{radix_sort, select_tails};
use entrl_engine::{DType, Device, Packing, Tensor};
use std::process::ExitCode;

pub fn select(
    n: usize,
    frac: f64,
    pools: usize,
    reps: usize,
    wide_sweep: bool,
    json: Option<&std::path::Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let dev = Device::cuda(0)?;
    let cuda = dev.as_cuda().expect("cuda").clone();
    let scores = Tensor::rand_uniform([n], 0.0, 1.0, DType::F32, &dev, 1)?;
    let valid = Tensor::ones([n], DType::F32, &dev)?;
    if pools == 0 || pools > n {
        return Err(format!("--pools {pools}: between 1 and n = {n}").into());
    }
    // `pools` pools of n / pools tokens, the remainder spread one each over the first ones.
    let lengths: Vec<usize> = (0..pools).map(|p| n / pools + usize::from(p < n % pools)).collect();
    let pool = Packing::from_lengths(&lengths)?;
    // Both select versions, the device's choice first (it is "entrl_select_tails").
    let base = cuda.kernel_choices();
    let versions = current_first(base.select, &HistVersion::ALL);
    let mut times = Vec::new();
    for &v in &versions {
        let run = || select_tails(&scores, &valid, frac, &pool).map(|_| ());
        let ms =
            cuda.with_kernel_choices(KernelChoices { select: v, ..base }, || time_ms(&cuda, 3, reps.max(1), run))?;
        times.push(median(&ms));
    }
    let default = versions[0];
    let tails = times[0];
    // Both scatter versions of the sort, the device's choice first ("entrl_radix_sort").
    let scatters = current_first(base.sort_scatter, &SortScatter::ALL);
    let mut sort_times = Vec::new();
    for &s in &scatters {
        let run = || radix_sort(&scores).map(|_| ());
        let ms = cuda
            .with_kernel_choices(KernelChoices { sort_scatter: s, ..base }, || time_ms(&cuda, 3, reps.max(1), run))?;
        sort_times.push(median(&ms));
    }
    let sort = sort_times[0];
    println!(
        "select top+bottom {:.0}% of {n} f32 scores in {pools} pool(s): {:.1} us (histogram version {}); radix sort (keys + indices): {:.1} us ({})",
        frac * 100.0,
        tails * 1e3,
        default.name(),
        sort * 1e3,
        cuda.name()
    );
    for (v, t) in versions.iter().zip(&times).skip(1) {
        println!("  histogram version {:<13} {:.1} us", v.name(), t * 1e3);
    }
    println!("  radix sort scatter {} (default) {:.1} us", scatters[0].name(), sort * 1e3);
    for (s, t) in scatters.iter().zip(&sort_times).skip(1) {
        println!("  radix sort scatter {:<13} {:.1} us", s.name(), t * 1e3);
    }
    let mut lines = String::new();
    if json.is_some() {
        let mut rows = vec![("entrl_select_tails".to_string(), tails), ("entrl_radix_sort".to_string(), sort)];
        rows.extend(versions.iter().zip(&times).skip(1).map(|(v, &t)| (format!("entrl_select_tails_{}", v.name()), t)));
        rows.extend(
            scatters.iter().zip(&sort_times).skip(1).map(|(s, &t)| (format!("entrl_radix_sort_{}", s.name()), t)),
        );
        for (imp, ms) in rows {
            lines.push_str(&format!(
                "{{\"bench\":\"select\",\"impl\":\"{imp}\",\"n\":{n},\"pools\":{pools},\"frac\":{frac},\"ms\":{ms:.4},\"gpu\":\"{}\",\"commit\":\"{}\"}}\n",
                cuda.name(),
                crate::COMMIT
            ));
        }
    }
    let mut all_ok = true;
    if wide_sweep {
        all_ok = sweep_wide(&cuda, &scores, &valid, frac, &pool, reps, &mut lines)?;
    }
    if let Some(path) = json {
        write_atomic(path, &lines)?;
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The wide version over a grid of shapes: each one's masks against the plain version's, and its median
/// time. Prints a table (fastest first) and appends one JSON line per shape to `lines`; false if any shape
/// gave different masks. Leaves the default shape set.
fn sweep_wide(
    cuda: &CudaDevice,
    scores: &Tensor,
    valid: &Tensor,
    frac: f64,
    pool: &Packing,
    reps: usize,
    lines: &mut String,
) -> Result<bool, Box<dyn std::error::Error>> {
    let base = cuda.kernel_choices();
    let with = |v: HistVersion| KernelChoices { select: v, ..base };
    let masks = |v: HistVersion| -> Result<(Vec<f32>, Vec<f32>), Box<dyn std::error::Error>> {
        let m = cuda.with_kernel_choices(with(v), || select_tails(scores, valid, frac, pool))?;
        Ok((m.top.to_vec_f32()?, m.bottom.to_vec_f32()?))
    };
    let want = masks(HistVersion::Plain)?;
    let mut rows = Vec::new();
    for tile in [8192, 16384, 32768] {
        for cand_split in [1, 2, 4, 8] {
            for pass0_copies in [false, true] {
                let shape = WideShape { tile, cand_split, pass0_copies };
                set_wide_shape(shape)?;
                let same = masks(HistVersion::Wide)? == want;
                let run = || select_tails(scores, valid, frac, pool).map(|_| ());
                let ms = cuda.with_kernel_choices(with(HistVersion::Wide), || time_ms(cuda, 3, reps.max(1), run))?;
                rows.push((shape, median(&ms), same));
            }
        }
    }
    set_wide_shape(WideShape::DEFAULT)?;
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    println!("wide version by shape (fastest first; masks checked against the plain version):");
    for (s, ms, same) in &rows {
        let default = if *s == WideShape::DEFAULT { " (default)" } else { "" };
        println!(
            "  tile {:>5}  candidate split {}  pass-0 copies {:<5}  {:>7.1} us  {}{default}",
            s.tile,
            s.cand_split,
            s.pass0_copies,
            ms * 1e3,
            if *same { "masks ok" } else { "MASKS DIFFER" }
        );
        lines.push_str(&format!(
            "{{\"bench\":\"select_wide_sweep\",\"tile\":{},\"split\":{},\"copies\":{},\"n\":{},\"pools\":{},\"ms\":{ms:.4},\"ok\":{same},\"gpu\":\"{}\",\"commit\":\"{}\"}}\n",
            s.tile,
            s.cand_split,
            s.pass0_copies,
            scores.numel(),
            pool.num_seqs(),
            cuda.name(),
            crate::COMMIT
        ));
    }
    Ok(rows.iter().all(|r| r.2))
}
