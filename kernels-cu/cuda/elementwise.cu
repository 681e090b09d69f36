// elementwise.cu: pointwise kernels, all grid-stride over the output numel n (64-bit indices).
//
//   fill:          out_i = v
//   cast:          out_i = round_rn(x_i)                       (f32 <-> bf16)
//   scale:         out_i = s * x_i
//   add/sub/mul:   out_i = a_i (+,-,*) b_i                      (same shape)
//   bcast_*:       out_i = a[off_a(i)] (+,-,*) b[off_b(i)]      (numpy broadcasting, strides 0 on bcast dims)
//   axpy:          y_i  += alpha * x_i                           (y is an f32 accumulator)
//   axpy_bf16_acc: y_i   = round_rn(y_i + alpha * x_i)           (y a bf16 accumulator, the sum formed in f32)
//   copy_strided:  out_i = x[off(i)]                             (permute / transpose / contiguous copy)
//   place_cols:    out[r·cols + off + c] = x[r·w + c]            (one part of a last-dim concatenation)
//
// off(i) decomposes the output index i over the row-major output dims (last dim fastest) and dots it
// with the input's element strides (common.cuh: strided_offset).
#include "common.cuh"

enum BinOp { OP_ADD = 0, OP_SUB = 1, OP_MUL = 2 };

template <int OP> __device__ __forceinline__ float apply_op(float a, float b) {
    if (OP == OP_ADD) return a + b;
    if (OP == OP_SUB) return a - b;
    return a * b;
}

// ------------------------------------------------------------------------------------------------
// Bodies (templated on storage type T).
// ------------------------------------------------------------------------------------------------
template <typename T> __device__ __forceinline__ void fill_body(T* out, float v, long long n) {
    const T val = from_f32<T>(v);
    for (long long i = global_tid(); i < n; i += grid_stride()) out[i] = val;
}

template <typename T> __device__ __forceinline__ void scale_body(T* out, const T* x, float s, long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride()) out[i] = from_f32<T>(s * to_f32(x[i]));
}

template <typename T, int OP>
__device__ __forceinline__ void binary_body(T* out, const T* a, const T* b, long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride())
        out[i] = from_f32<T>(apply_op<OP>(to_f32(a[i]), to_f32(b[i])));
}

template <typename T, int OP>
__device__ __forceinline__ void bcast_body(T* out, const T* a, const T* b, long long n, const BcastGeo& g) {
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        // 1. output index -> input offsets
        long long ao, bo;
        strided_offset2(i, g.ndim, g.dims, g.a_strides, g.b_strides, ao, bo);
        // 2. combine
        out[i] = from_f32<T>(apply_op<OP>(to_f32(a[ao]), to_f32(b[bo])));
    }
}

template <typename T> __device__ __forceinline__ void axpy_body(float* y, const T* x, float alpha, long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride()) y[i] += alpha * to_f32(x[i]);
}

template <typename T>
__device__ __forceinline__ void axpy_bf16_acc_body(__nv_bfloat16* y, const T* x, float alpha, long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride())
        y[i] = __float2bfloat16_rn(__bfloat162float(y[i]) + alpha * to_f32(x[i]));
}

template <typename T>
__device__ __forceinline__ void copy_strided_body(T* out, const T* x, long long n, const CopyGeo& g) {
    for (long long i = global_tid(); i < n; i += grid_stride())
        out[i] = x[strided_offset(i, g.ndim, g.dims, g.in_strides)];
}

template <typename T>
__device__ __forceinline__ void place_cols_body(T* out, const T* x, long long rows, long long w, long long cols,
                                                long long off) {
    const long long n = rows * w;
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        const long long r = i / w, c = i - r * w;
        out[r * cols + off + c] = x[i];
    }
}

// ------------------------------------------------------------------------------------------------
// extern "C" entry points (README table).
// ------------------------------------------------------------------------------------------------
#define DEFINE_ELEMENTWISE(SFX, T)                                                                            \
    KERNEL fill_##SFX(T* out, float v, long long n) { fill_body<T>(out, v, n); }                               \
    KERNEL scale_##SFX(T* out, const T* x, float s, long long n) { scale_body<T>(out, x, s, n); }              \
    KERNEL add_##SFX(T* out, const T* a, const T* b, long long n) { binary_body<T, OP_ADD>(out, a, b, n); }    \
    KERNEL sub_##SFX(T* out, const T* a, const T* b, long long n) { binary_body<T, OP_SUB>(out, a, b, n); }    \
    KERNEL mul_##SFX(T* out, const T* a, const T* b, long long n) { binary_body<T, OP_MUL>(out, a, b, n); }    \
    KERNEL bcast_add_##SFX(T* out, const T* a, const T* b, long long n, BcastGeo g) {                          \
        bcast_body<T, OP_ADD>(out, a, b, n, g);                                                                \
    }                                                                                                          \
    KERNEL bcast_sub_##SFX(T* out, const T* a, const T* b, long long n, BcastGeo g) {                          \
        bcast_body<T, OP_SUB>(out, a, b, n, g);                                                                \
    }                                                                                                          \
    KERNEL bcast_mul_##SFX(T* out, const T* a, const T* b, long long n, BcastGeo g) {                          \
        bcast_body<T, OP_MUL>(out, a, b, n, g);                                                                \
    }                                                                                                          \
    KERNEL axpy_##SFX(float* y, const T* x, float alpha, long long n) { axpy_body<T>(y, x, alpha, n); }        \
    KERNEL axpy_bf16_acc_##SFX(__nv_bfloat16* y, const T* x, float alpha, long long n) {                       \
        axpy_bf16_acc_body<T>(y, x, alpha, n);                                                                 \
    }                                                                                                          \
    KERNEL copy_strided_##SFX(T* out, const T* x, long long n, CopyGeo g) { copy_strided_body<T>(out, x, n, g); } \
    KERNEL place_cols_##SFX(T* out, const T* x, long long rows, long long w, long long cols, long long off) {    \
        place_cols_body<T>(out, x, rows, w, cols, off);                                                        \
    }

DEFINE_ELEMENTWISE(f32, float)
DEFINE_ELEMENTWISE(bf16, __nv_bfloat16)

KERNEL cast_f32_to_bf16(__nv_bfloat16* out, const float* x, long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride()) out[i] = __float2bfloat16_rn(x[i]);
}

KERNEL cast_bf16_to_f32(float* out, const __nv_bfloat16* x, long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride()) out[i] = __bfloat162float(x[i]);
}

// Integer permutes (token ids, positions) move bits only.
KERNEL copy_strided_i32(int* out, const int* x, long long n, CopyGeo g) { copy_strided_body<int>(out, x, n, g); }

// ------------------------------------------------------------------------------------------------
// Counter-based normal samples (identical on the CPU: engine/src/cpu/random.rs): for element i,
//   h1 = splitmix64(seed ^ (2i)), h2 = splitmix64(seed ^ (2i + 1)), u1 = (h1 >> 11 + 1) / 2^53, u2 = (h2 >> 11) / 2^53
//   x = std · sqrt(−2 ln u1) · cos(2π u2)      (Box–Muller, f64 then rounded once)
// Used to initialise large random models on the device without a host round trip.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <typename T> __device__ void randn_body(T* out, long long n, unsigned long long seed, float stdv) {
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        const unsigned long long h1 = splitmix64(seed ^ (2ull * (unsigned long long)i));
        const unsigned long long h2 = splitmix64(seed ^ (2ull * (unsigned long long)i + 1ull));
        const double u1 = ((double)(h1 >> 11) + 1.0) * (1.0 / 9007199254740992.0);
        const double u2 = (double)(h2 >> 11) * (1.0 / 9007199254740992.0);
        const double x = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        out[i] = from_f32<T>((float)((double)stdv * x));
    }
}
KERNEL randn_f32(float* out, long long n, unsigned long long seed, float stdv) { randn_body<float>(out, n, seed, stdv); }
KERNEL randn_bf16(__nv_bfloat16* out, long long n, unsigned long long seed, float stdv) {
    randn_body<__nv_bfloat16>(out, n, seed, stdv);
}
