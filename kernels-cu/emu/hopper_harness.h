// emu/hopper_harness.h: what the Hopper kernels' harnesses share: the TMA map the engine encodes
// (engine/src/cuda/tma.rs) and a grid run that checks every CTA leaves its named barriers idle.
#pragma once

#include "harness.h"
#include "hopper.cuh"

#include <cstdio>
#include <cstdlib>
#include <vector>

// x as bf16 [total][heads][d] seen as 3-D (d, heads, total), box (64, 1, rows), 128-byte swizzle.
inline TmaDesc tma_rows(const std::vector<__nv_bfloat16>& x, int total, int heads, int d, unsigned rows) {
    const unsigned long long dims[3] = {(unsigned long long)d, (unsigned long long)heads, (unsigned long long)total};
    const unsigned long long strides[2] = {(unsigned long long)d * 2, (unsigned long long)heads * d * 2};
    const unsigned box[3] = {64, 1, rows};
    return emu_encode_tma(x.data(), dims, strides, box, 2, true);
}

// run_grid, and after each CTA's last thread: no named barrier may be left half-arrived (the GPU resets them
// per CTA; here the count would leak into the next CTA) and no bulk copy left unwaited (its shared source
// would be gone).
template <class F> inline void run_hopper_grid(dim3 g, unsigned threads, F body) {
    unsigned finished = 0;
    run_grid(g, threads, [&] {
        body();
        if (++finished % threads != 0) return;
        const char* what = !emu_named_barriers_idle() ? "a named barrier half-arrived"
                           : !emu_bulk_idle()         ? "a bulk copy not waited for"
                                                      : nullptr;
        if (what) {
            std::printf("FAIL CTA (%u, %u, %u) ended with %s\n", blockIdx.x, blockIdx.y, blockIdx.z, what);
            std::fflush(stdout);
            std::_Exit(1);
        }
    });
}
