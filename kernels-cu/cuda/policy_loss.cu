// policy_loss.cu: the row kernel of the fused LM-head + DAPO token loss. The host loops over token chunks:
// cuBLAS writes the chunk's f32 logits [rows, V], this kernel turns each row into the token's log-prob,
// predictive entropy, weighted DAPO loss and (when asked) the logit gradient in place of the logits, and
// cuBLAS then forms dX = dZ·W and dW += dZᵀ·X. The [T, V] logits are never materialised for all tokens.
//
// Per row t (z = logits / T_temp, s_j = z_j):
//   m = max_j s_j, l = Σ e^(s_j − m), t' = Σ e^(s_j − m)(s_j − m)      lse = m + ln l, H = ln l − t'/l
//   logp = s_y − lse;  δ = clamp(logp − old, ±20), r = e^δ
//   ℓ = max(−A r, −A clip(r, 1−ε_low, 1+ε_high)); A < 0: ℓ = min(ℓ, −A c)     (verl compute_policy_loss_vanilla)
//   c_t = mask·w / Z;  g = c_t·∂ℓ/∂logp (−A r on the unclipped branch, else 0; 0 outside the ±20 clamp)
//   dZ_j = g (onehot_y(j) − e^(s_j − lse)) / T_temp
// Outputs per row: token_loss = c_t ℓ, logp, entropy (optional), flags [4] = (clipped, dual-clipped, −δ, 1),
// and (optional, gnorm ≠ null) the token's gradient-signal magnitude: the L2 norm of its logit-gradient row
// before the c_t = mask·w / Z factor, ‖∂ℓ/∂logits‖ = |∂ℓ/∂logp| · sqrt((1 − p_y)² + Σ_{j≠y} p_j²) / T_temp
// (the row dZ holds is c_t times it). Σ_{j≠y} p_j² comes from a block reduction in step 2, so it is formed
// whether or not dZ is written; 1 − p_y = −expm1(logp) keeps it exact when p_y ≈ 1.
#include "common.cuh"

template <typename OUT>
__device__ void dapo_rows_body(const float* __restrict__ logits, OUT* __restrict__ dlogits, float* __restrict__ token_loss,
                               float* __restrict__ logp_out, float* __restrict__ ent_out, float* __restrict__ gnorm_out,
                               float* __restrict__ flags,
                               const int* __restrict__ targets, const float* __restrict__ old_logp,
                               const float* __restrict__ adv, const float* __restrict__ mask,
                               const float* __restrict__ weights, const float* __restrict__ z_norm, int rows, int vocab,
                               float temperature, float eps_low, float eps_high, float clip_c, int want_entropy,
                               int want_grad, int* err) {
    __shared__ float s_g, s_lse;
    const float inv_t = 1.0f / temperature;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* z = logits + (long long)r * vocab;
        // 1. row max of the tempered logits
        float m = -CUDART_INF_F;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, z[j] * inv_t);
        m = block_max(m);
        // 2. Σ e^(s − m), the entropy sum Σ e^(s − m)(s − m) and (for gnorm) Σ_{j≠y} e^(2(s − m))
        const int yr = targets[r];
        float l = 0.0f, t = 0.0f, q = 0.0f;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
            const float d = z[j] * inv_t - m;
            const float e = expf(d);
            l += e;
            t += e * d;
            q += j == yr ? 0.0f : e * e;
        }
        l = block_sum(l);
        if (want_entropy) t = block_sum(t);
        if (gnorm_out) q = block_sum(q);
        // 3. one thread: log-prob, the DAPO term, its weight and gradient
        if (threadIdx.x == 0) {
            const float lse = m + logf(l);
            const int y = yr;
            float g = 0.0f;
            if (y < 0 || y >= vocab) {
                atomicExch(err, 1);
                token_loss[r] = 0.0f;
                logp_out[r] = 0.0f;
                flags[4 * r] = flags[4 * r + 1] = flags[4 * r + 2] = 0.0f;
                if (gnorm_out) gnorm_out[r] = 0.0f;
            } else {
                const float logp = z[y] * inv_t - lse;
                const float a = adv[r];
                const float raw = logp - old_logp[r];
                const float delta = fminf(fmaxf(raw, -20.0f), 20.0f);
                const float ratio = expf(delta);
                const float l1 = -a * ratio;
                const float l2 = -a * fminf(fmaxf(ratio, 1.0f - eps_low), 1.0f + eps_high);
                const bool clipped = l2 > l1;
                float loss = fmaxf(l1, l2);
                float dlogp = clipped ? 0.0f : -a * ratio;
                bool lower = false;
                if (a < 0.0f && -a * clip_c < loss) {
                    loss = -a * clip_c;
                    dlogp = 0.0f;
                    lower = true;
                }
                if (raw != delta) dlogp = 0.0f;
                const float zn = z_norm[0];
                const float c = zn > 0.0f ? mask[r] * weights[r] / zn : 0.0f;
                token_loss[r] = c * loss;
                logp_out[r] = logp;
                flags[4 * r] = clipped ? 1.0f : 0.0f;
                flags[4 * r + 1] = lower ? 1.0f : 0.0f;
                flags[4 * r + 2] = -delta;
                g = c * dlogp;
                if (gnorm_out) {
                    const float miss = -expm1f(logp), other = q / (l * l);
                    gnorm_out[r] = fabsf(dlogp) * sqrtf(miss * miss + other) * inv_t;
                }
            }
            flags[4 * r + 3] = 1.0f;
            if (want_entropy) ent_out[r] = logf(l) - t / l;
            s_g = g;
            s_lse = lse;
        }
        __syncthreads();
        // 4. dZ in place of the logits' role: g (onehot − p) / T
        if (want_grad) {
            const float g = s_g, lse = s_lse;
            const int y = yr;
            OUT* dz = dlogits + (long long)r * vocab;
            for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
                const float p = g == 0.0f ? 0.0f : expf(z[j] * inv_t - lse);
                dz[j] = from_f32<OUT>(g * ((j == y ? 1.0f : 0.0f) - p) * inv_t);
            }
        }
        __syncthreads();  // s_g / s_lse are rewritten by the next row
    }
}

#define DEFINE_DAPO_ROWS(SFX, OUT)                                                                              \
    KERNEL dapo_rows_##SFX(const float* logits, OUT* dlogits, float* token_loss, float* logp, float* ent,       \
                           float* gnorm, float* flags, const int* targets, const float* old_logp,               \
                           const float* adv, const float* mask, const float* weights, const float* z_norm,      \
                           int rows, int vocab, float temperature, float eps_low, float eps_high, float clip_c, \
                           int want_entropy, int want_grad, int* err) {                                         \
        dapo_rows_body<OUT>(logits, dlogits, token_loss, logp, ent, gnorm, flags, targets, old_logp, adv, mask, \
                            weights, z_norm, rows, vocab, temperature, eps_low, eps_high, clip_c, want_entropy, \
                            want_grad, err);                                                                    \
    }
DEFINE_DAPO_ROWS(f32, float)
DEFINE_DAPO_ROWS(bf16, __nv_bfloat16)
