// attention_mma_bwd.cu: the register-resident backward of the fused causal varlen GQA attention
// (FlashAttention-2, Dao 2023, Alg. 2), the partner of attention_mma.cu's forward.
//
// One CTA owns 64 keys of one sequence and one *query* head (4 warps × 16 keys) and walks the query tiles on
// or below the diagonal, 64 queries at a time. Everything is computed transposed (rows = keys), so the
// products that accumulate over queries take their A operand straight from registers:
//   Sᵀ = K Qᵀ,  dPᵀ = V dOᵀ                     (A: K / V rows of the warp; B: Q / dO rows, plain ldmatrix)
//   Pᵀ = 2^(Sᵀ·scale·log2e − LSE·log2e)         (0 on masked lanes: key past the query or either past the end)
//   dSᵀ = Pᵀ ∘ (dPᵀ − D_query),  D_i = do_i·o_i (attn_bwd_dot in attention.cu)
//   dV += Pᵀ dO,  dK += dSᵀ Q                   (A: Pᵀ / dSᵀ re-packed from the accumulators; B: transposed ldmatrix)
//   dQ += dS K                                  (dSᵀ goes through shared memory once; A by transposed ldmatrix;
//                                                f32 atomicAdd into dq_accum, scaled)
// dK (scaled) and dV of the query head go to f32 [T, Hq, D] buffers; `attn_bwd_mma_reduce` sums each KV
// head's query group into bf16 dK/dV (FA2's GQA scheme: the grid spans query heads, so short sequences still
// fill the GPU). Q/dO tiles and their row statistics stream through a two-stage cp.async pipeline.
//
// Layouts: q/o/dout [T, Hq, D], k/v [T, Hkv, D], lse/dvec [T, Hq] (f32), dq_accum [T, Hq, D] (f32,
// pre-zeroed), dk_head/dv_head [T, Hq, D] (f32), cu_seqlens [num_seqs + 1]. Grid (ceil(max_len/64), Hq,
// num_seqs), 128 threads, dynamic smem BwdSmem<D>::bytes = (6·64·(D+8) + 64·72)·2 + 1024.
#include "common.cuh"
#include "mma.cuh"
#include "tile_async.cuh"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int kBlockN = 64;  // keys per CTA
constexpr int kBlockM = 64;  // queries per main-loop step
constexpr int kWarps = kBlockN / 16;
constexpr int kThreads = kWarps * 32;
constexpr int kQTiles = kBlockM / 8;  // n8 MMA tiles of the warp's 16×64 Sᵀ tile
constexpr float kLog2e = 1.4426950408889634f;

// sK | sV | sQ[2] | sdO[2] (bf16 [64][D+8]) | sdS (bf16 [64 keys][72]) | lse[2][64] | dvec[2][64] (f32)
template <int D> struct BwdSmem {
    static constexpr int LD = D + 8;
    static constexpr int LDS = kBlockM + 8;
    static constexpr int tile = kBlockN * LD;  // == kBlockM * LD
    static constexpr int ds = kBlockN * LDS;
    static constexpr int bytes = (6 * tile + ds) * 2 + 4 * kBlockM * 4;
};

template <int D>
__device__ __forceinline__ void load_rows(bf16* dst, const bf16* src, long long row0, int rows, int heads, int h) {
    load_rows_async<D, kBlockM, BwdSmem<D>::LD, kThreads>(dst, src, row0, rows, heads, h);
}

// Row statistics of the query tile (LSE, natural log, and D) into shared memory, asynchronously in the
// tile's cp.async group; rows past the end read as 0 (their lanes are masked: `edge` covers them).
__device__ __forceinline__ void load_stats(float* sl, float* sd, const float* lse, const float* dvec, long long row0,
                                           int rows, int hq, int h) {
    for (int i = threadIdx.x; i < kBlockM; i += kThreads) {
        const bool ok = i < rows;
        const long long src = (row0 + (ok ? i : 0)) * hq + h;
        cp_async_4(sl + i, lse + src, ok);
        cp_async_4(sd + i, dvec + src, ok);
    }
}

}  // namespace

template <int D>
__device__ __forceinline__ void attn_bwd_mma_body(float* __restrict__ dq_accum, float* __restrict__ dk_head,
                                                  float* __restrict__ dv_head, const bf16* __restrict__ q,
                                                  const bf16* __restrict__ k, const bf16* __restrict__ v,
                                                  const bf16* __restrict__ dout, const float* __restrict__ lse,
                                                  const float* __restrict__ dvec, const int* __restrict__ cu_seqlens,
                                                  int hq, int hkv, float scale) {
    using S = BwdSmem<D>;
    constexpr int LD = S::LD, LDS = S::LDS;
    static_assert(S::bytes <= 113 * 1024, "two CTAs fit an SM's shared memory");
    DYNAMIC_SMEM(smem, 128);
    bf16* sK = reinterpret_cast<bf16*>(smem);
    bf16* sV = sK + S::tile;
    bf16* sQ = sV + S::tile;        // two stages
    bf16* sdO = sQ + 2 * S::tile;   // two stages
    bf16* sdS = sdO + 2 * S::tile;
    float* sL = reinterpret_cast<float*>(sdS + S::ds);  // two stages of 64 (16-byte aligned: ds·2 % 16 == 0)
    float* sD = sL + 2 * kBlockM;                        // two stages of 64

    // 1. which tile: key block x of sequence z, query head y; this thread's two key rows
    const int seq = blockIdx.z, h = blockIdx.y, kvh = h / (hq / hkv);
    const long long start = cu_seqlens[seq];
    const int len = cu_seqlens[seq + 1] - (int)start;
    const int k0 = blockIdx.x * kBlockN;
    if (k0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;
    const int wk0 = k0 + warp * 16;
    const int keys[2] = {wk0 + g, wk0 + g + 8};
    const float scale_log2 = scale * kLog2e;

    // 2. prologue: K, V and the first query tile (the diagonal one) in flight; zeroed dK, dV
    const int qb0 = k0 / kBlockM, n_qtiles = (len + kBlockM - 1) / kBlockM;
    load_rows<D>(sK, k, start + k0, min(kBlockN, len - k0), hkv, kvh);
    load_rows<D>(sV, v, start + k0, min(kBlockN, len - k0), hkv, kvh);
    load_rows<D>(sQ, q, start + qb0 * kBlockM, min(kBlockM, len - qb0 * kBlockM), hq, h);
    load_rows<D>(sdO, dout, start + qb0 * kBlockM, min(kBlockM, len - qb0 * kBlockM), hq, h);
    load_stats(sL, sD, lse, dvec, start + qb0 * kBlockM, min(kBlockM, len - qb0 * kBlockM), hq, h);
    cp_async_commit();
    float acc_dk[D / 8][4], acc_dv[D / 8][4];
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_dk[dn][e] = acc_dv[dn][e] = 0.0f;

    // 3. query tiles on or below the diagonal
    for (int qb = qb0; qb < n_qtiles; ++qb) {
        const int stage = (qb - qb0) & 1, q0 = qb * kBlockM;
        // 3a. prefetch the next query tile into the other stage; wait for this one
        if (qb + 1 < n_qtiles) {
            const int q1 = q0 + kBlockM, rows1 = min(kBlockM, len - q1);
            load_rows<D>(sQ + (stage ^ 1) * S::tile, q, start + q1, rows1, hq, h);
            load_rows<D>(sdO + (stage ^ 1) * S::tile, dout, start + q1, rows1, hq, h);
            load_stats(sL + (stage ^ 1) * kBlockM, sD + (stage ^ 1) * kBlockM, lse, dvec, start + q1, rows1, hq, h);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16* tQ = sQ + stage * S::tile;
        const bf16* tdO = sdO + stage * S::tile;
        const float* tL = sL + stage * kBlockM;
        const float* tD = sD + stage * kBlockM;

        // 3b. Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for the warp's 16 keys × 64 queries
        float st[kQTiles][4], dpt[kQTiles][4];
#pragma unroll
        for (int j = 0; j < kQTiles; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            unsigned ka[4], va[4];
            ldmatrix_x4(ka, sK + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
            ldmatrix_x4(va, sV + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
#pragma unroll
            for (int j = 0; j < kQTiles; j += 2) {
                unsigned qf[4], df[4];  // B fragments of query n-tiles j and j+1, d slice kk
                const int off = ((j + (lane / 16)) * 8 + lane % 8) * LD + kk * 16 + ((lane / 8) % 2) * 8;
                ldmatrix_x4(qf, tQ + off);
                ldmatrix_x4(df, tdO + off);
                mma_bf16_16816(st[j], ka, qf[0], qf[1]);
                mma_bf16_16816(st[j + 1], ka, qf[2], qf[3]);
                mma_bf16_16816(dpt[j], va, df[0], df[1]);
                mma_bf16_16816(dpt[j + 1], va, df[2], df[3]);
            }
        }

        // 3c. Pᵀ, dSᵀ (f32), packed as A operands; masked lanes: key past the query or either past the end
        const bool edge = q0 < wk0 + 15 || q0 + kBlockM > len || wk0 + 15 >= len;
        unsigned pa[kBlockM / 16][4], dsa[kBlockM / 16][4];
#pragma unroll
        for (int j = 0; j < kQTiles; ++j) {
            float p[4], ds[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int qi = j * 8 + 2 * c + (e & 1);
                const int key = keys[e >> 1], query = q0 + qi;
                p[e] = fast_exp2(fmaf(st[j][e], scale_log2, -tL[qi] * kLog2e));
                if (edge && (key > query || query >= len || key >= len)) p[e] = 0.0f;
                ds[e] = p[e] * (dpt[j][e] - tD[qi]);
            }
            pa[j / 2][(j % 2) * 2 + 0] = pack_bf16x2(p[0], p[1]);
            pa[j / 2][(j % 2) * 2 + 1] = pack_bf16x2(p[2], p[3]);
            dsa[j / 2][(j % 2) * 2 + 0] = pack_bf16x2(ds[0], ds[1]);
            dsa[j / 2][(j % 2) * 2 + 1] = pack_bf16x2(ds[2], ds[3]);
        }

        // 3d. dV += Pᵀ dO, dK += dSᵀ Q (B fragments: dO / Q rows are queries, so ldmatrix transposes)
#pragma unroll
        for (int kk = 0; kk < kBlockM / 16; ++kk)
#pragma unroll
            for (int dn = 0; dn < D / 16; ++dn) {
                unsigned ob[4], qb_[4];
                const int off = (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * LD + dn * 16 + (lane / 16) * 8;
                ldmatrix_x4_trans(ob, tdO + off);
                ldmatrix_x4_trans(qb_, tQ + off);
                mma_bf16_16816(acc_dv[2 * dn], pa[kk], ob[0], ob[1]);
                mma_bf16_16816(acc_dv[2 * dn + 1], pa[kk], ob[2], ob[3]);
                mma_bf16_16816(acc_dk[2 * dn], dsa[kk], qb_[0], qb_[1]);
                mma_bf16_16816(acc_dk[2 * dn + 1], dsa[kk], qb_[2], qb_[3]);
            }

        // 3e. dSᵀ to shared memory ([key][query]) for the dQ product
#pragma unroll
        for (int kk = 0; kk < kBlockM / 16; ++kk)
#pragma unroll
            for (int half = 0; half < 2; ++half) {  // query n-tile 2kk + half
                const int col = (2 * kk + half) * 8 + 2 * c;
                *reinterpret_cast<unsigned*>(sdS + (warp * 16 + g) * LDS + col) = dsa[kk][half * 2 + 0];
                *reinterpret_cast<unsigned*>(sdS + (warp * 16 + g + 8) * LDS + col) = dsa[kk][half * 2 + 1];
            }
        __syncthreads();

        // 3f. dQ for the warp's 16 queries: dS K over the CTA's 64 keys; scaled into the f32 accumulator
        float acc_dq[D / 8][4];
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_dq[dn][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
            unsigned a[4];  // A[query][key] = dSᵀ[key][query]: transposed ldmatrix of the [key][query] tile
            ldmatrix_x4_trans(a, sdS + (kk * 16 + (lane / 16) * 8 + lane % 8) * LDS + warp * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
            for (int dn = 0; dn < D / 16; ++dn) {
                unsigned kb[4];
                ldmatrix_x4_trans(kb, sK + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * LD + dn * 16 + (lane / 16) * 8);
                mma_bf16_16816(acc_dq[2 * dn], a, kb[0], kb[1]);
                mma_bf16_16816(acc_dq[2 * dn + 1], a, kb[2], kb[3]);
            }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int query = q0 + warp * 16 + g + 8 * i;
            if (query >= len) continue;
            float* row = dq_accum + ((start + query) * hq + h) * (long long)D;
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn)  // sm_90 vector atomic: one 8-byte add per pair
                atomicAdd(reinterpret_cast<float2*>(row + dn * 8 + 2 * c),
                          make_float2(scale * acc_dq[dn][2 * i], scale * acc_dq[dn][2 * i + 1]));
        }
        __syncthreads();  // sdS and this stage are free before 3a / 3e of the next tile refill them
    }

    // 4. epilogue: this query head's dK (scaled) and dV for the CTA's keys (rows past the end not written)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        if (keys[i] >= len) continue;
        const long long row = ((start + keys[i]) * hq + h) * (long long)D;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) {
            *reinterpret_cast<float2*>(dk_head + row + dn * 8 + 2 * c) =
                make_float2(scale * acc_dk[dn][2 * i], scale * acc_dk[dn][2 * i + 1]);
            *reinterpret_cast<float2*>(dv_head + row + dn * 8 + 2 * c) = make_float2(acc_dv[dn][2 * i], acc_dv[dn][2 * i + 1]);
        }
    }
}

#define DEFINE_ATTN_BWD_MMA(D)                                                                                   \
    extern "C" __global__ void __launch_bounds__(kThreads, 2)                                                   \
        attn_bwd_mma_d##D(float* dq_accum, float* dk_head, float* dv_head, const bf16* q, const bf16* k,        \
                          const bf16* v, const bf16* dout, const float* lse, const float* dvec,                 \
                          const int* cu_seqlens, int hq, int hkv, float scale) {                                \
        attn_bwd_mma_body<D>(dq_accum, dk_head, dv_head, q, k, v, dout, lse, dvec, cu_seqlens, hq, hkv, scale); \
    }
DEFINE_ATTN_BWD_MMA(32)
DEFINE_ATTN_BWD_MMA(64)
DEFINE_ATTN_BWD_MMA(128)

// dK/dV [T, Hkv, D] (bf16) = Σ over each KV head's query group of dk_head/dv_head [T, Hq, D] (f32).
KERNEL attn_bwd_mma_reduce(bf16* dk, bf16* dv, const float* dk_head, const float* dv_head, long long n, int hq,
                           int hkv, int d) {
    const int group = hq / hkv;
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        const long long t = i / ((long long)hkv * d);
        const int kvh = (int)(i / d % hkv), col = (int)(i % d);
        float sk = 0.0f, sv = 0.0f;
        for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
            const long long src = (t * hq + h) * d + col;
            sk += dk_head[src];
            sv += dv_head[src];
        }
        dk[i] = __float2bfloat16_rn(sk);
        dv[i] = __float2bfloat16_rn(sv);
    }
}
