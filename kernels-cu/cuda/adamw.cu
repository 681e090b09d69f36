// adamw.cu: AdamW (Loshchilov & Hutter 2019, Algorithm 2), torch.optim.AdamW semantics.
//
//   g     = grad_i * s                        s = gscale ? gscale[0] : 1   (e.g. a grad-clip coefficient)
//   p    <- p - lr * wd * p                   (decoupled weight decay)
//   m    <- b1 * m + (1 - b1) * g
//   v    <- b2 * v + (1 - b2) * g^2
//   p    <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)       bc1 = 1 - b1^t, bc2 = 1 - b2^t
// Grid-stride over n parameters, state (p, m, v) in f32. adamw_bf16 updates the f32 master p and then
// writes the bf16 working copy p_bf16 = round_rn(p); adamw_bf16_gbf16 does the same from a bf16 gradient
// (train.grad_dtype = "bf16"), widened as it is read.
#include "common.cuh"

template <typename G>
__device__ __forceinline__ float adamw_step(float* p, float* m, float* v, const G* grad, float s, long long i,
                                            float lr, float b1, float b2, float eps, float wd, float step_size,
                                            float sqrt_bc2) {
    // 1. load
    const float g = to_f32(grad[i]) * s;
    float pi = p[i], mi = m[i], vi = v[i];
    // 2. decoupled weight decay
    pi = pi - lr * wd * pi;
    // 3. moment EMAs
    mi = b1 * mi + (1.0f - b1) * g;
    vi = b2 * vi + (1.0f - b2) * g * g;
    // 4. bias-corrected step
    const float denom = sqrtf(vi) / sqrt_bc2 + eps;
    pi = pi - step_size * (mi / denom);
    // 5. store
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    return pi;
}

KERNEL adamw_f32(float* p, float* m, float* v, const float* g, const float* gscale, long long n, float lr, float b1,
                 float b2, float eps, float wd, float bc1, float bc2) {
    const float s = gscale ? gscale[0] : 1.0f;
    const float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2);
    for (long long i = global_tid(); i < n; i += grid_stride())
        adamw_step(p, m, v, g, s, i, lr, b1, b2, eps, wd, step_size, sqrt_bc2);
}

template <typename G>
__device__ __forceinline__ void adamw_working_body(float* p, __nv_bfloat16* p_bf16, float* m, float* v, const G* g,
                                                   const float* gscale, long long n, float lr, float b1, float b2,
                                                   float eps, float wd, float bc1, float bc2) {
    const float s = gscale ? gscale[0] : 1.0f;
    const float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2);
    for (long long i = global_tid(); i < n; i += grid_stride())
        p_bf16[i] = __float2bfloat16_rn(adamw_step(p, m, v, g, s, i, lr, b1, b2, eps, wd, step_size, sqrt_bc2));
}

KERNEL adamw_bf16(float* p, __nv_bfloat16* p_bf16, float* m, float* v, const float* g, const float* gscale,
                  long long n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2) {
    adamw_working_body(p, p_bf16, m, v, g, gscale, n, lr, b1, b2, eps, wd, bc1, bc2);
}

KERNEL adamw_bf16_gbf16(float* p, __nv_bfloat16* p_bf16, float* m, float* v, const __nv_bfloat16* g,
                        const float* gscale, long long n, float lr, float b1, float b2, float eps, float wd, float bc1,
                        float bc2) {
    adamw_working_body(p, p_bf16, m, v, g, gscale, n, lr, b1, b2, eps, wd, bc1, bc2);
}
