// swiglu.cu: SwiGLU gated MLP activation (Shazeer 2020, "GLU Variants Improve Transformer", eq. 5).
//
//   sigma(g) = 1 / (1 + exp(-g))          silu(g) = g * sigma(g)
//   forward:   out   = silu(gate) * up
//   backward:  dgate = dout * up * sigma(g) * (1 + g * (1 - sigma(g)))      (= dout * up * silu'(g))
//              dup   = dout * silu(g)
// Pointwise, grid-stride with 64-bit indices; precise expf.
#include "common.cuh"

__device__ __forceinline__ float sigmoid_f32(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T>
__device__ __forceinline__ void swiglu_fwd_body(T* out, const T* gate, const T* up, long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        // 1. load
        const float g = to_f32(gate[i]), u = to_f32(up[i]);
        // 2. silu(g) * up
        out[i] = from_f32<T>(g * sigmoid_f32(g) * u);
    }
}

template <typename T>
__device__ __forceinline__ void swiglu_bwd_body(T* dgate, T* dup, const T* dout, const T* gate, const T* up,
                                                long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        // 1. load
        const float d = to_f32(dout[i]), g = to_f32(gate[i]), u = to_f32(up[i]);
        // 2. sigma, silu, and the silu derivative
        const float s = sigmoid_f32(g);
        const float silu = g * s;
        // 3. write both gradients
        dgate[i] = from_f32<T>(d * u * s * (1.0f + g * (1.0f - s)));
        dup[i] = from_f32<T>(d * silu);
    }
}

#define DEFINE_SWIGLU(SFX, T)                                                                                    \
    KERNEL swiglu_fwd_##SFX(T* out, const T* gate, const T* up, long long n) {                                   \
        swiglu_fwd_body<T>(out, gate, up, n);                                                                    \
    }                                                                                                            \
    KERNEL swiglu_bwd_##SFX(T* dgate, T* dup, const T* dout, const T* gate, const T* up, long long n) {          \
        swiglu_bwd_body<T>(dgate, dup, dout, gate, up, n);                                                       \
    }

DEFINE_SWIGLU(f32, float)
DEFINE_SWIGLU(bf16, __nv_bfloat16)
