// hopper_desc.cuh: the shared-memory matrix descriptor of wgmma (PTX ISA §9.7.15.5.1, "Matrix Descriptor
// Format") and the TMA descriptor's storage, plain C++ shared by the kernels (hopper.cuh) and the CPU model
// (emu/hopper.cuh), which decodes the same bits.
//   bits  0–13  start address >> 4 (shared-memory offset)
//   bits 16–29  leading-dimension byte offset >> 4
//   bits 32–45  stride-dimension byte offset >> 4
//   bits 49–51  base offset (0: every tile here starts 1024-byte aligned)
//   bits 62–63  layout: 1 = 128-byte swizzle (the only one used here)
// With the 128-byte swizzle, in 16-byte units (T = 8 bf16), the operand's canonical layouts are (CUTLASS's
// make_gmma_desc):
//   K-major  ((8, m), (T, 2)) : ((8T, SBO), (1, T))       rows of 128 bytes, 8-row groups SBO apart, a k16
//                                                          slice is 32 contiguous bytes (LBO unused)
//   MN-major ((T, 8, m), (8, k)) : ((1, T, LBO), (8T, SBO))  64 MN elements per 128-byte row, 64-element
//                                                          blocks LBO apart, 8 K rows per 1024-byte atom,
//                                                          atoms SBO apart
// and the byte address so formed is then swizzled like the TMA's: o ^ (((o >> 7) & 7) << 4).
#pragma once

constexpr unsigned long long kDescSwizzle128 = 1ull;

__device__ __forceinline__ unsigned long long gmma_desc(unsigned smem_offset, unsigned lbo_bytes, unsigned sbo_bytes) {
    return (unsigned long long)((smem_offset & 0x3ffffu) >> 4) | ((unsigned long long)((lbo_bytes >> 4) & 0x3fffu) << 16) |
           ((unsigned long long)((sbo_bytes >> 4) & 0x3fffu) << 32) | (kDescSwizzle128 << 62);
}

// A CUtensorMap's 128 bytes (opaque; filled by cuTensorMapEncodeTiled on the host, emu_encode_tma on the CPU).
struct __align__(64) TmaDesc {
    unsigned long long opaque[16];
};
