// common.cuh: shared device helpers for every kernel family in kernels-cu/cuda (see README.md).
//
//   * storage <-> compute conversion: T is `float` or `__nv_bfloat16`; all arithmetic is f32, and bf16
//     results are rounded once on store (round-to-nearest-even, __float2bfloat16_rn).
//   * warp / block reductions with a fixed combination order (deterministic run to run).
//   * geometry structs and the linear-index -> strided-offset decomposition: geometry.cuh.
#pragma once

#include <cuda_bf16.h>
#include <math_constants.h>

// The launch's dynamic shared memory as `unsigned char name[]`, aligned (a macro so the CPU emulation in
// kernels-cu/emu can map it to one host buffer).
#define DYNAMIC_SMEM(name, align) extern __shared__ __align__(align) unsigned char name[]

// Every kernel is launchable with up to 1024 threads per block: cap registers accordingly (<= 64/thread).
#define KERNEL extern "C" __global__ void __launch_bounds__(1024)

#include "geometry.cuh"

// ------------------------------------------------------------------------------------------------
// Storage <-> f32.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// ------------------------------------------------------------------------------------------------
// Grid-stride helpers (64-bit: tensors may exceed 2^31 elements).
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ long long global_tid() {
    return (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() { return (long long)gridDim.x * (long long)blockDim.x; }

// ------------------------------------------------------------------------------------------------
// Warp reductions (butterfly: every lane ends with the full result).
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// ------------------------------------------------------------------------------------------------
// Block reductions for blockDim.x a multiple of 32 (the ABI uses powers of two in [32, 1024]).
// Every thread of the block must call them; every thread gets the result. Safe to call repeatedly
// (e.g. once per row in a loop): the leading __syncthreads keeps a new call from overwriting the
// scratch while a previous call is still reading it.
//   1. reduce within each warp
//   2. warp leaders publish to a 32-float shared scratch
//   3. every warp re-reduces the (<= 32) partials, in the same fixed order
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    // 1. warp
    v = warp_sum(v);
    // 2. publish
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    // 3. combine
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v) {
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    // 1. warp
    v = warp_max(v);
    // 2. publish
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    // 3. combine
    v = lane < nwarps ? scratch[lane] : -CUDART_INF_F;
    return warp_max(v);
}
