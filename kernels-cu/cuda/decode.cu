// decode.cu: KV-cache writes and decode attention (one new query row per sequence against its cache).
//
// Cache layout: k_cache / v_cache [slots, max_len, Hkv, D]; a request owns one slot. kv_write copies the
// new rows k/v [n, Hkv, D] to (slot[i], pos[i]). decode_attention: for request b, query head h (KV head
// h / (Hq/Hkv)), keys j < len[b] of slot[b]:
//   s_j = scale·q·k_j,  p = softmax(s),  o = Σ_j p_j v_j        (the whole row fits in shared memory)
// One block per (request, head): 1. scores, one warp per key, 2. max and Σe (block reductions),
// 3. o_c = Σ_j p_j v_jc with threads over c. Memory-bound by design: each K/V row is read once.
#include "common.cuh"

template <typename T>
__device__ void kv_write_body(T* __restrict__ k_cache, T* __restrict__ v_cache, const T* __restrict__ k,
                              const T* __restrict__ v, const int* __restrict__ slot, const int* __restrict__ pos,
                              int n, int hkv, int d, int max_len, int* err) {
    const long long row = (long long)hkv * d;
    const long long total = (long long)n * row;
    for (long long e = global_tid(); e < total; e += grid_stride()) {
        const long long i = e / row, c = e - i * row;
        const int p = pos[i];
        if (p < 0 || p >= max_len) {
            if (c == 0) atomicExch(err, 1);
            continue;
        }
        const long long dst = ((long long)slot[i] * max_len + p) * row + c;
        k_cache[dst] = k[e];
        v_cache[dst] = v[e];
    }
}

template <typename T>
__device__ void decode_attention_body(T* __restrict__ o, const T* __restrict__ q, const T* __restrict__ k_cache,
                                      const T* __restrict__ v_cache, const int* __restrict__ slot,
                                      const int* __restrict__ len, int hq, int hkv, int d, int max_len, float scale) {
    extern __shared__ float s[];  // [max_len] scores, then probabilities
    const int b = blockIdx.x, h = blockIdx.y, kvh = h / (hq / hkv);
    const int n = min(len[b], max_len);
    const long long row = (long long)hkv * d;
    const T* kc = k_cache + (long long)slot[b] * max_len * row + (long long)kvh * d;
    const T* vc = v_cache + (long long)slot[b] * max_len * row + (long long)kvh * d;
    const T* qr = q + ((long long)b * hq + h) * d;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    // 1. scores: one warp per key, lanes over the head dimension
    for (int j = warp; j < n; j += warps) {
        float acc = 0.0f;
        for (int c = lane; c < d; c += 32) acc += to_f32(qr[c]) * to_f32(kc[(long long)j * row + c]);
        acc = warp_sum(acc);
        if (lane == 0) s[j] = acc * scale;
    }
    __syncthreads();
    // 2. softmax statistics
    float m = -CUDART_INF_F;
    for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, s[j]);
    m = block_max(m);
    float l = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float e = expf(s[j] - m);
        s[j] = e;
        l += e;
    }
    l = block_sum(l);  // its leading __syncthreads also orders the s[j] writes before step 3
    const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
    // 3. output: threads over the head dimension
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < n; ++j) acc += s[j] * to_f32(vc[(long long)j * row + c]);
        o[((long long)b * hq + h) * d + c] = from_f32<T>(acc * inv_l);
    }
}

#define DEFINE_DECODE(SFX, T)                                                                                  \
    KERNEL kv_write_##SFX(T* k_cache, T* v_cache, const T* k, const T* v, const int* slot, const int* pos, int n, \
                          int hkv, int d, int max_len, int* err) {                                              \
        kv_write_body<T>(k_cache, v_cache, k, v, slot, pos, n, hkv, d, max_len, err);                           \
    }                                                                                                          \
    KERNEL decode_attention_##SFX(T* o, const T* q, const T* k_cache, const T* v_cache, const int* slot,        \
                                  const int* len, int hq, int hkv, int d, int max_len, float scale) {           \
        decode_attention_body<T>(o, q, k_cache, v_cache, slot, len, hq, hkv, d, max_len, scale);                \
    }
DEFINE_DECODE(f32, float)
DEFINE_DECODE(bf16, __nv_bfloat16)
