// attention.cu: the small kernels around the fused attention (attention_mma.cu forward, attention_mma_bwd.cu
// backward, attention_hmix.cu head mixture): the backward's row dot D_i = do_i·o_i and the entropy
// normalisation Hnorm = H / ln(#keys) with its head mean. Layouts: o/dout [T, Hq, D] bf16 as rows of d,
// dvec / entropy [T, Hq], cu_seqlens [num_seqs + 1]. The WMMA attention that once lived here is in
// kernels-cu/dev/attention_wmma.cu.
#include "common.cuh"

typedef __nv_bfloat16 bf16;

// D_i = Σ_c do[i, c]·o[i, c] for every (token, head) row; one warp per row.
KERNEL attn_bwd_dot(float* dvec, const bf16* o, const bf16* dout, long long rows, int d) {
    const int warps_per_block = blockDim.x / 32, lane = threadIdx.x % 32;
    for (long long r = (long long)blockIdx.x * warps_per_block + threadIdx.x / 32; r < rows;
         r += (long long)gridDim.x * warps_per_block) {
        float acc = 0.0f;
        for (int c = lane; c < d; c += 32) acc += __bfloat162float(o[r * d + c]) * __bfloat162float(dout[r * d + c]);
        acc = warp_sum(acc);
        if (lane == 0) dvec[r] = acc;
    }
}

// ================================================================================================
// Normalised entropy: Hnorm = H / ln(pos + 1) per (token, head) (0 at pos 0) and its mean over heads.
// ================================================================================================
KERNEL attn_entropy_norm(float* norm, float* head_mean, const float* ent, const int* cu_seqlens, int num_seqs,
                         long long total, int hq) {
    for (long long t = global_tid(); t < total; t += grid_stride()) {
        // 1. the token's sequence (binary search over the offsets) and its position in it
        int lo = 0, hi = num_seqs;  // invariant: cu[lo] <= t < cu[hi]
        while (hi - lo > 1) {
            const int mid = (lo + hi) / 2;
            if (cu_seqlens[mid] <= t) lo = mid; else hi = mid;
        }
        const long long pos = t - cu_seqlens[lo];
        // 2. normalise each head, average
        const float inv = pos == 0 ? 0.0f : 1.0f / logf((float)(pos + 1));
        float acc = 0.0f;
        for (int h = 0; h < hq; ++h) {
            const float x = ent[t * hq + h] * inv;
            norm[t * hq + h] = x;
            acc += x;
        }
        head_mean[t] = acc / (float)hq;
    }
}
