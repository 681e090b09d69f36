// emu/mma.h: host stand-in for CUDA's <mma.h> (nvcuda::wmma), for kernels-cu/cuda/attention.cu. A fragment is
// opaque on the GPU, so any layout is faithful as long as load, mma and store agree: here every lane holds
// the whole 16×16 tile in logical (row, col) order. Each operation is warp-collective: the lanes meet before
// it (so stores the kernel ordered with __syncwarp are visible) and after it.
#pragma once

#include "common.cuh"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    float v[16][16];
};

inline float value_of(float x) { return x; }
inline float value_of(__nv_bfloat16 x) { return bf16_to_f32(x); }

template <typename Use, typename T, typename Layout, typename P>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const P* p, unsigned ldm) {
    emu::warp_barrier();
    constexpr bool col = std::is_same_v<Layout, col_major>;
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) f.v[r][c] = value_of(col ? p[c * ldm + r] : p[r * ldm + c]);
    emu::warp_barrier();
}

template <typename T, typename P>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const P* p, unsigned ldm, layout_t layout) {
    emu::warp_barrier();
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) f.v[r][c] = value_of(layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]);
    emu::warp_barrier();
}

template <typename T>
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm, layout_t layout) {
    emu::warp_barrier();
    if ((threadIdx.x & 31) == 0)
        for (int r = 0; r < 16; ++r)
            for (int c = 0; c < 16; ++c) (layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.v[r][c];
    emu::warp_barrier();
}

template <typename Use, typename T, typename Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float x) {
    for (auto& row : f.v)
        for (auto& e : row) e = x;
}

// d = a·b + c, f32 accumulation (bf16 inputs are exact in f32).
template <typename TA, typename LA, typename TB, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, 16, 16, 16, TC>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, TC>& c) {
    emu::warp_barrier();
    float out[16][16];
    for (int r = 0; r < 16; ++r)
        for (int n = 0; n < 16; ++n) {
            float acc = c.v[r][n];
            for (int k = 0; k < 16; ++k) acc += a.v[r][k] * b.v[k][n];
            out[r][n] = acc;
        }
    std::memcpy(d.v, out, sizeof(out));
    emu::warp_barrier();
}

}  // namespace wmma
}  // namespace nvcuda
