// attention_hopper_bwd.cu: the Hopper-native (sm_90a) backward of the fused causal varlen GQA attention, the
// main kernel of the backward in attention_mma_bwd.cu's contract (the row dot D_i comes from attn_bwd_dot,
// the per-query-head dK/dV are summed per KV head by attn_bwd_mma_reduce), with FlashAttention-3's data
// movement (Shah et al. 2024, §3 and its backward): a producer thread's TMA copies and two consumer
// warpgroups on wgmma.
//
// One CTA owns 128 keys of one sequence and one *query* head; consumer warpgroup w + 1 owns keys 64w .. 64w+63.
// It walks the query tiles on or below the diagonal, 64 queries at a time, everything transposed (rows =
// keys), as attention_mma_bwd.cu:
//   Sᵀ = K Qᵀ, dPᵀ = V dOᵀ             wgmma m64n64k16, A = the warpgroup's K / V rows, B = Q / dO rows, both
//                                       K-major in shared memory
//   Pᵀ = 2^(Sᵀ·scale·log2e − LSE·log2e) (0 where the key is past the query or either is past the end)
//   dSᵀ = Pᵀ ∘ (dPᵀ − D_query)
//   dV += Pᵀ dO, dK += dSᵀ Q            wgmma m64n{D}k16, A = Pᵀ / dSᵀ from registers (the accumulator layout
//                                       is the A fragment), B = dO / Q MN-major (queries are K, d is N)
//   dQ += dS K                          dSᵀ goes to shared memory once ([128 keys][64 queries], swizzled), then
//                                       wgmma m64n64k16 with A = dS MN-major (tnspA) and B = K MN-major
//                                       (tnspB); for D = 128 each warpgroup takes half of d, for D = 64 the
//                                       first one all of it; the scaled f32 tile goes to shared memory and a
//                                       writer warp adds its rows to dq_accum with bulk reductions
//                                       (cp.reduce.async.bulk .add.f32, FlashAttention-3's dQ path), so the
//                                       consumers issue no atomics and the next tile's GEMMs run meanwhile
// Pipeline: K and V land once; Q and dO stream through two stages with full/empty mbarriers; the two
// warpgroups meet at named barrier 3 around the dSᵀ tile (before writing it: the other's previous dQ has
// read it; after: both halves are there), with fence.proxy.async between the generic stores and the wgmma
// reads. Each query tile's LSE and D are staged in shared memory by the consumers (named barrier 4): held in
// registers, their 32 loads per thread would not fit beside the accumulators. The dQ tile is handed over
// with named barriers 5 (free: the writer's reductions have read the previous tile) and 6 (full: both
// warpgroups' parts are stored and fenced for the async proxy), 288 threads each. Registers: setmaxnreg 24
// (producer warpgroup: the TMA thread and the dQ writer warp) / 240 (consumers).
// Stages: 1 which tile; 2 barriers; 3 producer (K, V, then Q and dO per query tile); 3b dQ writer; 4 consumers
// per query tile: 4a Sᵀ and dPᵀ; 4b Pᵀ and dSᵀ; 4c dSᵀ to shared memory; 4d issue dV and dK; 4e dQ to the
// writer; 4f release the stage; 5 epilogue (this query head's dK (scaled) and dV rows, rows past the end not
// written).
// Layouts: as attention_mma_bwd.cu, parameters AttnHopperBwdParams (attention_params.cuh). Grid
// (ceil(max_len/128), Hq, num_seqs), 384 threads, dynamic smem HopperBwdSmem<D>::bytes.
#include "common.cuh"
#include "mma.cuh"
#include "hopper.cuh"
#include "attention_params.cuh"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int kBKeys = 128;    // keys per CTA
constexpr int kBQueries = 64;  // queries per main-loop step
constexpr int kBStages = 2;
constexpr int kBThreads = 384;
constexpr int kBQTiles = kBQueries / 8;
constexpr int kKBox = kBKeys * 128;      // one [128][64] bf16 box (K, V)
constexpr int kQBox = kBQueries * 128;   // one [64][64] bf16 box (Q, dO)
constexpr float kBLog2e = 1.4426950408889634f;
constexpr int kDqThreads = 32 + 256;  // the dQ writer warp and the consumers meet at barriers 5 and 6

template <int D> struct HopperBwdSmem {
    static constexpr int halves = D / 64;
    static constexpr int k_bytes = halves * kKBox;  // K (or V)
    static constexpr int q_bytes = halves * kQBox;  // one stage of Q (or dO)
    static constexpr int ds_bytes = kBKeys * kBQueries * 2;
    static constexpr int stats_bytes = kBStages * 2 * kBQueries * 4;  // LSE·log2e and D per query, per stage
    // the dQ tile, f32 [64 queries][D + 8]: 16-byte aligned rows for the bulk reductions, padded so a warp's
    // float2 stores (8 rows × 4 columns) take the minimum two wavefronts
    static constexpr int dq_ld = D + 8;
    static constexpr int dq_bytes = kBQueries * dq_ld * 4;
    static constexpr int bars = 8 * (1 + 2 * kBStages);
    static constexpr int bytes =
        1024 + 2 * k_bytes + 2 * kBStages * q_bytes + ds_bytes + stats_bytes + dq_bytes + bars;
};

struct BwdBarriers {
    unsigned long long kv, full[kBStages], empty[kBStages];
};

// Sᵀ (or dPᵀ) = X_w · Yᵀ: X the warpgroup's 64 rows of K (or V), Y the 64 query rows of Q (or dO).
template <int D>
__device__ __forceinline__ void xyt_issue(float (&acc)[kBQTiles][4], unsigned x_base, unsigned y_base) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const unsigned kx = (kk / 4) * kKBox + (kk % 4) * 32, ky = (kk / 4) * kQBox + (kk % 4) * 32;
        wgmma_ss_m64n64(acc, gmma_desc(x_base + kx, 0, 1024), gmma_desc(y_base + ky, 0, 1024), kk > 0);
    }
}

// acc += Aᵀ-fragment · Y: A packed from registers (queries are K), Y the [64 queries][D] tile (MN-major).
template <int D>
__device__ __forceinline__ void acc_issue(float (&acc)[D / 8][4], const unsigned (&a)[kBQTiles / 2][4],
                                          unsigned y_base) {
#pragma unroll
    for (int kk = 0; kk < kBQueries / 16; ++kk) {
        const unsigned long long dy = gmma_desc(y_base + kk * 2048, kQBox, 1024);
        if constexpr (D == 128)
            wgmma_rs_m64n128_tnspb(acc, a[kk], dy);
        else
            wgmma_rs_m64n64_tnspb(acc, a[kk], dy);
    }
}

}  // namespace

template <int D> __device__ __forceinline__ void attn_bwd_hopper_body(const AttnHopperBwdParams& p) {
    static_assert(D == 64 || D == 128, "wgmma's N and the 64-element swizzle boxes");
    using S = HopperBwdSmem<D>;
    static_assert(S::bytes <= 227 * 1024, "one CTA fits an SM's shared memory");
    DYNAMIC_SMEM(smem, 1024);

    // 1. which tile: key block x (heaviest first: it has the most query tiles) of sequence z, query head y
    const int seq = blockIdx.z, h = blockIdx.y, kvh = h / (p.hq / p.hkv);
    const int start = p.cu_seqlens[seq];
    const int len = p.cu_seqlens[seq + 1] - start;
    const int k0 = blockIdx.x * kBKeys;
    if (k0 >= len) return;
    const int qb0 = k0 / kBQueries, n_qtiles = (len + kBQueries - 1) / kBQueries;

    // 2. shared memory and barriers
    unsigned char* base = smem + ((1024u - (smem_u32(smem) & 1023u)) & 1023u);
    unsigned char* sK = base;
    unsigned char* sV = sK + S::k_bytes;
    unsigned char* sQ = sV + S::k_bytes;
    unsigned char* sdO = sQ + kBStages * S::q_bytes;
    unsigned char* sdS = sdO + kBStages * S::q_bytes;
    float* sStats = reinterpret_cast<float*>(sdS + S::ds_bytes);  // [stage][LSE·log2e 64 | D 64]
    float* sdQ = sStats + S::stats_bytes / 4;                     // [query][dq_ld]
    BwdBarriers& bar = *reinterpret_cast<BwdBarriers*>(sdS + S::ds_bytes + S::stats_bytes + S::dq_bytes);
    if (threadIdx.x == 0) {
        mbar_init(&bar.kv, 1);
        for (int s = 0; s < kBStages; ++s) {
            mbar_init(&bar.full[s], 1);
            mbar_init(&bar.empty[s], kBThreads - 128);
        }
        mbar_fence_init();
    }
    __syncthreads();

    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        warpgroup_reg_dealloc<24>();
        if (threadIdx.x / 32 == 1) {
            // 3b. dQ writer: each query tile's rows (those before the sequence end) added to dq_accum, one bulk
            // reduction per row; the tile is free again once they have read it
            const int lane = threadIdx.x % 32;
            named_barrier_arrive<5>(kDqThreads);
            for (int qb = qb0; qb < n_qtiles; ++qb) {
                named_barrier_sync<6>(kDqThreads);
                for (int r = lane; r < kBQueries; r += 32) {
                    const long long query = (long long)qb * kBQueries + r;
                    if (query < len)
                        bulk_reduce_add_f32(p.dq_accum + ((start + query) * p.hq + h) * D, sdQ + r * S::dq_ld, D * 4);
                }
                bulk_commit();
                bulk_wait_read<0>();
                if (qb + 1 < n_qtiles) named_barrier_arrive<5>(kDqThreads);
            }
            bulk_wait<0>();
            return;
        }
        // 3. producer
        if (threadIdx.x != 0) return;
        mbar_arrive_expect_tx(&bar.kv, 2 * S::k_bytes);
        for (int hh = 0; hh < S::halves; ++hh) {
            tma_load_3d(sK + hh * kKBox, p.tk, hh * 64, kvh, start + k0, &bar.kv);
            tma_load_3d(sV + hh * kKBox, p.tv, hh * 64, kvh, start + k0, &bar.kv);
        }
        for (int qb = qb0; qb < n_qtiles; ++qb) {
            const int i = qb - qb0, s = i % kBStages;
            mbar_wait(&bar.empty[s], ((i / kBStages) & 1) ^ 1);
            mbar_arrive_expect_tx(&bar.full[s], 2 * S::q_bytes);
            const int row = start + qb * kBQueries;
            for (int hh = 0; hh < S::halves; ++hh) {
                tma_load_3d(sQ + s * S::q_bytes + hh * kQBox, p.tq, hh * 64, h, row, &bar.full[s]);
                tma_load_3d(sdO + s * S::q_bytes + hh * kQBox, p.tdo, hh * 64, h, row, &bar.full[s]);
            }
        }
        return;
    }

    // 4. consumers: warpgroup cw owns keys k0 + 64cw ..; this thread's two key rows
    warpgroup_reg_alloc<240>();
    const int cw = wg - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;
    const int wk0 = k0 + cw * 64 + warp * 16;
    const int keys[2] = {wk0 + g, wk0 + g + 8};
    const float scale_log2 = p.scale * kBLog2e;
    const unsigned k_rows = smem_u32(sK) + cw * 64 * 128, v_rows = smem_u32(sV) + cw * 64 * 128;
    // dQ: D = 128 splits d between the warpgroups; D = 64 leaves it to the first
    constexpr bool kSplitDq = D == 128;
    const bool does_dq = kSplitDq || cw == 0;

    float acc_dk[D / 8][4], acc_dv[D / 8][4];
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_dk[dn][e] = acc_dv[dn][e] = 0.0f;

    mbar_wait(&bar.kv, 0);
    for (int qb = qb0; qb < n_qtiles; ++qb) {
        const int i = qb - qb0, s = i % kBStages, q0 = qb * kBQueries;
        const unsigned tq = smem_u32(sQ + s * S::q_bytes), tdo = smem_u32(sdO + s * S::q_bytes);
        // the tile's LSE·log2e and D, staged once for both warpgroups (0 past the end); slot s was last read
        // two tiles ago, before named barrier 3 of the tile between
        float* tStats = sStats + s * 2 * kBQueries;
        {
            const int t = threadIdx.x - 128, qi = t % kBQueries, query = q0 + qi;
            if (t < 2 * kBQueries) {
                const long long r = ((long long)start + query) * p.hq + h;
                tStats[t] = query >= len ? 0.0f : t < kBQueries ? p.lse[r] * kBLog2e : p.dvec[r];
            }
        }
        named_barrier_sync<4>(256);
        mbar_wait(&bar.full[s], (i / kBStages) & 1);

        // 4a. Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for the warpgroup's 64 keys × 64 queries
        float st[kBQTiles][4], dpt[kBQTiles][4];
        wgmma_fence();
        xyt_issue<D>(st, k_rows, tq);
        xyt_issue<D>(dpt, v_rows, tdo);
        wgmma_commit();
        wgmma_wait<0>();
        fence_regs(st);
        fence_regs(dpt);

        // 4b. Pᵀ and dSᵀ, packed as A operands (the thread's query columns 8j + 2c + e%2)
        const bool edge = q0 < wk0 + 15 || q0 + kBQueries > len || wk0 + 15 >= len;
        unsigned pa[kBQTiles / 2][4], dsa[kBQTiles / 2][4];
#pragma unroll
        for (int j = 0; j < kBQTiles; ++j) {
            float pr[4], ds[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int qi = j * 8 + 2 * c + (e & 1), query = q0 + qi, key = keys[e >> 1];
                pr[e] = fast_exp2(fmaf(st[j][e], scale_log2, -tStats[qi]));
                if (edge && (key > query || query >= len || key >= len)) pr[e] = 0.0f;
                ds[e] = pr[e] * (dpt[j][e] - tStats[kBQueries + qi]);
            }
            pa[j / 2][(j % 2) * 2 + 0] = pack_bf16x2(pr[0], pr[1]);
            pa[j / 2][(j % 2) * 2 + 1] = pack_bf16x2(pr[2], pr[3]);
            dsa[j / 2][(j % 2) * 2 + 0] = pack_bf16x2(ds[0], ds[1]);
            dsa[j / 2][(j % 2) * 2 + 1] = pack_bf16x2(ds[2], ds[3]);
        }

        // 4c. dSᵀ to shared memory as [key][query], 128-byte rows swizzled (the MN-major A layout of dQ's
        // product), once the other warpgroup's previous dQ has read the tile; before dK's wgmma takes dSᵀ's
        // registers as its A operand (an in-flight wgmma's registers are not read)
        named_barrier_sync<3>(256);
#pragma unroll
        for (int j = 0; j < kBQTiles; ++j)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const unsigned key_local = cw * 64 + warp * 16 + g + 8 * r, col = j * 8 + 2 * c;
                const unsigned off = key_local * 128 + col * 2;
                *reinterpret_cast<unsigned*>(sdS + (off ^ (((off >> 7) & 7u) << 4))) = dsa[j / 2][(j % 2) * 2 + r];
            }
        fence_view_async_shared();

        // 4d. dV += Pᵀ dO and dK += dSᵀ Q; then both halves of dSᵀ are in
        fence_regs(acc_dv);
        fence_regs(acc_dk);
        fence_regs(pa);
        fence_regs(dsa);
        wgmma_fence();
        acc_issue<D>(acc_dv, pa, tdo);
        acc_issue<D>(acc_dk, dsa, tq);
        wgmma_commit();
        named_barrier_sync<3>(256);

        // 4e. dQ (64 queries × this warpgroup's part of d) = dS K over the CTA's 128 keys, issued behind dV and
        // dK; one wait for all three; then the scaled tile to shared memory for the writer warp
        float acc_dq[8][4];
        if (does_dq) {
            const unsigned kn = smem_u32(sK) + (kSplitDq ? cw * kKBox : 0);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < kBKeys / 16; ++kk)
                wgmma_ss_m64n64_tnspab(acc_dq, gmma_desc(smem_u32(sdS) + kk * 2048, 0, 1024),
                                       gmma_desc(kn + kk * 2048, kKBox, 1024), kk > 0);
            wgmma_commit();
        }
        wgmma_wait<0>();
        fence_regs(acc_dv);
        fence_regs(acc_dk);
        fence_regs(pa);
        fence_regs(dsa);
        named_barrier_sync<5>(kDqThreads);
        if (does_dq) {
            fence_regs(acc_dq);
            // the thread's first row (warp·16 + g) from threadIdx.x again: kept across the loop it spills
            const unsigned t = reread_tid() % 128, row0 = (t / 32) * 16 + (t % 32) / 4;
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                float* row = sdQ + (row0 + 8 * r) * S::dq_ld + (kSplitDq ? cw * 64 : 0);
#pragma unroll
                for (int dn = 0; dn < 8; ++dn)
                    *reinterpret_cast<float2*>(row + dn * 8 + 2 * c) =
                        make_float2(p.scale * acc_dq[dn][2 * r], p.scale * acc_dq[dn][2 * r + 1]);
            }
        }
        fence_view_async_shared();
        named_barrier_arrive<6>(kDqThreads);
        // 4f. this thread is done with the stage
        mbar_arrive(&bar.empty[s]);
    }

    // 5. epilogue
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (keys[r] >= len) continue;
        const long long row = (((long long)start + keys[r]) * p.hq + h) * D;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) {
            *reinterpret_cast<float2*>(p.dk_head + row + dn * 8 + 2 * c) =
                make_float2(p.scale * acc_dk[dn][2 * r], p.scale * acc_dk[dn][2 * r + 1]);
            *reinterpret_cast<float2*>(p.dv_head + row + dn * 8 + 2 * c) =
                make_float2(acc_dv[dn][2 * r], acc_dv[dn][2 * r + 1]);
        }
    }
}

#define DEFINE_ATTN_BWD_HOPPER(D)                                                                             \
    extern "C" __global__ void __launch_bounds__(kBThreads, 1)                                               \
        attn_bwd_hopper_d##D(const __grid_constant__ AttnHopperBwdParams p) {                                \
        attn_bwd_hopper_body<D>(p);                                                                          \
    }
DEFINE_ATTN_BWD_HOPPER(64)
DEFINE_ATTN_BWD_HOPPER(128)
