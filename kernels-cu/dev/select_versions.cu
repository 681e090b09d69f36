// dev/select_versions.cu: the versions of the radix select's histogram pass that lost to the shipped
// `plain` (cuda/select.cu) on the H100 (BENCHMARKS.md, "Token selection"), kept to be read, run and timed
// next to it (llm.c's dev/cuda). Everything else of the 8-bit radix select (select_scan, select_mask, the
// keys, slot states and helpers) is the shipped one, included from cuda/select.cu.
//   match:        as plain, but on pass 0 the lanes of a warp with one bucket add their count in one atomic
//   unroll:       as plain, with kUnroll = 4 elements loaded per lane before counting
//   match_unroll: both
//   keys:         match_unroll whose pass 0 also stores every token's key (u32) and a validity bitmask
//                 (one bit per token), so passes 1..7 and select_mask_keys read 4.1 bytes per token
//                 instead of 8 (and skip the key transform)
//   lean:         a tile inside one pool (every tile of a long pool) loads the slot states once and runs
//                 a short loop (no pool search, no per-element state reads, 32-bit offsets); other tiles
//                 run plain. Its mask, select_mask_lean, is tiled the same way.
// Same launch protocol as the shipped version (engine/src/cuda/select.rs): 4 key passes of histogram +
// select_scan, the 4 index passes when flags[0] is set, then the mask (select_mask for match, unroll and
// match_unroll; select_mask_keys / select_mask_lean for keys / lean). Checked on the CPU by
// select_versions_check.cpp; timed on a GPU by the DEV_MAIN block at the end (dev/README.md).
#include "select.cu"

// ------------------------------------------------------------------------------------------------
// The histogram pass of match / unroll / match_unroll / keys. Block b owns tokens [b·kTile, (b+1)·kTile).
//   grid ceil(n / kTile), 256 threads. hist[slot][256] accumulates (pre-zeroed; select_scan re-zeroes).
// ------------------------------------------------------------------------------------------------
template <bool kMatchTop, int kUnroll, bool kKeys>
__device__ __forceinline__ void hist_version_body(u32* hist, const u32* state, u32* flags, const float* scores,
                                                 const float* valid, const int* cu, int num_pools, long long n,
                                                 u64 seed, int ntails, int pass, u32* keys_buf, u32* bits) {
    __shared__ u32 sh[kShPools * 2 * 256];
    __shared__ int sh_pools[2];
    // Stage 0: this block's tile (none past n, or on an index pass without a partial tie).
    long long tile0, tile1;
    if (!hist_tile(flags, n, pass, &tile0, &tile1)) return;

    // Stage 1: the pools this tile touches, and a zeroed shared histogram for the first kShPools of them.
    tile_pools(cu, num_pools, tile0, tile1, sh_pools);
    for (int j = threadIdx.x; j < kShPools * 2 * 256; j += blockDim.x) sh[j] = 0u;
    __syncthreads();
    const int qf = sh_pools[0], ql = sh_pools[1];
    const int digit_pass = pass & 3;
    const int shift = 24 - 8 * digit_pass;
    const u32 himask = digit_pass == 0 ? 0u : (0xFFFFFFFFu << (32 - 8 * digit_pass));

    // Stage 2: count the digit of every candidate (valid, slot still resolving, prefix matches). The loop is
    // warp-uniform (every lane runs every iteration) and loads kUnroll elements per lane before counting
    // them. With kMatchTop, pass 0 (where float keys crowd into a few top-byte buckets) aggregates per
    // bucket: the lanes with one bucket elect a leader (__match_any_sync) that adds their count. Later
    // passes spread over the buckets, where the match (whose cost grows with the number of distinct
    // values in the warp) costs more than it saves.
    const int lane = threadIdx.x & 31;
    for (long long base = tile0 + (threadIdx.x & ~31); base < tile1; base += (long long)blockDim.x * kUnroll) {
        u32 keys[kUnroll];
        bool oks[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const long long i = base + (long long)u * blockDim.x + lane;
            keys[u] = 0u;
            if (kKeys && pass > 0) {
                // Stored by pass 0: bit (i mod 32) of word i / 32, and the key.
                oks[u] = i < tile1 && ((bits[i >> 5] >> (i & 31)) & 1u);
                if (oks[u]) keys[u] = keys_buf[i];
            } else {
                load_key(scores, valid, seed, i, tile1, pass == 0 ? flags + 1 : nullptr, &oks[u], &keys[u]);
                if (kKeys) {
                    // Pass 0 stores them. A warp covers 32 consecutive, 32-aligned tokens (tiles and the
                    // per-lane stride are multiples of 32), so its ballot is one whole word of the bitmask.
                    const unsigned word = __ballot_sync(0xffffffffu, oks[u]);
                    if (i < tile1) keys_buf[i] = keys[u];
                    if (lane == 0 && i < tile1) bits[i >> 5] = word;
                }
            }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const long long i = base + (long long)u * blockDim.x + lane;
            const bool ok = oks[u];
            const u32 key = keys[u];
            const int q = ok ? pool_of(cu, qf, ql, i) : qf;
            for (int t = 0; t < ntails; ++t) {
                const long long s = (long long)q * ntails + t;
                bool cand = false;
                u32 digit = 0u;
                if (ok) {
                    const u32* st = state + s * 4;
                    const u32 e = t ? ~key : key;
                    const u32 mode = st[ST_MODE];
                    if (pass < 4) {
                        cand = mode == MODE_KEY && (e & himask) == st[ST_KEY];
                        digit = (e >> shift) & 255u;
                    } else {
                        cand = mode == MODE_IDX && e == st[ST_KEY] && ((u32)i & himask) == st[ST_IDX];
                        digit = ((u32)i >> shift) & 255u;
                    }
                }
                const bool in_sh = cand && q - qf < kShPools;
                const u32 bin = (u32)(((q - qf) * ntails + t) * 256) + digit;
                if (kMatchTop && pass == 0) {
                    // Non-candidates get an id no other lane has (bins are < 2^11).
                    const u32 peers = __match_any_sync(0xffffffffu, in_sh ? bin : 0x80000000u | (u32)lane);
                    if (in_sh && lane == __ffs(peers) - 1) atomicAdd(&sh[bin], (u32)__popc(peers));
                } else if (in_sh) {
                    atomicAdd(&sh[bin], 1u);
                }
                if (cand && !in_sh) atomicAdd(&hist[s * 256 + digit], 1u);
            }
        }
    }
    __syncthreads();

    // Stage 3: flush the shared histograms (layout (local pool, tail, digit) = the global one's tail).
    const int per_pool = ntails * 256;
    for (int j = threadIdx.x; j < kShPools * per_pool; j += blockDim.x) {
        const int q = qf + j / per_pool;
        const u32 c = sh[j];
        if (q <= ql && c != 0u) atomicAdd(&hist[(long long)q * per_pool + (j % per_pool)], c);
    }
}

// ------------------------------------------------------------------------------------------------
// select_hist_lean: see "lean" above. Same arguments and result as select_hist_plain.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL select_hist_lean(const __grid_constant__ SelectParams p, int pass) {
    u32* hist = p.hist;
    const u32* state = p.state;
    u32* flags = p.flags;
    const float *scores = p.scores, *valid = p.valid;
    const int* cu = p.cu;
    const int num_pools = p.num_pools, ntails = p.ntails;
    const long long n = p.n;
    const u64 seed = p.seed;
    __shared__ u32 sh[2 * 256];
    __shared__ int sh_pools[2];
    // Stage 0: as select_hist_body.
    long long tile0, tile1;
    if (!hist_tile(flags, n, pass, &tile0, &tile1)) return;
    tile_pools(cu, num_pools, tile0, tile1, sh_pools);
    __syncthreads();
    const int q = sh_pools[0];
    if (sh_pools[1] != q) {  // block-uniform: a tile across pools takes the general path
        hist_version_body<false, 1, false>(hist, state, flags, scores, valid, cu, num_pools, n, seed, ntails, pass,
                                          nullptr, nullptr);
        return;
    }
    // Stage 1: this pass's constants of the pool's (up to) two slots, and a zeroed shared histogram each.
    const int digit_pass = pass & 3;
    const int shift = 24 - 8 * digit_pass;
    const u32 himask = digit_pass == 0 ? 0u : (0xFFFFFFFFu << (32 - 8 * digit_pass));
    const u32* st0 = state + (long long)q * ntails * 4;
    const u32* st1 = st0 + 4;
    const u32 want = pass < 4 ? MODE_KEY : MODE_IDX;
    const bool res0 = st0[ST_MODE] == want, res1 = ntails > 1 && st1[ST_MODE] == want;
    const u32 key0 = st0[ST_KEY], idx0 = st0[ST_IDX];
    const u32 key1 = ntails > 1 ? st1[ST_KEY] : 0u, idx1 = ntails > 1 ? st1[ST_IDX] : 0u;
    for (int j = threadIdx.x; j < 2 * 256; j += blockDim.x) sh[j] = 0u;
    __syncthreads();

    // Stage 2: count. Tail 1 works on the complemented key (see the header).
    if (res0 || res1) {
        const int len = (int)(tile1 - tile0);
        for (int j = threadIdx.x; j < len; j += blockDim.x) {
            const long long i = tile0 + j;
            bool ok;
            u32 key;
            load_key(scores, valid, seed, i, tile1, pass == 0 ? flags + 1 : nullptr, &ok, &key);
            if (!ok) continue;
            if (pass < 4) {
                if (res0 && (key & himask) == key0) atomicAdd(&sh[(key >> shift) & 255u], 1u);
                const u32 k1 = ~key;
                if (res1 && (k1 & himask) == key1) atomicAdd(&sh[256 + ((k1 >> shift) & 255u)], 1u);
            } else {
                const u32 ii = (u32)i, d = (ii >> shift) & 255u;
                if (res0 && key == key0 && (ii & himask) == idx0) atomicAdd(&sh[d], 1u);
                if (res1 && ~key == key1 && (ii & himask) == idx1) atomicAdd(&sh[256 + d], 1u);
            }
        }
    }
    __syncthreads();

    // Stage 3: flush into the pool's slots (hist layout [slot = q·ntails + t][256]).
    for (int j = threadIdx.x; j < ntails * 256; j += blockDim.x) {
        const u32 c = sh[j];
        if (c != 0u) atomicAdd(&hist[(long long)q * ntails * 256 + j], c);
    }
}

#define SELECT_HIST_VERSION(NAME, MATCH, UNROLL)                                                            \
    SEL_KERNEL NAME(const __grid_constant__ SelectParams p, int pass) {                                       \
        hist_version_body<MATCH, UNROLL, false>(p.hist, p.state, p.flags, p.scores, p.valid, p.cu, p.num_pools, \
                                               p.n, p.seed, p.ntails, pass, nullptr, nullptr);                 \
    }
SELECT_HIST_VERSION(select_hist_match, true, 1)
SELECT_HIST_VERSION(select_hist_unroll, false, 4)
SELECT_HIST_VERSION(select_hist_match_unroll, true, 4)
// keys_buf holds n u32, bits ceil(n / 32) u32; written by pass 0, read by the later passes.
SEL_KERNEL select_hist_keys(const __grid_constant__ SelectParams p, int pass, u32* keys_buf, u32* bits) {
    hist_version_body<true, 4, true>(p.hist, p.state, p.flags, p.scores, p.valid, p.cu, p.num_pools, p.n, p.seed,
                                    p.ntails, pass, keys_buf, bits);
}

// The lean version's mask: block b owns tile b (grid ceil(n / kTile), 256 threads); a tile inside one pool
// reads its slots' states once instead of per token.
SEL_KERNEL select_mask_lean(const __grid_constant__ SelectParams p) {
    float *out0 = p.out0, *out1 = p.out1;
    const u32* state = p.state;
    const float *scores = p.scores, *valid = p.valid;
    const int* cu = p.cu;
    const int num_pools = p.num_pools, ntails = p.ntails;
    const long long n = p.n;
    const u64 seed = p.seed;
    __shared__ int sh_pools[2];
    const long long tile0 = (long long)blockIdx.x * kTile;
    if (tile0 >= n) return;
    const long long tile1 = min(tile0 + kTile, n);
    tile_pools(cu, num_pools, tile0, tile1, sh_pools);
    __syncthreads();
    const int qf = sh_pools[0], ql = sh_pools[1];
    const bool one_pool = qf == ql;
    // Stage 1: the one pool's slot states (mode, threshold key, threshold index) per tail.
    u32 mode[2] = {MODE_NONE, MODE_NONE}, tk[2] = {0u, 0u}, ti[2] = {0u, 0u};
    if (one_pool) {
        for (int t = 0; t < ntails && t < 2; ++t) {
            const u32* st = state + ((long long)qf * ntails + t) * 4;
            mode[t] = st[ST_MODE];
            tk[t] = st[ST_KEY];
            ti[t] = st[ST_IDX];
        }
    }
    // Stage 2: one mask entry per tail and token.
    for (long long i = tile0 + threadIdx.x; i < tile1; i += blockDim.x) {
        bool ok;
        u32 key;
        load_key(scores, valid, seed, i, tile1, nullptr, &ok, &key);
        const int q = one_pool || !ok ? qf : pool_of(cu, qf, ql, i);
#pragma unroll
        for (int t = 0; t < 2; ++t) {
            if (t >= ntails) break;
            bool sel = false;
            if (ok) {
                const u32 e = t ? ~key : key;
                if (one_pool) {
                    sel = in_tail(mode[t], e, tk[t], ti[t], i);
                } else {
                    const u32* st = state + ((long long)q * ntails + t) * 4;
                    sel = in_tail(st[ST_MODE], e, st[ST_KEY], st[ST_IDX], i);
                }
            }
            (t == 0 ? out0 : out1)[i] = sel ? 1.0f : 0.0f;
        }
    }
}
// The keys version's mask: keys and validity as select_hist_keys stored them on pass 0.
SEL_KERNEL select_mask_keys(const __grid_constant__ SelectParams p, const u32* keys_buf, const u32* bits) {
    float *out0 = p.out0, *out1 = p.out1;
    const u32* state = p.state;
    const int* cu = p.cu;
    const int num_pools = p.num_pools, ntails = p.ntails;
    const long long n = p.n;
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        const bool ok = ((bits[i >> 5] >> (i & 31)) & 1u) != 0u;
        const u32 key = ok ? keys_buf[i] : 0u;
        const int q = ok ? pool_of(cu, 0, num_pools - 1, i) : 0;
        for (int t = 0; t < ntails; ++t) {
            bool sel = false;
            if (ok) {
                const u32* st = state + ((long long)q * ntails + t) * 4;
                sel = in_tail(st[ST_MODE], t ? ~key : key, st[ST_KEY], st[ST_IDX], i);
            }
            (t == 0 ? out0 : out1)[i] = sel ? 1.0f : 0.0f;
        }
    }
}

#ifdef DEV_MAIN
// ------------------------------------------------------------------------------------------------
// GPU timing, llm.c's dev/cuda way (dev/README.md says how to build and run it): the shipped plain version and
// every version here on the same uniform scores, each launched as engine/src/cuda/select.rs launches it (one
// flag read after the key passes), median of `reps` timed runs after 3 warm-ups, masks compared with plain's.
//   ./select_versions [n = 4194304] [pools = 1] [reps = 20]
// ------------------------------------------------------------------------------------------------
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define DEV_CHECK(x)                                                                                     \
    do {                                                                                                 \
        const cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                         \
            std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));            \
            std::exit(1);                                                                                \
        }                                                                                                \
    } while (0)

enum DevVersion { kPlain, kMatch, kUnroll, kMatchUnroll, kKeys, kLean, kNumVersions };
static const char* const kNames[kNumVersions] = {"plain", "match", "unroll", "match_unroll", "keys", "lean"};

// One select_tails call of `version` (both tails) on the buffers of `p`: zeroed histograms, states and flags,
// the key passes, one flag read, the index passes when some slot has a partial tie, the version's mask.
static void run_version(int version, const SelectParams& p, u32* keys, u32* bits) {
    const long long nslots = (long long)p.num_pools * p.ntails;
    const unsigned tiles = (unsigned)((p.n + kTile - 1) / kTile), scan_blocks = (unsigned)std::min(nslots, 65535ll);
    DEV_CHECK(cudaMemsetAsync(p.hist, 0, nslots * 256 * sizeof(u32)));
    DEV_CHECK(cudaMemsetAsync(p.state, 0, nslots * 4 * sizeof(u32)));
    DEV_CHECK(cudaMemsetAsync(p.flags, 0, 2 * sizeof(u32)));
    auto pass = [&](int k) {
        switch (version) {
        case kPlain: select_hist_plain<<<tiles, kThreads>>>(p, k); break;
        case kMatch: select_hist_match<<<tiles, kThreads>>>(p, k); break;
        case kUnroll: select_hist_unroll<<<tiles, kThreads>>>(p, k); break;
        case kMatchUnroll: select_hist_match_unroll<<<tiles, kThreads>>>(p, k); break;
        case kKeys: select_hist_keys<<<tiles, kThreads>>>(p, k, keys, bits); break;
        default: select_hist_lean<<<tiles, kThreads>>>(p, k); break;
        }
        select_scan<<<scan_blocks, kThreads>>>(p, k);
    };
    for (int k = 0; k < 4; ++k) pass(k);
    u32 flags[2];
    DEV_CHECK(cudaMemcpy(flags, p.flags, sizeof flags, cudaMemcpyDeviceToHost));
    if (flags[0] != 0u)
        for (int k = 4; k < 8; ++k) pass(k);
    const unsigned mask_blocks = (unsigned)std::min((p.n + kThreads - 1) / kThreads, 65535ll * 8);
    if (version == kKeys) select_mask_keys<<<mask_blocks, kThreads>>>(p, keys, bits);
    else if (version == kLean) select_mask_lean<<<tiles, kThreads>>>(p);
    else select_mask<<<mask_blocks, kThreads>>>(p);
    DEV_CHECK(cudaGetLastError());
}

int main(int argc, char** argv) {
    const long long n = argc > 1 ? std::atoll(argv[1]) : 4194304;
    const int num_pools = argc > 2 ? std::atoi(argv[2]) : 1, reps = argc > 3 ? std::atoi(argv[3]) : 20;
    const double frac = 0.2, slack = 1.0 - 1e-12;
    if (n < 1 || n > 0x7fffffffll || num_pools < 1 || num_pools > n || reps < 1) {
        std::fprintf(stderr, "usage: %s [n in 1..2^31-1] [pools in 1..n] [reps >= 1]\n", argv[0]);
        return 2;
    }
    // Uniform scores in [0, 1) (a 64-bit LCG), every token valid, pools of n / pools tokens.
    std::vector<float> scores_h(n), valid_h(n, 1.0f);
    u64 s = 20261127ull;
    for (auto& x : scores_h) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x = (float)(s >> 40) / 16777216.0f;
    }
    std::vector<int> cu(num_pools + 1);
    for (int q = 0; q <= num_pools; ++q) cu[q] = (int)(n * q / num_pools);
    const long long nslots = 2ll * num_pools;
    SelectParams p{};
    float *scores, *valid, *out0, *out1;
    int* cu_dev;
    u32 *hist, *state, *flags, *keys, *bits;
    DEV_CHECK(cudaMalloc(&scores, n * sizeof(float)));
    DEV_CHECK(cudaMalloc(&valid, n * sizeof(float)));
    DEV_CHECK(cudaMalloc(&out0, n * sizeof(float)));
    DEV_CHECK(cudaMalloc(&out1, n * sizeof(float)));
    DEV_CHECK(cudaMalloc(&cu_dev, (num_pools + 1) * sizeof(int)));
    DEV_CHECK(cudaMalloc(&hist, nslots * 256 * sizeof(u32)));
    DEV_CHECK(cudaMalloc(&state, nslots * 4 * sizeof(u32)));
    DEV_CHECK(cudaMalloc(&flags, 2 * sizeof(u32)));
    DEV_CHECK(cudaMalloc(&keys, n * sizeof(u32)));
    DEV_CHECK(cudaMalloc(&bits, (n + 31) / 32 * sizeof(u32)));
    DEV_CHECK(cudaMemcpy(scores, scores_h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    DEV_CHECK(cudaMemcpy(valid, valid_h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    DEV_CHECK(cudaMemcpy(cu_dev, cu.data(), cu.size() * sizeof(int), cudaMemcpyHostToDevice));
    p.hist = hist;
    p.state = state;
    p.flags = flags;
    p.out0 = out0;
    p.out1 = out1;
    p.scores = scores;
    p.valid = valid;
    p.cu = cu_dev;
    p.n = n;
    p.seed = 0;
    p.frac = frac;
    p.slack = slack;
    p.num_pools = num_pools;
    p.ntails = 2;
    cudaEvent_t t0, t1;
    DEV_CHECK(cudaEventCreate(&t0));
    DEV_CHECK(cudaEventCreate(&t1));
    std::vector<float> want0(n), want1(n), got0(n), got1(n);
    std::printf("select top + bottom 20%% of %lld uniform f32 scores in %d pool(s), median of %d runs\n", n, num_pools,
                reps);
    bool all_same = true;
    for (int v = 0; v < kNumVersions; ++v) {
        for (int w = 0; w < 3; ++w) run_version(v, p, keys, bits);
        std::vector<float> ms(reps);
        for (int r = 0; r < reps; ++r) {
            DEV_CHECK(cudaEventRecord(t0));
            run_version(v, p, keys, bits);
            DEV_CHECK(cudaEventRecord(t1));
            DEV_CHECK(cudaEventSynchronize(t1));
            DEV_CHECK(cudaEventElapsedTime(&ms[r], t0, t1));
        }
        std::sort(ms.begin(), ms.end());
        DEV_CHECK(cudaMemcpy((v == kPlain ? want0 : got0).data(), out0, n * sizeof(float), cudaMemcpyDeviceToHost));
        DEV_CHECK(cudaMemcpy((v == kPlain ? want1 : got1).data(), out1, n * sizeof(float), cudaMemcpyDeviceToHost));
        const bool same = v == kPlain || (got0 == want0 && got1 == want1);
        all_same &= same;
        std::printf("  %-13s %8.1f us  %s\n", kNames[v], ms[reps / 2] * 1e3, same ? "masks = plain" : "MASKS DIFFER");
    }
    return all_same ? 0 : 1;
}
#endif  // DEV_MAIN
