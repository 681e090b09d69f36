// attention_row_stats.cuh: the per-(token, head) row statistics that the fused forward (attention_mma.cu)
// accumulates inside its online softmax, as one component with the online pass's named steps — the way
// FlashAttention's softmax.h keeps the row max and sum. Each statistic is a slot of AttnFwdParams::stat
// (null = not asked for), which attention_params.cuh sizes by kOnlineStats; engine/src/ops/row_stat.rs
// numbers the same slots (RowStat) and holds the f64 reference, emu/attention_ref.h the emulator's. Plain
// C++ apart from the intrinsics the emulator shims.
//
// The forward works in log2 units: x_j = scale·log2(e)·q·k_j, running max m, p_j = 2^(x_j − m), l = Σ p_j.
// When a key tile moves the max from m to m' every running sum over p is rescaled by α = 2^(m − m').
//   entropy   t ← α·(t + (m − m')·l) + Σ p_j (x_j − m');   H = ln l − ln2·t/l      (kernels.md §3)
//   max_prob  max_j p_j = 2^(m − m)/l = 1/l, nothing to accumulate
//   sink      s ← α·s + Σ_{j < sink_keys} p_j;           S = s/l (the first keys lie in the first tile)
//   distance  u ← α·u + Σ p_j·j;                         D = (i − u/l)/i for the query at position i > 0, else 0
// A thread holds two query rows (i = 0, 1) and a quarter of their columns; its partial sums are reduced
// over the 4 threads of the row's quad at the end.
#pragma once

// Slots of AttnFwdParams::stat, in RowStat's order.
enum RowStatSlot { kStatEntropy = 0, kStatMaxProb = 1, kStatSink = 2, kStatDistance = 3, kOnlineStats = 4 };

// The online statistics of a thread's two rows. kEntropy is the entropy slot resolved at compile time (its
// FFMA per score is the one cost that matters). kOthers compiles in the other slots, which are then read
// from the parameters; without it they are never written (the forward's entry without them keeps the
// entropy-only register budget, attention_mma.cu).
template <bool kEntropy, bool kOthers> struct OnlineRowStats {
    float t[2] = {0.0f, 0.0f};   // entropy: Σ p (x − m), log2 units
    float sk[2] = {0.0f, 0.0f};  // sink: Σ_{j < sink_keys} p_j
    float u[2] = {0.0f, 0.0f};   // distance: Σ p_j·j
    int sink_keys;
    bool distance;
    bool max_prob;
    bool in_sink_tile = false;

    __device__ __forceinline__ OnlineRowStats(float* const (&stat)[kOnlineStats], int sink_keys_asked)
        : sink_keys(kOthers && stat[kStatSink] ? sink_keys_asked : 0),
          distance(kOthers && stat[kStatDistance] != nullptr),
          max_prob(kOthers && stat[kStatMaxProb] != nullptr) {}

    // 0. a key tile starting at key k0 begins
    __device__ __forceinline__ void begin_tile(int k0) { in_sink_tile = kOthers && k0 < sink_keys; }

    // 1. the row max moved from m to m' (dm = m − m', α = 2^dm); l is the row sum before its rescale
    __device__ __forceinline__ void rescale(int i, float alpha, float dm, float l) {
        if (kEntropy) t[i] = alpha * (t[i] + dm * l);
        if (kOthers) {
            sk[i] *= alpha;
            u[i] *= alpha;
        }
    }

    // 2. key `key` of row i got probability p = 2^x (x = its score − m')
    __device__ __forceinline__ void add(int i, float p, float x, int key) {
        if (kEntropy) t[i] = fmaf(p, x, t[i]);
        if (kOthers && in_sink_tile && key < sink_keys) sk[i] += p;
        if (kOthers && distance) u[i] = fmaf(p, (float)key, u[i]);
    }

    // 3. sum row i's partial sums over the 4 threads of its quad
    __device__ __forceinline__ void reduce_quad(int i) {
        if (kEntropy) t[i] = quad_sum(t[i]);
        if (kOthers && sink_keys) sk[i] = quad_sum(sk[i]);
        if (kOthers && distance) u[i] = quad_sum(u[i]);
    }

    // 4. write row i's statistics at `row` ([T, Hq] index); `pos` is the query's position in its sequence
    // (its keys are 0 ..= pos), l the row sum (≥ 1: the max contributes 2^0)
    __device__ __forceinline__ void store(float* const (&stat)[kOnlineStats], long long row, int i, int pos,
                                          float l) const {
        const float inv_l = 1.0f / l;
        if (kEntropy) stat[kStatEntropy][row] = logf(l) - 0.6931471805599453f * t[i] * inv_l;
        if (kOthers && max_prob) stat[kStatMaxProb][row] = inv_l;
        if (kOthers && sink_keys) stat[kStatSink][row] = sk[i] * inv_l;
        if (kOthers && distance) stat[kStatDistance][row] = pos > 0 ? (pos - u[i] * inv_l) / pos : 0.0f;
    }

    __device__ __forceinline__ static float quad_sum(float v) {
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        return v + __shfl_xor_sync(0xffffffffu, v, 2);
    }
};
