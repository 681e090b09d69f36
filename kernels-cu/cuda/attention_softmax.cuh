// attention_softmax.cuh: the online-softmax stage of the fused attention forwards (attention_mma.cu with
// mma.sync, attention_hopper.cu with wgmma), on the f32 accumulator layout both share: a thread holds two
// query rows (g and g + 8 of its warp's 16-row slab) and, of an NT·8-key tile, the columns 8j + 2c, 8j + 2c + 1
// of every n8 tile j (g = lane / 4, c = lane % 4; mma.cuh). The same layout is the A operand of P·V, so P is
// packed in place. Also the O accumulator's start and rescale and the epilogue, which both share. Built on
// mma.cuh's fast_exp2 / pack_bf16x2, attention_params.cuh and attention_row_stats.cuh.
#pragma once

#include "attention_params.cuh"

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Masked scores: a large finite negative, so p = 0 and p·(x − m') = −0, never 0·(−inf) = NaN.
constexpr float kMasked = -1e30f;

// The O accumulator's start: zero, before the first P·V adds to it.
template <int D> __device__ __forceinline__ void zero_acc(float (&acc_o)[D / 8][4]) {
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_o[dn][e] = 0.0f;
}

// O ← α·O for the thread's two rows (α from softmax_tile), before the tile's P·V adds to it.
template <int D> __device__ __forceinline__ void rescale_o(float (&acc_o)[D / 8][4], const float (&alpha)[2]) {
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
        acc_o[dn][0] *= alpha[0];
        acc_o[dn][1] *= alpha[0];
        acc_o[dn][2] *= alpha[1];
        acc_o[dn][3] *= alpha[1];
    }
}

// Scores to log2 units with the causal / sequence-end mask, the online softmax and row statistics update
// of the thread's two rows (state m, l and `st`; α returned for the O rescale); P = 2^(x − m') is left in `s`
// (f32), for pack_p. The two are separate so that a caller with a P·V in flight (attention_hopper.cu) runs
// this under it and packs only after the wait, into the registers that P·V read.
template <int NT, bool kEntropy, bool kOthers>
__device__ __forceinline__ void softmax_tile(float (&s)[NT][4], float (&m)[2], float (&l)[2],
                                             OnlineRowStats<kEntropy, kOthers>& st, float (&alpha)[2],
                                             float scale_log2, bool edge, int k0, const int (&rows)[2], int len,
                                             int c) {
    // log2 units; masked keys (past the row or the sequence end) take kMasked
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float x = s[j][e] * scale_log2;
            if (edge) {
                const int key = k0 + j * 8 + 2 * c + (e & 1);
                if (key > rows[e >> 1] || key >= len) x = kMasked;
            }
            s[j][e] = x;
        }
    // row max over the tile, shared by the 4 threads of a group; rescale the running state
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        alpha[i] = fast_exp2(m[i] - mx[i]);
        st.rescale(i, alpha[i], m[i] - mx[i], l[i]);
        l[i] *= alpha[i];
        m[i] = mx[i];
    }
    // p = 2^(x − m'), the row sums and the statistics' sums
    st.begin_tile(k0);
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float x = s[j][e] - m[e >> 1];
            const float p = fast_exp2(x);
            l[e >> 1] += p;
            st.add(e >> 1, p, x, k0 + j * 8 + 2 * c + (e & 1));
            s[j][e] = p;
        }
}

// P (f32, the accumulator layout) packed to bf16 as the A operand of P·V: n8 tiles 2i and 2i + 1 form k16
// step i.
template <int NT> __device__ __forceinline__ void pack_p(const float (&s)[NT][4], unsigned (&pf)[NT / 2][4]) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        pf[j / 2][(j % 2) * 2 + 0] = pack_bf16x2(s[j][0], s[j][1]);
        pf[j / 2][(j % 2) * 2 + 1] = pack_bf16x2(s[j][2], s[j][3]);
    }
}

// The forward's epilogue for the thread's two rows: quad-reduce l and the statistics, then O /= l (bf16),
// LSE = ln2·m + ln l and the statistics at [T, Hq] row (start + rows[i])·hq + h; rows past the sequence end
// are not written. l ≥ 1: the row max contributes 2^0.
template <int D, bool kEntropy, bool kOthers>
__device__ __forceinline__ void store_rows(const AttnFwdParams& p, const float (&acc_o)[D / 8][4], const float (&m)[2],
                                           float (&l)[2], OnlineRowStats<kEntropy, kOthers>& st, long long start,
                                           const int (&rows)[2], int len, int h, int c) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        l[i] = OnlineRowStats<kEntropy, kOthers>::quad_sum(l[i]);
        st.reduce_quad(i);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        if (rows[i] >= len) continue;
        const long long row = (start + rows[i]) * p.hq + h;
        const float inv_l = 1.0f / l[i];
        __nv_bfloat16* orow = p.o + row * D;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn)
            *reinterpret_cast<unsigned*>(orow + dn * 8 + 2 * c) =
                pack_bf16x2(acc_o[dn][2 * i] * inv_l, acc_o[dn][2 * i + 1] * inv_l);
        if (c == 0) {
            p.lse[row] = kLn2 * m[i] + logf(l[i]);
            st.store(p.stat, row, i, rows[i], l[i]);
        }
    }
}
