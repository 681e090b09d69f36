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

/// Byte sizes of the parameters of kernel `name` in `family`, in order, read from its PTX `.entry`
/// declaration; None when the family is not compiled in or has no such kernel. cudarc passes kernel
/// arguments as untyped pointers, so the engine compares these with the sizes of what it passes before
/// every launch (a missing, extra or mis-sized argument would otherwise be read as garbage).
pub fn param_sizes(family: &str, name: &str) -> Option<Vec<usize>> {
    entry_param_sizes(ptx(family)?, name)
}

/// [`param_sizes`] on any PTX text: the `.entry name(...)` parameter list, each `.param [.align N] .type
/// name` or `.param .align N .b8 name[bytes]` (a struct passed by value) as its size in bytes.
pub fn entry_param_sizes(ptx: &str, name: &str) -> Option<Vec<usize>> {
    let head = format!(".entry {name}(");
    let start = ptx.find(&head)? + head.len();
    let end = start + ptx[start..].find(')')?;
    ptx[start..end].split(',').filter(|p| !p.trim().is_empty()).map(param_size).collect()
}

/// One `.param` declaration's size in bytes (None if it is not one).
fn param_size(decl: &str) -> Option<usize> {
    let words: Vec<&str> = decl.split_whitespace().collect();
    if words.first() != Some(&".param") {
        return None;
    }
    let elem = words.iter().find_map(|w| match *w {
        ".u64" | ".s64" | ".b64" | ".f64" => Some(8),
        ".u32" | ".s32" | ".b32" | ".f32" => Some(4),
        ".u16" | ".s16" | ".b16" | ".f16" | ".bf16" => Some(2),
        ".u8" | ".s8" | ".b8" => Some(1),
        _ => None,
    })?;
    let last = words.last()?;
    let count = match (last.find('['), last.strip_suffix(']')) {
        (Some(open), Some(body)) => body[open + 1..].parse().ok()?,
        _ => 1,
    };
    Some(elem * count)
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
            // select_wide_cand(const SelectWideParams p, int pass): a 120-byte struct and an int
            assert_eq!(super::param_sizes("select_wide", "select_wide_cand").unwrap(), [120, 4]);
        } else {
            assert!(super::MODULES.is_empty());
            assert!(super::ptx("elementwise").is_none());
        }
    }

    #[test]
    fn entry_parameters_parse_scalars_pointers_and_structs() {
        let ptx = "
.visible .entry k_long(
	.param .u64 .ptr .align 1 k_long_param_0,
	.param .u32 k_long_param_1,
	.param .align 8 .b8 k_long_param_2[152],
	.param .f64 k_long_param_3
)
{
	.param .b64 param0;
}
.visible .entry k()
{
}";
        assert_eq!(super::entry_param_sizes(ptx, "k_long").unwrap(), [8, 4, 152, 8]);
        assert_eq!(super::entry_param_sizes(ptx, "k").unwrap(), Vec::<usize>::new());
        assert!(super::entry_param_sizes(ptx, "k_lon").is_none());
        assert!(super::entry_param_sizes(".visible .entry bad(\n\t.param .v4 x\n)", "bad").is_none());
    }
}
