//! Compiles every `cuda/*.cu` to PTX with nvcc and writes `$OUT_DIR/ptx.rs`, one entry per file.
//!
//! nvcc is optional: without it the crate still builds (no PTX embedded) and the CUDA backend says so
//! at run time. Set `ENTRL_REQUIRE_NVCC=1` (CI does) to turn a missing nvcc into a build error.
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_nvcc() -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Ok(root) = env::var(var) {
            let p = Path::new(&root).join("bin/nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let default = Path::new("/usr/local/cuda/bin/nvcc");
    if default.is_file() {
        return Some(default.to_path_buf());
    }
    env::var_os("PATH").and_then(|paths| env::split_paths(&paths).map(|d| d.join("nvcc")).find(|p| p.is_file()))
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_ptx)");
    println!("cargo::rerun-if-changed=cuda");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "CUDA_ROOT", "CUDA_ARCH", "ENTRL_REQUIRE_NVCC"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let src_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("manifest dir")).join("cuda");
    let mut sources: Vec<PathBuf> = fs::read_dir(&src_dir)
        .expect("kernels-cu/cuda exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();

    let Some(nvcc) = find_nvcc() else {
        if env::var("ENTRL_REQUIRE_NVCC").is_ok_and(|v| v == "1") {
            panic!("ENTRL_REQUIRE_NVCC=1 but nvcc was not found (set NVCC or CUDA_HOME)");
        }
        println!("cargo::warning=nvcc not found: building entrl without PTX kernels (CPU backend only)");
        write_index(&out_dir, &[], false);
        return;
    };
    let arch = env::var("CUDA_ARCH").unwrap_or_else(|_| "sm_90a".to_string());
    let mut built = Vec::new();
    for src in &sources {
        let stem = src.file_stem().unwrap().to_string_lossy().to_string();
        let ptx = out_dir.join(format!("{stem}.ptx"));
        let output = Command::new(&nvcc)
            .args(["--ptx", &format!("-arch={arch}"), "-O3", "-std=c++17"])
            .args(["--expt-relaxed-constexpr", "-lineinfo"])
            .arg(format!("-I{}", src_dir.display()))
            .arg(src)
            .arg("-o")
            .arg(&ptx)
            .output()
            .unwrap_or_else(|e| panic!("failed to run {}: {e}", nvcc.display()));
        if !output.status.success() {
            panic!(
                "nvcc failed on {}:\n{}{}",
                src.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        built.push((stem, ptx));
    }
    write_index(&out_dir, &built, true);
    println!("cargo::rustc-cfg=has_ptx");
}

/// `ptx.rs`: `pub const MODULES: &[(&str, &str)] = &[("attention", include_str!(..)), ..];`
fn write_index(out_dir: &Path, built: &[(String, PathBuf)], _has: bool) {
    let mut s = String::from("pub const MODULES: &[(&str, &str)] = &[\n");
    for (stem, ptx) in built {
        s.push_str(&format!("    ({stem:?}, include_str!({:?})),\n", ptx.display().to_string()));
    }
    s.push_str("];\n");
    fs::write(out_dir.join("ptx.rs"), s).expect("write ptx.rs");
}
