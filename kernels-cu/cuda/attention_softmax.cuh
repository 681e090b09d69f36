// attention_softmax.cuh: the online-softmax stage of the fused attention forwards (attention_mma.cu with
// mma.sync, attention_hopper.cu with wgmma), on the f32 accumulator layout both share: a thread holds two
// query rows (g and g + 8 of its warp's 16-row slab) and, of an NT·8-key tile, the columns 8j + 2c, 8j + 2c + 1
// of every n8 tile j (g = lane / 4, c = lane % 4; mma.cuh). The same layout is the A operand of P·V, so P is
// packed in place. Built on mma.cuh's fast_exp2 / pack_bf16x2 and attention_row_stats.cuh.
#pragma once

#include "attention_row_stats.cuh"

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Masked scores: a large finite negative, so p = 0 and p·(x − m') = −0, never 0·(−inf) = NaN.
constexpr float kMasked = -1e30f;

// Scores to log2 units with the causal / sequence-end mask, the online softmax and row statistics update
// of the thread's two rows (state m, l and `st`; α returned for the O rescale), and P packed as the A
// operand of P·V (the S accumulator layout is the A layout, so no data moves between threads).
template <int NT, bool kEntropy, bool kOthers>
__device__ __forceinline__ void softmax_tile(float (&s)[NT][4], float (&m)[2], float (&l)[2],
                                             OnlineRowStats<kEntropy, kOthers>& st, float (&alpha)[2],
                                             unsigned (&pf)[NT / 2][4], float scale_log2, bool edge, int k0,
                                             const int (&rows)[2], int len, int c) {
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
    // p = 2^(x − m'), the row sums and the statistics' sums, P packed to bf16
    st.begin_tile(k0);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float x = s[j][e] - m[e >> 1];
            p[e] = fast_exp2(x);
            l[e >> 1] += p[e];
            st.add(e >> 1, p[e], x, k0 + j * 8 + 2 * c + (e & 1));
        }
        pf[j / 2][(j % 2) * 2 + 0] = pack_bf16x2(p[0], p[1]);
        pf[j / 2][(j % 2) * 2 + 1] = pack_bf16x2(p[2], p[3]);
    }
}
