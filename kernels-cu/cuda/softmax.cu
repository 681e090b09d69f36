// softmax.cu: numerically stable (log-)softmax over the last dim of x[rows, cols], row-block.
//
// Forward (Bridle 1990; max-subtracted form, e.g. Milakov & Gimelshein 2018 eq. 2):
//   m = max_j x_j        s = sum_j exp(x_j - m)
//   softmax:     y_j = exp(x_j - m) / s
//   log-softmax: y_j = x_j - m - log(s)
// Backward (y is the forward output):
//   softmax:     dx_j = y_j * (dy_j - sum_k dy_k y_k)
//   log-softmax: dx_j = dy_j - exp(y_j) * sum_k dy_k
// One block per row (block-stride over rows); any power-of-two blockDim in [32, 1024], any cols >= 1.
// Fixed-order f32 reductions (deterministic). Rows of all -inf are not handled.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void softmax_fwd_body(T* y, const T* x, int rows, int cols, int log) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + (long long)r * cols;
        T* yr = y + (long long)r * cols;
        // 1. row max
        float m = -CUDART_INF_F;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, to_f32(xr[c]));
        m = block_max(m);
        // 2. sum of exp(x - max)
        float s = 0.0f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(to_f32(xr[c]) - m);
        s = block_sum(s);
        // 3. write
        if (log) {
            const float lse = m + logf(s);
            for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = from_f32<T>(to_f32(xr[c]) - lse);
        } else {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = from_f32<T>(expf(to_f32(xr[c]) - m) / s);
        }
    }
}

template <typename T>
__device__ __forceinline__ void softmax_bwd_body(T* dx, const T* dy, const T* y, int rows, int cols, int log) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long row = (long long)r * cols;
        // 1. row dot: sum dy*y (softmax) or sum dy (log-softmax)
        float acc = 0.0f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            acc += log ? to_f32(dy[row + c]) : to_f32(dy[row + c]) * to_f32(y[row + c]);
        acc = block_sum(acc);
        // 2. write
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const float d = to_f32(dy[row + c]), yc = to_f32(y[row + c]);
            dx[row + c] = from_f32<T>(log ? d - expf(yc) * acc : yc * (d - acc));
        }
    }
}

#define DEFINE_SOFTMAX(SFX, T)                                                                                   \
    KERNEL softmax_fwd_##SFX(T* y, const T* x, int rows, int cols, int log) {                                    \
        softmax_fwd_body<T>(y, x, rows, cols, log);                                                              \
    }                                                                                                            \
    KERNEL softmax_bwd_##SFX(T* dx, const T* dy, const T* y, int rows, int cols, int log) {                      \
        softmax_bwd_body<T>(dx, dy, y, rows, cols, log);                                                         \
    }

DEFINE_SOFTMAX(f32, float)
DEFINE_SOFTMAX(bf16, __nv_bfloat16)
