// hopper.cuh: the sm_90a primitives of the Hopper-native kernels (attention_hopper.cu, attention_hopper_bwd.cu):
// TMA tiled copies into 128-byte-swizzled shared memory, mbarrier phases with transaction counts, bulk
// reductions from shared to global memory, warpgroup MMAs (wgmma) on shared-memory descriptors, and warpgroup
// register reallocation. emu/hopper.cuh models each of them on the
// CPU (same names, same operand meaning); the descriptor encoding (hopper_desc.cuh) is shared with it.
//
// TMA (cp.async.bulk.tensor.3d, PTX ISA §9.7.9.25): a box of a 3-D tensor [dim2][dim1][dim0] (dim0 contiguous)
// lands in shared memory as [box2][box1][box0] with SWIZZLE_128B: byte offset o (the destination 1024-byte
// aligned) goes to o ^ (((o >> 7) & 7) << 4) — the 16-byte chunk index of each 128-byte row is XORed with the
// row's index mod 8. Elements outside the tensor are zero. The copy's bytes complete the transaction count of
// an mbarrier.
// mbarrier (§9.7.13.15): a phase completes when the expected arrivals have arrived and the transaction count
// is back to zero; try_wait.parity(P) succeeds once the phase of parity P has completed (a fresh barrier is in
// phase 0, so waiting for parity 1 passes at once: the producer's first pass over its empty stages).
// wgmma (§9.7.15): a warpgroup (4 consecutive warps, 128 threads) computes D[64×N] (+)= A[64×16]·B[16×N]
// asynchronously; wgmma.fence orders the registers it reads, commit_group / wait_group<K> wait for all but
// the K most recent groups. The accumulator fragment of warp w is the m16n8 C layout of rows 16w .. 16w+15
// (d[j][e]: row g + 8·(e/2), col 8j + 2c + e%2); an A operand from registers is the mma.sync A fragment.
#pragma once

#include <cuda_bf16.h>

#include "hopper_desc.cuh"

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// threadIdx.x read again where it is used (volatile: not hoisted out of a loop), for values that ptxas would
// otherwise keep live across a main loop at the register limit and spill.
__device__ __forceinline__ unsigned reread_tid() {
    unsigned t;
    asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(t));
    return t;
}

// ---- mbarrier -----------------------------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(unsigned long long* bar, unsigned arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(arrivals) : "memory");
}
// Order this thread's generic-proxy shared-memory writes before later async-proxy reads (wgmma operands).
__device__ __forceinline__ void fence_view_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Make the initialised barriers visible to the async proxy (TMA) and the other threads (a __syncthreads follows).
__device__ __forceinline__ void mbar_fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// Arrive and add `bytes` to the transaction count the phase waits for.
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned long long* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Block until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
    asm volatile(
        "{\n.reg .pred done;\nWAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n}\n" ::"r"(smem_u32(bar)),
        "r"(parity)
        : "memory");
}

// ---- TMA ----------------------------------------------------------------------------------------------------
// Box at coordinates (c0, c1, c2) of the tensor `map` describes (a __grid_constant__ parameter) into `dst`;
// its bytes complete on `bar`.
__device__ __forceinline__ void tma_load_3d(void* dst, const TmaDesc& map, int c0, int c1, int c2,
                                            unsigned long long* bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], "
        "[%2];\n" ::"r"(smem_u32(dst)),
        "l"(reinterpret_cast<unsigned long long>(&map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
}

// ---- bulk reductions to global memory (PTX ISA: cp.reduce.async.bulk) -------------------------------------------
// gdst[i] += ssrc[i] for `bytes` / 4 f32 elements, each element's addition relaxed.gpu-atomic (other CTAs add
// to the same rows), rounded to nearest even with subnormals flushed to zero (as atom.add.f32 on global
// memory); both addresses 16-byte aligned, `bytes` a multiple of 16. The shared source is read asynchronously:
// the threads that stored it fence their generic stores (fence_view_async_shared) before a barrier the issuing
// thread waits on, and it is reused only after bulk_wait_read (then a barrier). Per thread: commit closes a group of this thread's copies.
__device__ __forceinline__ void bulk_reduce_add_f32(float* gdst, const float* ssrc, unsigned bytes) {
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(
                     __cvta_generic_to_global(gdst)),
                 "r"(smem_u32(ssrc)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// All but the K most recent groups have read their shared source (which may then be written again).
template <int K> __device__ __forceinline__ void bulk_wait_read() {
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(K) : "memory");
}
// All but the K most recent groups are complete (their global writes performed).
template <int K> __device__ __forceinline__ void bulk_wait() {
    asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(K) : "memory");
}

// ---- named barriers (bar.sync / bar.arrive; id 0 is __syncthreads) ---------------------------------------------
// sync waits until `threads` threads have reached barrier `Id` (by sync or arrive); arrive counts and goes on.
// The id is a literal, so ptxas reserves only the barriers used.
template <int Id> __device__ __forceinline__ void named_barrier_sync(int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"n"(Id), "r"(threads) : "memory");
}
template <int Id> __device__ __forceinline__ void named_barrier_arrive(int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"n"(Id), "r"(threads) : "memory");
}

// ---- warpgroup ----------------------------------------------------------------------------------------------
// Registers a wgmma reads or writes are fenced before wgmma_fence and after wgmma_wait (CUTLASS's
// warpgroup_fence_operand): the empty asm "uses and redefines" them there, so the compiler neither moves
// ordinary writes to them (an O rescale) past the wgmma.fence, nor reads an accumulator before the wait, nor
// reuses an A operand's registers while the MMA may still read them.
template <int N> __device__ __forceinline__ void fence_regs(float (&d)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}
template <int N> __device__ __forceinline__ void fence_regs(unsigned (&a)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[i][e])::"memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int K> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(K) : "memory");
}
// The register budget of the calling warpgroup (all its warps execute it): the producer gives registers
// back, the consumers take them.
template <int R> __device__ __forceinline__ void warpgroup_reg_dealloc() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R> __device__ __forceinline__ void warpgroup_reg_alloc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}

// The accumulator operands of a wgmma: a thread's N/2 f32 registers as "+f" constraints (d[j][e], n8 tile j),
// and the matching "{%0, …}" operand lists.
#define WGMMA_ACC4(d, j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define WGMMA_ACC_N64(d)                                                                                     \
    WGMMA_ACC4(d, 0), WGMMA_ACC4(d, 1), WGMMA_ACC4(d, 2), WGMMA_ACC4(d, 3), WGMMA_ACC4(d, 4), WGMMA_ACC4(d, 5), \
        WGMMA_ACC4(d, 6), WGMMA_ACC4(d, 7)
#define WGMMA_ACC_N128(d)                                                                                     \
    WGMMA_ACC_N64(d), WGMMA_ACC4(d, 8), WGMMA_ACC4(d, 9), WGMMA_ACC4(d, 10), WGMMA_ACC4(d, 11), WGMMA_ACC4(d, 12), \
        WGMMA_ACC4(d, 13), WGMMA_ACC4(d, 14), WGMMA_ACC4(d, 15)
#define WGMMA_D32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define WGMMA_D64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d (+)= A·Bᵀ, m64nNk16, A [64×16] and B [N×16] both K-major in shared memory (descriptors); scale_d = 0
// overwrites d.
__device__ __forceinline__ void wgmma_ss_m64n128(float (&d)[16][4], unsigned long long da, unsigned long long db,
                                                 int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WGMMA_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : WGMMA_ACC_N128(d)
                 : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wgmma_ss_m64n64(float (&d)[8][4], unsigned long long da, unsigned long long db,
                                                int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WGMMA_D32 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : WGMMA_ACC_N64(d)
                 : "l"(da), "l"(db), "r"(scale_d));
}
// d (+)= A·B, m64n64k16, A [64×16] and B [16×64] both MN-major in shared memory (tnspA = tnspB = 1).
__device__ __forceinline__ void wgmma_ss_m64n64_tnspab(float (&d)[8][4], unsigned long long da, unsigned long long db,
                                                       int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WGMMA_D32 ", %32, %33, p, 1, 1, 1, 1;\n}\n"
                 : WGMMA_ACC_N64(d)
                 : "l"(da), "l"(db), "r"(scale_d));
}
// d += A·B, m64nNk16: A [64×16] from registers (the mma.sync A fragment of the warp's 16 rows), B [16×N]
// MN-major in shared memory (tnspB = 1: N contiguous, as V's head dimension is).
__device__ __forceinline__ void wgmma_rs_m64n128_tnspb(float (&d)[16][4], const unsigned (&a)[4],
                                                       unsigned long long db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WGMMA_D64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : WGMMA_ACC_N128(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_rs_m64n64_tnspb(float (&d)[8][4], const unsigned (&a)[4], unsigned long long db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WGMMA_D32
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : WGMMA_ACC_N64(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
