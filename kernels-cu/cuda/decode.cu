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
//
// Both kernels write partials into one workspace of `slots` partials per (request row r, query head h): partial row
// (r · hq + h) · slots + s, ws_o [.., D] f32, ws_m and ws_l [..] f32; decode_combine (chunks = slots) merges them.
// decode_chunk covers the keys j in [start[b], len[b]) (start null: from 0): chunk c = blockIdx.z takes
// [start + c·kChunk, min(len, start + (c + 1)·kChunk)) and writes slot slot0 + c. Plain decode: start null,
// slot0 0, slots = chunks.
//
// Shared-prefix ("cascade") decode: the n responses of one prompt (a group: contiguous rows b .. b + n − 1, leader b,
// group_rows[b] = n, 0 for the other members) share the prompt's first P = prefix_len[b] keys, read through the
// leader's block-table row. decode_prefix reads each of those K/V rows once per (group, KV head) for all n · G query
// rows (members × heads of the head group), writing the partials of the prefix chunks into slots 0 .. prefix_chunks − 1
// of every member; then decode_chunk (start[r] = P of r's group, slot0 = prefix_chunks) adds each member's own keys
// and decode_combine merges prefix and suffix partials — the result is attention over [0, len[r]).
// kPrefixChunk = 128 keys per CTA, kDecodeThreads = 128 threads, n · G <= kMaxPrefixRows = 64 query rows per CTA (the
// host guarantees it, and P < len[r] for every member, so each member's new token is its own).
// Stages of the prefix kernel (CTA = group leader b, head group y, prefix chunk c of kPrefixChunk keys): 0. pool rows of
// the chunk; 1. K and V rows of the chunk into shared tiles of T by cp.async (16 bytes each, each row read once, K and
// V in two commit groups so V lands while the scores are computed), meanwhile the n · G query rows into shared memory
// (f32); 2. scores s[r][j] as a register-tiled product (thread: 4 query rows × 8 keys, q as float4, K converted to
// f32 as it is read); 3. one warp per query row takes the max and sum, p = e^(s − m); 4. õ = P·V (thread: 4 query
// rows × D/8 columns), float4 stores to ws_o. Tile rows are padded by 16 bytes so the loads of 8 neighbouring key
// rows fall on distinct banks.
#include "common.cuh"
#include "mma.cuh"  // cp.async

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
                                  const int* __restrict__ len, const int* __restrict__ start, int hq, int hkv,
                                  int group_heads, int block_size, int width, float scale, int slot0, int slots) {
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

    // which tile: request b, heads h0..h0+G-1 (one KV head), chunk c of the keys from start[b] on
    const int b = blockIdx.x, h0 = blockIdx.y * G, chunk = blockIdx.z;
    const int kvh = h0 / (hq / hkv);
    const int n = min(len[b], width * block_size);
    const int j0 = (start ? start[b] : 0) + chunk * kChunk, nk = max(0, min(kChunk, n - j0));
    const long long out = ((long long)b * hq + h0) * slots + slot0 + chunk;  // partial row of head h0
    ws_o += out * D;  // head g's partial row is g · slots further on
    ws_m += out;
    ws_l += out;
    const int tid = threadIdx.x, vi = tid % VECS, kk = tid / VECS;
    if (nk == 0) {  // past the request's length: a neutral partial
        for (int i = tid; i < G * D; i += kDecodeThreads) ws_o[(long long)(i / D) * slots * D + i % D] = 0.0f;
        if (tid < G) {
            ws_m[(long long)tid * slots] = -CUDART_INF_F;
            ws_l[(long long)tid * slots] = 0.0f;
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
            ws_m[(long long)g * slots] = m;
            ws_l[(long long)g * slots] = l;
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
        ws_o[(long long)g * slots * D + c] = sum;
    }
}

namespace {
constexpr int kPrefixChunk = 128;   // shared-prefix keys per CTA of decode_prefix
constexpr int kMaxPrefixRows = 64;  // query rows (members × heads) per CTA of decode_prefix
}  // namespace

// 4 consecutive elements of a shared-memory row as f32 (8-byte loads of bf16, 16-byte loads of f32).
__device__ __forceinline__ float4 load4_f32(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4_f32(const __nv_bfloat16* p) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p);
    const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&raw);
    return make_float4(to_f32(e[0]), to_f32(e[1]), to_f32(e[2]), to_f32(e[3]));
}

// Dynamic shared memory of decode_prefix for head dim D, element type T and R = n · G query rows (mirrored by the
// launcher, which sizes it for the largest group of the launch, R <= kMaxPrefixRows):
// pool rows [kPrefixChunk] i64 | K tile [kPrefixChunk][D + EPV] T | V tile [kPrefixChunk][D + EPV] T |
// per query row [R][(D + 4) + (kPrefixChunk + 4)] f32 (the q row, then its scores / probabilities).
// Bytes: 8·128 + 2·128·(D·sizeof(T) + 16) + 4·R·(D + 136), EPV = 16 / sizeof(T). A tile row is padded by 16 bytes so
// that the loads of 8 neighbouring key rows fall on distinct banks.
template <typename T, int D>
__device__ void decode_prefix_body(float* __restrict__ ws_o, float* __restrict__ ws_m, float* __restrict__ ws_l,
                                   const T* __restrict__ q, const T* __restrict__ k_cache,
                                   const T* __restrict__ v_cache, const int* __restrict__ table,
                                   const int* __restrict__ prefix_len, const int* __restrict__ group_rows, int hq,
                                   int hkv, int group_heads, int block_size, int width, float scale, int slots) {
    constexpr int EPV = 16 / sizeof(T);  // elements per 16-byte vector
    constexpr int VECS = D / EPV;        // vectors per row
    constexpr int KS = D + EPV;          // element stride of a K / V tile row
    constexpr int RS = D + 4 + kPrefixChunk + 4;        // f32 stride of a query row's region (q, then scores)
    constexpr int TC = 8, TR = kDecodeThreads / TC;     // thread (tr, tc) of a TR × TC grid
    constexpr int RPT = kMaxPrefixRows / TR;            // query rows per thread: tr + TR·i
    constexpr int KPT = 8;                              // keys per thread and score pass: tc + TC·jj
    constexpr int C4 = D / (4 * TC);                    // 4-column groups of õ per thread: tc + TC·v
    static_assert(kDecodeThreads % TC == 0 && kMaxPrefixRows % TR == 0 && D % (4 * TC) == 0, "thread tiles");
    static_assert(kPrefixChunk % (TC * KPT) == 0 && D % EPV == 0, "key passes");
    const int b = blockIdx.x, chunk = blockIdx.z;
    const int members = group_rows[b];
    if (members == 0) return;  // not a group leader: its leader's CTAs write its partials
    DYNAMIC_SMEM(smem, 16);
    const int G = group_heads, R = members * G, h0 = blockIdx.y * G;
    long long* srow = reinterpret_cast<long long*>(smem);
    T* sk = reinterpret_cast<T*>(srow + kPrefixChunk);
    T* sv = sk + kPrefixChunk * KS;
    float* sr = reinterpret_cast<float*>(sv + kPrefixChunk * KS);
    const int kvh = h0 / (hq / hkv);
    const int P = min(prefix_len[b], width * block_size);
    const int j0 = chunk * kPrefixChunk, nk = max(0, min(kPrefixChunk, P - j0));
    const int tid = threadIdx.x;
    // partial row of query row r = member · G + head
    auto out_row = [&](int r) { return ((long long)(b + r / G) * hq + h0 + r % G) * slots + chunk; };
    if (nk == 0) {  // past the prefix: neutral partials for every member and head
        for (int i = tid; i < R * D; i += kDecodeThreads) ws_o[out_row(i / D) * D + i % D] = 0.0f;
        for (int r = tid; r < R; r += kDecodeThreads) {
            ws_m[out_row(r)] = -CUDART_INF_F;
            ws_l[out_row(r)] = 0.0f;
        }
        return;
    }
    const long long row = (long long)hkv * D;

    // 0. the chunk's pool rows (element offsets of the leader's position j0 + j, KV head kvh)
    const int* trow = table + (long long)b * width;
    for (int j = tid; j < nk; j += kDecodeThreads)
        srow[j] = paged_row(trow, j0 + j, block_size) * row + (long long)kvh * D;
    __syncthreads();
    // 1. K and V rows of the chunk into the tiles (cp.async, 16 bytes each, two groups: K first), each row read once;
    // meanwhile the query rows of every member and head (f32)
    for (int i = tid; i < nk * VECS; i += kDecodeThreads)
        cp_async_16(sk + (i / VECS) * KS + (i % VECS) * EPV, k_cache + srow[i / VECS] + (i % VECS) * EPV, true);
    cp_async_commit();
    for (int i = tid; i < nk * VECS; i += kDecodeThreads)
        cp_async_16(sv + (i / VECS) * KS + (i % VECS) * EPV, v_cache + srow[i / VECS] + (i % VECS) * EPV, true);
    cp_async_commit();
    for (int i = tid; i < R * D; i += kDecodeThreads) {
        const int r = i / D, c = i % D;
        sr[r * RS + c] = to_f32(q[((long long)(b + r / G) * hq + h0 + r % G) * D + c]);
    }
    cp_async_wait<1>();  // this thread's K rows have landed
    __syncthreads();

    // 2. scores s[r][j] = scale · q_r · k_j: thread (tr, tc) a register tile of rows tr + TR·i × keys tc + TC·jj
    // (key rows at or past nk hold stale data: computed, never stored)
    const int tr = tid / TC, tc = tid % TC;
    const int rpt = min(RPT, (R + TR - 1) / TR);  // row blocks holding a query row (uniform over the CTA)
    for (int jb = 0; jb < nk; jb += TC * KPT) {
        float acc[RPT][KPT];
#pragma unroll
        for (int i = 0; i < RPT; ++i)
#pragma unroll
            for (int jj = 0; jj < KPT; ++jj) acc[i][jj] = 0.0f;
        for (int c = 0; c < D; c += 4) {
            float4 qv[RPT];
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                const int r = tr + TR * i;
                qv[i] = r < R ? *reinterpret_cast<const float4*>(sr + r * RS + c) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int jj = 0; jj < KPT; ++jj) {
                const float4 kv = load4_f32(sk + (jb + tc + TC * jj) * KS + c);
#pragma unroll
                for (int i = 0; i < RPT; ++i)
                    if (i < rpt) acc[i][jj] += qv[i].x * kv.x + qv[i].y * kv.y + qv[i].z * kv.z + qv[i].w * kv.w;
            }
        }
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int r = tr + TR * i;
#pragma unroll
            for (int jj = 0; jj < KPT; ++jj) {
                const int j = jb + tc + TC * jj;
                if (r < R && j < nk) sr[r * RS + D + 4 + j] = acc[i][jj] * scale;
            }
        }
    }
    __syncthreads();

    // 3. per query row max and sum (one warp per row), p = e^(s − m) in place
    const int warp = tid / 32, lane = tid % 32;
    for (int r = warp; r < R; r += kDecodeThreads / 32) {
        float* s = sr + r * RS + D + 4;
        float m = -CUDART_INF_F;
        for (int j = lane; j < nk; j += 32) m = fmaxf(m, s[j]);
        m = warp_max(m);
        float l = 0.0f;
        for (int j = lane; j < nk; j += 32) {
            const float e = expf(s[j] - m);
            s[j] = e;
            l += e;
        }
        l = warp_sum(l);
        if (lane == 0) {
            ws_m[out_row(r)] = m;
            ws_l[out_row(r)] = l;
        }
    }
    cp_async_wait<0>();  // this thread's V rows have landed
    __syncthreads();

    // 4. õ[r] = Σ_j p[r][j] v_j: thread (tr, tc) rows tr + TR·i × columns 4·(tc + TC·v) .. + 3
    float acc[RPT][C4][4];
#pragma unroll
    for (int i = 0; i < RPT; ++i)
#pragma unroll
        for (int v = 0; v < C4; ++v)
#pragma unroll
            for (int t = 0; t < 4; ++t) acc[i][v][t] = 0.0f;
    for (int j = 0; j < nk; ++j) {
        float4 vv[C4];
#pragma unroll
        for (int v = 0; v < C4; ++v) vv[v] = load4_f32(sv + j * KS + 4 * (tc + TC * v));
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            if (i >= rpt) break;
            const int r = tr + TR * i;
            const float p = r < R ? sr[r * RS + D + 4 + j] : 0.0f;
#pragma unroll
            for (int v = 0; v < C4; ++v) {
                acc[i][v][0] += p * vv[v].x;
                acc[i][v][1] += p * vv[v].y;
                acc[i][v][2] += p * vv[v].z;
                acc[i][v][3] += p * vv[v].w;
            }
        }
    }
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const int r = tr + TR * i;
        if (r >= R) continue;
        float* dst = ws_o + out_row(r) * D;
#pragma unroll
        for (int v = 0; v < C4; ++v)
            *reinterpret_cast<float4*>(dst + 4 * (tc + TC * v)) =
                make_float4(acc[i][v][0], acc[i][v][1], acc[i][v][2], acc[i][v][3]);
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
                                  const T* v_cache, const int* table, const int* len, const int* start, int hq,  \
                                  int hkv, int group_heads, int block_size, int width, float scale, int slot0, \
                                  int slots) {                                                                 \
        decode_chunk_body<T, D>(ws_o, ws_m, ws_l, q, k_cache, v_cache, table, len, start, hq, hkv, group_heads, \
                                block_size, width, scale, slot0, slots);                                       \
    }
#define DEFINE_DECODE_PREFIX(SFX, T, D)                                                                        \
    extern "C" __global__ void __launch_bounds__(kDecodeThreads)                                              \
        decode_prefix_##SFX##_d##D(float* ws_o, float* ws_m, float* ws_l, const T* q, const T* k_cache,        \
                                   const T* v_cache, const int* table, const int* prefix_len,                 \
                                   const int* group_rows, int hq, int hkv, int group_heads, int block_size,    \
                                   int width, float scale, int slots) {                                       \
        decode_prefix_body<T, D>(ws_o, ws_m, ws_l, q, k_cache, v_cache, table, prefix_len, group_rows, hq, hkv, \
                                 group_heads, block_size, width, scale, slots);                               \
    }
DEFINE_DECODE(f32, float)
DEFINE_DECODE(bf16, __nv_bfloat16)
DEFINE_DECODE_CHUNK(f32, float, 32)
DEFINE_DECODE_CHUNK(f32, float, 64)
DEFINE_DECODE_CHUNK(f32, float, 128)
DEFINE_DECODE_CHUNK(bf16, __nv_bfloat16, 32)
DEFINE_DECODE_CHUNK(bf16, __nv_bfloat16, 64)
DEFINE_DECODE_CHUNK(bf16, __nv_bfloat16, 128)
DEFINE_DECODE_PREFIX(f32, float, 32)
DEFINE_DECODE_PREFIX(f32, float, 64)
DEFINE_DECODE_PREFIX(f32, float, 128)
DEFINE_DECODE_PREFIX(bf16, __nv_bfloat16, 32)
DEFINE_DECODE_PREFIX(bf16, __nv_bfloat16, 64)
DEFINE_DECODE_PREFIX(bf16, __nv_bfloat16, 128)
