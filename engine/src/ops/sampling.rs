//! Next-token sampling for the decode loop: temperature (or greedy) sampling of chosen rows of a logits
//! matrix by the inverse CDF in index order, with the uniforms drawn by the caller (one per row, from each
//! request's own generator, so the draw sequence is the caller's). On a GPU only the picks come back to the
//! host (`kernels-cu/cuda/sample.cu`); the CPU path is the f64 reference. Top-k / top-p truncation is the
//! caller's (model-qwen3 samples those on the host).
use crate::cpu::sampling::sample_row;
use crate::cuda::sampling as cuda_sampling;
use crate::error::{EngineError, Result};
use crate::storage::Storage;
use crate::tensor::Tensor;

/// For each (row, u) pair: (token, log-prob under softmax(logits[row] / temperature)); `temperature` 0 is
/// greedy (the first maximum; `u` unused, log-prob under temperature 1). logits [R, vocab], u in [0, 1].
pub fn sample_rows(logits: &Tensor, rows: &[usize], u: &[f64], temperature: f64) -> Result<Vec<(u32, f64)>> {
    let bad = |msg: String| EngineError::invalid("sample_rows", msg);
    if logits.rank() != 2 || !logits.dtype().is_float() {
        return Err(bad(format!(
            "logits must be a float [rows, vocab] matrix, got {} {}",
            logits.dtype(),
            logits.shape()
        )));
    }
    let (r, vocab) = (logits.dims()[0], logits.dims()[1]);
    if vocab == 0 || vocab >= 1 << 24 {
        return Err(bad(format!("vocabulary of {vocab} (need 1 ..= 2^24 - 1)")));
    }
    if rows.len() != u.len() {
        return Err(bad(format!("{} rows but {} uniforms", rows.len(), u.len())));
    }
    if let Some(&bad_row) = rows.iter().find(|&&i| i >= r) {
        return Err(bad(format!("row {bad_row} outside the {r} rows of the logits")));
    }
    if let Some(x) = u.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        return Err(bad(format!("uniform {x} outside [0, 1]")));
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(bad(format!("temperature must be finite and >= 0, got {temperature}")));
    }
    let greedy = temperature == 0.0;
    let inv_t = if greedy { 1.0 } else { 1.0 / temperature };
    let dev = logits.device();
    let g = logits.storage();
    match &*g {
        Storage::Cpu(s) => {
            let z = s.to_f64_vec();
            Ok(rows
                .iter()
                .zip(u)
                .map(|(&row, &ui)| {
                    let zr: Vec<f64> = z[row * vocab..(row + 1) * vocab].iter().map(|x| x * inv_t).collect();
                    let (i, lp) = sample_row(&zr, ui, greedy);
                    (i as u32, lp)
                })
                .collect())
        }
        Storage::Cuda(s) => {
            let rows_t = Tensor::from_vec(rows.iter().map(|&i| i as i32).collect::<Vec<_>>(), [rows.len()], dev)?;
            let u_t = Tensor::from_vec(u.iter().map(|&x| x as f32).collect::<Vec<_>>(), [u.len()], dev)?;
            let (rg, ug) = (rows_t.storage(), u_t.storage());
            let (Storage::Cuda(rc), Storage::Cuda(uc)) = (&*rg, &*ug) else { unreachable!("uploaded to the device") };
            let (tok, lp) = cuda_sampling::sample_rows(s, rc, uc, vocab, inv_t as f32, greedy)?;
            let n = rows.len();
            let tokens = Tensor::from_storage(Storage::Cuda(tok), [n].into(), dev).to_vec_i32()?;
            let logps = Tensor::from_storage(Storage::Cuda(lp), [n].into(), dev).to_vec_f32()?;
            Ok(tokens.into_iter().zip(logps).map(|(t, l)| (t as u32, l as f64)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    #[test]
    fn greedy_takes_the_first_maximum_and_sampling_follows_the_cdf() {
        let logits = Tensor::from_vec(vec![0.0f32, 2.0, 2.0, -1.0, 1.0, 1.0, 1.0, 1.0], [2, 4], &Device::Cpu).unwrap();
        let g = sample_rows(&logits, &[0, 1], &[0.0, 0.0], 0.0).unwrap();
        assert_eq!((g[0].0, g[1].0), (1, 0));
        // row 1 is uniform: u in ((k)/4, (k+1)/4] picks k
        let s = sample_rows(&logits, &[1, 1, 1, 1], &[0.1, 0.3, 0.6, 0.99], 1.0).unwrap();
        assert_eq!(s.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert!((s[0].1 - 0.25f64.ln()).abs() < 1e-12);
        // a -inf logit is never drawn, even at u = 1
        let masked = Tensor::from_vec(vec![0.0f32, 0.0, f32::NEG_INFINITY], [1, 3], &Device::Cpu).unwrap();
        assert_eq!(sample_rows(&masked, &[0], &[1.0], 1.0).unwrap()[0].0, 1);
    }

    #[test]
    fn bad_input_is_an_error() {
        let logits = Tensor::from_vec(vec![0.0f32; 6], [2, 3], &Device::Cpu).unwrap();
        assert!(sample_rows(&logits, &[2], &[0.5], 1.0).is_err());
        assert!(sample_rows(&logits, &[0], &[1.5], 1.0).is_err());
        assert!(sample_rows(&logits, &[0, 1], &[0.5], 1.0).is_err());
        assert!(sample_rows(&logits, &[0], &[0.5], -1.0).is_err());
    }
}
