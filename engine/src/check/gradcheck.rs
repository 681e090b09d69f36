//! Finite-difference gradient checks on the CPU in f64: for loss = Σ R ∘ f(x) with a fixed random R,
//! compare autograd's ∂loss/∂x with central differences (loss(x + εe_i) − loss(x − εe_i)) / 2ε.
use super::cases::OpCase;
use super::{max_rel_err, trainable_floats, CheckRow};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// Largest relative gradient error over the float inputs of `f` at `inputs` (f64 CPU tensors).
pub fn check_gradients(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], eps: f64, seed: u64) -> Result<f64> {
    let params = trainable_floats(inputs);
    let out = f(&params)?;
    let r = Tensor::randn(out.shape().clone(), 1.0, DType::F64, &Device::Cpu, seed)?;
    let rv = r.to_vec_f64()?;
    let loss_of = |xs: &[Tensor]| -> Result<f64> {
        let _ng = crate::autograd::no_grad();
        let o = f(xs)?.to_vec_f64()?;
        Ok(o.iter().zip(&rv).map(|(a, b)| a * b).sum())
    };
    out.backward_with(r.clone())?;
    let mut worst = 0.0f64;
    for (i, p) in params.iter().enumerate() {
        if !p.dtype().is_float() {
            continue;
        }
        let analytic = p.grad().map(|g| g.to_vec_f64()).transpose()?.unwrap_or_else(|| vec![0.0; p.numel()]);
        let base = inputs[i].to_vec_f64()?;
        let mut numeric = vec![0.0; base.len()];
        for (j, num) in numeric.iter_mut().enumerate() {
            let probe = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_f64(&v, inputs[i].shape().clone(), DType::F64, &Device::Cpu)?;
                loss_of(&xs)
            };
            *num = (probe(eps)? - probe(-eps)?) / (2.0 * eps);
        }
        worst = worst.max(max_rel_err(&analytic, &numeric));
    }
    Ok(worst)
}

/// Gradient check of every small case (see `cases::all_cases`), one row each.
pub fn cpu_gradient_checks(seed: u64) -> Vec<CheckRow> {
    super::cases::all_cases()
        .into_iter()
        .filter(|c| c.gradcheck)
        .enumerate()
        .map(|(i, c)| gradcheck_row(&c, seed + i as u64))
        .collect()
}

pub fn gradcheck_row(c: &OpCase, seed: u64) -> CheckRow {
    let run = || -> Result<f64> {
        let (_, reference) = c.make_inputs(DType::F64, &Device::Cpu, seed)?;
        check_gradients(&*c.f, &reference, 1e-6, seed ^ 0x9e37)
    };
    match run() {
        Ok(err) => CheckRow::new(&format!("{} grad (fd)", c.name), &c.label(), "f64", err, 1e-6),
        Err(e) => CheckRow::failed(&format!("{} grad (fd)", c.name), &c.label(), "f64", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Backward;

    /// y = 3x with a backward rule that claims 2·g: the checker must catch it.
    struct WrongScale;
    impl Backward for WrongScale {
        fn name(&self) -> &'static str {
            "wrong"
        }
        fn backward(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(g.scale(2.0)?)])
        }
    }

    #[test]
    fn a_wrong_backward_rule_is_detected() {
        let f = |x: &[Tensor]| -> Result<Tensor> {
            let y = {
                let _ng = crate::autograd::no_grad();
                x[0].scale(3.0)?
            };
            Tensor::from_op_output(y, &[&x[0]], WrongScale)
        };
        let x = Tensor::randn([4, 3], 1.0, DType::F64, &Device::Cpu, 3).unwrap();
        let err = check_gradients(&f, std::slice::from_ref(&x), 1e-6, 1).unwrap();
        assert!(err > 0.3, "wrong gradient went unnoticed (err {err})");
        let ok = check_gradients(&|x: &[Tensor]| x[0].scale(3.0), &[x], 1e-6, 1).unwrap();
        assert!(ok < 1e-8, "{ok}");
    }
}
