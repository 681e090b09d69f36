// select_common.cuh: what the radix-select kernels (select.cu, select_wide.cu) share: the order-preserving
// u32 keys of f32 scores and the seeded hash keys of random selection, the per-(pool, tail) slot state and
// its modes, the pool lookup, the tail count k, a block-wide inclusive scan, and the final membership test.
// The algorithms are described in the headers of select.cu (8-bit digits) and select_wide.cu (11-bit).
#pragma once

#include "common.cuh"
#include "select_params.cuh"

typedef unsigned int u32;
typedef unsigned long long u64;

// (256, 1): with no minimum of blocks per SM given, CUDA 13's ptxas capped the histogram versions at 32
// registers and spilled 8-32 bytes (measured that way on 2026-11-27); this lets them take 40-54 registers
// (4-6 blocks of 256 per SM) without spills. plain and lean use 29 either way.
#define SEL_KERNEL extern "C" __global__ void __launch_bounds__(256, 1)

constexpr int kThreads = 256;           // every kernel here is launched with exactly 256 threads

// Per-slot state, 4 words: remaining rank kk (1-based), key prefix, index prefix, mode.
constexpr int ST_KK = 0, ST_KEY = 1, ST_IDX = 2, ST_MODE = 3;
constexpr u32 MODE_KEY = 0u;     // resolving key digits (the zero-initialised state)
constexpr u32 MODE_IDX = 1u;     // resolving index digits of the threshold-equal elements
constexpr u32 MODE_ALL_EQ = 2u;  // threshold key known, every element equal to it is taken
constexpr u32 MODE_NONE = 3u;    // k = 0: nothing selected
// flags[0] = some slot needs the index passes, flags[1] = NaN score on a valid token.

// ------------------------------------------------------------------------------------------------
// Keys and helpers.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ u32 float_key(float x) {
    u32 b = __float_as_uint(x);
    if ((b & 0x7FFFFFFFu) == 0u) b = 0u;                   // -0.0 -> +0.0
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) b = 0x7FC00000u;  // any NaN -> +qNaN (largest key)
    return b ^ ((b & 0x80000000u) ? 0xFFFFFFFFu : 0x80000000u);
}

__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// splitmix64 of (seed, index): identical to random_key in engine/src/ops/select.rs.
__device__ __forceinline__ u32 hash_key(u64 seed, long long i) {
    const u64 z = mix64(seed) + ((u64)i + 1ull) * 0x9E3779B97F4A7C15ull;
    return (u32)(mix64(z) >> 32);
}

__device__ __forceinline__ u32 token_key(const float* scores, u64 seed, long long i) {
    return scores != nullptr ? float_key(scores[i]) : hash_key(seed, i);
}

// Largest q in [lo, hi] with cu[q] <= i (requires cu[lo] <= i). For i < cu[num_pools] and hi = num_pools-1
// this is the pool that holds token i (empty pools are skipped because cu[q+1] > i).
__device__ __forceinline__ int pool_of(const int* cu, int lo, int hi, long long i) {
    while (lo < hi) {
        const int mid = lo + ((hi - lo + 1) >> 1);
        if ((long long)cu[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// Token i's validity and u32 key (0 when invalid or i >= tile1). A NaN score on a valid token sets *nan_flag
// unless it is null (only the first pass over the scores reports it).
__device__ __forceinline__ void load_key(const float* scores, const float* valid, u64 seed, long long i,
                                         long long tile1, u32* nan_flag, bool* ok, u32* key) {
    *ok = i < tile1 && valid[i] != 0.0f;
    *key = 0u;
    if (!*ok) return;
    if (scores != nullptr) {
        const float x = scores[i];
        if (nan_flag != nullptr && isnan(x)) *nan_flag = 1u;
        *key = float_key(x);
    } else {
        *key = hash_key(seed, i);
    }
}

// Thread 0 writes the first and the last pool of the tile [tile0, tile1) to out[0], out[1] (the caller
// synchronises before reading them).
__device__ __forceinline__ void tile_pools(const int* cu, int num_pools, long long tile0, long long tile1, int* out) {
    if (threadIdx.x == 0) {
        const int qf = pool_of(cu, 0, num_pools - 1, tile0);
        out[0] = qf;
        out[1] = pool_of(cu, qf, num_pools - 1, tile1 - 1);
    }
}

// k = ceil(frac·n·slack), at most n; slack = 1 − 1e-12 absorbs the rounding of frac (0.2·15 -> 3, not 4).
// Explicit _rn products (no FMA contraction) so the result is bit-identical to tail_count on the host.
__device__ __forceinline__ u32 tail_count(double frac, double slack, u32 n) {
    const double x = __dmul_rn(__dmul_rn(frac, (double)n), slack);
    const u32 k = (u32)ceil(x);
    return k < n ? k : n;
}

// Inclusive scan over the lanes of the warp (every lane must call it).
__device__ __forceinline__ u32 warp_inclusive_scan(u32 v) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const u32 y = __shfl_up_sync(0xffffffffu, v, off);
        if (lane >= off) v += y;
    }
    return v;
}

// Inclusive scan over the block (blockDim.x a multiple of 32, <= 1024); *total = the block's sum.
// Every thread must call it; it starts and ends with the scratch free, so it can be called in a loop.
__device__ __forceinline__ u32 block_inclusive_scan(u32 v, u32* warp_tot, u32* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const u32 c = warp_inclusive_scan(v);
    if (lane == 31) warp_tot[warp] = c;
    __syncthreads();
    u32 before = 0u, all = 0u;
    for (int w = 0; w < nwarps; ++w) {
        const u32 t = warp_tot[w];
        if (w < warp) before += t;
        all += t;
    }
    __syncthreads();
    *total = all;
    return c + before;
}

// After a histogram pass, the one thread whose bucket d (holding v candidates, of which the slot's kk-th is
// number rem) was found moves the slot into it: remaining rank, the digit into the key or index prefix, and
// after the last key digit the tie decision: every element equal to the threshold key is taken (rem == v),
// or the index passes must pick the lowest-index rem of them (flags[0]).
__device__ __forceinline__ void commit_bucket(u32* st, u32* flags, u32 d, int shift, u32 rem, u32 v, bool key_pass,
                                              bool last_key_pass) {
    st[ST_KK] = rem;
    if (key_pass) st[ST_KEY] |= d << shift;
    else st[ST_IDX] |= d << shift;
    if (!last_key_pass) return;
    if (rem == v) {
        st[ST_MODE] = MODE_ALL_EQ;
    } else {
        st[ST_MODE] = MODE_IDX;
        flags[0] = 1u;
    }
}

// Whether a valid token with (tail-oriented) key e and index i is in a slot's tail, from the slot's mode and
// threshold key / index. MODE_NONE selects nothing; MODE_KEY cannot survive the key passes.
__device__ __forceinline__ bool in_tail(u32 mode, u32 e, u32 tk, u32 ti, long long i) {
    if (mode == MODE_ALL_EQ) return e <= tk;
    if (mode == MODE_IDX) return e < tk || (e == tk && (u32)i <= ti);
    return false;
}
