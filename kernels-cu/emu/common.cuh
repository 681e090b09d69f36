// emu/common.cuh: host stand-in for kernels-cu/cuda/common.cuh, so a kernel file can be compiled by a C++
// compiler and executed on the CPU, one CTA at a time, each CUDA thread a cooperative fiber (ucontext).
// Only what the register-resident kernels use is provided: thread/block indices, __syncthreads, warp
// shuffles, the CUDA qualifiers, bf16 storage and a few math functions. The warp-collective instructions
// (ldmatrix, mma.sync) are in emu/mma.cuh and follow the PTX ISA fragment layouts documented in cuda/mma.cuh.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __grid_constant__
// Static __shared__ variables become function statics: CTAs run one at a time, so one instance per kernel
// is the CTA's shared copy. Dynamic shared memory is the harness's buffer of that name.
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define DYNAMIC_SMEM(name, align) extern unsigned char name[]
#define __launch_bounds__(...)

struct dim3 { unsigned x = 0, y = 0, z = 0; };
struct __nv_bfloat16 { uint16_t bits; };

namespace emu {

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 * 1024;

// One CTA's fibers and their scheduler. A fiber runs until it blocks on a barrier, then yields.
struct Cta {
    int threads = 0;
    int current = 0;
    ucontext_t scheduler;
    std::vector<ucontext_t> ctx;
    std::vector<std::vector<char>> stacks;
    std::vector<bool> done;
    // block barrier and one barrier per warp: arrival count + generation
    int block_count = 0, block_gen = 0;
    int warp_count[kMaxThreads / 32] = {}, warp_gen[kMaxThreads / 32] = {};
};
inline Cta cta;
// The scheduler's round order: thread 0 first (default) or last. A check that runs a kernel both ways sees a
// missing barrier between threads that the default order happens to satisfy.
inline bool reverse_schedule = false;

inline dim3 thread_idx_of(int tid) { return dim3{(unsigned)tid, 0, 0}; }

}  // namespace emu

inline dim3 threadIdx, blockIdx, gridDim, blockDim;

namespace emu {

inline void yield() {
    Cta& c = cta;
    swapcontext(&c.ctx[c.current], &c.scheduler);
    threadIdx = thread_idx_of(c.current);
}

inline void block_barrier() {
    Cta& c = cta;
    const int gen = c.block_gen;
    if (++c.block_count == c.threads) {
        c.block_count = 0;
        ++c.block_gen;
    } else {
        while (c.block_gen == gen) yield();
    }
}

inline void warp_barrier() {
    Cta& c = cta;
    const int w = (int)threadIdx.x / 32;
    const int gen = c.warp_gen[w];
    if (++c.warp_count[w] == 32) {
        c.warp_count[w] = 0;
        ++c.warp_gen[w];
    } else {
        while (c.warp_gen[w] == gen) yield();
    }
}

// Per-lane exchange slots for warp collectives.
struct Slot {
    float f;
    unsigned u;
    const void* ptr;
    uint32_t a[4], b[2];
};
inline Slot slots[kMaxThreads];

// Run `body` once per thread of a CTA of `threads` threads (blockIdx / gridDim set by the caller).
template <class F> void run_cta(int threads, F body) {
    Cta& c = cta;
    c.threads = threads;
    c.ctx.assign(threads, ucontext_t{});
    c.stacks.resize(threads);
    c.done.assign(threads, false);
    c.block_count = c.block_gen = 0;
    for (int w = 0; w < kMaxThreads / 32; ++w) c.warp_count[w] = c.warp_gen[w] = 0;
    static F* fn;
    fn = &body;
    struct Entry {
        static void run() {
            (*fn)();
            cta.done[cta.current] = true;
        }
    };
    for (int t = 0; t < threads; ++t) {
        c.stacks[t].resize(kStackBytes);
        getcontext(&c.ctx[t]);
        c.ctx[t].uc_stack.ss_sp = c.stacks[t].data();
        c.ctx[t].uc_stack.ss_size = kStackBytes;
        c.ctx[t].uc_link = &c.scheduler;
        makecontext(&c.ctx[t], Entry::run, 0);
    }
    for (bool any = true; any;) {
        any = false;
        for (int i = 0; i < threads; ++i) {
            const int t = reverse_schedule ? threads - 1 - i : i;
            if (c.done[t]) continue;
            any = true;
            c.current = t;
            threadIdx = thread_idx_of(t);
            swapcontext(&c.scheduler, &c.ctx[t]);
        }
    }
}

}  // namespace emu

inline void __syncthreads() { emu::block_barrier(); }

inline float __shfl_xor_sync(unsigned, float v, int mask) {
    const int me = (int)threadIdx.x, base = me & ~31;
    emu::slots[me].f = v;
    emu::warp_barrier();
    const float r = emu::slots[base + ((me & 31) ^ mask)].f;
    emu::warp_barrier();
    return r;
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float bf16_to_f32(__nv_bfloat16 x) {
    const uint32_t u = (uint32_t)x.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
// Round to nearest even (NaN kept quiet), as __float2bfloat16_rn.
inline uint16_t f32_to_bf16_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// Grid-stride kernels (common.cuh's KERNEL / global_tid / grid_stride) and the bits of cuda_bf16.h,
// math_constants.h and the atomics they use. Fibers never interleave inside a call, so atomicAdd is a plain add.
#define KERNEL extern "C" void
#define CUDART_INF_F INFINITY
inline long long global_tid() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
inline long long grid_stride() { return (long long)gridDim.x * blockDim.x; }
inline float atomicAdd(float* p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}
struct float2 { float x, y; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float2 atomicAdd(float2* p, float2 v) {
    const float2 old = *p;
    *p = float2{old.x + v.x, old.y + v.y};
    return old;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{f32_to_bf16_bits(f)}; }

// common.cuh's storage conversions and reductions. Block reductions are emulated collectives: every thread
// publishes, meets the others, and reduces all values in thread order (the real butterfly order differs,
// which changes only rounding).
inline float to_f32(float x) { return x; }
inline float to_f32(__nv_bfloat16 x) { return bf16_to_f32(x); }
inline float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
inline float warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = std::fmax(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}
namespace emu {
template <class F> float block_reduce(float v, float init, F op) {
    const int me = (int)threadIdx.x;
    slots[me].f = v;
    block_barrier();
    float r = init;
    for (int t = 0; t < cta.threads; ++t) r = op(r, slots[t].f);
    block_barrier();
    return r;
}
}  // namespace emu
inline float block_sum(float v) { return emu::block_reduce(v, 0.0f, [](float a, float b) { return a + b; }); }
inline float block_max(float v) {
    return emu::block_reduce(v, -INFINITY, [](float a, float b) { return std::fmax(a, b); });
}

// Vector type, integer atomics and the store conversion used by the decode kernels.
struct uint4 { unsigned x, y, z, w; };
inline int atomicExch(int* p, int v) {
    const int old = *p;
    *p = v;
    return old;
}
template <typename T> inline T from_f32(float x);
template <> inline float from_f32<float>(float x) { return x; }
template <> inline __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// The integer warp collectives, bit intrinsics and atomics of the selection kernels.
inline unsigned __shfl_up_sync(unsigned, unsigned v, int delta) {
    const int me = (int)threadIdx.x, lane = me & 31;
    emu::slots[me].u = v;
    emu::warp_barrier();
    const unsigned r = lane >= delta ? emu::slots[me - delta].u : v;
    emu::warp_barrier();
    return r;
}
// Mask of the lanes of the warp holding the same value.
inline unsigned __match_any_sync(unsigned, unsigned v) {
    const int me = (int)threadIdx.x, base = me & ~31;
    emu::slots[me].u = v;
    emu::warp_barrier();
    unsigned mask = 0;
    for (int l = 0; l < 32; ++l)
        if (emu::slots[base + l].u == v) mask |= 1u << l;
    emu::warp_barrier();
    return mask;
}
// Bit l set when lane l's predicate is true.
inline unsigned __ballot_sync(unsigned, int pred) {
    const int me = (int)threadIdx.x, base = me & ~31;
    emu::slots[me].u = pred ? 1u : 0u;
    emu::warp_barrier();
    unsigned mask = 0;
    for (int l = 0; l < 32; ++l)
        if (emu::slots[base + l].u) mask |= 1u << l;
    emu::warp_barrier();
    return mask;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline double __dmul_rn(double a, double b) { return a * b; }  // C++ mode: no FMA contraction
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    const unsigned old = *p;
    *p = old + v;
    return old;
}
using std::isnan;

// What the wide radix select (select_wide.cu) adds: vector types, a lane broadcast, the L2 load and the
// fence of its last-block scan (CTAs run one after another here, so the fence has nothing to order).
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) uint2 { unsigned x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline unsigned __shfl_sync(unsigned, unsigned v, int src) {
    const int me = (int)threadIdx.x, base = me & ~31;
    emu::slots[me].u = v;
    emu::warp_barrier();
    const unsigned r = emu::slots[base + (src & 31)].u;
    emu::warp_barrier();
    return r;
}
inline unsigned __ldcg(const unsigned* p) { return *p; }
inline void __threadfence() {}

// What the WMMA kernels (attention.cu) use besides emu/mma.h.
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(); }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float __bfloat162float(__nv_bfloat16 x) { return bf16_to_f32(x); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline void sincosf(float x, float* s, float* c) {
    *s = std::sin(x);
    *c = std::cos(x);
}

// The strided kernels' geometry (the real header: plain C++ under the qualifier macros above).
#include "geometry.cuh"
