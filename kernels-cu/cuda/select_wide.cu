// select_wide.cu: the "wide" radix select: 11-bit digits, candidate compaction, scans fused into the block
// that finishes last, vector loads. Same result as select.cu's versions: the same keys (select_common.cuh),
// slot states, tie rule (key, then token index) and k = tail_count(frac, n_valid).
//
// Why (BENCHMARKS.md, H100, 2026-11-27): select.cu's 8-bit passes took 36-54 us each for ~11 us of bytes, plus
// a 3.4 us scan launch per pass, and five variants of their inner loop moved the total by 5%. This version does
// less work instead:
//   * 3 key digits (11, 11, 10 bits) instead of 4 bytes;
//   * pass 0 counts one histogram per pool: the first digit of ~key is 2047 - the first digit of key, so the
//     top tail's histogram is the bottom tail's mirror (scan_pool reads it reversed);
//   * pass 1 also compacts each slot's candidates (tail-oriented key, token index) into cand[t], inside the
//     pool's own range [cu[q], cu[q] + counts[slot]); pass 2 and the index passes read only those (the
//     candidate filtering of AIR top-k, Zhang et al. 2023);
//   * pass 1 also writes every token's final mask entry except the candidates' (1 below the threshold's
//     first digit, 0 above it or invalid), and a last kernel sets the selected candidates to 1: only passes 0
//     and 1 touch all n tokens, and there is no separate mask pass over them;
//   * with few slots (the host's fuse flag), the block that finishes a pass last runs the scan (threadfence +
//     ticket), saving one launch per pass;
//   * tiles never cross pools: the host's table (Packing::tiles_on) cuts every pool into tiles of at most
//     WideShape::tile tokens (cuda/select_wide.rs; 16384), one per block. So a block hoists its pool's slot
//     states, keeps shared histograms, loads 16 tokens per thread (4 float4 per input: a tile peels the 0-3
//     tokens before its first multiple of 4, so unaligned pools load float4 too) before counting them, and
//     reserves its candidates' room with one global atomic per tail and 4096 tokens (warp scans + a shared
//     counter);
//   * the candidate kernels cut every tile into WideShape::cand_split parts (4), one per block, and load 8
//     positions per thread before using any: a slot's candidates fill only the first positions of its
//     pool's range, so few tiles hold any, and those few must not wait on one load at a time. A part
//     without live candidates only takes its ticket.
//
// Passes (digit = bits [shift, shift + width) of a u32):
//   0: key bits 21..31, all tokens       3: index bits 21..31 of the candidates equal to the threshold key
//   1: key bits 10..20, all tokens       4: index bits 10..20       (3-5 exit at once unless flags[0]:
//   2: key bits  0..9,  candidates       5: index bits  0..9         a partial tie at the threshold key)
// The host queues all six passes and the candidate mask without waiting; it reads the flags (NaN score)
// through a page-locked copy after pass 2, which does not drain the stream.
// Workspace ws (u32, zeroed once by the host): flags[4] = [need index passes, NaN score, ticket, unused],
// counts[nslots], state[nslots][4] (select_common.cuh), hist[nslots][2048].
#include "select_common.cuh"

constexpr int kBatch = 16;                              // tokens per thread per batch: 4 float4 of each input
constexpr long long kBatchTokens = (long long)kBatch * kThreads;  // 4096
constexpr int kBins = 2048;                             // histogram bins per slot (the widest digit)
constexpr int kCandPer = 8;                             // candidate positions per thread per batch
constexpr long long kCandBatch = (long long)kCandPer * kThreads;  // 2048

// The workspace's parts (see the header).
struct WideWs {
    u32* flags;
    u32* counts;
    u32* state;
    u32* hist;
};
__device__ __forceinline__ WideWs wide_ws(u32* ws, int num_pools, int ntails) {
    const long long nslots = (long long)num_pools * ntails;
    WideWs w;
    w.flags = ws;
    w.counts = ws + 4;
    w.state = w.counts + nslots;
    w.hist = w.state + 4 * nslots;
    return w;
}

// Digit of pass `pass`: key digits on passes 0-2, the same layout over token indices on passes 3-5.
struct WideDigit {
    int shift;
    u32 mask;    // digit width - 1
    u32 himask;  // the bits above the digit (the prefix resolved by earlier passes)
};
__device__ __forceinline__ WideDigit wide_digit(int pass) {
    const int d = pass < 3 ? pass : pass - 3;
    WideDigit g;
    g.shift = d == 0 ? 21 : d == 1 ? 10 : 0;
    g.mask = d == 2 ? 1023u : 2047u;
    g.himask = d == 0 ? 0u : d == 1 ? 0xFFE00000u : 0xFFFFFC00u;
    return g;
}

// The block's part of the tile table (i32 triples (start, end, pool)): row blockIdx.x / split, cut into
// `split` equal parts, of which it takes part blockIdx.x % split: tokens (or candidate positions)
// [*part0, *part1) of pool q. The data passes run one block per tile (split 1); the candidate kernels cut
// each tile into WideShape::cand_split parts (cuda/select_wide.rs), because a slot's candidates fill only
// the first positions of its pool's range, and so only the first tiles.
__device__ __forceinline__ void wide_tile(const int* tiles, int split, long long* part0, long long* part1, int* q) {
    const int* t = tiles + 3 * (long long)(blockIdx.x / split);
    const long long start = t[0], end = t[1], part = blockIdx.x % split;
    const long long len = (end - start + split - 1) / split;
    *part0 = min(end, start + part * len);
    *part1 = min(end, *part0 + len);
    *q = t[2];
}

// ------------------------------------------------------------------------------------------------
// Batches: 16 tokens per thread, token u of thread tid at base + (u / 4)·1024 + 4·tid + u % 4, so each
// group of 4 is one float4 of every input (aligned when base is a multiple of 4: see full_batch).
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ long long batch_token(long long base, int u) {
    return base + (long long)(u >> 2) * (4 * kThreads) + (long long)threadIdx.x * 4 + (u & 3);
}

// Whether the batch at `base` is whole and its float4 groups are 16-byte aligned (`vec`: the buffers are).
__device__ __forceinline__ bool full_batch(bool vec, long long base, long long end) {
    return vec && base + kBatchTokens <= end && (base & 3) == 0;
}

__device__ __forceinline__ float float4_lane(const float4& v, int c) {
    return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
}

// Loads the candidates at positions base + u·256 + tid (u < kCandPer) below `end`, every load issued before
// any use (the strided loop this replaces waited on each load in turn: latency-bound with candidates in only
// a few tiles); bit u of the result = position u was loaded.
__device__ __forceinline__ u32 load_cands(const uint2* src, long long base, long long end, uint2 c[kCandPer]) {
    u32 ok = 0u;
#pragma unroll
    for (int u = 0; u < kCandPer; ++u) {
        const long long p = base + (long long)u * kThreads + threadIdx.x;
        c[u] = make_uint2(0u, 0u);
        if (p < end) {
            c[u] = src[p];
            ok |= 1u << u;
        }
    }
    return ok;
}

// Loads the batch at `base` (tokens < end): key[u] and bit u of the result = token batch_token(base, u) is
// valid. A full aligned batch (full_batch) loads as float4, all loads issued before any use. A NaN score on
// a valid token sets *nan_flag unless it is null (as load_key).
__device__ __forceinline__ u32 load_batch(const float* scores, const float* valid, u64 seed, long long base,
                                          long long end, bool vec, u32* nan_flag, u32 key[kBatch]) {
    float x[kBatch], v[kBatch];
    if (full_batch(vec, base, end)) {
        float4 vv[4], xx[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const long long i0 = batch_token(base, 4 * r);
            vv[r] = *reinterpret_cast<const float4*>(valid + i0);
            xx[r] = scores != nullptr ? *reinterpret_cast<const float4*>(scores + i0) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            v[u] = float4_lane(vv[u >> 2], u & 3);
            x[u] = float4_lane(xx[u >> 2], u & 3);
        }
    } else {
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            const long long i = batch_token(base, u);
            const bool in = i < end;
            v[u] = in ? valid[i] : 0.0f;
            x[u] = in && scores != nullptr ? scores[i] : 0.0f;
        }
    }
    u32 ok = 0u;
    bool nan = false;
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
        key[u] = 0u;
        if (v[u] == 0.0f) continue;
        ok |= 1u << u;
        if (scores != nullptr) {
            nan |= isnan(x[u]);
            key[u] = float_key(x[u]);
        } else {
            key[u] = hash_key(seed, batch_token(base, u));
        }
    }
    if (nan_flag != nullptr && nan) *nan_flag = 1u;
    return ok;
}

// Exclusive prefix of v over the warp's lanes; *total = the warp's sum.
__device__ __forceinline__ u32 warp_exclusive(u32 v, u32* total) {
    const u32 c = warp_inclusive_scan(v);
    *total = __shfl_sync(0xffffffffu, c, 31);
    return c - v;
}

// Pass 1, one-pool tile: writes this batch's candidates of each tail (bit u of cm[t]) to cand[t] as (tail-
// oriented key, token index), after reserving their room in the slot's range with one global atomic per tail.
// Every thread of the block calls it (two barriers).
__device__ __forceinline__ void compact_batch(uint2* cand, long long n, u32* counts, long long slot0, int ntails,
                                              long long pool_start, long long base, const u32 key[kBatch],
                                              const u32 cm[2], u32* sh_cnt, long long* sh_base) {
    const int lane = threadIdx.x & 31;
    u32 off[2] = {0u, 0u};
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        if (t >= ntails) break;
        u32 wtot;
        const u32 ex = warp_exclusive((u32)__popc(cm[t]), &wtot);
        u32 wbase = 0u;
        if (lane == 31 && wtot != 0u) wbase = atomicAdd(&sh_cnt[t], wtot);
        off[t] = __shfl_sync(0xffffffffu, wbase, 31) + ex;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int t = 0; t < ntails; ++t) {
            const u32 c = sh_cnt[t];
            sh_base[t] = c != 0u ? pool_start + atomicAdd(&counts[slot0 + t], c) : 0;
            sh_cnt[t] = 0u;
        }
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        if (t >= ntails || cm[t] == 0u) continue;
        uint2* dst = cand + (long long)t * n + sh_base[t] + off[t];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            if (!((cm[t] >> u) & 1u)) continue;
            *dst++ = make_uint2(t ? ~key[u] : key[u], (u32)batch_token(base, u));
        }
    }
}

// One tail's mask entries of the batch at `base` (tokens < end): 1.0 where bit u of `sel` is set, else 0.0; float4 stores
// for a full aligned batch (`full`, from full_batch).
__device__ __forceinline__ void store_batch_mask(float* out, long long base, long long end, bool full, u32 sel) {
    auto bit = [&](int u) { return ((sel >> u) & 1u) ? 1.0f : 0.0f; };
    if (full) {
#pragma unroll
        for (int r = 0; r < 4; ++r)
            *reinterpret_cast<float4*>(out + batch_token(base, 4 * r)) =
                make_float4(bit(4 * r), bit(4 * r + 1), bit(4 * r + 2), bit(4 * r + 3));
    } else {
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            const long long i = batch_token(base, u);
            if (i < end) out[i] = bit(u);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// scan_pool: after pass `pass`, for both tails of pool q: find the bucket holding the kk-th candidate, move
// the slot's prefix and remaining rank into it, and re-zero the bins. Pass 0 derives k from the histogram
// total (the pool's valid count), and the top tail reads the bottom tail's bins mirrored; tails run top
// first, because the bottom tail zeroes the bins they share. Every thread of the block calls it.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ void scan_pool(const WideWs& w, int q, int ntails, int pass, double frac, double slack) {
    __shared__ u32 warp_tot[32];
    const WideDigit dg = wide_digit(pass);
    const int bins = (int)dg.mask + 1, per = bins / kThreads;  // 8 or 4 buckets per thread
    for (int t = ntails - 1; t >= 0; --t) {
        const long long s = (long long)q * ntails + t;
        u32* st = w.state + s * 4;
        // Stage 1: only slots that were resolving in this pass (uniform: every thread reads the same word).
        if (st[ST_MODE] != (pass < 3 ? MODE_KEY : MODE_IDX)) continue;
        u32 kk = st[ST_KK];
        const bool mirror = pass == 0 && t == 1;
        u32* h = w.hist + (mirror ? s - 1 : s) * kBins;
        // Stage 2: this thread's buckets [tid·per, (tid + 1)·per) (bucket b of the mirror is h[bins - 1 - b]),
        // read past L1 (other blocks' atomics of this launch when the scan is fused), then zeroed.
        u32 v[8], sum = 0u;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            v[j] = 0u;
            if (j >= per) continue;
            const int b = threadIdx.x * per + j;
            v[j] = __ldcg(&h[mirror ? bins - 1 - b : b]);
            sum += v[j];
        }
        u32 total;
        const u32 incl = block_inclusive_scan(sum, warp_tot, &total);  // its barriers order the reads above
        if (!mirror)
            for (int j = 0; j < per; ++j) h[threadIdx.x * per + j] = 0u;
        // Stage 3: on pass 0, k from the pool's valid count.
        if (pass == 0) {
            kk = tail_count(frac, slack, total);
            if (kk == 0u) {
                if (threadIdx.x == 0) st[ST_MODE] = MODE_NONE;
                continue;  // uniform: every thread computed the same kk
            }
        }
        // Stage 4: the one bucket whose running count crosses kk (kk <= total, so it exists; v > 0 there).
        u32 c = incl - sum;
        for (int j = 0; j < per; ++j) {
            c += v[j];
            if (c >= kk && c - v[j] < kk)
                commit_bucket(st, w.flags, threadIdx.x * per + j, dg.shift, kk - (c - v[j]), v[j], pass < 3, pass == 2);
        }
        __syncthreads();  // the found thread's state writes before the next tail (block_inclusive_scan's own
                          // barriers already free warp_tot)
    }
}

// The end of every histogram pass: with `fuse`, the block that finishes last (ticket flags[2]) scans every
// pool and resets the ticket. Every block of the grid must call it.
__device__ __forceinline__ void finish_pass(const WideWs& w, int num_pools, int ntails, int pass, int fuse,
                                            double frac, double slack) {
    __shared__ bool sh_last;
    if (!fuse) return;
    __threadfence();  // this block's histogram atomics before its ticket
    __syncthreads();
    if (threadIdx.x == 0) sh_last = atomicAdd(&w.flags[2], 1u) == gridDim.x - 1;
    __syncthreads();
    if (!sh_last) return;
    __threadfence();
    for (int q = 0; q < num_pools; ++q) scan_pool(w, q, ntails, pass, frac, slack);
    if (threadIdx.x == 0) w.flags[2] = 0u;
}

// Flushes a one-pool tile's shared histogram into pool q's global one: on pass 0 the one histogram (tail 0's
// bins; tail 1 reads them mirrored), with `copies` as two interleaved copies (bin b at sh[2b] and sh[2b + 1]:
// see select_wide_data) summed, read as uint2 (so the caller's sh must be 8-byte aligned); on the other
// passes one histogram per tail.
__device__ __forceinline__ void flush_hist(const WideWs& w, const u32* sh, int q, int ntails, int pass, bool copies) {
    u32* g = w.hist + (long long)q * ntails * kBins;
    if (pass == 0 && copies) {
        for (int j = threadIdx.x; j < kBins; j += kThreads) {
            const uint2 c = reinterpret_cast<const uint2*>(sh)[j];
            if (c.x + c.y != 0u) atomicAdd(&g[j], c.x + c.y);
        }
        return;
    }
    for (int j = threadIdx.x; j < (pass == 0 ? 1 : ntails) * kBins; j += kThreads) {
        const u32 c = sh[j];
        if (c != 0u) atomicAdd(&g[j], c);
    }
}

// ------------------------------------------------------------------------------------------------
// select_wide_data: passes 0 and 1 over all tokens, one tile per block; pass 1 also writes the masks of all
// but the candidates (out1 null when ntails = 1).
//   grid = the number of tiles, exactly 256 threads.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL select_wide_data(const __grid_constant__ SelectWideParams p, int pass) {
    u32* ws = p.ws;
    const int* tiles = p.tiles;
    float *out0 = p.out0, *out1 = p.out1;
    const float *scores = p.scores, *valid = p.valid;
    const int* cu = p.cu;
    uint2* cand = p.cand;
    const int num_pools = p.num_pools, ntails = p.ntails, vec = p.vec, fuse = p.fuse, copies = p.copies;
    const long long n = p.n;
    const u64 seed = p.seed;
    const double frac = p.frac, slack = p.slack;
    __shared__ __align__(16) u32 sh[2 * kBins];
    __shared__ u32 sh_cnt[2];
    __shared__ long long sh_base[2];
    const WideWs w = wide_ws(ws, num_pools, ntails);
    long long tile0, tile1;
    int q;
    wide_tile(tiles, 1, &tile0, &tile1, &q);

    // Stage 1: a zeroed shared histogram per tail, zeroed candidate counters, the pool's slot states.
    for (int j = threadIdx.x; j < 2 * kBins; j += kThreads) sh[j] = 0u;
    if (threadIdx.x < 2) sh_cnt[threadIdx.x] = 0u;
    __syncthreads();
    const WideDigit dg = wide_digit(pass);
    const long long slot0 = (long long)q * ntails;
    bool res[2];
    u32 pre[2];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        res[t] = t < ntails && w.state[(slot0 + t) * 4 + ST_MODE] == MODE_KEY;
        pre[t] = t < ntails ? w.state[(slot0 + t) * 4 + ST_KEY] : 0u;
    }

    // Stage 2: count. Pass 0 counts the first key digit once (tail 1's histogram is its mirror); with
    // `copies`, into two interleaved copies by lane parity (bin b at sh[2b + (lane & 1)]): scores in [0, 1)
    // put half the tokens into 4 of the 2048 bins, and lanes adding to one address serialise, so this halves
    // those collisions while the two copies of a bin stay in different banks. Pass 1
    // counts the second digit of each tail's candidates (first digit = the threshold's) and compacts them,
    // and writes every token's final mask entry except the candidates': 1 below the threshold's first
    // digit, else 0 (select_wide_cand_mask sets the selected candidates to 1 at the end).
    // Batches (uniform trip count): the 0-3 tokens before the tile's first multiple of 4 alone, then 4096 at a
    // time from there, so every whole batch is float4 even in a pool that starts unaligned (per-sequence pools).
    const long long head = min(tile1, (tile0 + 3) & ~3LL);
    for (long long base = tile0; base < tile1; base = base < head ? head : base + kBatchTokens) {
        const long long end = base < head ? head : tile1;
        u32 key[kBatch];
        const u32 ok = load_batch(scores, valid, seed, base, end, vec != 0, pass == 0 ? w.flags + 1 : nullptr, key);
        u32 cm[2] = {0u, 0u}, below[2] = {0u, 0u};
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            if (!((ok >> u) & 1u)) continue;
            if (pass == 0) {
                atomicAdd(&sh[copies ? ((key[u] >> 21) << 1) | (threadIdx.x & 1u) : key[u] >> 21], 1u);
                continue;
            }
#pragma unroll
            for (int t = 0; t < 2; ++t) {
                const u32 hi = (t ? ~key[u] : key[u]) & dg.himask;
                if (!res[t]) continue;
                if (hi == pre[t]) {
                    atomicAdd(&sh[t * kBins + (((t ? ~key[u] : key[u]) >> dg.shift) & dg.mask)], 1u);
                    cm[t] |= 1u << u;
                } else if (hi < pre[t]) {
                    below[t] |= 1u << u;
                }
            }
        }
        if (pass == 1) {
            compact_batch(cand, n, w.counts, slot0, ntails, cu[q], base, key, cm, sh_cnt, sh_base);
            const bool full = full_batch(vec != 0, base, end);
            store_batch_mask(out0, base, end, full, below[0]);
            if (ntails > 1) store_batch_mask(out1, base, end, full, below[1]);
        }
    }
    __syncthreads();

    // Stage 3: flush, then maybe scan.
    flush_hist(w, sh, q, ntails, pass, copies != 0);
    finish_pass(w, num_pools, ntails, pass, fuse, frac, slack);
}

// ------------------------------------------------------------------------------------------------
// select_wide_cand: passes 2-5 over the candidates, one part of a tile per block (wide_tile): positions
// [part0, part1) of each cand[t] (positions follow the tokens' pool layout; a slot's live positions are the
// first counts[slot] of its pool's range). Index passes exit at once unless flags[0].
//   grid = the number of tiles × split, exactly 256 threads.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL select_wide_cand(const __grid_constant__ SelectWideParams p, int pass) {
    u32* ws = p.ws;
    const int* tiles = p.tiles;
    const uint2* cand = p.cand;
    const int* cu = p.cu;
    const int num_pools = p.num_pools, ntails = p.ntails, split = p.split, fuse = p.fuse;
    const long long n = p.n;
    const double frac = p.frac, slack = p.slack;
    __shared__ __align__(16) u32 sh[2 * kBins];
    const WideWs w = wide_ws(ws, num_pools, ntails);
    if (pass >= 3 && w.flags[0] == 0u) return;  // uniform over the grid: no ticket is taken, no scan is due
    long long part0, part1;
    int q;
    wide_tile(tiles, split, &part0, &part1, &q);
    const WideDigit dg = wide_digit(pass);
    const u32 want = pass < 3 ? MODE_KEY : MODE_IDX;

    // Stage 1: each tail's live positions in this part, [part0, end[t]), when its slot resolves in this
    // pass. A part with none (most of them: the candidates fill only the first positions of each pool's
    // range) goes straight to the ticket. Uniform over the block: every thread reads the same words.
    const long long slot0 = (long long)q * ntails;
    long long end[2] = {part0, part0};
    u32 pk[2] = {0u, 0u}, pi[2] = {0u, 0u};
    bool live = false;
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        if (t >= ntails) break;
        const u32* st = w.state + (slot0 + t) * 4;
        if (st[ST_MODE] != want) continue;
        pk[t] = st[ST_KEY];
        pi[t] = st[ST_IDX];
        end[t] = min(part1, (long long)cu[q] + w.counts[slot0 + t]);
        live |= end[t] > part0;
    }
    if (live) {
        // Stage 2: a zeroed shared histogram per tail.
        for (int j = threadIdx.x; j < 2 * kBins; j += kThreads) sh[j] = 0u;
        __syncthreads();

        // Stage 3: count. A candidate (key, index) still in the running adds its digit: the key's on pass 2,
        // the index's (among keys equal to the threshold) on passes 3-5.
#pragma unroll
        for (int t = 0; t < 2; ++t) {
            if (t >= ntails) break;
            const uint2* src = cand + (long long)t * n;
            for (long long base = part0; base < end[t]; base += kCandBatch) {
                uint2 c[kCandPer];
                const u32 ok = load_cands(src, base, end[t], c);
#pragma unroll
                for (int u = 0; u < kCandPer; ++u) {
                    if (!((ok >> u) & 1u)) continue;
                    if (pass == 2) {
                        if ((c[u].x & dg.himask) == pk[t]) atomicAdd(&sh[t * kBins + (c[u].x & dg.mask)], 1u);
                    } else if (c[u].x == pk[t] && (c[u].y & dg.himask) == pi[t]) {
                        atomicAdd(&sh[t * kBins + ((c[u].y >> dg.shift) & dg.mask)], 1u);
                    }
                }
            }
        }
        __syncthreads();

        // Stage 4: flush.
        flush_hist(w, sh, q, ntails, pass, false);
    }
    finish_pass(w, num_pools, ntails, pass, fuse, frac, slack);
}

// ------------------------------------------------------------------------------------------------
// select_wide_scan: the scans when they are not fused (many slots): one block per pool (block-stride).
//   exactly 256 threads.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL select_wide_scan(const __grid_constant__ SelectWideParams p, int pass) {
    const WideWs w = wide_ws(p.ws, p.num_pools, p.ntails);
    if (pass >= 3 && w.flags[0] == 0u) return;
    for (int q = blockIdx.x; q < p.num_pools; q += gridDim.x) scan_pool(w, q, p.ntails, pass, p.frac, p.slack);
}

// ------------------------------------------------------------------------------------------------
// select_wide_cand_mask: the last step. Pass 1 wrote every mask entry but the candidates' (tokens whose first
// key digit is their slot's threshold digit) as final and those as 0; here the live candidates of each part
// of a tile (wide_tile) that the final threshold (key, index) takes get their 1. So no pass over all tokens
// follows pass 1.
//   grid = the number of tiles × split, exactly 256 threads.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL select_wide_cand_mask(const __grid_constant__ SelectWideParams p) {
    float *out0 = p.out0, *out1 = p.out1;
    u32* ws = p.ws;
    const int* tiles = p.tiles;
    const uint2* cand = p.cand;
    const int* cu = p.cu;
    const int num_pools = p.num_pools, ntails = p.ntails, split = p.split;
    const long long n = p.n;
    const WideWs w = wide_ws(ws, num_pools, ntails);
    long long part0, part1;
    int q;
    wide_tile(tiles, split, &part0, &part1, &q);
    for (int t = 0; t < ntails; ++t) {
        // Stage 1: the slot's final state (MODE_NONE has no candidates).
        const long long s = (long long)q * ntails + t;
        const u32* st = w.state + s * 4;
        const u32 mode = st[ST_MODE], tk = st[ST_KEY], ti = st[ST_IDX];
        if (mode != MODE_ALL_EQ && mode != MODE_IDX) continue;
        // Stage 2: the live candidates of this part.
        const long long end = min(part1, (long long)cu[q] + w.counts[s]);
        const uint2* src = cand + (long long)t * n;
        float* out = t == 0 ? out0 : out1;
        for (long long base = part0; base < end; base += kCandBatch) {
            uint2 c[kCandPer];
            const u32 ok = load_cands(src, base, end, c);
#pragma unroll
            for (int u = 0; u < kCandPer; ++u)
                if (((ok >> u) & 1u) && in_tail(mode, c[u].x, tk, ti, c[u].y)) out[c[u].y] = 1.0f;
        }
    }
}
