// sample.cu: next-token sampling on the device for the decode loop — temperature, top-k, top-p and the
// chosen token's log-prob — one CTA per sampled row, so only (token id, log-prob) per row cross to the host
// instead of rows × vocab logits. The same rule as the host sampler (model-qwen3 sampling::sample) and as
// the f64 reference (engine/src/cpu/sampling.rs `sample_row`).
//
// Per output i, row r = rows[i] of the logits, z = logits[r]·(1/T) in f32, p_j = e^(z_j − m):
//   0. u_i = sample_uniform(seed_i, position_i): splitmix64(splitmix64(seed) + position·γ) (splitmix64 adds γ),
//      γ = 0x9E3779B97F4A7C15, top 53 bits → [0, 1). A pure function of the request's seed and the response
//      position, so a response never depends on its batch neighbours or on being preempted and recomputed.
//   1. m = max z, s = Σ p_j, lse = m + ln s                          (block reductions, fixed order)
//   2. greedy: the first index attaining m; log-prob under T = 1. Done.
//   3. truncation (only when 0 < top_k < vocab or top_p < 1). The candidates, in the host's order, are the
//      indices by z descending, ties by smaller id; the kept set is the shortest prefix of that order that
//      either has k_eff = min(top_k, vocab) members or holds mass ≥ top_p·s. Any prefix of the order is
//          {j : key_j > τ} ∪ {the first c ids with key_j = τ}
//      for key = the order-preserving u32 of z's bits (−0 < +0, as f64::total_cmp) and a value τ of the row:
//      3a. τ = the largest u32 with Q(τ): count(key ≥ τ) ≥ k_eff  or  Σ_{key ≥ τ} p ≥ top_p·s.
//          Q is monotone (true at 0), so τ is built bit by bit from the top, 32 passes over the row, each a
//          count and (top-p only) a mass reduction. τ is the key of the last kept candidate.
//      3b. above = count(key > τ), A = Σ_{key > τ} p, ties = count(key = τ), p_τ = e^(z(τ) − m);
//          c = min(k_eff − above, ties, ⌈(top_p·s − A)/p_τ⌉ when top-p), at least 1.
//      3c. tie_end = 1 + the id of the c-th tie in id order (per-thread tie counts, an exclusive prefix over
//          the threads' contiguous chunks, then the one owning chunk walks its ids); vocab when c = ties.
//      keep_j = key_j > τ || (key_j = τ && j < tie_end). Without truncation every index is kept.
//   4. the pick: the inverse CDF over the kept weights w_j = keep_j·p_j in id order, exactly
//      cpu::sampling::pick_by_cdf: the first j with w_j > 0 and Σ_{l ≤ j} w_l ≥ u·Σ w (u·Σ w in f64). Each
//      thread owns a contiguous chunk; the chunk whose prefix interval holds the target (the first chunk
//      with mass when the target is 0) is walked by its thread. If rounding puts the target past the
//      accumulated mass (of the row, or of the walked chunk), the last kept index with w > 0 is taken, as the
//      CPU rule falls back to its last positive weight.
//   5. tokens[i] = j, logps[i] = z_j − lse (the full temperature-scaled distribution, not the truncated one).
//      A row holding NaN or +inf gives a non-finite lse and so a non-finite log-prob (the caller's error),
//      and always an in-bounds token.
// Cost: passes over the row — 2 (max, sum), 32 for τ when truncating (one more for ties), 1 for the pick.
// Launch: grid (outputs), 256 threads, dynamic smem (2·256 + 2)·4 bytes: chunk sums, chunk tie counts, a
// found flag and tie_end. Dynamic shared memory only, so the file also runs under kernels-cu/emu.
#include "common.cuh"

namespace {

constexpr int kSampleThreads = 256;
constexpr unsigned long long kGolden = 0x9E3779B97F4A7C15ull;

// splitmix64 (engine/src/cpu/random.rs; randn in elementwise.cu): add γ, then mix.
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
    z += kGolden;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// engine/src/cpu/sampling.rs `sample_uniform`: bit-identical.
__device__ __forceinline__ double sample_uniform(unsigned long long seed, unsigned long long position) {
    const unsigned long long h = splitmix64(splitmix64(seed) + position * kGolden);
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

// Order-preserving map of a float's bits: a < b (total order, −0 < +0) ⇔ key(a) < key(b).
__device__ __forceinline__ unsigned order_key(float z) {
    const unsigned b = __float_as_uint(z);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

template <typename T> __device__ __forceinline__ float scaled(const T* z, int i, float inv_t) {
    return to_f32(z[i]) * inv_t;
}

}  // namespace

template <typename T>
__device__ __forceinline__ void sample_row(int* __restrict__ tokens, float* __restrict__ logps,
                                           const T* __restrict__ logits, const int* __restrict__ rows,
                                           const unsigned* __restrict__ keys, int vocab, float inv_t, int greedy,
                                           int top_k, float top_p) {
    DYNAMIC_SMEM(smem, 16);  // chunk sums [256] | chunk tie counts [256] | found flag | tie_end
    float* chunk_sum = reinterpret_cast<float*>(smem);
    int* chunk_ties = reinterpret_cast<int*>(chunk_sum + kSampleThreads);
    int* found = chunk_ties + kSampleThreads;
    int* tie_end_s = found + 1;
    const int out = blockIdx.x, tid = threadIdx.x;
    const T* z = logits + (long long)rows[out] * vocab;
    const int chunk = (vocab + kSampleThreads - 1) / kSampleThreads;
    const int lo = min(vocab, tid * chunk), hi = min(vocab, lo + chunk);

    // 1. max, normaliser, log-sum-exp
    float mx = -CUDART_INF_F;
    for (int i = lo; i < hi; ++i) mx = fmaxf(mx, scaled(z, i, inv_t));
    const float m = block_max(mx);
    float s = 0.0f;
    for (int i = lo; i < hi; ++i) s += expf(scaled(z, i, inv_t) - m);
    const float total = block_sum(s);
    const float lse = m + logf(total);

    // 2. greedy
    if (greedy) {
        int first = vocab, last_pos = -1;
        for (int i = lo; i < hi; ++i) {
            const float zi = scaled(z, i, inv_t);
            if (zi == m && first == vocab) first = i;
            if (expf(zi - m) > 0.0f) last_pos = i;
        }
        int best = (int)(-block_max(-(float)first));  // indices < 2^24 are exact in f32
        const int row_last = (int)block_max((float)last_pos);
        if (best >= vocab) best = row_last >= 0 ? row_last : vocab - 1;  // an all-NaN row: stay in bounds
        if (tid == 0) {
            tokens[out] = best;
            logps[out] = scaled(z, best, inv_t) - lse;
        }
        return;
    }

    // 3. truncation threshold
    const int k_eff = (top_k > 0 && top_k < vocab) ? top_k : vocab;
    const bool by_p = top_p < 1.0f;
    const float p_target = top_p * total;
    unsigned tau = 0u;
    int tie_end = vocab;
    const bool truncate = k_eff < vocab || by_p;
    if (truncate) {
        // 3a. the largest τ with Q(τ), bit by bit
        for (int bit = 31; bit >= 0; --bit) {
            const unsigned cand = tau | (1u << bit);
            int cnt = 0;
            float mass = 0.0f;
            for (int i = lo; i < hi; ++i) {
                const float zi = scaled(z, i, inv_t);
                if (order_key(zi) >= cand) {
                    ++cnt;
                    if (by_p) mass += expf(zi - m);
                }
            }
            const float cnt_all = block_sum((float)cnt);  // counts < 2^24: exact
            const float mass_all = by_p ? block_sum(mass) : 0.0f;
            if (cnt_all >= (float)k_eff || (by_p && mass_all >= p_target)) tau = cand;
        }
        // 3b. the candidates above τ and the ties at τ
        int above = 0, ties = 0;
        float mass_above = 0.0f, z_tau = -CUDART_INF_F;
        for (int i = lo; i < hi; ++i) {
            const float zi = scaled(z, i, inv_t);
            const unsigned key = order_key(zi);
            if (key > tau) {
                ++above;
                mass_above += expf(zi - m);
            } else if (key == tau) {
                ++ties;
                z_tau = zi;
            }
        }
        const int above_all = (int)block_sum((float)above);
        const int ties_all = (int)block_sum((float)ties);
        const float mass_above_all = block_sum(mass_above);
        const float p_tau = expf(block_max(z_tau) - m);
        int c = min(k_eff - above_all, ties_all);
        if (by_p && p_tau > 0.0f) {
            const float need = ceilf((p_target - mass_above_all) / p_tau);
            if (need < (float)c) c = (int)need;
        }
        c = max(c, 1);
        // 3c. tie_end: one past the id of the c-th tie
        chunk_ties[tid] = ties;
        if (tid == 0) *tie_end_s = vocab;
        __syncthreads();
        if (c < ties_all) {
            int before = 0;  // ties in the chunks before this thread's
            for (int t = 0; t < tid; ++t) before += chunk_ties[t];
            if (before < c && c <= before + ties) {
                int seen = before;
                for (int i = lo; i < hi; ++i)
                    if (order_key(scaled(z, i, inv_t)) == tau && ++seen == c) {
                        *tie_end_s = i + 1;
                        break;
                    }
            }
        }
        __syncthreads();
        tie_end = *tie_end_s;
    }

    // 4. the inverse CDF over the kept weights, in id order
    float w_sum = 0.0f;
    int last_kept = -1;  // last index of the chunk with a positive kept weight
    for (int i = lo; i < hi; ++i) {
        const float zi = scaled(z, i, inv_t);
        const unsigned key = order_key(zi);
        const bool keep = !truncate || key > tau || (key == tau && i < tie_end);
        const float w = keep ? expf(zi - m) : 0.0f;
        w_sum += w;
        if (w > 0.0f) last_kept = i;
    }
    const float kept_total = block_sum(w_sum);
    const int row_last = (int)block_max((float)last_kept);
    chunk_sum[tid] = w_sum;
    if (tid == 0) *found = 0;
    __syncthreads();
    float prefix = 0.0f;  // exclusive prefix of the chunk sums, summed in index order
    for (int t = 0; t < tid; ++t) prefix += chunk_sum[t];
    const unsigned* key = keys + 4ll * out;  // seed lo, seed hi, position lo, position hi
    const unsigned long long seed = (unsigned long long)key[0] | ((unsigned long long)key[1] << 32);
    const unsigned long long position = (unsigned long long)key[2] | ((unsigned long long)key[3] << 32);
    const double target = sample_uniform(seed, position) * (double)kept_total;
    const bool owner =
        w_sum > 0.0f && ((double)prefix < target || prefix == 0.0f) && target <= (double)prefix + (double)w_sum;
    if (owner) {
        int pick = last_kept;
        float run = prefix;
        for (int i = lo; i < hi; ++i) {
            const float zi = scaled(z, i, inv_t);
            const unsigned k = order_key(zi);
            const bool keep = !truncate || k > tau || (k == tau && i < tie_end);
            const float w = keep ? expf(zi - m) : 0.0f;
            if (w <= 0.0f) continue;
            run += w;
            if ((double)run >= target) {
                pick = i;
                break;
            }
        }
        if (pick >= 0) {
            tokens[out] = pick;
            logps[out] = scaled(z, pick, inv_t) - lse;
            *found = 1;
        }
    }
    __syncthreads();
    // fallback: the target lies past the accumulated mass (or the row has none)
    if (tid == 0 && *found == 0) {
        const int pick = row_last >= 0 ? row_last : vocab - 1;
        tokens[out] = pick;
        logps[out] = scaled(z, pick, inv_t) - lse;
    }
}

#define DEFINE_SAMPLE(SUFFIX, T)                                                                               \
    extern "C" __global__ void __launch_bounds__(kSampleThreads)                                              \
        sample_rows_##SUFFIX(int* tokens, float* logps, const T* logits, const int* rows, const unsigned* keys, \
                             int vocab, float inv_t, int greedy, int top_k, float top_p) {                     \
        sample_row<T>(tokens, logps, logits, rows, keys, vocab, inv_t, greedy, top_k, top_p);                  \
    }
DEFINE_SAMPLE(f32, float)
DEFINE_SAMPLE(bf16, __nv_bfloat16)
