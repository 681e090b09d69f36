// geometry.cuh: the by-value geometry structs of the strided kernels (identical layout to their Rust
// #[repr(C)] twins) and the linear-index -> strided-offset decomposition. Plain C++ apart from the
// __device__ qualifiers, so the CPU emulation (kernels-cu/emu) includes it unchanged.
#pragma once

#define MAX_DIMS 6

// ------------------------------------------------------------------------------------------------
// Geometry (passed by value; identical layout to the Rust #[repr(C)] structs).
// `dims` are row-major output dims; strides are element strides into the input(s), 0 on broadcast dims.
// Entries past ndim are unused (dim 1 / stride 0).
// ------------------------------------------------------------------------------------------------
struct BcastGeo  { int ndim; long long dims[MAX_DIMS]; long long a_strides[MAX_DIMS]; long long b_strides[MAX_DIMS]; };
struct CopyGeo   { int ndim; long long dims[MAX_DIMS]; long long in_strides[MAX_DIMS]; };
struct ReduceGeo { int out_ndim; long long out_dims[MAX_DIMS]; long long out_strides[MAX_DIMS];
                   int red_ndim; long long red_dims[MAX_DIMS]; long long red_strides[MAX_DIMS]; };

// ------------------------------------------------------------------------------------------------
// Linear output index -> element offset into a strided input (row-major, last dim fastest).
// Fully unrolled over MAX_DIMS with constant indices, so the by-value geometry stays in the
// parameter space / registers (no local-memory copy).
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ long long strided_offset(long long i, int ndim, const long long* dims,
                                                    const long long* strides) {
    long long off = 0;
#pragma unroll
    for (int d = MAX_DIMS - 1; d >= 0; --d) {
        if (d < ndim) {
            const long long q = i / dims[d];
            off += (i - q * dims[d]) * strides[d];
            i = q;
        }
    }
    return off;
}

// Same decomposition, two inputs sharing the output dims (broadcast binary ops).
__device__ __forceinline__ void strided_offset2(long long i, int ndim, const long long* dims,
                                                const long long* a_strides, const long long* b_strides,
                                                long long& a_off, long long& b_off) {
    long long oa = 0, ob = 0;
#pragma unroll
    for (int d = MAX_DIMS - 1; d >= 0; --d) {
        if (d < ndim) {
            const long long q = i / dims[d];
            const long long c = i - q * dims[d];
            oa += c * a_strides[d];
            ob += c * b_strides[d];
            i = q;
        }
    }
    a_off = oa;
    b_off = ob;
}
