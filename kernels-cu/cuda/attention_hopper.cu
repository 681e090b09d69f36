// attention_hopper.cu: the Hopper-native (sm_90a) forward of the fused causal varlen GQA attention with the
// row statistics: the same math, outputs and row-statistic slots as attention_mma.cu (FlashAttention-2's
// online softmax, attention_softmax.cuh, OnlineRowStats), with FlashAttention-3's data movement (Shah et al.
// 2024, §3.1 "producer-consumer asynchrony"):
//   * a producer warp issues TMA box copies of Q and of each K/V tile into 128-byte-swizzled shared memory;
//     each copy completes an mbarrier's transaction count ("full"); consumers release a stage by arriving on
//     its "empty" barrier. K and V have their own full barriers, so QKᵀ starts before V lands.
//   * two consumer warpgroups of 64 query rows each run wgmma: S = Q·Kᵀ as m64n128k16 with both operands
//     from shared-memory descriptors (K-major), then O += P·V as m64n{D}k16 with P from registers (the S
//     accumulator layout is the A fragment, attention_softmax.cuh's pack_p packs it in place) and V MN-major
//     (tnspB).
//   * setmaxnreg moves registers from the producer warpgroup (40) to the consumers (232).
// The per-row softmax math (log2 units, x = scale·log2(e)·q·k):
//   m' = max(m, max_j x_j)    α = 2^(m − m')    p_j = 2^(x_j − m')
//   l ← α·l + Σ p_j           O ← α·O + Σ p_j v_j         end: O /= l,  LSE = ln2·m + ln l
// and the statistics ride it through OnlineRowStats (attention_row_stats.cuh), as in attention_mma.cu.
//
// Stages: 1 which tile; 2 barriers (thread 0 initialises, every thread meets once); 3 producer (thread 0
// of warpgroup 0): Q, then for each key tile wait for its stage to be empty and copy K and V; 4 consumers:
// 4a prologue (S_0, its softmax, P_0); 4b per key tile kb ≥ 1 (FA3 §3.2, intra-warpgroup overlap): issue
// S_kb = Q·K_kbᵀ, rescale O by α_{kb−1}, issue O += P_{kb−1}·V_{kb−1}, wait for S_kb only and run its
// masked online softmax + statistics (P_kb left in f32 in S's registers) while the PV is in flight, then
// wait for the PV, release stage kb − 1 and pack P_kb to bf16 into the registers the PV read (FA3's order);
// 4c the last PV; 5 epilogue (O /= l, LSE, statistics). Ping-pong between the two consumer warpgroups (FA3
// §3.1): named barriers 1 and 2 order their GEMM issues, so one warpgroup's softmax runs under the other's
// GEMMs. Registers: S 64 + O D/2 + P 32 per thread. The SASS of ptxas 13.0 places the PV's wait
// (WARPGROUP.DEPBAR) after the scale and mask but before the exponentials, whatever the PTX order, so the
// intra-warpgroup overlap covers only that part; the ping-pong is the overlap that remains whole.
// Tiles: 128 query rows per CTA (warpgroup w + 1 owns rows 64w .. 64w+63; its warp v the 16 rows 16v ..),
// 128 keys per tile, two stages. Query blocks run heaviest first (reversed blockIdx.x).
//
// Shared memory (1024-byte aligned; each [rows][64] bf16 block is one TMA box, 128-byte rows, swizzled):
//   sQ [D/64][128][64] | sK [2][D/64][128][64] | sV [2][D/64][128][64] | barriers
// Descriptors: Q and K are K-major (SBO = 1024 between 8-row groups, a k16 step moves 32 bytes inside the
// 128-byte row, the next 64 of D is the next block); V is MN-major (keys are K: 8 keys per 1024-byte atom,
// SBO = 1024; d is N: the next 64 of D is LBO = 128·128 bytes away).
//
// Varlen: a box reads whole tokens of the packed tensor, so Q rows and keys past the sequence end come from
// the next sequence (or are zero past T): keys past the end are masked, rows past the end are not written.
// Layouts and grid (AttnHopperParams, attention_params.cuh): q/o [T, Hq, D], k/v [T, Hkv, D], lse and the
// statistics [T, Hq]; grid (ceil(max_len/128), Hq, num_seqs), 384 threads, dynamic smem HopperSmem<D>::bytes.
#include "common.cuh"
#include "mma.cuh"
#include "hopper.cuh"
#include "attention_params.cuh"
#include "attention_softmax.cuh"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int kHBlockM = 128;  // query rows per CTA
constexpr int kHBlockN = 128;  // keys per tile
constexpr int kHStages = 2;
constexpr int kHThreads = 384;  // producer warpgroup + 2 consumer warpgroups
constexpr int kHNTiles = kHBlockN / 8;
constexpr int kBoxBytes = 128 * 128;  // one [128 rows][64] bf16 box

template <int D> struct HopperSmem {
    static constexpr int halves = D / 64;
    static constexpr int q_bytes = halves * kBoxBytes;
    static constexpr int kv_bytes = halves * kBoxBytes;  // one stage of K (or V)
    static constexpr int tiles = q_bytes + 2 * kHStages * kv_bytes;
    static constexpr int bars = 8 * (1 + 3 * kHStages);
    static constexpr int bytes = 1024 + tiles + bars;  // 1024: room to align the base
};

struct Barriers {
    unsigned long long q, full_k[kHStages], full_v[kHStages], empty[kHStages];
};

// Issue S = Q·Kᵀ for the warpgroup's 64 rows and one 128-key tile (one commit group; wgmma_wait before use).
template <int D>
__device__ __forceinline__ void qk_issue(float (&s)[kHNTiles][4], unsigned q_base, unsigned k_base) {
    fence_regs(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const unsigned off = (kk / 4) * kBoxBytes + (kk % 4) * 32;
        wgmma_ss_m64n128(s, gmma_desc(q_base + off, 0, 1024), gmma_desc(k_base + off, 0, 1024), kk > 0);
    }
    wgmma_commit();
}

// Issue O += P·V (O already rescaled; one commit group; P's registers stay untouched until the wait).
template <int D>
__device__ __forceinline__ void pv_issue(float (&acc_o)[D / 8][4], unsigned (&pf)[kHNTiles / 2][4],
                                         unsigned v_base) {
    fence_regs(acc_o);
    fence_regs(pf);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kHBlockN / 16; ++kk) {
        const unsigned long long dv = gmma_desc(v_base + kk * 2048, kBoxBytes, 1024);
        if constexpr (D == 128)
            wgmma_rs_m64n128_tnspb(acc_o, pf[kk], dv);
        else
            wgmma_rs_m64n64_tnspb(acc_o, pf[kk], dv);
    }
    wgmma_commit();
}

// Ping-pong: consumer warpgroup w (1 or 2) waits on named barrier w before its GEMMs and, after issuing
// them, lets the other one go (literal ids, so ptxas reserves only barriers 0–2).
__device__ __forceinline__ void scheduler_wait(int wg) {
    if (wg == 1)
        named_barrier_sync<1>(256);
    else
        named_barrier_sync<2>(256);
}
__device__ __forceinline__ void scheduler_release(int wg) {
    if (wg == 1)
        named_barrier_arrive<2>(256);
    else
        named_barrier_arrive<1>(256);
}

}  // namespace

template <int D, bool kEntropy, bool kOthers>
__device__ __forceinline__ void attn_fwd_hopper_body(const AttnHopperParams& hp) {
    static_assert(D == 64 || D == 128, "wgmma's N and the 64-element swizzle boxes");
    using S = HopperSmem<D>;
    static_assert(S::bytes <= 227 * 1024, "one CTA fits an SM's shared memory");
    const AttnFwdParams& p = hp.fwd;
    DYNAMIC_SMEM(smem, 1024);

    // 1. which tile
    const int seq = blockIdx.z, h = blockIdx.y, kvh = h / (p.hq / p.hkv);
    const int start = p.cu_seqlens[seq];
    const int len = p.cu_seqlens[seq + 1] - start;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * kHBlockM;
    if (q0 >= len) return;
    const int n_tiles = (min(len, q0 + kHBlockM) + kHBlockN - 1) / kHBlockN;

    // 2. shared memory carve-up and barriers
    unsigned char* base = smem + ((1024u - (smem_u32(smem) & 1023u)) & 1023u);
    unsigned char* sQ = base;
    unsigned char* sK = sQ + S::q_bytes;
    unsigned char* sV = sK + kHStages * S::kv_bytes;
    Barriers& bar = *reinterpret_cast<Barriers*>(sV + kHStages * S::kv_bytes);
    if (threadIdx.x == 0) {
        mbar_init(&bar.q, 1);
        for (int s = 0; s < kHStages; ++s) {
            mbar_init(&bar.full_k[s], 1);
            mbar_init(&bar.full_v[s], 1);
            mbar_init(&bar.empty[s], kHThreads - 128);
        }
        mbar_fence_init();
    }
    __syncthreads();

    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        // 3. producer
        warpgroup_reg_dealloc<40>();
        if (threadIdx.x != 0) return;
        mbar_arrive_expect_tx(&bar.q, S::q_bytes);
        for (int hh = 0; hh < S::halves; ++hh) tma_load_3d(sQ + hh * kBoxBytes, hp.tq, hh * 64, h, start + q0, &bar.q);
        for (int kb = 0; kb < n_tiles; ++kb) {
            const int s = kb % kHStages;
            mbar_wait(&bar.empty[s], ((kb / kHStages) & 1) ^ 1);
            const int key = start + kb * kHBlockN;
            mbar_arrive_expect_tx(&bar.full_k[s], S::kv_bytes);
            for (int hh = 0; hh < S::halves; ++hh)
                tma_load_3d(sK + s * S::kv_bytes + hh * kBoxBytes, hp.tk, hh * 64, kvh, key, &bar.full_k[s]);
            mbar_arrive_expect_tx(&bar.full_v[s], S::kv_bytes);
            for (int hh = 0; hh < S::halves; ++hh)
                tma_load_3d(sV + s * S::kv_bytes + hh * kBoxBytes, hp.tv, hh * 64, kvh, key, &bar.full_v[s]);
        }
        return;
    }

    // 4. consumers: warpgroup wg - 1 owns rows 64(wg − 1) ..; this thread's two rows
    warpgroup_reg_alloc<232>();
    const int cw = wg - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;
    const int wq0 = q0 + cw * 64 + warp * 16;
    const int rows[2] = {wq0 + g, wq0 + g + 8};
    const unsigned q_base = smem_u32(sQ) + cw * 64 * 128;

    float acc_o[D / 8][4];
    zero_acc<D>(acc_o);
    float m[2] = {kMasked, kMasked}, l[2] = {0.0f, 0.0f};
    OnlineRowStats<kEntropy, kOthers> st(p.stat, p.sink_keys);
    const float scale_log2 = p.scale * kLog2e;

    // Ping-pong: warpgroup w issues its QKᵀ only after the other one has issued its PV (named barrier w,
    // 256 threads), so one warpgroup's softmax runs under the other's GEMMs; warpgroup 1 goes first.
    if (wg == 2) named_barrier_arrive<1>(256);
    mbar_wait(&bar.q, 0);

    // 4a. prologue: tile 0's S, softmax and P
    float sc[kHNTiles][4], alpha[2];
    unsigned pf[kHNTiles / 2][4];
    mbar_wait(&bar.full_k[0], 0);
    scheduler_wait(wg);
    qk_issue<D>(sc, q_base, smem_u32(sK));
    scheduler_release(wg);
    wgmma_wait<0>();
    fence_regs(sc);
    softmax_tile<kHNTiles, kEntropy, kOthers>(sc, m, l, st, alpha, scale_log2, wq0 < kHBlockN - 1 || len < kHBlockN, 0,
                                              rows, len, c);
    pack_p<kHNTiles>(sc, pf);

    // 4b. steady state, tile kb: issue S_kb = Q K_kb and O += P_{kb−1} V_{kb−1}; the softmax of S_kb runs
    // while the PV is in flight; then tile kb − 1's stage is released
    for (int kb = 1; kb < n_tiles; ++kb) {
        const int s = kb % kHStages, sp = (kb - 1) % kHStages, k0 = kb * kHBlockN;
        mbar_wait(&bar.full_k[s], (kb / kHStages) & 1);
        scheduler_wait(wg);
        qk_issue<D>(sc, q_base, smem_u32(sK + s * S::kv_bytes));
        rescale_o<D>(acc_o, alpha);
        mbar_wait(&bar.full_v[sp], ((kb - 1) / kHStages) & 1);
        pv_issue<D>(acc_o, pf, smem_u32(sV + sp * S::kv_bytes));
        scheduler_release(wg);
        wgmma_wait<1>();  // S_kb
        fence_regs(sc);
        const bool edge = k0 + kHBlockN - 1 > wq0 || k0 + kHBlockN > len;
        softmax_tile<kHNTiles, kEntropy, kOthers>(sc, m, l, st, alpha, scale_log2, edge, k0, rows, len, c);
        // P_kb stays f32 in sc until the PV reading pf is done (FA3's order); the fence keeps the softmax
        // above the wait in the PTX (ptxas 13.0 still moves the wait above the exponentials: the header)
        fence_regs(sc);
        wgmma_wait<0>();  // P_{kb−1} V_{kb−1}
        fence_regs(acc_o);
        fence_regs(pf);
        mbar_arrive(&bar.empty[sp]);
        pack_p<kHNTiles>(sc, pf);
    }

    // 4c. the last tile's PV; warpgroup 1 takes warpgroup 2's last arrival, so no barrier is left half-arrived
    const int sl = (n_tiles - 1) % kHStages;
    rescale_o<D>(acc_o, alpha);
    mbar_wait(&bar.full_v[sl], ((n_tiles - 1) / kHStages) & 1);
    pv_issue<D>(acc_o, pf, smem_u32(sV + sl * S::kv_bytes));
    wgmma_wait<0>();
    fence_regs(acc_o);
    fence_regs(pf);
    mbar_arrive(&bar.empty[sl]);
    if (wg == 1) named_barrier_sync<1>(256);

    // 5. epilogue: O /= l, LSE, statistics
    store_rows<D>(p, acc_o, m, l, st, start, rows, len, h, c);
}

// Two entries per head size, as attention_mma.cu: the plain one writes the entropy slot only.
#define DEFINE_ATTN_FWD_HOPPER(D)                                                                             \
    extern "C" __global__ void __launch_bounds__(kHThreads, 1)                                               \
        attn_fwd_hopper_d##D(const __grid_constant__ AttnHopperParams p) {                                   \
        if (p.fwd.stat[kStatEntropy])                                                                        \
            attn_fwd_hopper_body<D, true, false>(p);                                                         \
        else                                                                                                 \
            attn_fwd_hopper_body<D, false, false>(p);                                                        \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(kHThreads, 1)                                               \
        attn_fwd_hopper_stats_d##D(const __grid_constant__ AttnHopperParams p) {                             \
        if (p.fwd.stat[kStatEntropy])                                                                        \
            attn_fwd_hopper_body<D, true, true>(p);                                                          \
        else                                                                                                 \
            attn_fwd_hopper_body<D, false, true>(p);                                                         \
    }
DEFINE_ATTN_FWD_HOPPER(64)
DEFINE_ATTN_FWD_HOPPER(128)
