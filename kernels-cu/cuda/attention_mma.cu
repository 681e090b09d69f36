// attention_mma.cu: the register-resident forward of the fused causal varlen GQA attention with softmax
// entropy (FlashAttention-2 structure, Dao 2023, Alg. 1 and §3.3 "work partitioning between warps").
// Same ABI, math and outputs as `attn_fwd_d*` in attention.cu; what changes is where the data lives:
//   * Q fragments, the S/P tile and the O accumulator stay in registers (no score or O round trip through
//     shared memory); P is re-packed from the S accumulator layout straight into the A operand of P·V.
//   * K/V tiles stream through a two-stage cp.async pipeline: tile j+1 loads while tile j is computed.
//   * mma.sync m16n8k16 (bf16 → f32) with ldmatrix (plain for K, transposed for V) — see mma.cuh.
//
// Per query row, over key tiles (log2 units: x = scale·log2(e)·q·k, so e^s = 2^x):
//   m' = max(m, max_j x_j)    α = 2^(m − m')    p_j = 2^(x_j − m')
//   l ← α·l + Σ p_j           O ← α·O + Σ p_j v_j
// end: O /= l,  LSE = ln2·m + ln l.  l is kept as per-thread partial sums over the thread's own columns (the
// recurrence is linear in it and α is per row) and reduced once at the end. The row statistics (entropy,
// largest probability, sink mass, …) ride the same recurrence through OnlineRowStats
// (attention_row_stats.cuh: begin_tile, rescale, add, reduce_quad, store), so adding one does not touch
// this file.
// Masked lanes (key past the row or the sequence end) get x = kMasked, a large finite negative: p = 0 and
// p·(x − m') = −0, never 0·(−inf) = NaN. Every row sees key 0 in the first tile, so m is finite after it.
//
// Stages: 1 which tile; 2 prologue (Q and the first K/V tile in flight); 3 key tiles: 3a prefetch the next
// tile, then qk_tile (S = QKᵀ), softmax_tile (mask, online softmax + entropy, P) and pv_tile (O ← αO + PV);
// 4 epilogue. Tiles: 128 query rows per CTA, 8 warps × 16 rows, 64 keys per step; query blocks run heaviest first
// (reversed blockIdx.x) so the causal tail of the grid is short. A warp skips the MMAs of a key tile that
// lies entirely above its 16 rows (it still joins the CTA barriers).
//
// Layouts and grid (AttnFwdParams, attention_params.cuh): q/o [T, Hq, D], k/v [T, Hkv, D], lse and the
// statistics [T, Hq], cu_seqlens [num_seqs + 1]; grid
// (ceil(max_len/128), Hq, num_seqs), 256 threads, dynamic smem MmaSmem<D>::bytes = 384·(D+8)·2.
#include "common.cuh"
#include "mma.cuh"
#include "tile_async.cuh"
#include "attention_params.cuh"
#include "attention_softmax.cuh"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int kBlockM = 128;  // query rows per CTA
constexpr int kBlockN = 64;   // keys per main-loop step
constexpr int kWarps = kBlockM / 16;
constexpr int kThreads = kWarps * 32;
constexpr int kNTiles = kBlockN / 8;  // n8 MMA tiles of the warp's 16×64 score tile

// Shared memory: sQ [128][LD] | sK [2][64][LD] | sV [2][64][LD], bf16. LD = D + 8: a 16-byte row pad puts
// the 8 row addresses of every ldmatrix on distinct bank groups.
template <int D> struct MmaSmem {
    static constexpr int LD = D + 8;
    static constexpr int q_elems = kBlockM * LD;
    static constexpr int kv_elems = kBlockN * LD;
    static constexpr int bytes = (q_elems + 4 * kv_elems) * 2;
};

template <int D, int ROWS>
__device__ __forceinline__ void load_tile_async(bf16* dst, const bf16* src, long long row0, int rows, int heads,
                                                int h) {
    load_rows_async<D, ROWS, MmaSmem<D>::LD, kThreads>(dst, src, row0, rows, heads, h);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Main-loop stages for one warp's 16 query rows and one 64-key tile. The two tensor-core stages (qk_tile,
// pv_tile) are what a Hopper version replaces with wgmma on shared-memory descriptors; softmax_tile works
// on the accumulator layout, which wgmma's m64nNk16 keeps per 16-row slab.
// ------------------------------------------------------------------------------------------------

// S = Q Kᵀ (B fragments: K rows are keys, contiguous in d).
template <int D>
__device__ __forceinline__ void qk_tile(float (&s)[kNTiles][4], const unsigned (&qf)[D / 16][4], const bf16* tK,
                                        int lane) {
    constexpr int LD = MmaSmem<D>::LD;
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk += 2) {
            unsigned kf[4];
            ldmatrix_x4(kf, tK + (j * 8 + lane % 8) * LD + kk * 16 + (lane / 8) * 8);
            mma_bf16_16816(s[j], qf[kk], kf[0], kf[1]);
            mma_bf16_16816(s[j], qf[kk + 1], kf[2], kf[3]);
        }
    }
}

// O ← α·O + P V (B fragments: V rows are keys, so ldmatrix transposes).
template <int D>
__device__ __forceinline__ void pv_tile(float (&acc_o)[D / 8][4], const unsigned (&pf)[kBlockN / 16][4],
                                        const float (&alpha)[2], const bf16* tV, int lane) {
    constexpr int LD = MmaSmem<D>::LD;
    rescale_o<D>(acc_o, alpha);
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
#pragma unroll
        for (int dn = 0; dn < D / 16; ++dn) {
            unsigned vf[4];
            ldmatrix_x4_trans(vf, tV + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * LD + dn * 16 + (lane / 16) * 8);
            mma_bf16_16816(acc_o[2 * dn], pf[kk], vf[0], vf[1]);
            mma_bf16_16816(acc_o[2 * dn + 1], pf[kk], vf[2], vf[3]);
        }
}

template <int D, bool kEntropy, bool kOthers>
__device__ __forceinline__ void attn_fwd_mma_body(const AttnFwdParams& p) {
    const bf16* __restrict__ q = p.q;
    const bf16* __restrict__ k = p.k;
    const bf16* __restrict__ v = p.v;
    const int* __restrict__ cu_seqlens = p.cu_seqlens;
    const int hq = p.hq, hkv = p.hkv;
    const float scale = p.scale;
    using S = MmaSmem<D>;
    constexpr int LD = S::LD;
    static_assert(D % 32 == 0, "K fragments load two k16 slices at a time");
    static_assert(S::bytes <= 227 * 1024, "one CTA fits an SM's shared memory");
    DYNAMIC_SMEM(smem, 128);
    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sK = sQ + S::q_elems;
    bf16* sV = sK + 2 * S::kv_elems;

    // 1. which tile: query block (heaviest first) of sequence z, head y; this thread's two rows
    const int seq = blockIdx.z, h = blockIdx.y, kvh = h / (hq / hkv);
    const long long start = cu_seqlens[seq];
    const int len = cu_seqlens[seq + 1] - (int)start;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * kBlockM;
    if (q0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;
    const int wq0 = q0 + warp * 16;
    const int rows[2] = {wq0 + g, wq0 + g + 8};

    // 2. prologue: Q and the first K/V tile in flight; zeroed O; softmax/entropy state
    const int n_tiles = (min(len, q0 + kBlockM) + kBlockN - 1) / kBlockN;
    load_tile_async<D, kBlockM>(sQ, q, start + q0, min(kBlockM, len - q0), hq, h);
    load_tile_async<D, kBlockN>(sK, k, start, min(kBlockN, len), hkv, kvh);
    load_tile_async<D, kBlockN>(sV, v, start, min(kBlockN, len), hkv, kvh);
    cp_async_commit();

    unsigned qf[D / 16][4];
    float acc_o[D / 8][4];
    zero_acc<D>(acc_o);
    float m[2] = {kMasked, kMasked}, l[2] = {0.0f, 0.0f};
    OnlineRowStats<kEntropy, kOthers> st(p.stat, p.sink_keys);
    const float scale_log2 = scale * kLog2e;

    // 3. key tiles up to the diagonal
    for (int kb = 0; kb < n_tiles; ++kb) {
        const int stage = kb & 1, k0 = kb * kBlockN;
        // 3a. prefetch tile kb+1 into the other stage; wait for tile kb (and, the first time, Q)
        if (kb + 1 < n_tiles) {
            const int k1 = k0 + kBlockN;
            load_tile_async<D, kBlockN>(sK + (stage ^ 1) * S::kv_elems, k, start + k1, min(kBlockN, len - k1), hkv, kvh);
            load_tile_async<D, kBlockN>(sV + (stage ^ 1) * S::kv_elems, v, start + k1, min(kBlockN, len - k1), hkv, kvh);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kb == 0) {
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk)
                ldmatrix_x4(qf[kk], sQ + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
        }

        if (k0 <= wq0 + 15) {
            const bf16* tK = sK + stage * S::kv_elems;
            const bf16* tV = sV + stage * S::kv_elems;

            // 3b. S = Q Kᵀ; 3c. masked online softmax + entropy, P; 3d. O ← α·O + P V
            float s[kNTiles][4], alpha[2];
            unsigned pf[kBlockN / 16][4];
            qk_tile<D>(s, qf, tK, lane);
            const bool edge = k0 + kBlockN - 1 > wq0 || k0 + kBlockN > len;
            softmax_tile<kNTiles, kEntropy, kOthers>(s, m, l, st, alpha, scale_log2, edge, k0, rows, len, c);
            pack_p<kNTiles>(s, pf);
            pv_tile<D>(acc_o, pf, alpha, tV, lane);
        }
        __syncthreads();  // every warp is done with this stage before 3a refills it
    }

    // 4. epilogue: O /= l, LSE, statistics
    store_rows<D>(p, acc_o, m, l, st, start, rows, len, h, c);
}

// Two entries per head size, so that the statistics beyond entropy do not raise the register count (and
// the occupancy) of the forward without them: attn_fwd_mma_d* writes the entropy when its slot is set and
// ignores the other slots; attn_fwd_mma_stats_d* writes every slot that is set. The engine launches the
// second only when a statistic other than entropy is asked for (engine/src/cuda/attention.rs).
#define DEFINE_ATTN_FWD_MMA(D)                                                                                   \
    extern "C" __global__ void __launch_bounds__(kThreads, 1) attn_fwd_mma_d##D(const AttnFwdParams p) {        \
        if (p.stat[kStatEntropy])                                                                               \
            attn_fwd_mma_body<D, true, false>(p);                                                               \
        else                                                                                                    \
            attn_fwd_mma_body<D, false, false>(p);                                                              \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(kThreads, 1) attn_fwd_mma_stats_d##D(const AttnFwdParams p) {  \
        if (p.stat[kStatEntropy])                                                                               \
            attn_fwd_mma_body<D, true, true>(p);                                                                \
        else                                                                                                    \
            attn_fwd_mma_body<D, false, true>(p);                                                               \
    }
DEFINE_ATTN_FWD_MMA(32)
DEFINE_ATTN_FWD_MMA(64)
DEFINE_ATTN_FWD_MMA(128)
