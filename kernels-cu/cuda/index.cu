// index.cu: integer-indexed gathers and their scatter-add / scatter adjoints.
//
//   embedding_fwd:  out[i, :] = table[ids[i], :]                 (id outside [0, vocab) -> zeros, *err = 1)
//   embedding_bwd:  dtable[ids[i], :] += dout[i, :]              (f32 atomicAdd; dtable pre-zeroed;
//                                                                  out-of-range ids are skipped)
//   gather_last:    out[r] = x[r, idx[r]]                        (idx outside [0, cols) -> 0, *err = 1)
//   scatter_last:   dx[r, idx[r]] = dout[r]                      (dx pre-zeroed; out-of-range idx skipped)
//
// All grid-stride with 64-bit indices. Only embedding_bwd uses atomics (order of f32 adds into a
// row shared by repeated ids is therefore not deterministic).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void embedding_fwd_body(T* out, const T* table, const int* ids, long long n_ids,
                                                   long long dim, long long vocab, int* err) {
    const long long n = n_ids * dim;
    for (long long k = global_tid(); k < n; k += grid_stride()) {
        // 1. (token, column)
        const long long i = k / dim, c = k - i * dim;
        const long long id = ids[i];
        // 2. gather, or zero + flag on a bad id
        if (id >= 0 && id < vocab) {
            out[k] = table[id * dim + c];
        } else {
            out[k] = from_f32<T>(0.0f);
            if (c == 0) atomicExch(err, 1);
        }
    }
}

template <typename T>
__device__ __forceinline__ void embedding_bwd_body(float* dtable, const T* dout, const int* ids, long long n_ids,
                                                   long long dim, long long vocab) {
    const long long n = n_ids * dim;
    for (long long k = global_tid(); k < n; k += grid_stride()) {
        // 1. (token, column)
        const long long i = k / dim, c = k - i * dim;
        const long long id = ids[i];
        // 2. scatter-add
        if (id >= 0 && id < vocab) atomicAdd(dtable + id * dim + c, to_f32(dout[k]));
    }
}

template <typename T>
__device__ __forceinline__ void gather_last_body(T* out, const T* x, const int* idx, int rows, int cols, int* err) {
    for (long long r = global_tid(); r < rows; r += grid_stride()) {
        const int j = idx[r];
        if (j >= 0 && j < cols) {
            out[r] = x[r * (long long)cols + j];
        } else {
            out[r] = from_f32<T>(0.0f);
            atomicExch(err, 1);
        }
    }
}

template <typename T>
__device__ __forceinline__ void scatter_last_body(T* dx, const T* dout, const int* idx, int rows, int cols) {
    for (long long r = global_tid(); r < rows; r += grid_stride()) {
        const int j = idx[r];
        if (j >= 0 && j < cols) dx[r * (long long)cols + j] = dout[r];
    }
}

#define DEFINE_INDEX(SFX, T)                                                                                     \
    KERNEL embedding_fwd_##SFX(T* out, const T* table, const int* ids, long long n_ids, long long dim,           \
                               long long vocab, int* err) {                                                      \
        embedding_fwd_body<T>(out, table, ids, n_ids, dim, vocab, err);                                          \
    }                                                                                                            \
    KERNEL embedding_bwd_##SFX(float* dtable, const T* dout, const int* ids, long long n_ids, long long dim,     \
                               long long vocab) {                                                                \
        embedding_bwd_body<T>(dtable, dout, ids, n_ids, dim, vocab);                                             \
    }                                                                                                            \
    KERNEL gather_last_##SFX(T* out, const T* x, const int* idx, int rows, int cols, int* err) {                 \
        gather_last_body<T>(out, x, idx, rows, cols, err);                                                       \
    }                                                                                                            \
    KERNEL scatter_last_##SFX(T* dx, const T* dout, const int* idx, int rows, int cols) {                        \
        scatter_last_body<T>(dx, dout, idx, rows, cols);                                                         \
    }

DEFINE_INDEX(f32, float)
DEFINE_INDEX(bf16, __nv_bfloat16)
