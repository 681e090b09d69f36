// dev/attention_wmma.cu: the WMMA version of the fused causal varlen GQA attention with entropy, kept in the
// dev harness (not shipped): the engine ships attention_mma.cu / attention_mma_bwd.cu, which beat it on the
// H100 (232 vs 24–44 TF/s forward + entropy at S = 8192, BENCHMARKS.md). Same math as the shipped kernels,
// the entropy as the only row statistic; its emulator check is dev/attention_wmma_check.cpp.
// Fused causal attention over packed (varlen) sequences with GQA, bf16 in / f32 accumulate,
// that also emits the per-(token, head) softmax entropy in the same pass. The S×S score matrix is never
// written to global memory: each CTA keeps one 64×64 score tile in shared memory at a time.
//
// Forward (FlashAttention-2 online softmax, Dao 2023, Alg. 1) per query row i, over key tiles:
//   m' = max(m, max_j s_j)          α = e^(m − m')            p̃_j = e^(s_j − m')
//   l  ← α·l + Σ p̃_j                O ← α·O + Σ p̃_j v_j
//   t' ← α·(t' + (m − m')·l_old) + Σ p̃_j (s_j − m')     (cancellation-safe entropy state, kernels.md §3)
// end: O /= l,  LSE = m + ln l,  H = ln l − t'/l.  s_j = scale·q·k_j; masked lanes give p̃ = 0 and add 0
// to t' (never 0·(−inf)); a row whose keys are all masked so far uses 0 as its reference max.
//
// Backward (FlashAttention-2, Alg. 2): D_i = do_i·o_i; per key tile, for every query tile below the
// diagonal: P = e^(S − LSE), dV += Pᵀ dO, dP = dO Vᵀ, dS = P∘(dP − D), dK += scale·dSᵀ Q, dQ += scale·dS K
// (dQ by f32 atomicAdd). Entropy is a measurement and carries no gradient.
//
// Tiles: 64 query rows × 64 keys per step, 4 warps (each owns 16 query rows in the forward, 16 key rows
// of dK/dV in the backward), tensor cores through WMMA 16×16×16 bf16 fragments staged in shared memory.
// The main loops are isolated in `fwd_tile` / `bwd_tile` so a Hopper (wgmma + TMA) version can replace
// them without touching the masking, the entropy recurrence or the epilogues.
//
// Layouts: q/o/dq [T, Hq, D], k/v/dk/dv [T, Hkv, D], lse/entropy/dvec [T, Hq] (T = packed tokens),
// cu_seqlens [num_seqs + 1]. Grid: forward (ceil(max_len/64), Hq, num_seqs), backward
// (ceil(max_len/64), Hkv, num_seqs); 128 threads; dynamic shared memory from fwd_smem_bytes / bwd_smem_bytes
// (the launcher computes the same formulas).
#include "common.cuh"
#include <mma.h>

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

constexpr int kBlockM = 64;   // query rows per tile
constexpr int kBlockN = 64;   // keys per tile
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int LDS = kBlockN + 4;   // f32 score row stride (floats)
constexpr int LDP = kBlockN + 8;   // bf16 probability row stride (elements)

template <int D> struct Layout {
    static constexpr int LDQ = D + 8;  // bf16 row stride of Q/K/V/dO tiles (16-byte padding vs bank conflicts)
    static constexpr int LDO = D + 4;  // f32 row stride of O / dK / dV / dQ accumulators
    static constexpr int tile_bf16 = kBlockM * LDQ * 2;   // bytes
    static constexpr int scores_f32 = kBlockM * LDS * 4;
    static constexpr int probs_bf16 = kBlockM * LDP * 2;
    static constexpr int acc_f32 = kBlockM * LDO * 4;
    // Forward: sQ sK sV | sS | sP | sO | alpha[64]
    static constexpr int fwd_bytes = 3 * tile_bf16 + scores_f32 + probs_bf16 + acc_f32 + kBlockM * 4;
    // Backward: sK sV sQ sdO | sS sdP (reused as sdQ) | sP sdS | sdK sdV | lse[64] dvec[64]
    static constexpr int bwd_bytes = 4 * tile_bf16 + 2 * scores_f32 + 2 * probs_bf16 + 2 * acc_f32 + 2 * kBlockM * 4;
    static_assert(2 * scores_f32 >= acc_f32, "sdQ aliases the two score buffers");
};

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> FragAT;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> FragB;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> FragBT;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragC;

// Copy a [64, D] tile of rows row0.. of a [T, H, D] tensor (head h) into shared memory with row stride
// LDQ, 16 bytes per thread per step; rows at or beyond `rows` are zero-filled.
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, long long row0, int rows, int heads, int h) {
    constexpr int kVecPerRow = D * 2 / 16;
    for (int i = threadIdx.x; i < kBlockM * kVecPerRow; i += kThreads) {
        const int r = i / kVecPerRow, c = (i % kVecPerRow) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (r < rows) val = *reinterpret_cast<const uint4*>(src + ((row0 + r) * heads + h) * (long long)D + c);
        *reinterpret_cast<uint4*>(dst + r * Layout<D>::LDQ + c) = val;
    }
}

// C[16 rows of warp, 64 cols] = A[16, D] · B, with A row-major in smem and B given by `b_at(kk, nt)`.
// Used for S = Q Kᵀ (B = Kᵀ: col-major view of the K tile) and dP = dO Vᵀ.
template <int D>
__device__ __forceinline__ void gemm_rows_x_keys(float* c, const bf16* a, const bf16* kt) {
    constexpr int LDQ = Layout<D>::LDQ;
#pragma unroll
    for (int nt = 0; nt < kBlockN / 16; ++nt) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            FragA fa;
            FragBT fb;
            wmma::load_matrix_sync(fa, a + kk * 16, LDQ);
            wmma::load_matrix_sync(fb, kt + nt * 16 * LDQ + kk * 16, LDQ);  // B[d][key] = K[key][d]
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(c + nt * 16, acc, LDS, wmma::mem_row_major);
    }
}

// ================================================================================================
// Forward
// ================================================================================================
template <int D>
__device__ void attn_fwd_body(bf16* __restrict__ o, float* __restrict__ lse, float* __restrict__ ent,
                              const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                              const int* __restrict__ cu_seqlens, int hq, int hkv, float scale, int want_entropy) {
    using L = Layout<D>;
    DYNAMIC_SMEM(smem, 128);
    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sK = sQ + kBlockM * L::LDQ;
    bf16* sV = sK + kBlockN * L::LDQ;
    float* sS = reinterpret_cast<float*>(sV + kBlockN * L::LDQ);
    bf16* sP = reinterpret_cast<bf16*>(sS + kBlockM * LDS);
    float* sO = reinterpret_cast<float*>(sP + kBlockM * LDP);
    float* sAlpha = sO + kBlockM * L::LDO;

    // 1. which tile: query block x of sequence z, head y
    const int seq = blockIdx.z, h = blockIdx.y, kvh = h / (hq / hkv);
    const long long start = cu_seqlens[seq];
    const int len = cu_seqlens[seq + 1] - (int)start;
    const int q0 = blockIdx.x * kBlockM;
    if (q0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wrow = warp * 16;

    // 2. Q tile, zeroed O accumulator, per-row softmax state (2 lanes per row: lane/2, columns half·32..)
    load_tile<D>(sQ, q, start + q0, min(kBlockM, len - q0), hq, h);
    for (int i = threadIdx.x; i < kBlockM * L::LDO; i += kThreads) sO[i] = 0.0f;
    const int r = wrow + lane / 2, half = lane % 2;
    const int qpos = q0 + r;
    float m = -CUDART_INF_F, l = 0.0f, t = 0.0f;

    // 3. key tiles up to the diagonal (causal)
    const int n_tiles = (min(len, q0 + kBlockM) + kBlockN - 1) / kBlockN;
    for (int kb = 0; kb < n_tiles; ++kb) {
        const int k0 = kb * kBlockN;
        __syncthreads();  // previous tile's K/V reads are done
        load_tile<D>(sK, k, start + k0, min(kBlockN, len - k0), hkv, kvh);
        load_tile<D>(sV, v, start + k0, min(kBlockN, len - k0), hkv, kvh);
        __syncthreads();

        // 3a. S = Q Kᵀ for this warp's 16 rows
        gemm_rows_x_keys<D>(sS + wrow * LDS, sQ + wrow * L::LDQ, sK);
        __syncwarp();

        // 3b. online softmax + entropy state for row r over columns [half·32, half·32 + 32)
        float* srow = sS + r * LDS;
        float tile_max = -CUDART_INF_F;
        for (int c = half * 32; c < half * 32 + 32; ++c) {
            const int kpos = k0 + c;
            const bool masked = kpos > qpos || kpos >= len;
            const float s = masked ? -CUDART_INF_F : srow[c] * scale;
            srow[c] = s;
            tile_max = fmaxf(tile_max, s);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        const float m_new = fmaxf(m, tile_max);
        const float m_ref = m_new == -CUDART_INF_F ? 0.0f : m_new;  // Check_inf: all masked so far
        const float alpha = m == -CUDART_INF_F ? 0.0f : expf(m - m_ref);
        float sum_p = 0.0f, sum_ps = 0.0f;
        for (int c = half * 32; c < half * 32 + 32; ++c) {
            const float s = srow[c];
            const bool masked = s == -CUDART_INF_F;
            const float p = masked ? 0.0f : expf(s - m_ref);
            sum_p += p;
            if (want_entropy) sum_ps += masked ? 0.0f : p * (s - m_ref);
            sP[r * LDP + c] = __float2bfloat16_rn(p);
        }
        sum_p += __shfl_xor_sync(0xffffffffu, sum_p, 1);
        sum_ps += __shfl_xor_sync(0xffffffffu, sum_ps, 1);
        if (want_entropy) t = (l > 0.0f ? alpha * (t + (m - m_ref) * l) : 0.0f) + sum_ps;
        l = alpha * l + sum_p;
        m = m_new;
        if (half == 0) sAlpha[r] = alpha;
        __syncwarp();

        // 3c. O ← α·O + P V for this warp's 16 rows
        for (int i = lane; i < 16 * D; i += 32) {
            const int rr = wrow + i / D, c = i % D;
            sO[rr * L::LDO + c] *= sAlpha[rr];
        }
        __syncwarp();
#pragma unroll
        for (int nt = 0; nt < D / 16; ++nt) {
            FragC acc;
            wmma::load_matrix_sync(acc, sO + wrow * L::LDO + nt * 16, L::LDO, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < kBlockN / 16; ++kk) {
                FragA fa;
                FragB fb;
                wmma::load_matrix_sync(fa, sP + wrow * LDP + kk * 16, LDP);
                wmma::load_matrix_sync(fb, sV + kk * 16 * L::LDQ + nt * 16, L::LDQ);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(sO + wrow * L::LDO + nt * 16, acc, L::LDO, wmma::mem_row_major);
        }
        __syncwarp();
    }

    // 4. epilogue: O /= l, LSE, entropy (rows past the sequence end are not written)
    if (qpos < len) {
        const long long row = (start + qpos) * hq + h;
        const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
        for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c)
            o[row * D + c] = __float2bfloat16_rn(sO[r * L::LDO + c] * inv_l);
        if (half == 0) {
            lse[row] = l > 0.0f ? m + logf(l) : CUDART_INF_F;
            if (want_entropy) ent[row] = l > 0.0f ? logf(l) - t / l : 0.0f;
        }
    }
}

#define DEFINE_ATTN_FWD(D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(kThreads)                                                     \
        attn_fwd_d##D(bf16* o, float* lse, float* ent, const bf16* q, const bf16* k, const bf16* v,            \
                      const int* cu_seqlens, int hq, int hkv, float scale, int want_entropy) {                 \
        attn_fwd_body<D>(o, lse, ent, q, k, v, cu_seqlens, hq, hkv, scale, want_entropy);                      \
    }
DEFINE_ATTN_FWD(32)
DEFINE_ATTN_FWD(64)
DEFINE_ATTN_FWD(128)

// ================================================================================================
// Backward
// ================================================================================================

template <int D>
__device__ void attn_bwd_body(float* __restrict__ dq_accum, bf16* __restrict__ dk, bf16* __restrict__ dv,
                              const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                              const bf16* __restrict__ dout, const float* __restrict__ lse,
                              const float* __restrict__ dvec, const int* __restrict__ cu_seqlens, int hq, int hkv,
                              float scale) {
    using L = Layout<D>;
    DYNAMIC_SMEM(smem, 128);
    bf16* sK = reinterpret_cast<bf16*>(smem);
    bf16* sV = sK + kBlockN * L::LDQ;
    bf16* sQ = sV + kBlockN * L::LDQ;
    bf16* sdO = sQ + kBlockM * L::LDQ;
    float* sS = reinterpret_cast<float*>(sdO + kBlockM * L::LDQ);
    float* sdP = sS + kBlockM * LDS;
    float* sdQ = sS;  // aliases sS + sdP once dS is formed
    bf16* sP = reinterpret_cast<bf16*>(sdP + kBlockM * LDS);
    bf16* sdS = sP + kBlockM * LDP;
    float* sdK = reinterpret_cast<float*>(sdS + kBlockM * LDP);
    float* sdV = sdK + kBlockN * L::LDO;
    float* sL = sdV + kBlockN * L::LDO;
    float* sD = sL + kBlockM;

    // 1. which tile: key block x of sequence z, KV head y (this CTA sums over the head's query group)
    const int seq = blockIdx.z, kvh = blockIdx.y, group = hq / hkv;
    const long long start = cu_seqlens[seq];
    const int len = cu_seqlens[seq + 1] - (int)start;
    const int k0 = blockIdx.x * kBlockN;
    if (k0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wrow = warp * 16;

    // 2. K, V tiles; zeroed dK, dV accumulators
    load_tile<D>(sK, k, start + k0, min(kBlockN, len - k0), hkv, kvh);
    load_tile<D>(sV, v, start + k0, min(kBlockN, len - k0), hkv, kvh);
    for (int i = threadIdx.x; i < kBlockN * L::LDO; i += kThreads) sdK[i] = sdV[i] = 0.0f;

    const int n_qtiles = (len + kBlockM - 1) / kBlockM;
    for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        for (int qb = blockIdx.x; qb < n_qtiles; ++qb) {  // query tiles on or below the diagonal
            const int q0 = qb * kBlockM;
            const int qrows = min(kBlockM, len - q0);
            // 3a. Q, dO tiles and their row statistics
            __syncthreads();
            load_tile<D>(sQ, q, start + q0, qrows, hq, h);
            load_tile<D>(sdO, dout, start + q0, qrows, hq, h);
            for (int i = threadIdx.x; i < kBlockM; i += kThreads) {
                const bool ok = i < qrows;
                sL[i] = ok ? lse[(start + q0 + i) * hq + h] : CUDART_INF_F;
                sD[i] = ok ? dvec[(start + q0 + i) * hq + h] : 0.0f;
            }
            __syncthreads();

            // 3b. S = Q Kᵀ and dP = dO Vᵀ for this warp's 16 query rows
            gemm_rows_x_keys<D>(sS + wrow * LDS, sQ + wrow * L::LDQ, sK);
            gemm_rows_x_keys<D>(sdP + wrow * LDS, sdO + wrow * L::LDQ, sV);
            __syncwarp();

            // 3c. P = e^(scale·S − LSE) (0 on masked lanes), dS = P∘(dP − D)
            for (int i = lane; i < 16 * kBlockN; i += 32) {
                const int rr = wrow + i / kBlockN, c = i % kBlockN;
                const int qpos = q0 + rr, kpos = k0 + c;
                const bool masked = kpos > qpos || qpos >= len || kpos >= len;
                const float p = masked ? 0.0f : expf(sS[rr * LDS + c] * scale - sL[rr]);
                const float ds = p * (sdP[rr * LDS + c] - sD[rr]);
                sP[rr * LDP + c] = __float2bfloat16_rn(p);
                sdS[rr * LDP + c] = __float2bfloat16_rn(ds);
            }
            __syncthreads();

            // 3d. dV += Pᵀ dO, dK += dSᵀ Q (this warp's 16 key rows); dQ = dS K (this warp's 16 query rows)
#pragma unroll
            for (int nt = 0; nt < D / 16; ++nt) {
                FragC acc_v, acc_k, acc_q;
                wmma::load_matrix_sync(acc_v, sdV + wrow * L::LDO + nt * 16, L::LDO, wmma::mem_row_major);
                wmma::load_matrix_sync(acc_k, sdK + wrow * L::LDO + nt * 16, L::LDO, wmma::mem_row_major);
                wmma::fill_fragment(acc_q, 0.0f);
#pragma unroll
                for (int kk = 0; kk < kBlockM / 16; ++kk) {
                    FragAT pt, dst;  // Pᵀ / dSᵀ: column-major views of the [query][key] tiles
                    FragB fdo, fq;
                    wmma::load_matrix_sync(pt, sP + kk * 16 * LDP + wrow, LDP);
                    wmma::load_matrix_sync(fdo, sdO + kk * 16 * L::LDQ + nt * 16, L::LDQ);
                    wmma::mma_sync(acc_v, pt, fdo, acc_v);
                    wmma::load_matrix_sync(dst, sdS + kk * 16 * LDP + wrow, LDP);
                    wmma::load_matrix_sync(fq, sQ + kk * 16 * L::LDQ + nt * 16, L::LDQ);
                    wmma::mma_sync(acc_k, dst, fq, acc_k);
                    FragA ds;
                    FragB fk;
                    wmma::load_matrix_sync(ds, sdS + wrow * LDP + kk * 16, LDP);
                    wmma::load_matrix_sync(fk, sK + kk * 16 * L::LDQ + nt * 16, L::LDQ);
                    wmma::mma_sync(acc_q, ds, fk, acc_q);
                }
                wmma::store_matrix_sync(sdV + wrow * L::LDO + nt * 16, acc_v, L::LDO, wmma::mem_row_major);
                wmma::store_matrix_sync(sdK + wrow * L::LDO + nt * 16, acc_k, L::LDO, wmma::mem_row_major);
                wmma::store_matrix_sync(sdQ + wrow * L::LDO + nt * 16, acc_q, L::LDO, wmma::mem_row_major);
            }
            __syncwarp();

            // 3e. dQ rows of this warp into the global f32 accumulator
            for (int i = lane; i < 16 * D; i += 32) {
                const int rr = wrow + i / D, c = i % D;
                if (rr < qrows) atomicAdd(dq_accum + ((start + q0 + rr) * hq + h) * (long long)D + c, scale * sdQ[rr * L::LDO + c]);
            }
        }
    }

    // 4. epilogue: dK = scale·Σ dSᵀ Q, dV (rows past the sequence end are not written)
    __syncthreads();
    const int krows = min(kBlockN, len - k0);
    for (int i = threadIdx.x; i < krows * D; i += kThreads) {
        const int rr = i / D, c = i % D;
        const long long g = ((start + k0 + rr) * hkv + kvh) * (long long)D + c;
        dk[g] = __float2bfloat16_rn(scale * sdK[rr * L::LDO + c]);
        dv[g] = __float2bfloat16_rn(sdV[rr * L::LDO + c]);
    }
}

#define DEFINE_ATTN_BWD(D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(kThreads)                                                     \
        attn_bwd_d##D(float* dq_accum, bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v,        \
                      const bf16* dout, const float* lse, const float* dvec, const int* cu_seqlens, int hq,    \
                      int hkv, float scale) {                                                                  \
        attn_bwd_body<D>(dq_accum, dk, dv, q, k, v, dout, lse, dvec, cu_seqlens, hq, hkv, scale);              \
    }
DEFINE_ATTN_BWD(32)
DEFINE_ATTN_BWD(64)
DEFINE_ATTN_BWD(128)

