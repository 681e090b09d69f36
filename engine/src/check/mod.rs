//! Correctness checks shared by `entrl selftest` and the test suite: every op's CUDA kernel against the
//! f64 CPU reference (forward and backward, fresh random inputs, odd sizes, poisoned outputs), and
//! finite-difference gradient checks of the CPU backend.
pub mod cases;
pub mod decode;
pub mod fused;
pub mod gpu;
pub mod gradcheck;
pub mod sampling;
pub mod select;

/// One line of a check table.
#[derive(Clone, Debug)]
pub struct CheckRow {
    pub op: String,
    pub shape: String,
    pub dtype: String,
    /// max |ours − reference| / max |reference| over the compared tensor.
    pub max_rel_err: f64,
    pub tol: f64,
    pub pass: bool,
    pub note: String,
}

impl CheckRow {
    pub fn new(op: &str, shape: &str, dtype: &str, err: f64, tol: f64) -> Self {
        Self {
            op: op.into(),
            shape: shape.into(),
            dtype: dtype.into(),
            max_rel_err: err,
            tol,
            pass: err.is_finite() && err <= tol,
            note: String::new(),
        }
    }
    pub fn failed(op: &str, shape: &str, dtype: &str, why: impl Into<String>) -> Self {
        Self {
            op: op.into(),
            shape: shape.into(),
            dtype: dtype.into(),
            max_rel_err: f64::NAN,
            tol: 0.0,
            pass: false,
            note: why.into(),
        }
    }
}

/// Number of positions where the two vectors differ by `same` (+ the length difference): the error of the
/// exact rows, whose tolerance is 0.
pub(crate) fn mismatches<T: Copy + PartialEq>(a: &[T], b: &[T], same: impl Fn(T, T) -> bool) -> f64 {
    let diff = a.iter().zip(b).filter(|(x, y)| !same(**x, **y)).count();
    (diff + a.len().abs_diff(b.len())) as f64
}

/// Bitwise equality of two f32 (NaN equals its own bits; −0 differs from +0).
pub(crate) fn f32_bits_eq(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
}

/// max |a − r| / max |r| (NaN anywhere in `a` gives +inf; mismatched lengths give +inf).
pub fn max_rel_err(a: &[f64], r: &[f64]) -> f64 {
    if a.len() != r.len() {
        return f64::INFINITY;
    }
    let scale = r.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(r) {
        if !x.is_finite() {
            return f64::INFINITY;
        }
        worst = worst.max((x - y).abs());
    }
    worst / scale
}

/// Float inputs as trainable leaves (so their gradients can be read), index inputs unchanged.
pub fn trainable_floats(inputs: &[crate::Tensor]) -> Vec<crate::Tensor> {
    inputs.iter().map(|t| if t.dtype().is_float() { t.param() } else { t.clone() }).collect()
}

/// Render rows as a fixed-width table.
pub fn format_table(rows: &[CheckRow]) -> String {
    let mut s = format!("{:<34} {:<22} {:<6} {:>12} {:>9}  {}\n", "op", "shape", "dtype", "max rel err", "tol", "pass");
    for r in rows {
        s.push_str(&format!(
            "{:<34} {:<22} {:<6} {:>12.3e} {:>9.1e}  {}{}\n",
            r.op,
            r.shape,
            r.dtype,
            r.max_rel_err,
            r.tol,
            if r.pass { "ok" } else { "FAIL" },
            if r.note.is_empty() { String::new() } else { format!("  ({})", r.note) }
        ));
    }
    s
}
