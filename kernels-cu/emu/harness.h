// emu/harness.h: what the kernel checks share — running a grid of CTAs through the emulator, seeded normal
// inputs and one report line per check.
#pragma once

#include <cstdio>
#include <random>
#include <vector>

// Run `body` (the kernel call) for every CTA of `g`, `threads` threads each, one CTA at a time; with
// `reversed`, x from last to first (so a kernel whose last block finishes the work sees other orders).
template <class F> inline void run_grid(dim3 g, unsigned threads, F body, bool reversed = false) {
    gridDim = g;
    blockDim = dim3{threads, 1, 1};
    for (unsigned z = 0; z < g.z; ++z)
        for (unsigned y = 0; y < g.y; ++y)
            for (unsigned i = 0; i < g.x; ++i) {
                blockIdx = dim3{reversed ? g.x - 1 - i : i, y, z};
                emu::run_cta((int)threads, body);
            }
}
template <class F> inline void run_grid(unsigned blocks, unsigned threads, F body, bool reversed = false) {
    run_grid(dim3{blocks, 1, 1}, threads, body, reversed);
}

// n normal(0, sd) floats from `rng`.
inline std::vector<float> randn_vec(std::mt19937_64& rng, size_t n, float sd = 1.0f) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> x(n);
    for (auto& e : x) e = d(rng);
    return x;
}

// One result line ("ok" / "FAIL" is what the Rust test counts); returns whether err < tol.
inline bool report(const char* name, double err, double tol) {
    const bool ok = err < tol;
    std::printf("%-36s %-4s max err %.2e (tol %.0e)\n", name, ok ? "ok" : "FAIL", err, tol);
    return ok;
}
