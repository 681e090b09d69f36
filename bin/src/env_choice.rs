//! The settings `entrl` reads from its environment and hands to the engine (which reads none): the kernel
//! versions new CUDA devices run (`ENTRL_GEMM`, `ENTRL_SELECT_HIST`, `ENTRL_SORT_SCATTER`, `ENTRL_ATTENTION`) and the profiler's
//! mode (`ENTRL_PROFILE`). One parser, one error line naming the variable, the value and the accepted names.
use entrl_engine::cuda::attention::AttnVersion;
use entrl_engine::cuda::gemm_lt::GemmBackend;
use entrl_engine::cuda::select::{HistVersion, SortScatter};
use entrl_engine::cuda::KernelChoices;
use entrl_engine::profile::ProfileMode;

/// `$var` as one of `all` by name; unset or empty gives `default`.
fn env_choice<T: Copy>(var: &str, all: &[T], name: fn(T) -> &'static str, default: T) -> Result<T, String> {
    match std::env::var(var).as_deref() {
        Err(_) | Ok("") => Ok(default),
        Ok(s) => parse_choice(var, s, all, name),
    }
}

/// `s` (the value of `var`) as one of `all` by name.
fn parse_choice<T: Copy>(var: &str, s: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T, String> {
    all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
        format!("{var}={s}: use one of {}", names.join(", "))
    })
}

/// The kernel versions from `ENTRL_GEMM` (cublas | lt), `ENTRL_SELECT_HIST` (plain | wide),
/// `ENTRL_SORT_SCATTER` (match | local) and `ENTRL_ATTENTION` (mma | hopper); each unset or empty keeps the
/// engine's default.
pub fn kernel_choices() -> Result<KernelChoices, String> {
    let d = KernelChoices::DEFAULT;
    Ok(KernelChoices {
        gemm: env_choice("ENTRL_GEMM", &GemmBackend::ALL, GemmBackend::name, d.gemm)?,
        select: env_choice("ENTRL_SELECT_HIST", &HistVersion::ALL, HistVersion::name, d.select)?,
        sort_scatter: env_choice("ENTRL_SORT_SCATTER", &SortScatter::ALL, SortScatter::name, d.sort_scatter)?,
        attention: env_choice("ENTRL_ATTENTION", &AttnVersion::ALL, AttnVersion::name, d.attention)?,
    })
}

/// `ENTRL_PROFILE`: unset, empty or 0 is off, `host` the host-only mode, anything else synchronised.
pub fn profile_mode() -> ProfileMode {
    profile_mode_of(std::env::var("ENTRL_PROFILE").ok().as_deref())
}

fn profile_mode_of(v: Option<&str>) -> ProfileMode {
    match v {
        None | Some("") | Some("0") => ProfileMode::Off,
        Some("host") => ProfileMode::HostOnly,
        Some(_) => ProfileMode::Synchronised,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_lists_them_on_error() {
        let name = |v: u8| ["a", "bb"][v as usize];
        assert_eq!(env_choice("ENTRL_TEST_CHOICE_UNSET", &[0u8, 1], name, 1), Ok(1));
        assert_eq!(parse_choice("X", "bb", &[0u8, 1], name), Ok(1));
        assert_eq!(parse_choice("X", "c", &[0u8, 1], name).unwrap_err(), "X=c: use one of a, bb");
        let e = parse_choice("ENTRL_SELECT_HIST", "keys", &HistVersion::ALL, HistVersion::name).unwrap_err();
        assert_eq!(e, "ENTRL_SELECT_HIST=keys: use one of plain, wide");
    }

    #[test]
    fn profile_values() {
        assert_eq!(profile_mode_of(None), ProfileMode::Off);
        assert_eq!(profile_mode_of(Some("0")), ProfileMode::Off);
        assert_eq!(profile_mode_of(Some("host")), ProfileMode::HostOnly);
        assert_eq!(profile_mode_of(Some("1")), ProfileMode::Synchronised);
    }
}
