//! The fused inference ops against the unfused ops they replace, on the same device and inputs:
//! `add_rms_norm` must equal `add` then `rms_norm` bitwise (same loop and reduction); `qk_norm_rope` must
//! equal `rms_norm` then `rope_with` (its norm sums in rmsnorm_fwd's order; the rotation is compiled in
//! another kernel, so the bound allows a bf16 ulp where the compiler contracts differently).
//! Odd sizes; f32 and bf16.
use super::gpu::row_or_fail;
use super::{f32_bits_eq, max_rel_err, mismatches, CheckRow};
use crate::autograd::no_grad;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{add_rms_norm, qk_norm_rope, RopeSpec};
use crate::tensor::Tensor;

/// Rows for both fused ops in f32 and bf16.
pub fn fused_inference_rows(dev: &Device, seed: u64) -> Vec<CheckRow> {
    let _ng = no_grad();
    let mut rows = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        rows.push(row_or_fail("add_rms_norm = add, rms_norm (bitwise)", "[37, 1025]", dtype, || {
            Ok((add_norm_err(dev, dtype, seed)?, 0.0))
        }));
        let tol = if dtype == DType::BF16 { 1.6e-2 } else { 1e-5 };
        rows.push(row_or_fail("qk_norm_rope = rms_norm, rope", "q [19, 16, 128], k [19, 8, 128]", dtype, || {
            Ok((norm_rope_err(dev, dtype, seed)?, tol))
        }));
    }
    rows
}

/// Entries of the sum and the norm that differ bitwise from add then rms_norm (0 when equal).
fn add_norm_err(dev: &Device, dtype: DType, seed: u64) -> Result<f64> {
    let x = Tensor::randn([37, 1025], 1.0, dtype, dev, seed)?;
    let y = Tensor::randn([37, 1025], 1.0, dtype, dev, seed ^ 1)?;
    let w = Tensor::randn([1025], 1.0, dtype, dev, seed ^ 2)?;
    let (s, n) = add_rms_norm(&x, &y, &w, 1e-6)?;
    let s_ref = x.add(&y)?;
    let n_ref = s_ref.rms_norm(&w, 1e-6)?;
    let diff =
        |a: &Tensor, b: &Tensor| -> Result<f64> { Ok(mismatches(&a.to_vec_f32()?, &b.to_vec_f32()?, f32_bits_eq)) };
    Ok(diff(&s, &s_ref)? + diff(&n, &n_ref)?)
}

fn norm_rope_err(dev: &Device, dtype: DType, seed: u64) -> Result<f64> {
    let q = Tensor::randn([19, 16, 128], 1.0, dtype, dev, seed ^ 3)?;
    let k = Tensor::randn([19, 8, 128], 1.0, dtype, dev, seed ^ 4)?;
    let qw = Tensor::randn([128], 1.0, dtype, dev, seed ^ 5)?;
    let kw = Tensor::randn([128], 1.0, dtype, dev, seed ^ 6)?;
    let pos: Vec<i32> = (0..19).map(|i| (i * 431) % 8192).collect();
    let pos = Tensor::from_vec(pos, [19], dev)?;
    let spec = RopeSpec { theta: 1e6, bf16_inv_freq: true };
    let (qo, ko) = qk_norm_rope(&q, &k, &qw, &kw, &pos, 1e-6, spec)?;
    let q_ref = q.rms_norm(&qw, 1e-6)?.rope_with(&pos, spec)?;
    let k_ref = k.rms_norm(&kw, 1e-6)?.rope_with(&pos, spec)?;
    Ok(max_rel_err(&qo.to_vec_f64()?, &q_ref.to_vec_f64()?).max(max_rel_err(&ko.to_vec_f64()?, &k_ref.to_vec_f64()?)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rows_pass_on_the_cpu() {
        let rows = super::fused_inference_rows(&crate::Device::Cpu, 5);
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.pass), "{rows:?}");
    }
}
