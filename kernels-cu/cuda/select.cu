// select.cu: token selection by device radix select, and an LSD radix sort of (f32 key, i32 index) pairs.
//
// Keys. A float x becomes an order-preserving u32 as in PyTorch (aten/src/ATen/native/cuda/
// SortingRadixSelect.cuh): bits ^ (sign ? 0xFFFFFFFF : 0x80000000). Before that, -0.0 is folded into +0.0
// (so the two compare equal and tie by index) and every NaN into one positive quiet NaN (above +inf).
// Random selection uses a splitmix64 hash of (seed, token index) as its u32 key instead.
//
// Radix select (MSD, 8-bit digits; kernels.md §4). Pools are the segments of cu_seqlens; every (pool, tail)
// pair is a "slot" s = pool·ntails + tail. Tail 0 is the bottom tail; tail 1 (the top tail) runs the same
// bottom-k machinery on the complemented key ~key, since "descending key, then ascending index" is
// "ascending ~key, then ascending index". A slot selects the k smallest valid elements under the composite
// order (key, token index), k = ceil(frac·n_valid) (tail_count), which is the tie rule "among equal keys the
// lower index wins" and makes every composite key distinct, so exactly k elements are selected:
//   passes 0..3: digit histograms of the key bytes (high to low) over the slot's still-candidate elements;
//                select_scan finds the bucket holding the kk-th element and updates (prefix, kk).
//                After pass 3 the threshold key Tk is exact and kk = r = how many Tk-equal elements to take.
//   passes 4..7: only for slots where r < #(key == Tk) (a partial tie): the same over the token index bits
//                of the Tk-equal elements, giving the threshold index Ti. The host reads flags after pass 3
//                and launches them only when some slot needs them (the kernels' early exit on flags[0] is
//                kept as a guard for callers that launch all eight).
//   select_mask: selected iff key < Tk, or key == Tk and (all equals are taken, or index <= Ti).
// Pass 0's histogram total is the pool's n_valid, from which select_scan derives k on the device.
//
// Radix sort (LSD, 8-bit digits, 4 passes; the classic per-tile histogram / digit-major scan / scatter
// structure, e.g. Merrill & Grimshaw 2011, without decoupled look-back): per pass, radix_sort_hist counts each
// tile's digits, radix_sort_scan turns the digit-major [256][tiles] counts into exclusive offsets, and
// radix_sort_scatter writes each tile's elements in index order (warp __match_any_sync ranks + per-warp digit
// counts), so every pass is stable and the sort is stable. radix_sort_scatter_local is the same scatter with
// ballot ranks and a shared-memory staging of the tile, so that its global writes are contiguous per digit.
//
// Kernels with many arguments take a parameter struct of select_params.cuh by value, filled by field name.
// All element indices are 64-bit; counts are u32 (a pool or a sort holds fewer than 2^31 elements).
#include "select_common.cuh"

constexpr int kWarps = kThreads / 32;
constexpr long long kTile = 4096;       // elements per block of the tiled kernels (= TILE in cuda/select.rs)
constexpr int kShPools = 4;             // pools per block with a shared-memory histogram (then global atomics)

// The histogram tile of this block, [tile0, tile1); false when it has nothing to do: past n, or an index pass
// (pass >= 4) while no slot has a partial tie at its threshold key (flags[0]). Uniform over the block.
__device__ __forceinline__ bool hist_tile(const u32* flags, long long n, int pass, long long* tile0, long long* tile1) {
    if (pass >= 4 && flags[0] == 0u) return false;
    *tile0 = (long long)blockIdx.x * kTile;
    *tile1 = min(*tile0 + kTile, n);
    return *tile0 < n;
}

// ------------------------------------------------------------------------------------------------
// select_hist_plain: one radix-select histogram pass, one token per thread per iteration, every increment a
// shared atomic (the losing versions of this pass are in kernels-cu/dev/select_versions.cu). Block b owns
// tokens [b·kTile, (b+1)·kTile).
//   grid ceil(n / kTile), 256 threads. hist[slot][256] accumulates (pre-zeroed; select_scan re-zeroes).
// ------------------------------------------------------------------------------------------------
SEL_KERNEL select_hist_plain(const __grid_constant__ SelectParams p, int pass) {
    u32* hist = p.hist;
    const u32* state = p.state;
    u32* flags = p.flags;
    const float *scores = p.scores, *valid = p.valid;
    const int* cu = p.cu;
    const int num_pools = p.num_pools, ntails = p.ntails;
    const long long n = p.n;
    const u64 seed = p.seed;
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

    // Stage 2: count the digit of every candidate (valid, slot still resolving, prefix matches): into the
    // shared histogram of its pool when that is one of the tile's first kShPools, else straight into the
    // global one. Tail 1 works on the complemented key (see the header).
    for (long long i = tile0 + threadIdx.x; i < tile1; i += blockDim.x) {
        bool ok;
        u32 key;
        load_key(scores, valid, seed, i, tile1, pass == 0 ? flags + 1 : nullptr, &ok, &key);
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
            if (in_sh) atomicAdd(&sh[(u32)(((q - qf) * ntails + t) * 256) + digit], 1u);
            if (cand && !in_sh) atomicAdd(&hist[s * 256 + digit], 1u);
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
// select_scan: after histogram pass `pass`, per slot: find the bucket holding the kk-th candidate, move the
// slot's prefix and remaining rank into it, and zero the histogram for the next pass. On pass 0 the
// histogram total is the pool's n_valid and k = tail_count(frac, n_valid) starts the search.
//   one block per slot (block-stride over slots), exactly 256 threads (thread = digit bucket).
// ------------------------------------------------------------------------------------------------
SEL_KERNEL select_scan(const __grid_constant__ SelectParams p, int pass) {
    __shared__ u32 warp_tot[32];
    u32 *hist = p.hist, *state = p.state, *flags = p.flags;
    const long long nslots = (long long)p.num_pools * p.ntails;
    const double frac = p.frac, slack = p.slack;
    if (pass >= 4 && flags[0] == 0u) return;
    const int digit_pass = pass & 3;
    const int shift = 24 - 8 * digit_pass;
    const u32 d = threadIdx.x;
    for (long long s = blockIdx.x; s < nslots; s += gridDim.x) {
        u32* st = state + s * 4;
        u32* h = hist + s * 256;
        // Stage 1: skip slots that were not resolving in this pass (nothing was counted for them).
        const u32 mode = st[ST_MODE];
        const bool resolving = pass < 4 ? mode == MODE_KEY : mode == MODE_IDX;
        if (!resolving) continue;  // uniform: every thread read the same word
        u32 kk = st[ST_KK];
        // Stage 2: inclusive scan of the 256 buckets (its barriers also order the reads above before the
        // writes below), then clear them for the next pass.
        const u32 v = h[d];
        u32 total;
        const u32 c = block_inclusive_scan(v, warp_tot, &total);
        h[d] = 0u;
        // Stage 3: on the first pass, k from the pool's valid count.
        if (pass == 0) {
            kk = tail_count(frac, slack, total);
            if (kk == 0u) {
                if (d == 0) st[ST_MODE] = MODE_NONE;
                continue;  // uniform: every thread computed the same kk
            }
        }
        // Stage 4: the one bucket whose running count crosses kk (kk <= total, so it exists; v > 0 there).
        if (c >= kk && c - v < kk) commit_bucket(st, flags, d, shift, kk - (c - v), v, pass < 4, pass == 3);
    }
}

// ------------------------------------------------------------------------------------------------
// select_mask: out_t[i] = 1 if valid token i is in its pool's tail t, else 0 (tail 0 -> out0, tail 1 -> out1).
//   grid-stride over tokens.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL select_mask(const SelectParams p) {
    float *out0 = p.out0, *out1 = p.out1;
    const u32* state = p.state;
    const float *scores = p.scores, *valid = p.valid;
    const int* cu = p.cu;
    const int num_pools = p.num_pools, ntails = p.ntails;
    const long long n = p.n;
    const u64 seed = p.seed;
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        const bool ok = valid[i] != 0.0f;
        u32 key = 0u;
        int q = 0;
        if (ok) {
            key = token_key(scores, seed, i);
            q = pool_of(cu, 0, num_pools - 1, i);
        }
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

// ------------------------------------------------------------------------------------------------
// radix_sort_init_f32: keys[i] = float_key(x[i]), idx[i] = i.   grid-stride.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL radix_sort_init_f32(u32* keys, int* idx, const float* x, long long n) {
    for (long long i = global_tid(); i < n; i += grid_stride()) {
        keys[i] = float_key(x[i]);
        idx[i] = (int)i;
    }
}

// ------------------------------------------------------------------------------------------------
// radix_sort_hist: counts[d·tiles + b] = #{i in tile b : digit(keys[i]) = d}.   grid = tiles, 256 threads.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL radix_sort_hist(u32* counts, const u32* keys, long long n, long long tiles, int shift) {
    __shared__ u32 sh[256];
    const int d = threadIdx.x;
    const long long b = blockIdx.x;
    sh[d] = 0u;
    __syncthreads();
    const long long tile0 = b * kTile, tile1 = min(tile0 + kTile, n);
    for (long long i = tile0 + threadIdx.x; i < tile1; i += blockDim.x) atomicAdd(&sh[(keys[i] >> shift) & 255u], 1u);
    __syncthreads();
    counts[(long long)d * tiles + b] = sh[d];
}

// ------------------------------------------------------------------------------------------------
// radix_sort_scan: per digit d, counts[d][·] (over tiles) -> exclusive prefix; totals[d] = Σ.
//   one block per digit (block-stride over the 256 digits), 256 threads.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL radix_sort_scan(u32* counts, u32* totals, long long tiles) {
    __shared__ u32 warp_tot[32];
    for (int d = blockIdx.x; d < 256; d += gridDim.x) {
        u32* row = counts + (long long)d * tiles;
        u32 carry = 0u;
        for (long long base = 0; base < tiles; base += blockDim.x) {
            const long long j = base + threadIdx.x;
            const u32 v = j < tiles ? row[j] : 0u;
            u32 chunk;
            const u32 c = block_inclusive_scan(v, warp_tot, &chunk);
            if (j < tiles) row[j] = carry + c - v;
            carry += chunk;
        }
        if (threadIdx.x == 0) totals[d] = carry;
    }
}

// ------------------------------------------------------------------------------------------------
// radix_sort_scatter: stable scatter of tile b. Destination of element i with digit d:
//   Σ_{d' < d} totals[d']  (elements with a smaller digit)
// + counts[d][b]           (digit-d elements of earlier tiles, exclusive-scanned)
// + running[d]             (digit-d elements of earlier 256-element chunks of this tile)
// + Σ_{w' < w} wcount[w'][d] + popc(peers below this lane)   (earlier warps / lanes of this chunk).
//   grid = tiles, exactly 256 threads.
//
// radix_sort_scatter_local: the same destinations, written coalesced. radix_sort_scatter took 192-201 us a
// pass on the H100 (2026-11-27) where its histogram pass took 14: every warp store there spreads over ~32
// digit runs, and __match_any_sync's cost grows with the distinct digits of the warp. Here:
//   * ranks come from a warp multisplit, one ballot per digit bit (Ashkiani et al. 2016), a fixed cost;
//   * running[d] starts at the tile's exclusive digit offset (this tile's digit counts are the differences
//     of the tile-scanned counts: counts[d][b+1] - counts[d][b], or totals[d] - counts[d][b] for the last
//     tile), so the chunk loop places the tile in shared memory in (digit, index) order;
//   * then consecutive threads copy consecutive local positions j to global position
//     Σ_{d'<d} totals[d'] + counts[d][b] + (j - local offset of d), so each digit run is written contiguously.
//   grid = tiles, exactly 256 threads, 42 KB static shared memory.
// ------------------------------------------------------------------------------------------------
// The lanes of the warp whose value v (< 512) equals this lane's.
__device__ __forceinline__ u32 warp_peers9(u32 v) {
    u32 peers = 0xffffffffu;
#pragma unroll
    for (int b = 0; b < 9; ++b) {
        const u32 bit = (v >> b) & 1u;
        const u32 bal = __ballot_sync(0xffffffffu, bit != 0u);
        peers &= bit ? bal : ~bal;
    }
    return peers;
}

// Both scatters; kLocal stages the tile in sk / si (kTile entries each) before writing it out.
template <bool kLocal>
__device__ __forceinline__ void radix_sort_scatter_body(u32* keys_out, int* idx_out, const u32* keys_in,
                                                        const int* idx_in, const u32* counts, const u32* totals,
                                                        long long n, long long tiles, int shift, u32* sk, int* si) {
    __shared__ u32 digit_base[256];
    __shared__ u32 running[256];
    __shared__ u32 wcount[kWarps][256];
    __shared__ u32 warp_tot[32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const long long b = blockIdx.x;

    // Stage 1 (thread tid = digit d): global start of the tile's digit-d run, minus its local offset when the
    // tile is staged (the copy in stage 5 adds the local position); clear the per-chunk counters.
    const u32 tot = totals[tid];
    u32 all;
    const u32 incl = block_inclusive_scan(tot, warp_tot, &all);
    const u32 before = counts[(long long)tid * tiles + b];
    u32 local = 0u;
    if (kLocal) {
        const u32 cnt = (b + 1 < tiles ? counts[(long long)tid * tiles + b + 1] : tot) - before;
        local = block_inclusive_scan(cnt, warp_tot, &all) - cnt;
    }
    digit_base[tid] = (incl - tot) + before - local;  // mod 2^32: every destination below is in range
    running[tid] = local;
    for (int w = 0; w < kWarps; ++w) wcount[w][tid] = 0u;
    __syncthreads();

    const long long tile0 = b * kTile, tile1 = min(tile0 + kTile, n);
    const u32 lanes_below = (1u << lane) - 1u;
    for (long long c0 = tile0; c0 < tile1; c0 += kThreads) {  // uniform trip count
        // Stage 2: load one element per thread; rank it among same-digit lanes of its warp.
        const long long i = c0 + tid;
        const bool in = i < tile1;
        u32 key = 0u, dgt = 256u;  // 256: out-of-range lanes match only each other
        int id = 0;
        if (in) {
            key = keys_in[i];
            id = idx_in[i];
            dgt = (key >> shift) & 255u;
        }
        const u32 peers = kLocal ? warp_peers9(dgt) : __match_any_sync(0xffffffffu, dgt);
        const u32 rank = __popc(peers & lanes_below);
        if (in && rank == 0u) wcount[warp][dgt] = __popc(peers);
        __syncthreads();
        // Stage 3: place it: in the staged tile, or straight at its destination.
        if (in) {
            u32 pos = running[dgt] + rank;
            for (int w = 0; w < warp; ++w) pos += wcount[w][dgt];
            if (kLocal) {
                sk[pos] = key;
                si[pos] = id;
            } else {
                keys_out[digit_base[dgt] + pos] = key;
                idx_out[digit_base[dgt] + pos] = id;
            }
        }
        __syncthreads();
        // Stage 4: advance the running digit counts and clear this chunk's per-warp counts.
        u32 add = 0u;
        for (int w = 0; w < kWarps; ++w) {
            add += wcount[w][tid];
            wcount[w][tid] = 0u;
        }
        running[tid] += add;
        __syncthreads();
    }

    // Stage 5 (staged): coalesced copy, local position j of digit d to digit_base[d] + j.
    if (kLocal) {
        for (long long j = tid; j < tile1 - tile0; j += kThreads) {
            const u32 key = sk[j];
            const u32 pos = digit_base[(key >> shift) & 255u] + (u32)j;
            keys_out[pos] = key;
            idx_out[pos] = si[j];
        }
    }
}

SEL_KERNEL radix_sort_scatter(const __grid_constant__ SortScatterParams p) {
    radix_sort_scatter_body<false>(p.keys_out, p.idx_out, p.keys_in, p.idx_in, p.counts, p.totals, p.n, p.tiles,
                                   p.shift, nullptr, nullptr);
}

SEL_KERNEL radix_sort_scatter_local(const __grid_constant__ SortScatterParams p) {
    __shared__ u32 sk[kTile];
    __shared__ int si[kTile];
    radix_sort_scatter_body<true>(p.keys_out, p.idx_out, p.keys_in, p.idx_in, p.counts, p.totals, p.n, p.tiles,
                                  p.shift, sk, si);
}

// ------------------------------------------------------------------------------------------------
// radix_sort_gather_f32: out[j] = x[idx[j]] (the sorted keys with their original bits).   grid-stride.
// ------------------------------------------------------------------------------------------------
SEL_KERNEL radix_sort_gather_f32(float* out, const float* x, const int* idx, long long n) {
    for (long long j = global_tid(); j < n; j += grid_stride()) out[j] = x[idx[j]];
}
