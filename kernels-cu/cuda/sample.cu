// sample.cu: next-token sampling on the device for the decode loop, one CTA per sampled row, so only the
// chosen token ids and their log-probs cross to the host instead of rows × vocab logits.
//
// Per output i, row r = rows[i] of the logits, z = logits[r]·(1/T):
//   1. m = max z, s = Σ e^(z−m), lse = m + ln s                    (block reductions, fixed order)
//   2. greedy: the first index attaining m.
//      Otherwise the inverse CDF in index order, exactly the CPU sampler's rule (model-qwen3 generate::sample
//      with no top-k/top-p): the first i with Σ_{j<=i} e^(z_j−m) >= u_i·s, u_i ∈ [0, 1) drawn on the host
//      from the request's own generator. Each thread owns a contiguous chunk of the row; the chunk whose
//      prefix interval holds the target is walked by its thread. If rounding puts the target past the last
//      mass (or inside a chunk the walk overshoots), the last index with nonzero probability (of the row,
//      or of the chunk) is taken, as the CPU sampler falls back to its last candidate.
//   3. tokens[i] = the index, logps[i] = z − lse there.
// Dynamic shared memory only (chunk sums + a flag), so the file also runs under kernels-cu/emu.
#include "common.cuh"

namespace {

constexpr int kSampleThreads = 256;

}  // namespace

template <typename T>
__device__ __forceinline__ void sample_row(int* __restrict__ tokens, float* __restrict__ logps,
                                           const T* __restrict__ logits, const int* __restrict__ rows,
                                           const float* __restrict__ u, int vocab, float inv_t, int greedy) {
    DYNAMIC_SMEM(smem, 16);  // chunk sums [kSampleThreads], then one int flag
    float* chunk_sum = reinterpret_cast<float*>(smem);
    int* found = reinterpret_cast<int*>(chunk_sum + kSampleThreads);
    const int out = blockIdx.x, tid = threadIdx.x;
    const T* z = logits + (long long)rows[out] * vocab;
    const int chunk = (vocab + kSampleThreads - 1) / kSampleThreads;
    const int lo = min(vocab, tid * chunk), hi = min(vocab, lo + chunk);

    // 1. max, normaliser, log-sum-exp
    float mx = -CUDART_INF_F;
    for (int i = lo; i < hi; ++i) mx = fmaxf(mx, to_f32(z[i]) * inv_t);
    const float m = block_max(mx);
    float s = 0.0f;
    int last_pos = -1;  // last index of the chunk with nonzero probability
    for (int i = lo; i < hi; ++i) {
        const float p = expf(to_f32(z[i]) * inv_t - m);
        s += p;
        if (p > 0.0f) last_pos = i;
    }
    const float total = block_sum(s);
    const float lse = m + logf(total);
    const int row_last = (int)block_max((float)last_pos);  // indices < 2^24 are exact in f32

    // 2. the index
    if (greedy) {
        int first = vocab;
        for (int i = lo; i < hi && first == vocab; ++i)
            if (to_f32(z[i]) * inv_t == m) first = i;
        int best = (int)(-block_max(-(float)first));
        if (best >= vocab) best = row_last >= 0 ? row_last : vocab - 1;  // an all-NaN row: stay in bounds
        if (tid == 0) {
            tokens[out] = best;
            logps[out] = to_f32(z[best]) * inv_t - lse;
        }
        return;
    }
    chunk_sum[tid] = s;
    if (tid == 0) *found = 0;
    __syncthreads();
    float prefix = 0.0f;  // exclusive prefix of the chunk sums, summed in index order
    for (int t = 0; t < tid; ++t) prefix += chunk_sum[t];
    const float target = u[out] * total;
    const bool owner = (tid == 0 ? target >= 0.0f : target > prefix) && target <= prefix + s && hi > lo;
    if (owner) {
        int pick = last_pos;
        float run = prefix;
        for (int i = lo; i < hi; ++i) {
            run += expf(to_f32(z[i]) * inv_t - m);
            if (run >= target) {
                pick = i;
                break;
            }
        }
        if (pick >= 0) {
            tokens[out] = pick;
            logps[out] = to_f32(z[pick]) * inv_t - lse;
            *found = 1;
        }
    }
    __syncthreads();
    // 3. fallback: the target lies past the accumulated mass
    if (tid == 0 && *found == 0) {
        const int pick = row_last >= 0 ? row_last : vocab - 1;
        tokens[out] = pick;
        logps[out] = to_f32(z[pick]) * inv_t - lse;
    }
}

#define DEFINE_SAMPLE(SUFFIX, T)                                                                               \
    extern "C" __global__ void __launch_bounds__(kSampleThreads)                                              \
        sample_rows_##SUFFIX(int* tokens, float* logps, const T* logits, const int* rows, const float* u,      \
                             int vocab, float inv_t, int greedy) {                                             \
        sample_row<T>(tokens, logps, logits, rows, u, vocab, inv_t, greedy);                                   \
    }
DEFINE_SAMPLE(f32, float)
DEFINE_SAMPLE(bf16, __nv_bfloat16)
