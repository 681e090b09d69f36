// weights.cu: entropy-aware soft token weights (the dynamic soft reweighting of the seed paper, as entrl
// defines it; engine/src/ops/weights.rs documents the family).
//
// Per pool P (a contiguous segment of the packed tokens), over its valid tokens:
//   μ = mean(s), σ = std(s) (population),  z_t = (s_t − μ) / (σ + 1e-6)
//   w_t = floor + (1 − floor) · sigmoid(direction · z_t / temperature)        (0 for invalid tokens)
// direction > 0 favours high-score tokens (explorers), < 0 low-score tokens (anchors), 0 gives uniform
// weights (floor + (1 − floor)/2). One block per pool: 1. moments, 2. weights. Deterministic.
#include "common.cuh"

KERNEL soft_weights(float* w, const float* s, const float* valid, const int* cu_pools, int num_pools, float direction,
                    float inv_temperature, float floor_w) {
    for (int p = blockIdx.x; p < num_pools; p += gridDim.x) {
        const long long a = cu_pools[p], b = cu_pools[p + 1];
        // 1. masked count, mean and variance of the scores (two passes: no cancellation)
        float n = 0.0f, sum = 0.0f;
        for (long long i = a + threadIdx.x; i < b; i += blockDim.x) {
            if (valid[i] != 0.0f) {  // select, never multiply: an invalid token's score may be NaN/inf
                n += 1.0f;
                sum += s[i];
            }
        }
        n = block_sum(n);
        sum = block_sum(sum);
        const float mean = n > 0.0f ? sum / n : 0.0f;
        float sq = 0.0f;
        for (long long i = a + threadIdx.x; i < b; i += blockDim.x) {
            const float d = valid[i] != 0.0f ? s[i] - mean : 0.0f;
            sq += d * d;
        }
        sq = block_sum(sq);
        const float inv_std = 1.0f / (sqrtf(n > 0.0f ? sq / n : 0.0f) + 1e-6f);
        // 2. weights
        for (long long i = a + threadIdx.x; i < b; i += blockDim.x) {
            const float z = (s[i] - mean) * inv_std;
            const float sig = 1.0f / (1.0f + expf(-direction * z * inv_temperature));
            w[i] = valid[i] != 0.0f ? floor_w + (1.0f - floor_w) * sig : 0.0f;
        }
    }
}
