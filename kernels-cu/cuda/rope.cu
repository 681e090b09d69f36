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
        // 2. angle (precise powf / sincosf, no fast-math intrinsics)
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        if (bf16_freqs) inv_freq = __bfloat162float(__float2bfloat16_rn(inv_freq));  // HF after module.to(bf16)
        const float angle = (float)pos[t] * inv_freq * sign;
        float sn, cs;
        sincosf(angle, &sn, &cs);  // precise (full range reduction), same as sinf/cosf
        // 3. rotate the pair
        const float x1 = to_f32(x[base + i]), x2 = to_f32(x[base + i + half]);
        out[base + i] = from_f32<T>(x1 * cs - x2 * sn);
        out[base + i + half] = from_f32<T>(x2 * cs + x1 * sn);
    }
}

#define DEFINE_ROPE(SFX, T)                                                                                      \
    KERNEL rope_##SFX(T* out, const T* x, const int* pos, int tokens, int heads, int head_dim, float theta,      \
                      float sign, int bf16_freqs) {                                                              \
        rope_body<T>(out, x, pos, tokens, heads, head_dim, theta, sign, bf16_freqs);                             \
    }

DEFINE_ROPE(f32, float)
DEFINE_ROPE(bf16, __nv_bfloat16)
