// mma.cuh: the sm_80+ warp-level primitives the register-resident kernels use (attention_mma.cu):
// cp.async 16-byte copies with zero fill, ldmatrix (plain and transposed) and the bf16 m16n8k16 tensor-core MMA.
//
// Fragment layouts of mma.sync.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with
// g = lane / 4 (group) and c = lane % 4 (thread in group):
//   A (16×16, row-major, 4 × b32 = 8 bf16): a[0] = (row g,   cols 2c, 2c+1)   a[1] = (row g+8, cols 2c, 2c+1)
//                                            a[2] = (row g,   cols 2c+8, +9)   a[3] = (row g+8, cols 2c+8, +9)
//   B (16×8, "col", 2 × b32):               b[0] = (rows 2c, 2c+1, col g)     b[1] = (rows 2c+8, 2c+9, col g)
//   C (16×8, f32 × 4):                      c[0], c[1] = (row g, cols 2c, 2c+1)   c[2], c[3] = (row g+8, same)
// The lower 16 bits of a packed b32 hold the element with the smaller column (A) / row (B) index.
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8×8 matrix i; register i of every lane receives
// matrix i's elements (row g, cols 2c, 2c+1) — or, with .trans, (rows 2c, 2c+1, col g).
#pragma once

#include <cuda_bf16.h>

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; `valid == false` writes 16 zero bytes (src is not read).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
// 4 bytes global -> shared, asynchronously (cached at all levels); `valid == false` writes 4 zero bytes.
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool valid) {
    const int bytes = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait until at most N committed groups are still in flight. The memory clobber keeps the compiler from
// moving shared-memory accesses across the wait even where no __syncthreads follows.
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// c += a · b (bf16 inputs, f32 accumulators).
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 -> one b32 of two bf16 (round to nearest even); `lo` goes to the lower 16 bits.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

// 2^x by the SFU (ex2.approx, relative error ~2^-22); 2^(-inf) = 0.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
