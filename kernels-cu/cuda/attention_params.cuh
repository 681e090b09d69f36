// attention_params.cuh: the by-value parameter structs of the fused attention forward and of the
// head-mixture pass, identical in layout to their Rust #[repr(C)] twins in engine/src/cuda/attention.rs (the
// engine checks the struct's size against the kernel's PTX parameter before every launch). A statistic's
// pointer is null when the caller did not ask for it. Plain C++ apart from the bf16 type, so the CPU
// emulation includes it unchanged.
#pragma once

#include "attention_row_stats.cuh"

struct AttnFwdParams {
    __nv_bfloat16* o;          // [T, Hq, D]
    float* lse;                // [T, Hq], natural log
    float* stat[kOnlineStats];  // [T, Hq] per RowStatSlot (attention_row_stats.cuh), or null
    const __nv_bfloat16* q;    // [T, Hq, D]
    const __nv_bfloat16* k;    // [T, Hkv, D]
    const __nv_bfloat16* v;    // [T, Hkv, D]
    const int* cu_seqlens;     // [num_seqs + 1]
    int hq, hkv;
    float scale;
    int sink_keys;             // 1 .. 64 (the first key tile) when the sink slot is asked for
};

struct AttnHmixParams {
    float* hmix;               // [T] entropy of the head-averaged attention distribution, natural log
    const float* lse;          // [T, Hq] from the forward
    const __nv_bfloat16* q;    // [T, Hq, D]
    const __nv_bfloat16* k;    // [T, Hkv, D]
    const int* cu_seqlens;     // [num_seqs + 1]
    int hq, hkv;
    float scale;
    int pad;
};

#include "hopper_desc.cuh"

// attn_fwd_hopper_d* (attention_hopper.cu): the forward's parameters and the TMA descriptors of q, k and v as
// 3-D tensors [T][H][D] (D contiguous), box (64, 1, 128) with the 128-byte swizzle; filled on the host by
// cuTensorMapEncodeTiled (engine/src/cuda/tma.rs), by emu_encode_tma on the CPU.
struct AttnHopperParams {
    TmaDesc tq, tk, tv;
    AttnFwdParams fwd;
};

// attn_bwd_hopper_d* (attention_hopper_bwd.cu): TMA maps of q and dout (box (64, 1, 64)) and of k and v
// (box (64, 1, 128)), 128-byte swizzle; then the outputs and inputs of attention_mma_bwd.cu's main kernel.
struct AttnHopperBwdParams {
    TmaDesc tq, tk, tv, tdo;
    float* dq_accum;           // [T, Hq, D] f32, pre-zeroed; += scale · dS K
    float* dk_head;            // [T, Hq, D] f32: this query head's scale · dSᵀ Q
    float* dv_head;            // [T, Hq, D] f32: this query head's Pᵀ dO
    const float* lse;          // [T, Hq]
    const float* dvec;         // [T, Hq]: rowsum(dO ∘ O)
    const int* cu_seqlens;     // [num_seqs + 1]
    int hq, hkv;
    float scale;
    int pad;
};
