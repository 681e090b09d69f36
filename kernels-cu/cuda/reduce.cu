// reduce.cu: sum reductions and the global-norm gradient-clipping pipeline.
//
//   reduce_sum:      out[o] = scale * sum_{r < n_red} x[off_out(o) + off_red(r)]
//                    (o and r decomposed row-major, last dim fastest, over out_dims / red_dims)
//   reduce_split +   the same in two stages when there are few outputs and long reductions (a full sum
//   reduce_partials: of a 155M-element gradient would otherwise run on one block): block (o, s) sums chunk s
//                    of output o's reduced range into an f32 partial, then one block per output folds its
//                    `splits` partials. Fixed shapes, so still deterministic.
//   sumsq_partials:  partials[b] = sum_{i in block b's grid-stride share} x_i^2
//   sum_partials:    out[0] = sum_j partials[j]                         (single block)
//   clip_coef:       coef = min(1, max_norm / (sqrt(sumsq) + 1e-6))     (torch clip_grad_norm_)
//   scale_by:        x_i *= coef[0]
//
// All sums are f32 with a fixed per-thread stride order followed by a fixed-shape block tree
// (common.cuh: block_sum), so results are bitwise deterministic for a given launch shape.
// Block reductions require blockDim.x to be a multiple of 32 (the ABI uses powers of two).
#include "common.cuh"

// ------------------------------------------------------------------------------------------------
// Block sum of x[off_out(o) + off_red(r)] over r in [r0, r1): per-thread strided partials, then the block
// tree (every thread gets the total). Shared by reduce_sum (the whole range) and reduce_split (a chunk).
// ------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ float strided_range_sum(const T* x, long long o, long long r0, long long r1,
                                                   const ReduceGeo& g) {
    const long long base = strided_offset(o, g.out_ndim, g.out_dims, g.out_strides);
    float acc = 0.0f;
    for (long long r = r0 + threadIdx.x; r < r1; r += blockDim.x)
        acc += to_f32(x[base + strided_offset(r, g.red_ndim, g.red_dims, g.red_strides)]);
    return block_sum(acc);
}

// ------------------------------------------------------------------------------------------------
// reduce_sum: one block per output element (block-stride over outputs).
// ------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void reduce_sum_body(T* out, const T* x, long long n_out, long long n_red, float scale,
                                                const ReduceGeo& g) {
    for (long long o = blockIdx.x; o < n_out; o += gridDim.x) {
        const float acc = strided_range_sum(x, o, 0, n_red, g);
        if (threadIdx.x == 0) out[o] = from_f32<T>(scale * acc);
    }
}

// ------------------------------------------------------------------------------------------------
// sumsq_partials: one f32 partial per block.
// ------------------------------------------------------------------------------------------------
template <typename T> __device__ __forceinline__ void sumsq_partials_body(float* partials, const T* x, long long n) {
    // 1. grid-stride partial
    float acc = 0.0f;
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        const float v = to_f32(x[i]);
        acc += v * v;
    }
    // 2. block tree, thread 0 writes
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// ------------------------------------------------------------------------------------------------
// reduce_split: stage 1. Block b = o·splits + s (block-stride) sums r in [s·chunk, min((s+1)·chunk, n_red))
// of output o into partials[b], chunk = ceil(n_red / splits).
// ------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void reduce_split_body(float* partials, const T* x, long long n_out, long long n_red,
                                                  int splits, const ReduceGeo& g) {
    const long long chunk = (n_red + splits - 1) / splits;
    for (long long b = blockIdx.x; b < n_out * splits; b += gridDim.x) {
        const long long o = b / splits, r0 = (b % splits) * chunk;
        const float acc = strided_range_sum(x, o, r0, min(r0 + chunk, n_red), g);
        if (threadIdx.x == 0) partials[b] = acc;
    }
}

// ------------------------------------------------------------------------------------------------
// reduce_partials: stage 2. out[o] = scale · Σ_s partials[o·splits + s], one block per output (block-stride).
// ------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void reduce_partials_body(T* out, const float* partials, long long n_out, int splits,
                                                     float scale) {
    for (long long o = blockIdx.x; o < n_out; o += gridDim.x) {
        float acc = 0.0f;
        for (int s = threadIdx.x; s < splits; s += blockDim.x) acc += partials[o * splits + s];
        acc = block_sum(acc);
        if (threadIdx.x == 0) out[o] = from_f32<T>(scale * acc);
    }
}

#define DEFINE_REDUCE(SFX, T)                                                                                  \
    KERNEL reduce_sum_##SFX(T* out, const T* x, long long n_out, long long n_red, float scale, ReduceGeo g) { \
        reduce_sum_body<T>(out, x, n_out, n_red, scale, g);                                                    \
    }                                                                                                          \
    KERNEL reduce_split_##SFX(float* partials, const T* x, long long n_out, long long n_red, int splits,         \
                              ReduceGeo g) {                                                                   \
        reduce_split_body<T>(partials, x, n_out, n_red, splits, g);                                            \
    }                                                                                                          \
    KERNEL reduce_partials_##SFX(T* out, const float* partials, long long n_out, int splits, float scale) {     \
        reduce_partials_body<T>(out, partials, n_out, splits, scale);                                          \
    }                                                                                                          \
    KERNEL sumsq_partials_##SFX(float* partials, const T* x, long long n) { sumsq_partials_body<T>(partials, x, n); }

DEFINE_REDUCE(f32, float)
DEFINE_REDUCE(bf16, __nv_bfloat16)

// ------------------------------------------------------------------------------------------------
// clip_coef: single thread.
// ------------------------------------------------------------------------------------------------
KERNEL clip_coef_f32(float* coef, const float* sumsq, float max_norm) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const float norm = sqrtf(sumsq[0]);
    coef[0] = fminf(1.0f, max_norm / (norm + 1e-6f));
}

// ------------------------------------------------------------------------------------------------
// scale_by: x *= coef[0], grid-stride.
// ------------------------------------------------------------------------------------------------
KERNEL scale_by_f32(float* x, const float* coef, long long n) {
    const float c = coef[0];
    for (long long i = global_tid(); i < n; i += grid_stride()) x[i] *= c;
}
