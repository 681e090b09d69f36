//! The process-wide choices between implementations that are read from the environment
//! (`ENTRL_GEMM`, `ENTRL_SELECT_HIST`, `ENTRL_SORT_SCATTER`): one parser, one error.
use std::sync::OnceLock;

/// `$var` as one of `all` by name; unset or empty gives `default`. The error names the variable, the value
/// and every accepted name.
pub fn env_choice<T: Copy>(var: &str, all: &[T], name: fn(T) -> &'static str, default: T) -> Result<T, String> {
    match std::env::var(var).as_deref() {
        Err(_) | Ok("") => Ok(default),
        Ok(s) => all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
            format!("{var}={s}: use one of {}", names.join(", "))
        }),
    }
}

/// [`env_choice`] read once per process into `cell` (a `static` of the caller's type), then that answer.
pub fn env_choice_once<T: Copy>(
    cell: &'static OnceLock<Result<T, String>>,
    var: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    default: T,
) -> Result<T, String> {
    cell.get_or_init(|| env_choice(var, all, name, default)).clone()
}

/// Every choice of `all`, `default` first (what the self-test and the benchmarks run side by side).
pub fn default_first<T: Copy + PartialEq>(default: T, all: &[T]) -> Vec<T> {
    std::iter::once(default).chain(all.iter().copied().filter(|&v| v != default)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_lists_them_on_error() {
        let name = |v: u8| ["a", "bb"][v as usize];
        assert_eq!(env_choice("ENTRL_TEST_CHOICE_UNSET", &[0u8, 1], name, 1), Ok(1));
        std::env::set_var("ENTRL_TEST_CHOICE_SET", "bb");
        assert_eq!(env_choice("ENTRL_TEST_CHOICE_SET", &[0u8, 1], name, 0), Ok(1));
        std::env::set_var("ENTRL_TEST_CHOICE_BAD", "c");
        let e = env_choice("ENTRL_TEST_CHOICE_BAD", &[0u8, 1], name, 0).unwrap_err();
        assert_eq!(e, "ENTRL_TEST_CHOICE_BAD=c: use one of a, bb");
        assert_eq!(default_first(1u8, &[0, 1, 2]), vec![1, 0, 2]);
    }
}
