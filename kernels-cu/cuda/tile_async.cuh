// tile_async.cuh: asynchronous (cp.async) copy of a tile of rows of a [T, heads, D] bf16 tensor into shared
// memory, for the register-resident kernels. Uses mma.cuh's cp_async_16, so it also compiles against the
// emu/ shims unchanged.
#pragma once

#include "mma.cuh"

// Rows row0 .. row0+ROWS-1 of head h into dst[ROWS][LD]; rows at or beyond `rows` are zero-filled (their
// source is not read). THREADS threads of the CTA share the copy, 16 bytes each per step.
template <int D, int ROWS, int LD, int THREADS>
__device__ __forceinline__ void load_rows_async(__nv_bfloat16* dst, const __nv_bfloat16* src, long long row0,
                                                int rows, int heads, int h) {
    constexpr int kChunks = D / 8;  // 16-byte chunks per row
    static_assert((ROWS * kChunks) % THREADS == 0, "the tile copies evenly over the CTA");
#pragma unroll
    for (int it = 0; it < ROWS * kChunks / THREADS; ++it) {
        const int i = it * THREADS + threadIdx.x;
        const int r = i / kChunks, c = (i % kChunks) * 8;
        const bool ok = r < rows;
        const __nv_bfloat16* g = src + ((row0 + (ok ? r : 0)) * heads + h) * (long long)D + c;
        cp_async_16(dst + r * LD + c, g, ok);
    }
}
