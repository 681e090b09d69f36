// decode.cu: paged KV-cache writes, block copies and decode attention (one new query row per request
// against its cache).
//
// Cache layout: k_cache / v_cache are pools [blocks, block_size, Hkv, D]; "pool row" r = block ·
// block_size + offset addresses one position's [Hkv, D]. Request b owns the block-table row
// table[b, 0..width): its position j lives at pool row table[b, j / block_size] · block_size +
// j % block_size. A contiguous cache is the pool with block_size = max_len and width 1.
// kv_write copies the new rows k/v [n, Hkv, D] to pool rows dst[i] (resolved on the host); a row outside
// the pool sets *err and is skipped. kv_copy_blocks copies whole blocks src[i] → dst[i] (the copy-on-write
// of a shared prompt's last, partial block).
//
// Decode attention is split-K ("flash decoding"): for request b and KV head kvh, keys j < len[b] of its
// block-table row are cut into chunks of kChunk keys; one CTA per (request, group of query heads sharing kvh, chunk) reads
// the chunk's K and V rows once for all its query heads (GQA) with 16-byte loads and writes a partial
// (m, l, õ) per head:
//   s_j = scale·q·k_j,  m = max_j s_j,  l = Σ_j e^(s_j − m),  õ = Σ_j e^(s_j − m) v_j
// then decode_combine merges the chunks of each (request, head): M = max m_c, L = Σ l_c e^(m_c − M),
// o = Σ õ_c e^(m_c − M) / L. Chunks past a request's length write m = −inf, l = 0, õ = 0.
// Stages of the chunk kernel: 0. the chunk's pool rows from the block table into shared memory; 1. q rows of the head group into shared memory; 2. scores, each thread a
// 16-byte slice of one key row, slices of a row reduced by shuffles; 3. per-head chunk max and sum (one
// warp per head); 4. õ, each thread a 16-byte slice of V for a strided subset of keys, then a shared-memory
// reduction over the key subsets.
#include "common.cuh"

// Write row −1 marks a padding row of a fixed-size batch (a replayed decode graph): it writes nothing.
constexpr int kPaddingRow = -1;

template <typename T>
__device__ void kv_write_body(T* __restrict__ k_cache, T* __restrict__ v_cache, const T* __restrict__ k,
                              const T* __restrict__ v, const int* __restrict__ dst, int n, int hkv, int d,
                              int cache_rows, int* err) {
    const long long row = (long long)hkv * d;
    const long long total = (long long)n * row;
    for (long long e = global_tid(); e < total; e += grid_stride()) {
        const long long i = e / row, c = e - i * row;
        const int r = dst[i];
        if (r == kPaddingRow) continue;  // a padding row of a fixed-size (graph) batch: nothing written
        if (r < 0 || r >= cache_rows) {
            if (c == 0) atomicExch(err, 1);
            continue;
        }
        const long long at = (long long)r * row + c;
        k_cache[at] = k[e];
        v_cache[at] = v[e];
    }
}

template <typename T>
__device__ void kv_copy_blocks_body(T* __restrict__ cache, const int* __restrict__ src, const int* __restrict__ dst,
                                    int n, long long block_elems) {
    const long long total = (long long)n * block_elems;
    for (long long e = global_tid(); e < total; e += grid_stride()) {
        const long long i = e / block_elems, c = e - i * block_elems;
        cache[(long long)dst[i] * block_elems + c] = cache[(long long)src[i] * block_elems + c];
    }
}

// Pool row of position j for the block-table row `table`.
__device__ __forceinline__ long long paged_row(const int* __restrict__ table, int j, int block_size) {
    return (long long)table[j / block_size] * block_size + j % block_size;
}

namespace {
constexpr int kDecodeThreads = 128;
constexpr int kChunk = 256;    // keys per CTA
constexpr int kMaxGroup = 8;   // query heads per CTA (the launcher splits larger GQA groups)
}  // namespace

// Dynamic shared memory of decode_chunk for head dim D and G heads (mirrored by the launcher):
// q [G][D] f32 | p [G][kChunk] f32 | partial õ [kDecodeThreads / (D / EPV)][G][D] f32 | pool rows [kChunk] i64.
template <typename T, int D>
__device__ void decode_chunk_body(float* __restrict__ ws_o, float* __restrict__ ws_m, float* __restrict__ ws_l,
                                  const T* __restrict__ q, const T* __restrict__ k_cache,
                                  const T* __restrict__ v_cache, const int* __restrict__ table,
                                  const int* __restrict__ len, int hq, int hkv, int group_heads, int block_size,
                                  int width, float scale) {
    constexpr int EPV = 16 / sizeof(T);       // elements per 16-byte vector
    constexpr int VECS = D / EPV;             // vectors per row (<= 32)
    constexpr int KPI = kDecodeThreads / VECS;  // keys handled per pass of the CTA
    static_assert(VECS <= 32 && kDecodeThreads % VECS == 0, "a row's vectors sit in one warp");
    DYNAMIC_SMEM(smem, 16);
    const int G = group_heads;
    float* sq = reinterpret_cast<float*>(smem);
    float* sp = sq + G * D;
    float* sred = sp + G * kChunk;
    long long* srow = reinterpret_cast<long long*>(sred + (kDecodeThreads / VECS) * G * D);

    // which tile: request b, heads h0..h0+G-1 (one KV head), chunk c
    const int b = blockIdx.x, h0 = blockIdx.y * G, chunk = blockIdx.z;
    const int kvh = h0 / (hq / hkv);
    const int n = min(len[b], width * block_size);
    const int j0 = chunk * kChunk, nk = max(0, min(kChunk, n - j0));
    const long long out = ((long long)b * hq + h0) * gridDim.z + chunk;  // partial row of head h0
    const int tid = threadIdx.x, vi = tid % VECS, kk = tid / VECS;
    if (nk == 0) {  // past the request's length: a neutral partial
        for (int i = tid; i < G * D; i += kDecodeThreads) ws_o[(out + (long long)(i / D) * gridDim.z) * D + i % D] = 0.0f;
        if (tid < G) {
            ws_m[out + (long long)tid * gridDim.z] = -CUDART_INF_F;
            ws_l[out + (long long)tid * gridDim.z] = 0.0f;
        }
        return;
    }
    const long long row = (long long)hkv * D;
    const T* kc = k_cache + (long long)kvh * D;
    const T* vc = v_cache + (long long)kvh * D;

    // 0. the chunk's key rows (element offsets of position j0 + j's [Hkv, D] row)
    const int* trow = table + (long long)b * width;
    for (int j = tid; j < nk; j += kDecodeThreads) srow[j] = paged_row(trow, j0 + j, block_size) * row;
    // 1. the group's query rows (f32)
    for (int i = tid; i < G * D; i += kDecodeThreads) sq[i] = to_f32(q[((long long)b * hq + h0) * D + i]);
    __syncthreads();

    // 2. scores: thread (kk, vi) takes vector vi of key rows kk, kk + KPI, ...
    for (int j = kk; j < ((nk + KPI - 1) / KPI) * KPI; j += KPI) {
        const bool ok = j < nk;
        float kv[EPV];
        if (ok) {
            const uint4 raw = *reinterpret_cast<const uint4*>(kc + srow[j] + vi * EPV);
            const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
            for (int t = 0; t < EPV; ++t) kv[t] = to_f32(e[t]);
        }
        for (int g = 0; g < G; ++g) {
            float acc = 0.0f;
            if (ok) {
#pragma unroll
                for (int t = 0; t < EPV; ++t) acc += sq[g * D + vi * EPV + t] * kv[t];
            }
#pragma unroll
            for (int off = VECS / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
            if (ok && vi == 0) sp[g * kChunk + j] = acc * scale;
        }
    }
    __syncthreads();

    // 3. per-head chunk max and sum; p = e^(s − m) in place
    const int warp = tid / 32, lane = tid % 32;
    for (int g = warp; g < G; g += kDecodeThreads / 32) {
        float m = -CUDART_INF_F;
        for (int j = lane; j < nk; j += 32) m = fmaxf(m, sp[g * kChunk + j]);
        m = warp_max(m);
        float l = 0.0f;
        for (int j = lane; j < nk; j += 32) {
            const float e = expf(sp[g * kChunk + j] - m);
            sp[g * kChunk + j] = e;
            l += e;
        }
        l = warp_sum(l);
        if (lane == 0) {
            ws_m[out + (long long)g * gridDim.z] = m;
            ws_l[out + (long long)g * gridDim.z] = l;
        }
    }
    __syncthreads();

    // 4. õ = Σ_j p_j v_j: per-thread partial over its keys, then summed over the KPI key subsets
    float acc[kMaxGroup][EPV];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g)
#pragma unroll
        for (int t = 0; t < EPV; ++t) acc[g][t] = 0.0f;
    for (int j = kk; j < nk; j += KPI) {
        const uint4 raw = *reinterpret_cast<const uint4*>(vc + srow[j] + vi * EPV);
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
            if (g >= G) break;
            const float p = sp[g * kChunk + j];
#pragma unroll
            for (int t = 0; t < EPV; ++t) acc[g][t] += p * to_f32(e[t]);
        }
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= G) break;
#pragma unroll
        for (int t = 0; t < EPV; ++t) sred[(kk * G + g) * D + vi * EPV + t] = acc[g][t];
    }
    __syncthreads();
    for (int i = tid; i < G * D; i += kDecodeThreads) {
        const int g = i / D, c = i % D;
        float sum = 0.0f;
        for (int r = 0; r < KPI; ++r) sum += sred[(r * G + g) * D + c];
        ws_o[(out + (long long)g * gridDim.z) * D + c] = sum;
    }
}

// o[b, h] from the chunk partials of (b, h): one CTA per (request, head), threads over the head dimension.
template <typename T>
__device__ void decode_combine_body(T* __restrict__ o, const float* __restrict__ ws_o, const float* __restrict__ ws_m,
                                    const float* __restrict__ ws_l, int hq, int d, int chunks) {
    const int b = blockIdx.x, h = blockIdx.y;
    const long long base = ((long long)b * hq + h) * chunks;
    float mx = -CUDART_INF_F;
    for (int c = 0; c < chunks; ++c) mx = fmaxf(mx, ws_m[base + c]);
    float l = 0.0f;
    for (int c = 0; c < chunks; ++c) l += ws_l[base + c] > 0.0f ? ws_l[base + c] * expf(ws_m[base + c] - mx) : 0.0f;
    const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float acc = 0.0f;
        for (int c = 0; c < chunks; ++c)
            if (ws_l[base + c] > 0.0f) acc += ws_o[(base + c) * d + e] * expf(ws_m[base + c] - mx);
        o[((long long)b * hq + h) * d + e] = from_f32<T>(acc * inv_l);
    }
}

#define DEFINE_DECODE(SFX, T)                                                                                  \
    KERNEL kv_write_##SFX(T* k_cache, T* v_cache, const T* k, const T* v, const int* dst, int n, int hkv, int d, \
                          int cache_rows, int* err) {                                                           \
        kv_write_body<T>(k_cache, v_cache, k, v, dst, n, hkv, d, cache_rows, err);                               \
    }                                                                                                          \
    KERNEL kv_copy_blocks_##SFX(T* cache, const int* src, const int* dst, int n, long long block_elems) {       \
        kv_copy_blocks_body<T>(cache, src, dst, n, block_elems);                                               \
    }                                                                                                          \
    KERNEL decode_combine_##SFX(T* o, const float* ws_o, const float* ws_m, const float* ws_l, int hq, int d,    \
                                int chunks) {                                                                  \
        decode_combine_body<T>(o, ws_o, ws_m, ws_l, hq, d, chunks);                                            \
    }
#define DEFINE_DECODE_CHUNK(SFX, T, D)                                                                         \
    extern "C" __global__ void __launch_bounds__(kDecodeThreads)                                              \
        decode_chunk_##SFX##_d##D(float* ws_o, float* ws_m, float* ws_l, const T* q, const T* k_cache,         \
                                  const T* v_cache, const int* table, const int* len, int hq, int hkv,         \
                                  int group_heads, int block_size, int width, float scale) {                   \
        decode_chunk_body<T, D>(ws_o, ws_m, ws_l, q, k_cache, v_cache, table, len, hq, hkv, group_heads,      \
                                block_size, width, scale);                                                     \
    }
DEFINE_DECODE(f32, float)
DEFINE_DECODE(bf16, __nv_bfloat16)
DEFINE_DECODE_CHUNK(f32, float, 32)
DEFINE_DECODE_CHUNK(f32, float, 64)
DEFINE_DECODE_CHUNK(f32, float, 128)
DEFINE_DECODE_CHUNK(bf16, __nv_bfloat16, 32)
DEFINE_DECODE_CHUNK(bf16, __nv_bfloat16, 64)
DEFINE_DECODE_CHUNK(bf16, __nv_bfloat16, 128)
