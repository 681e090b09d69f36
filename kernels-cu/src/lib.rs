//! entrl's CUDA kernels, one `cuda/<family>.cu` file per kernel family, compiled to PTX for sm_90a by
//! `build.rs` and embedded in the binary. The engine loads a module by its family name and looks kernels
//! up by their `extern "C"` names; `cuda/README.md` lists every kernel's signature and launch shape.

include!(concat!(env!("OUT_DIR"), "/ptx.rs"));

/// True when this build embedded PTX (nvcc was found at build time).
pub const COMPILED: bool = cfg!(has_ptx);

/// The PTX text of one kernel family (`"elementwise"`, `"softmax"`, ...), if it was compiled in.
pub fn ptx(family: &str) -> Option<&'static str> {
    MODULES.iter().find(|(name, _)| *name == family).map(|(_, ptx)| *ptx)
}

/// Names of the kernel families compiled into this build.
pub fn families() -> impl Iterator<Item = &'static str> {
    MODULES.iter().map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ptx_index_matches_build_mode() {
        if super::COMPILED {
            for (name, ptx) in super::MODULES {
                assert!(ptx.contains(".target sm_90a"), "{name} is not sm_90a PTX");
                assert!(ptx.contains(".version 9.0"), "{name}: PTX ISA is not 9.0");
            }
            assert!(super::ptx("elementwise").is_some());
        } else {
            assert!(super::MODULES.is_empty());
            assert!(super::ptx("elementwise").is_none());
        }
    }
}
