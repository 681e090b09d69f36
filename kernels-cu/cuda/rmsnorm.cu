// rmsnorm.cu: RMSNorm (Zhang & Sennrich 2019) over the last dim of x[rows, dim].
//
// Forward:   rstd = (mean_c x_c^2 + eps)^(-1/2)          y_c = x_c * rstd * w_c
// Backward:  g_c  = dy_c * w_c
//            dx_c = rstd * g_c - x_c * rstd^3 * (1/dim) * sum_k g_k x_k
//            dw_c = sum_rows dy_c * x_c * rstd            (per-block partials, summed by the caller)
//
// add_rmsnorm_fwd (inference) fuses a residual add into the forward.
// Forward is row-block (block-stride over rows); backward gives block b the contiguous row range
// [b*rows_per_block, min((b+1)*rows_per_block, rows)) and accumulates its dw partial in dynamic shared
// memory (dim floats), column c owned by thread c mod blockDim.x, so no atomics are needed.
#include "common.cuh"

// With `res` (inference's residual add fused in, add_rmsnorm_fwd), the normed input is x + res rounded to T,
// as the elementwise add stores it, and is written to `sum` first (each thread re-reads only what it wrote):
// the same loops and reduction either way, so add_rmsnorm_fwd equals add then rmsnorm_fwd bitwise. rstd may
// be null.
template <typename T>
__device__ __forceinline__ void rmsnorm_fwd_body(T* out, float* rstd, const T* x, const T* w, int rows, int dim,
                                                 float eps, const T* res, T* sum) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + (long long)r * dim;
        T* yr = out + (long long)r * dim;
        // 0. the residual sum, when fused
        if (res != nullptr) {
            T* sr = sum + (long long)r * dim;
            const T* rr = res + (long long)r * dim;
            for (int c = threadIdx.x; c < dim; c += blockDim.x) sr[c] = from_f32<T>(to_f32(xr[c]) + to_f32(rr[c]));
            xr = sr;
        }
        // 1. sum of squares
        float ss = 0.0f;
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            const float v = to_f32(xr[c]);
            ss += v * v;
        }
        ss = block_sum(ss);
        // 2. inverse RMS (precise sqrt + divide, not rsqrtf)
        const float rs = 1.0f / sqrtf(ss / (float)dim + eps);
        if (rstd != nullptr && threadIdx.x == 0) rstd[r] = rs;
        // 3. normalize and scale
        for (int c = threadIdx.x; c < dim; c += blockDim.x) yr[c] = from_f32<T>(to_f32(xr[c]) * rs * to_f32(w[c]));
    }
}

template <typename T>
__device__ __forceinline__ void rmsnorm_bwd_body(T* dx, float* dw_partial, const T* dy, const T* x, const T* w,
                                                 const float* rstd, int rows, int dim, int rows_per_block) {
    DYNAMIC_SMEM(dw_smem, 16);  // [dim] floats
    float* dw_acc = reinterpret_cast<float*>(dw_smem);
    // 0. this block's row range; zero the dw accumulator
    const long long b = blockIdx.x;
    const long long r0 = b * rows_per_block;
    const long long r1 = min(r0 + (long long)rows_per_block, (long long)rows);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dw_acc[c] = 0.0f;
    __syncthreads();

    for (long long r = r0; r < r1; ++r) {
        const long long row = r * dim;
        const float rs = rstd[r];
        // 1. sum_c g_c x_c
        float gx = 0.0f;
        for (int c = threadIdx.x; c < dim; c += blockDim.x)
            gx += (to_f32(dy[row + c]) * to_f32(w[c])) * to_f32(x[row + c]);
        gx = block_sum(gx);
        const float coef = rs * rs * rs * (gx / (float)dim);
        // 2. dx, and accumulate dw for the columns this thread owns
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            const float dyc = to_f32(dy[row + c]), xc = to_f32(x[row + c]);
            const float g = dyc * to_f32(w[c]);
            dx[row + c] = from_f32<T>(rs * g - xc * coef);
            dw_acc[c] += dyc * xc * rs;
        }
    }

    // 3. write the block's dw partial (each thread reads only columns it wrote; sync for clarity)
    __syncthreads();
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dw_partial[b * dim + c] = dw_acc[c];
}

#define DEFINE_RMSNORM(SFX, T)                                                                                   \
    KERNEL rmsnorm_fwd_##SFX(T* out, float* rstd, const T* x, const T* w, int rows, int dim, float eps) {        \
        rmsnorm_fwd_body<T>(out, rstd, x, w, rows, dim, eps, nullptr, nullptr);                                  \
    }                                                                                                            \
    KERNEL rmsnorm_bwd_##SFX(T* dx, float* dw_partial, const T* dy, const T* x, const T* w, const float* rstd,   \
                             int rows, int dim, int rows_per_block) {                                            \
        rmsnorm_bwd_body<T>(dx, dw_partial, dy, x, w, rstd, rows, dim, rows_per_block);                          \
    }                                                                                                            \
    KERNEL add_rmsnorm_fwd_##SFX(T* sum, T* out, const T* x, const T* y, const T* w, int rows, int dim,          \
                                 float eps) {                                                                    \
        rmsnorm_fwd_body<T>(out, nullptr, x, w, rows, dim, eps, y, sum);                                          \
    }

DEFINE_RMSNORM(f32, float)
DEFINE_RMSNORM(bf16, __nv_bfloat16)
