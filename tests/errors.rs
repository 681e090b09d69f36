//! Bad input gets a typed error with a clear message, never a panic.
use entrl_engine::{DType, Device, EngineError, Tensor};

fn cpu() -> Device {
    Device::Cpu
}

#[test]
fn matmul_inner_dimension_mismatch() {
    let a = Tensor::zeros([2, 3], DType::F32, &cpu()).unwrap();
    let b = Tensor::zeros([4, 5], DType::F32, &cpu()).unwrap();
    let e = a.matmul(&b).unwrap_err();
    assert!(matches!(e, EngineError::Shape { op: "matmul", .. }));
    assert!(e.to_string().contains("inner dimensions differ: [2, 3] · [4, 5] (3 vs 4)"), "{e}");
}

#[test]
fn dtype_mismatch_names_both_types() {
    let a = Tensor::zeros([2], DType::F32, &cpu()).unwrap();
    let b = Tensor::zeros([2], DType::BF16, &cpu()).unwrap();
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("add: dtype mismatch: f32 vs bf16"), "{e}");
}

#[test]
fn broadcast_failure_names_shapes() {
    let a = Tensor::zeros([2, 3], DType::F32, &cpu()).unwrap();
    let b = Tensor::zeros([4], DType::F32, &cpu()).unwrap();
    let e = a.mul(&b).unwrap_err().to_string();
    assert!(e.contains("cannot broadcast [2, 3] with [4]"), "{e}");
}

#[test]
fn reshape_and_from_vec_check_element_counts() {
    let a = Tensor::zeros([2, 3], DType::F32, &cpu()).unwrap();
    assert!(a.reshape([4, 2]).unwrap_err().to_string().contains("reshape: shape mismatch: [2, 3] -> [4, 2]"));
    let e = Tensor::from_vec(vec![1.0f32; 5], [2, 3], &cpu()).unwrap_err().to_string();
    assert!(e.contains("5 values do not fill shape [2, 3]"), "{e}");
}

#[test]
fn out_of_range_embedding_id_is_an_error() {
    let table = Tensor::zeros([10, 4], DType::F32, &cpu()).unwrap();
    let ids = Tensor::from_vec(vec![3i32, 10], [2], &cpu()).unwrap();
    let e = table.embedding(&ids).unwrap_err().to_string();
    assert!(e.contains("index 10 outside [0, 10)"), "{e}");
}

#[test]
fn indices_must_be_i32() {
    let table = Tensor::zeros([10, 4], DType::F32, &cpu()).unwrap();
    let ids = Tensor::zeros([2], DType::F32, &cpu()).unwrap();
    let e = table.embedding(&ids).unwrap_err().to_string();
    assert!(e.contains("indices must be i32, got f32"), "{e}");
}

#[test]
fn norm_rope_and_swiglu_validate_shapes() {
    let x = Tensor::zeros([3, 8], DType::F32, &cpu()).unwrap();
    let w = Tensor::zeros([7], DType::F32, &cpu()).unwrap();
    assert!(x.rms_norm(&w, 1e-6).unwrap_err().to_string().contains("weight [7] for input [3, 8]"));
    let pos = Tensor::from_vec(vec![0i32, 1, 2], [3], &cpu()).unwrap();
    let e = x.rope(&pos, 1e4).unwrap_err().to_string();
    assert!(e.contains("x must be [tokens, heads, even head_dim]"), "{e}");
    let up = Tensor::zeros([3, 9], DType::F32, &cpu()).unwrap();
    assert!(x.swiglu(&up).unwrap_err().to_string().contains("gate [3, 8] vs up [3, 9]"));
}

#[test]
fn float_ops_reject_integer_tensors() {
    let i = Tensor::from_vec(vec![1i32, 2], [2], &cpu()).unwrap();
    let e = i.softmax().unwrap_err().to_string();
    assert!(e.contains("softmax: i32 is not supported here"), "{e}");
}

#[test]
fn backward_seed_must_match_output() {
    let w = Tensor::zeros([2, 2], DType::F32, &cpu()).unwrap().param();
    let y = w.scale(2.0).unwrap();
    let e = y.backward_with(Tensor::zeros([3], DType::F32, &cpu()).unwrap()).unwrap_err().to_string();
    assert!(e.contains("seed gradient [3] does not match output [2, 2]"), "{e}");
}

#[test]
fn optimizer_rejects_non_parameters() {
    let t = Tensor::zeros([2], DType::F32, &cpu()).unwrap();
    let e = entrl_engine::optim::AdamW::new(&[t], Default::default()).err().unwrap().to_string();
    assert!(e.contains("is not a trainable leaf"), "{e}");
}

#[test]
fn f64_is_cpu_only() {
    let e = Tensor::zeros([2], DType::F64, &cpu()).unwrap().to_dtype(DType::F64);
    assert!(e.is_ok());
}

/// Without a GPU (CI, this machine) the CUDA device is a typed error saying why; with one it works.
#[test]
fn missing_cuda_is_a_clear_error() {
    match Device::cuda(0) {
        Ok(d) => assert!(d.is_cuda()),
        Err(e) => {
            let s = e.to_string();
            assert!(
                matches!(e, EngineError::CudaUnavailable(_) | EngineError::KernelsNotCompiled),
                "unexpected error kind: {s}"
            );
            assert!(s.contains("CUDA is not available") || s.contains("no CUDA kernels"), "{s}");
        }
    }
    let (dev, why) = Device::best();
    assert_eq!(dev.is_cuda(), why.is_none());
}

/// Device mismatch needs a GPU to construct; on a GPU machine it must be a typed error.
#[test]
fn device_mismatch_is_an_error_when_a_gpu_exists() {
    let Ok(gpu) = Device::cuda(0) else { return };
    let a = Tensor::zeros([2], DType::F32, &cpu()).unwrap();
    let b = Tensor::zeros([2], DType::F32, &gpu).unwrap();
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("tensors live on different devices (cpu vs cuda:0)"), "{e}");
}

#[test]
fn gradients_must_match_their_parameter() {
    let p = Tensor::zeros([2, 2], DType::BF16, &cpu()).unwrap().param();
    let bad = Tensor::zeros([2, 2], DType::BF16, &cpu()).unwrap();
    let e = p.set_grad(Some(bad)).unwrap_err().to_string();
    assert!(e.contains("gradients are f32"), "{e}");
    assert!(p.set_grad(Some(Tensor::zeros([2, 2], DType::F32, &cpu()).unwrap())).is_ok());
    let q = Tensor::zeros([2], DType::F32, &cpu()).unwrap().param();
    let e = q.set_grad(Some(q.detach())).unwrap_err().to_string();
    assert!(e.contains("cannot share the parameter's storage"), "{e}");
    let y = Tensor::zeros([2], DType::F32, &cpu()).unwrap().param().scale(2.0).unwrap();
    let e = y.backward_with(Tensor::zeros([2], DType::BF16, &cpu()).unwrap()).unwrap_err().to_string();
    assert!(e.contains("must match dtype and device"), "{e}");
}

#[test]
fn empty_matmul_gives_zeros() {
    let a = Tensor::ones([2, 0], DType::F32, &cpu()).unwrap();
    let b = Tensor::ones([0, 3], DType::F32, &cpu()).unwrap();
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.dims(), &[2, 3]);
    assert!(c.to_vec_f64().unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn a_tensor_too_big_for_memory_is_an_error_not_an_abort() {
    // 2^60 f32 elements: more bytes than an allocation may have (`vec!` panicked with a capacity overflow).
    let e = Tensor::zeros([1 << 40, 1 << 20], DType::F32, &cpu()).unwrap_err();
    assert!(matches!(e, EngineError::OutOfMemory { .. }), "{e}");
    assert!(e.to_string().contains("a CPU tensor of 1152921504606846976 elements needs 4.00 EiB"), "{e}");
    let e = Tensor::full([1 << 40, 1 << 20], 2.0, DType::BF16, &cpu()).unwrap_err().to_string();
    assert!(e.contains("needs 2.00 EiB but cpu has"), "{e}");
    // a shape whose element count overflows is refused before any size is computed
    let e = Tensor::zeros([1 << 40, 1 << 40], DType::F32, &cpu()).unwrap_err().to_string();
    assert!(e.contains("has more than 2^64 elements"), "{e}");
    // zeros still read as zeros
    let z = Tensor::zeros([3, 5], DType::BF16, &cpu()).unwrap();
    assert_eq!(z.to_vec_f32().unwrap(), vec![0.0; 15]);
    assert_eq!(Tensor::full([2], 1.5, DType::I32, &cpu()).unwrap().to_vec_i32().unwrap(), vec![1, 1]);
}
