// attention_hmix.cu: the head-mixture entropy of fused causal varlen GQA attention, a second pass after the
// forward (attention_mma.cu), which hands it the row LSEs. Per query row i of a sequence:
//   p_hij = exp(scale·q_hi·k_{g(h)j} − LSE_hi)          (head h's attention, g(h) its KV head)
//   p̄_ij  = (1/Hq) Σ_h p_hij                              (the head-averaged distribution over keys j ≤ i)
//   hmix_i = −Σ_j p̄_ij ln p̄_ij                           (natural log; the caller divides by ln(i + 1))
// The per-head statistics cannot give hmix (the entropy of a mixture is not a function of its components'
// entropies), and p̄ is never materialised: its 64-key tile lives in registers, in the mma accumulator
// layout, which is the same for every head (a warp always owns the same 16 rows × 64 keys), so the heads'
// probabilities add into it in place.
//
// Stages: 1 which tile (64 query rows of one sequence; every head); 2 for each key tile up to the diagonal:
// 2a zero p̄; 2b for each head h (a two-stage cp.async pipeline over the flattened (tile, head) loop streams
// the Q tile of h and the K tile of g(h)): S = Q Kᵀ (mma.sync m16n8k16), p̄ += 2^(x − LSE₂) with x the
// scaled score in log2 units and masked keys (past the row or the sequence end) giving 0; 2c t −= Σ p̄ ln p̄
// over the tile (p̄ = acc / Hq); 3 epilogue: the 4 threads of a row add their t, row < len writes it.
// A warp skips the MMAs of a key tile that lies entirely above its 16 rows (its p̄ is 0 there).
//
// Cost against the forward (same grid rows and tiles): the same QKᵀ MMAs and exponentials, no P·V, one
// logarithm per (row, key) instead of per (row, key, head); Q is re-read once per key tile (from L2).
//
// Layouts: q [T, Hq, D], k [T, Hkv, D], lse [T, Hq], hmix [T]; grid (ceil(max_len/64), 1, num_seqs), 128
// threads, dynamic smem HmixSmem<D>::bytes = 4·64·(D+8)·2.
#include "common.cuh"
#include "mma.cuh"
#include "tile_async.cuh"
#include "attention_params.cuh"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int kHmixRows = 64;  // query rows per CTA
constexpr int kHmixKeys = 64;  // keys per tile
constexpr int kHmixWarps = kHmixRows / 16;
constexpr int kHmixThreads = kHmixWarps * 32;
constexpr int kHmixNTiles = kHmixKeys / 8;
constexpr float kHmixLog2e = 1.4426950408889634f;

// Shared memory: two stages of { sQ [64][LD], sK [64][LD] }, bf16, LD = D + 8 (ldmatrix bank spread).
template <int D> struct HmixSmem {
    static constexpr int LD = D + 8;
    static constexpr int tile = kHmixRows * LD;
    static constexpr int bytes = 4 * tile * 2;
};

}  // namespace

template <int D>
__device__ __forceinline__ void attn_hmix_body(const AttnHmixParams& p) {
    using S = HmixSmem<D>;
    constexpr int LD = S::LD;
    static_assert(D % 32 == 0, "K fragments load two k16 slices at a time");
    static_assert(S::bytes <= 227 * 1024, "one CTA fits an SM's shared memory");
    DYNAMIC_SMEM(smem, 128);
    bf16* base = reinterpret_cast<bf16*>(smem);  // stage s: Q at base + 2s·tile, K at base + (2s+1)·tile

    // 1. which tile
    const int seq = blockIdx.z, hq = p.hq, group = p.hq / p.hkv;
    const long long start = p.cu_seqlens[seq];
    const int len = p.cu_seqlens[seq + 1] - (int)start;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * kHmixRows;  // heaviest first
    if (q0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;
    const int wq0 = q0 + warp * 16;
    const int rows[2] = {wq0 + g, wq0 + g + 8};
    const int n_tiles = (min(len, q0 + kHmixRows) + kHmixKeys - 1) / kHmixKeys;
    const int n_iter = n_tiles * hq;
    const float scale_log2 = p.scale * kHmixLog2e, inv_h = 1.0f / (float)hq;

    auto issue = [&](int it) {
        const int kb = it / hq, h = it % hq, stage = it & 1;
        bf16* sQ = base + 2 * stage * S::tile;
        load_rows_async<D, kHmixRows, LD, kHmixThreads>(sQ, p.q, start + q0, min(kHmixRows, len - q0), hq, h);
        load_rows_async<D, kHmixKeys, LD, kHmixThreads>(sQ + S::tile, p.k, start + kb * kHmixKeys, min(kHmixKeys, len - kb * kHmixKeys),
                                                p.hkv, h / group);
        cp_async_commit();
    };

    float t[2] = {0.0f, 0.0f};
    float pb[kHmixNTiles][4];
    issue(0);
    for (int it = 0; it < n_iter; ++it) {
        const int kb = it / hq, h = it % hq, stage = it & 1, k0 = kb * kHmixKeys;
        // 2a. a new key tile: p̄ starts at 0
        if (h == 0) {
#pragma unroll
            for (int j = 0; j < kHmixNTiles; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) pb[j][e] = 0.0f;
        }
        // 2b. prefetch the next (tile, head) into the other stage; wait for this one
        if (it + 1 < n_iter) {
            issue(it + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (k0 <= wq0 + 15) {
            const bf16* sQ = base + 2 * stage * S::tile;
            const bf16* sK = sQ + S::tile;
            unsigned qf[D / 16][4];
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk)
                ldmatrix_x4(qf[kk], sQ + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
            // this head's LSE of the thread's two rows, log2 units; rows past the end take +huge (p = 0)
            float lse2[2];
#pragma unroll
            for (int i = 0; i < 2; ++i)
                lse2[i] = rows[i] < len ? p.lse[(start + rows[i]) * hq + h] * kHmixLog2e : 1e30f;
            const bool edge = k0 + kHmixKeys - 1 > wq0 || k0 + kHmixKeys > len;
#pragma unroll
            for (int j = 0; j < kHmixNTiles; ++j) {
                float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int kk = 0; kk < D / 16; kk += 2) {
                    unsigned kf[4];
                    ldmatrix_x4(kf, sK + (j * 8 + lane % 8) * LD + kk * 16 + (lane / 8) * 8);
                    mma_bf16_16816(s, qf[kk], kf[0], kf[1]);
                    mma_bf16_16816(s, qf[kk + 1], kf[2], kf[3]);
                }
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = k0 + j * 8 + 2 * c + (e & 1);
                    const bool masked = edge && (key > rows[e >> 1] || key >= len);
                    pb[j][e] += masked ? 0.0f : fast_exp2(fminf(s[e] * scale_log2 - lse2[e >> 1], 0.0f));
                }
            }
        }
        // 2c. the tile's last head: its entropy terms
        if (h == hq - 1 && k0 <= wq0 + 15) {
#pragma unroll
            for (int j = 0; j < kHmixNTiles; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float pm = pb[j][e] * inv_h;
                    if (pm > 0.0f) t[e >> 1] -= pm * logf(pm);
                }
        }
        __syncthreads();  // every warp is done with this stage before the next issue refills it
    }

    // 3. epilogue
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        t[i] += __shfl_xor_sync(0xffffffffu, t[i], 1);
        t[i] += __shfl_xor_sync(0xffffffffu, t[i], 2);
        if (c == 0 && rows[i] < len) p.hmix[start + rows[i]] = t[i];
    }
}

#define DEFINE_ATTN_HMIX(D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(kHmixThreads) attn_hmix_d##D(const AttnHmixParams p) {            \
        attn_hmix_body<D>(p);                                                                                   \
    }
DEFINE_ATTN_HMIX(32)
DEFINE_ATTN_HMIX(64)
DEFINE_ATTN_HMIX(128)
