//! Runs CUDA kernel files on the CPU: each is compiled unchanged by the host C++ compiler against the
//! `emu/` shims (CUDA threads as fibers, one CTA at a time; warp collectives — shuffles, match_any, ldmatrix,
//! mma.sync — following the PTX definitions) and its harness compares the results with an f64 reference or a
//! host sort. This checks a kernel's indexing, masking, recurrences, multi-pass protocols and epilogues on
//! machines with no GPU; the timing-dependent parts (cp.async and TMA overlap, races between CTAs, real tensor-core
//! rounding) are left to `entrl selftest` on a GPU.
//!
//! Needs a C++20 compiler (`$CXX`, else `c++`). Without one the test says so and passes, unless
//! `ENTRL_REQUIRE_CXX=1` (CI sets it), which turns a missing compiler into a failure.
use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Real headers from `cuda/` that the kernels include and that need no shim (plain C++ under the shims'
/// qualifier macros, or built on mma.cuh).
const PORTABLE_HEADERS: &[&str] = &[
    "tile_async.cuh",
    "geometry.cuh",
    "attention_params.cuh",
    "attention_row_stats.cuh",
    "attention_softmax.cuh",
    "hopper_desc.cuh",
    "select_params.cuh",
];

/// A fresh directory holding the shims, the portable headers, the harness and the kernel file (so
/// `#include "common.cuh"` in the kernel resolves to the shim). Kernel files and harnesses are looked up in
/// `cuda/` and `emu/`, then in `dev/` (the versions that are not shipped, llm.c's dev/cuda).
fn stage(kernels: &[&str], harness: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("entrl-emu-{}-{}", std::process::id(), harness.replace('.', "-")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the staging directory");
    let emu = crate_dir().join("emu");
    for entry in std::fs::read_dir(&emu).expect("kernels-cu/emu exists") {
        let path = entry.expect("read kernels-cu/emu").path();
        std::fs::copy(&path, dir.join(path.file_name().expect("file name"))).expect("copy a shim");
    }
    for file in PORTABLE_HEADERS.iter().chain(kernels).chain([&harness]) {
        let shipped = crate_dir().join("cuda").join(file);
        let src = if shipped.is_file() { shipped } else { crate_dir().join("dev").join(file) };
        if src.is_file() {
            std::fs::copy(&src, dir.join(file)).expect("copy a kernel source");
        }
    }
    dir
}

fn compiler() -> Option<String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let found = Command::new(&cxx).arg("--version").output().is_ok_and(|o| o.status.success());
    found.then_some(cxx)
}

fn compile_and_run(dir: &Path, cxx: &str, harness: &str) -> (bool, String) {
    let exe = dir.join("check");
    let build = Command::new(cxx)
        // CUDA code type-puns through vector loads (uint4 -> bf16 lanes), which nvcc allows and ISO C++ does not.
        .args(["-std=c++20", "-O2", "-fno-strict-aliasing"])
        .arg(format!("-I{}", dir.display())) // <mma.h> resolves to the emu/ stand-in
        .arg("-o")
        .arg(&exe)
        .arg(dir.join(harness))
        .output()
        .expect("run the C++ compiler");
    assert!(
        build.status.success(),
        "compiling {harness} against the emu shims failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let run = Command::new(&exe).output().expect("run the emulated kernel check");
    (run.status.success(), String::from_utf8_lossy(&run.stdout).into_owned())
}

/// Compile `harness` with `kernel`, run it, and require `cases` lines reporting "ok" and a zero exit.
fn emulate(kernel: &str, harness: &str, cases: usize) {
    emulate_files(&[kernel], harness, cases)
}

/// [`emulate`] for a harness that includes several kernel files.
fn emulate_files(kernels: &[&str], harness: &str, cases: usize) {
    let kernel = kernels.join(", ");
    let Some(cxx) = compiler() else {
        assert!(
            std::env::var("ENTRL_REQUIRE_CXX").map_or(true, |v| v != "1"),
            "ENTRL_REQUIRE_CXX=1 but no C++ compiler ($CXX or c++) was found"
        );
        eprintln!("no C++ compiler: skipping the emulated run of {kernel}");
        return;
    };
    let dir = stage(kernels, harness);
    let (ok, report) = compile_and_run(&dir, &cxx, harness);
    println!("{report}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "the emulated {kernel} disagrees with the reference:\n{report}");
    assert_eq!(report.lines().filter(|l| l.contains(" ok ")).count(), cases, "every case ran:\n{report}");
}

#[test]
fn attention_forward_mma_kernel_matches_the_f64_reference_when_emulated() {
    emulate("attention_mma.cu", "attention_mma_check.cpp", 5);
}

#[test]
fn attention_forward_hopper_kernel_matches_the_f64_reference_when_emulated() {
    // TMA boxes, mbarrier phases and wgmma on shared-memory descriptors as emu/hopper.cuh models them; 5 cases
    // in two fiber orders and S = 4100 once
    emulate("attention_hopper.cu", "attention_hopper_check.cpp", 11);
}

#[test]
fn attention_backward_hopper_kernel_matches_the_f64_reference_when_emulated() {
    // with attention_mma_bwd.cu's GQA reduce; 4 cases in two fiber orders and S = 4100 once
    emulate_files(&["attention_hopper_bwd.cu", "attention_mma_bwd.cu"], "attention_hopper_bwd_check.cpp", 9);
}

#[test]
fn head_mixture_entropy_pass_matches_the_f64_reference_when_emulated() {
    emulate_files(&["attention_mma.cu", "attention_hmix.cu"], "attention_hmix_check.cpp", 5);
}

#[test]
fn attention_backward_mma_kernel_matches_the_f64_reference_when_emulated() {
    emulate("attention_mma_bwd.cu", "attention_mma_bwd_check.cpp", 4);
}

#[test]
fn device_sampler_picks_inside_the_cdf_interval_when_emulated() {
    emulate("sample.cu", "sample_check.cpp", 14);
}

#[test]
fn paged_kv_write_copy_and_split_k_decode_attention_match_the_f64_reference_when_emulated() {
    // 4 plain decode cases + 6 shared-prefix (decode_prefix + decode_chunk from start + combine) cases
    emulate("decode.cu", "decode_check.cpp", 10);
}

#[test]
fn radix_select_and_sort_match_a_host_sort_when_emulated() {
    emulate_files(&["select.cu", "select_wide.cu", "select_common.cuh"], "select_check.cpp", 61);
}

#[test]
fn dev_select_histogram_versions_match_a_host_sort_when_emulated() {
    emulate_files(&["select.cu", "select_common.cuh", "select_versions.cu"], "select_versions_check.cpp", 20);
}

#[test]
fn fused_dapo_loss_rows_match_the_f64_formulas_when_emulated() {
    emulate("policy_loss.cu", "policy_loss_check.cpp", 4);
}

#[test]
fn dev_wmma_attention_and_the_shipped_row_dot_and_entropy_norm_match_the_f64_reference_when_emulated() {
    emulate_files(&["attention.cu", "attention_wmma.cu"], "attention_wmma_check.cpp", 3);
}

#[test]
fn layer_optimizer_and_index_kernels_match_their_formulas_when_emulated() {
    let files = ["adamw.cu", "index.cu", "rmsnorm.cu", "rope.cu", "softmax.cu", "swiglu.cu", "weights.cu"];
    emulate_files(&files, "layer_kernels_check.cpp", 16);
}

#[test]
fn strided_elementwise_and_reduction_kernels_match_their_formulas_when_emulated() {
    emulate_files(&["elementwise.cu", "reduce.cu"], "strided_kernels_check.cpp", 9);
}

/// Every kernel file, shipped or dev, is executed by one of the tests above.
#[test]
fn every_kernel_file_has_an_emulated_check() {
    let emu = ["emu", "dev"].into_iter().flat_map(|d| std::fs::read_dir(crate_dir().join(d)).expect(d));
    let harnesses: String = emu
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .map(|p| std::fs::read_to_string(p).expect("harness"))
        .collect();
    let kernels = ["cuda", "dev"].into_iter().flat_map(|d| std::fs::read_dir(crate_dir().join(d)).expect(d));
    for entry in kernels {
        let name = entry.expect("entry").file_name().to_string_lossy().to_string();
        if name.ends_with(".cu") {
            assert!(harnesses.contains(&format!("#include \"{name}\"")), "no emulated check includes {name}");
        }
    }
}
