// emu/mma.cuh: host stand-in for kernels-cu/cuda/mma.cuh. Each warp collective publishes the lane's operands,
// meets the other 31 lanes at a warp barrier, computes this lane's result from the PTX ISA fragment layouts
// (restated in cuda/mma.cuh) and meets them again before the slots are reused. cp.async copies synchronously.
#pragma once

#include "common.cuh"

inline void cp_async_16(void* dst, const void* src, bool valid) {
    if (valid) std::memcpy(dst, src, 16);
    else std::memset(dst, 0, 16);
}
inline void cp_async_4(void* dst, const void* src, bool valid) {
    if (valid) std::memcpy(dst, src, 4);
    else std::memset(dst, 0, 4);
}
inline void cp_async_commit() {}
template <int N> inline void cp_async_wait() {}

namespace emu {
inline const uint16_t* row_of(int lane) { return static_cast<const uint16_t*>(slots[lane].ptr); }

// ldmatrix.x4: lanes 8i..8i+7 address the rows of matrix i; register i gets (row g, cols 2c, 2c+1), or with
// .trans (rows 2c, 2c+1, col g).
inline void ldmatrix(uint32_t (&r)[4], const void* p, bool trans) {
    const int me = (int)threadIdx.x, base = me & ~31, lane = me & 31, g = lane / 4, c = lane % 4;
    slots[me].ptr = p;
    warp_barrier();
    for (int i = 0; i < 4; ++i) {
        uint32_t lo, hi;
        if (!trans) {
            lo = row_of(base + 8 * i + g)[2 * c];
            hi = row_of(base + 8 * i + g)[2 * c + 1];
        } else {
            lo = row_of(base + 8 * i + 2 * c)[g];
            hi = row_of(base + 8 * i + 2 * c + 1)[g];
        }
        r[i] = lo | (hi << 16);
    }
    warp_barrier();
}

inline float half_of(uint32_t v, int hi) {
    __nv_bfloat16 b{(uint16_t)(hi ? v >> 16 : v & 0xffffu)};
    return bf16_to_f32(b);
}
}  // namespace emu

inline void ldmatrix_x4(unsigned (&r)[4], const void* p) { emu::ldmatrix(r, p, false); }
inline void ldmatrix_x4_trans(unsigned (&r)[4], const void* p) { emu::ldmatrix(r, p, true); }

// D = A·B + C for m16n8k16: A element (row, k) lives in lane (row%8)·4 + (k%8)/2, register (row/8) + 2·(k/8),
// half k%2; B element (k, n) in lane n·4 + (k%8)/2, register k/8, half k%2; C (row, n) as documented.
inline void mma_bf16_16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    using namespace emu;
    const int me = (int)threadIdx.x, base = me & ~31, lane = me & 31, g = lane / 4, cc = lane % 4;
    for (int i = 0; i < 4; ++i) slots[me].a[i] = a[i];
    slots[me].b[0] = b0;
    slots[me].b[1] = b1;
    warp_barrier();
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e / 2), col = 2 * cc + (e % 2);
        float acc = 0.0f;
        for (int k = 0; k < 16; ++k) {
            const float av = half_of(slots[base + (row % 8) * 4 + (k % 8) / 2].a[row / 8 + 2 * (k / 8)], k % 2);
            const float bv = half_of(slots[base + col * 4 + (k % 8) / 2].b[k / 8], k % 2);
            acc += av * bv;
        }
        c[e] += acc;
    }
    warp_barrier();
}

inline unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)f32_to_bf16_bits(lo) | ((unsigned)f32_to_bf16_bits(hi) << 16);
}
inline float fast_exp2(float x) { return std::exp2(x); }
