// rope.cu: rotary position embedding, rotate-half (GPT-NeoX / Llama / Qwen) layout
// (Su et al. 2021, RoFormer eq. 34).
//
// x is [tokens, heads, head_dim] contiguous, head_dim even, half = head_dim/2. For pair i in [0, half):
//   inv_freq_i = theta^(-2i/head_dim)        angle = pos[t] * inv_freq_i * sign
//   out[i]        = x[i] * cos(angle) - x[i+half] * sin(angle)
//   out[i+half]   = x[i+half] * cos(angle) + x[i] * sin(angle)
// sign = +1 forward; sign = -1 applies the inverse rotation R^T, i.e. the backward pass dx = R^T dy.
// One thread per (token, head, pair), grid-stride; out and x never alias.
#include "common.cuh"

// Pair i of a row at position pos: (x1, x2) = (x[i], x[i + half]) rotated by pos·inv_freq_i·sign (precise
// powf / sincosf, no fast-math intrinsics). Shared by rope_T and qk_norm_rope_T, so they rotate identically.
__device__ __forceinline__ void rope_rotate(float x1, float x2, int pos, int i, int head_dim, float theta, float sign,
                                            int bf16_freqs, float* y1, float* y2) {
    float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
    if (bf16_freqs) inv_freq = __bfloat162float(__float2bfloat16_rn(inv_freq));  // HF after module.to(bf16)
    const float angle = (float)pos * inv_freq * sign;
    float sn, cs;
    sincosf(angle, &sn, &cs);  // precise (full range reduction), same as sinf/cosf
    *y1 = x1 * cs - x2 * sn;
    *y2 = x2 * cs + x1 * sn;
}

template <typename T>
__device__ __forceinline__ void rope_body(T* out, const T* x, const int* pos, int tokens, int heads, int head_dim,
                                          float theta, float sign, int bf16_freqs) {
    const int half = head_dim / 2;
    const long long n = (long long)tokens * heads * half;
    for (long long k = global_tid(); k < n; k += grid_stride()) {
        // 1. (token*heads + head, pair)
        const long long th = k / half;
        const int i = (int)(k - th * half);
        const long long t = th / heads;
        const long long base = th * head_dim;
        // 2. rotate the pair
        float y1, y2;
        rope_rotate(to_f32(x[base + i]), to_f32(x[base + i + half]), pos[t], i, head_dim, theta, sign, bf16_freqs, &y1,
                    &y2);
        out[base + i] = from_f32<T>(y1);
        out[base + i + half] = from_f32<T>(y2);
    }
}

#define DEFINE_ROPE(SFX, T)                                                                                      \
    KERNEL rope_##SFX(T* out, const T* x, const int* pos, int tokens, int heads, int head_dim, float theta,      \
                      float sign, int bf16_freqs) {                                                              \
        rope_body<T>(out, x, pos, tokens, heads, head_dim, theta, sign, bf16_freqs);                             \
    }

DEFINE_ROPE(f32, float)
DEFINE_ROPE(bf16, __nv_bfloat16)

// ------------------------------------------------------------------------------------------------
// qk_norm_rope: Qwen3's per-head RMSNorm of q and k followed by RoPE, forward only (inference: prefill,
// decode, old log-probs), both tensors in one launch instead of four (norm q, rope q, norm k, rope k).
//   q [tokens, hq, d], k [tokens, hk, d], weights qw, kw [d]; d even, d <= kNormRopeMaxD.
//   y = x · (mean(x²) + eps)^(-1/2) · w, rounded to T (as rmsnorm_fwd stores it, with its summation order,
//   so the normed values are bitwise rmsnorm_fwd's), then rotated as rope_body.
// One warp per (token, head) row of q, then of k (row r < tokens·hq is q's), 8 rows per 256-thread block;
// the row is staged in shared memory (each warp its own slice, so only __syncwarp is needed).
// ------------------------------------------------------------------------------------------------
constexpr int kNormRopeMaxD = 512;
constexpr int kNormRopeWarps = 8;
constexpr int kRmsNormWarps = 8;  // warps of rmsnorm_fwd's launch (256 threads, engine/src/cuda/kernels.rs)

template <typename T>
__device__ __forceinline__ void qk_norm_rope_body(T* q_out, T* k_out, const T* q, const T* k, const T* qw,
                                                  const T* kw, const int* pos, int tokens, int hq, int hk, int d,
                                                  float eps, float theta, int bf16_freqs) {
    __shared__ float rows_buf[kNormRopeWarps][kNormRopeMaxD];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long rows_q = (long long)tokens * hq, rows = rows_q + (long long)tokens * hk;
    const long long r = (long long)blockIdx.x * kNormRopeWarps + warp;
    if (r >= rows) return;  // warp-uniform; no block barrier follows
    // 1. which tensor, row and token
    const bool is_q = r < rows_q;
    const long long rr = is_q ? r : r - rows_q;
    const long long t = rr / (is_q ? hq : hk);
    const T* x = (is_q ? q : k) + rr * d;
    T* y = (is_q ? q_out : k_out) + rr * d;
    const T* w = is_q ? qw : kw;
    float* s = rows_buf[warp];
    // 2. sum of squares in rmsnorm_fwd's order, so that rs is bitwise the unfused one: there, with 256
    //    threads, thread 32j + l sums columns 32j + l + 256m (m ascending), warp j butterflies its lanes, and
    //    lanes 0..7 butterfly the 8 warp sums. Here lane l plays lane l of each of those 8 warps in turn.
    //    Then the inverse RMS (precise sqrt + divide, as rmsnorm_fwd).
    for (int c = lane; c < d; c += 32) s[c] = to_f32(x[c]);  // each lane reads back only its own columns
    float warp_sums = 0.0f;
#pragma unroll
    for (int j = 0; j < kRmsNormWarps; ++j) {
        float ssj = 0.0f;
        for (int c = 32 * j + lane; c < d; c += 32 * kRmsNormWarps) {
            const float v = s[c];
            ssj += v * v;
        }
        const float pj = warp_sum(ssj);
        if (lane == j) warp_sums = pj;
    }
    const float ss = warp_sum(warp_sums);
    const float rs = 1.0f / sqrtf(ss / (float)d + eps);
    // 3. normalize and scale, rounded to the storage type
    for (int c = lane; c < d; c += 32) s[c] = to_f32(from_f32<T>(s[c] * rs * to_f32(w[c])));
    __syncwarp();
    // 4. rotate the pairs (i, i + half), as rope_body does
    const int half = d / 2;
    for (int i = lane; i < half; i += 32) {
        float y1, y2;
        rope_rotate(s[i], s[i + half], pos[t], i, d, theta, 1.0f, bf16_freqs, &y1, &y2);
        y[i] = from_f32<T>(y1);
        y[i + half] = from_f32<T>(y2);
    }
}

#define DEFINE_QK_NORM_ROPE(SFX, T)                                                                              \
    KERNEL qk_norm_rope_##SFX(T* q_out, T* k_out, const T* q, const T* k, const T* qw, const T* kw,              \
                              const int* pos, int tokens, int hq, int hk, int d, float eps, float theta,         \
                              int bf16_freqs) {                                                                  \
        qk_norm_rope_body<T>(q_out, k_out, q, k, qw, kw, pos, tokens, hq, hk, d, eps, theta, bf16_freqs);        \
    }

DEFINE_QK_NORM_ROPE(f32, float)
DEFINE_QK_NORM_ROPE(bf16, __nv_bfloat16)
