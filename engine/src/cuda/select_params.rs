//! The `#[repr(C)]` twins of `kernels-cu/cuda/select_params.cuh`: the by-value parameter structs of the radix
//! select (`select.cu`, `select_wide.cu`) and of the radix sort's scatter. Device pointers are u64 (0 = null).
//! The test below holds every field's offset and the size to the header's static_asserts.
use cudarc::driver::DeviceRepr;

/// `SelectParams`: every kernel of one 8-bit radix select call (`select.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SelectParams {
    pub hist: u64,
    pub state: u64,
    pub flags: u64,
    pub out0: u64,
    pub out1: u64,
    pub scores: u64,
    pub valid: u64,
    pub cu: u64,
    pub n: i64,
    pub seed: u64,
    pub frac: f64,
    pub slack: f64,
    pub num_pools: i32,
    pub ntails: i32,
}

/// `SelectWideParams`: every kernel of one wide radix select call (`select_wide.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SelectWideParams {
    pub ws: u64,
    pub tiles: u64,
    pub out0: u64,
    pub out1: u64,
    pub scores: u64,
    pub valid: u64,
    pub cu: u64,
    pub cand: u64,
    pub n: i64,
    pub seed: u64,
    pub frac: f64,
    pub slack: f64,
    pub num_pools: i32,
    pub ntails: i32,
    pub split: i32,
    pub vec: i32,
    pub fuse: i32,
    pub copies: i32,
}

/// `SortScatterParams`: one scatter pass of the radix sort.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SortScatterParams {
    pub keys_out: u64,
    pub idx_out: u64,
    pub keys_in: u64,
    pub idx_in: u64,
    pub counts: u64,
    pub totals: u64,
    pub n: i64,
    pub tiles: i64,
    pub shift: i32,
    pub pad: i32,
}

// SAFETY: plain-old-data #[repr(C)] structs matching the CUDA declarations field for field (tested below).
unsafe impl DeviceRepr for SelectParams {}
unsafe impl DeviceRepr for SelectWideParams {}
unsafe impl DeviceRepr for SortScatterParams {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::mem::{offset_of, size_of};

    /// (field, offset) of a Rust twin, every field listed.
    macro_rules! offsets {
        ($t:ty: $($f:ident),* $(,)?) => {
            BTreeMap::from([$((stringify!($f).to_string(), offset_of!($t, $f))),*])
        };
    }

    /// The header's `static_assert(offsetof(S, f) == N, ..)` lines of struct `s` as (field, N), and its
    /// `static_assert(sizeof(S) == N, ..)`.
    fn header_layout(header: &str, s: &str) -> (BTreeMap<String, usize>, Option<usize>) {
        let mut fields = BTreeMap::new();
        let mut size = None;
        for line in header.lines().filter_map(|l| l.trim().strip_prefix("static_assert(")) {
            let Some((lhs, rest)) = line.split_once("==") else { continue };
            let value: usize = rest.split(',').next().and_then(|v| v.trim().parse().ok()).expect("a byte count");
            if let Some(args) = lhs.trim().strip_prefix("offsetof(").and_then(|a| a.strip_suffix(')')) {
                let (name, field) = args.split_once(',').expect("offsetof(struct, field)");
                if name.trim() == s {
                    fields.insert(field.trim().to_string(), value);
                }
            } else if lhs.trim() == format!("sizeof({s})") {
                size = Some(value);
            }
        }
        (fields, size)
    }

    #[test]
    fn layouts_match_select_params_cuh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels-cu/cuda/select_params.cuh");
        let header = std::fs::read_to_string(path).expect("kernels-cu/cuda/select_params.cuh");
        let twins = [
            (
                "SelectParams",
                size_of::<SelectParams>(),
                offsets!(SelectParams: hist, state, flags, out0, out1, scores, valid, cu, n, seed, frac, slack,
                    num_pools, ntails),
            ),
            (
                "SelectWideParams",
                size_of::<SelectWideParams>(),
                offsets!(SelectWideParams: ws, tiles, out0, out1, scores, valid, cu, cand, n, seed, frac, slack,
                    num_pools, ntails, split, vec, fuse, copies),
            ),
            (
                "SortScatterParams",
                size_of::<SortScatterParams>(),
                offsets!(SortScatterParams: keys_out, idx_out, keys_in, idx_in, counts, totals, n, tiles, shift, pad),
            ),
        ];
        for (name, size, rust) in twins {
            let (cuda, cuda_size) = header_layout(&header, name);
            assert_eq!(rust, cuda, "{name}: the Rust fields and offsets differ from select_params.cuh's");
            assert_eq!(Some(size), cuda_size, "{name}: size");
        }
    }

    /// With PTX compiled in, each kernel takes its struct as one parameter of the struct's size.
    #[test]
    fn kernels_take_the_structs_by_value() {
        if !entrl_kernels::COMPILED {
            eprintln!("skipped: this build has no PTX (nvcc was not found); CI builds it");
            return;
        }
        let sel = size_of::<SelectParams>();
        let wide = size_of::<SelectWideParams>();
        let scatter = size_of::<SortScatterParams>();
        for (family, kernel, want) in [
            ("select", "select_hist_plain", vec![sel, 4]),
            ("select", "select_scan", vec![sel, 4]),
            ("select", "select_mask", vec![sel]),
            ("select", "radix_sort_scatter", vec![scatter]),
            ("select", "radix_sort_scatter_local", vec![scatter]),
            ("select_wide", "select_wide_data", vec![wide, 4]),
            ("select_wide", "select_wide_cand", vec![wide, 4]),
            ("select_wide", "select_wide_scan", vec![wide, 4]),
            ("select_wide", "select_wide_cand_mask", vec![wide]),
        ] {
            assert_eq!(entrl_kernels::param_sizes(family, kernel), Some(want), "{family}::{kernel}");
        }
    }
}
