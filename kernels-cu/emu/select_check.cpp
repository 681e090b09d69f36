// Executes, compiled unchanged against the emu/ shims, and compares with a sort on the host:
//   * the radix select of select.cu (select_hist / select_scan / select_mask, 8 passes as
//     engine/src/cuda/select.rs launches them), every histogram version;
//   * the wide radix select of select_wide.cu (as engine/src/cuda/select_wide.rs launches it), with fused and
//     with separate scans (the fused runs launch blocks in reverse, so a block with candidates runs the
//     scans), vector and scalar loads, and a check of its candidates after pass 1;
//   * the LSD radix sort of select.cu (init / 4 × hist, scan, scatter / gather), both scatter kernels.
// Select cases: top and bottom tails of every pool (empty, one-token, invalid-only and multi-tile pools, more
// pools per tile than the shared histograms hold, ties, ±0, ±inf) and seeded random selection; sort cases:
// NaNs and −0, ties, partial and full tiles. One line per case; exit 1 on failure. Built and run by
// kernels-cu/tests/emulated_kernels.rs.
#include "select.cu"
#include "select_wide.cu"

#include "harness.h"

#include <algorithm>

// Run `body` over a grid of `blocks` CTAs of kThreads threads; `reversed`: in reverse block order (with
// scans fused into the block that finishes a pass last, the last block is then block 0, the first part of
// the first tile, which holds candidates; in index order it is nearly always an empty trailing part).
template <class F> static void launch(unsigned blocks, F body, bool reversed = false) {
    run_grid(blocks, kThreads, body, reversed);
}

static u32 host_float_key(float x) {
    u32 b;
    std::memcpy(&b, &x, 4);
    if ((b & 0x7FFFFFFFu) == 0u) b = 0u;
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) b = 0x7FC00000u;
    return b ^ ((b & 0x80000000u) ? 0xFFFFFFFFu : 0x80000000u);
}
static u32 host_hash(u64 seed, long long i) {
    auto mix = [](u64 z) {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    };
    return (u32)(mix(mix(seed) + ((u64)i + 1ull) * 0x9E3779B97F4A7C15ull) >> 32);
}

using HistFn = void (*)(u32*, const u32*, u32*, const float*, const float*, const int*, int, long long, u64, int, int);
struct HistVersion {
    const char* name;
    HistFn fn;  // nullptr: the keys version (select_hist_keys + select_mask_keys), or a wide version
    bool lean_mask = false;  // the lean version's tiled mask (select_mask_lean)
    int wide = 0;  // 1: select_wide.cu, scans fused, float4 loads, pass-0 copies; 2: separate scans, scalar, one
};
static const HistVersion kHistVersions[] = {{"plain", select_hist_plain},
                                            {"match", select_hist_match},
                                            {"unroll", select_hist_unroll},
                                            {"match_unroll", select_hist_match_unroll},
                                            {"lean", select_hist_lean, true},
                                            {"keys", nullptr},
                                            {"wide (fused scans, float4)", nullptr, false, 1},
                                            {"wide (scan kernel, scalar)", nullptr, false, 2}};

// The wide version as engine/src/cuda/select_wide.rs runs it: one zeroed workspace, passes 0-5 (3-5 exit at
// once unless some slot has a partial tie; pass 1 writes the non-candidates' masks), then the candidates'. False if the fused scans' ticket was left set or
// the candidates after pass 1 were wrong. float4 access only where every buffer is 16-byte aligned, as the
// host checks.
static bool run_wide(const float* sc, const std::vector<float>& valid, const std::vector<int>& cu, long long n,
                     u64 seed, int ntails, double frac, double slack, bool fuse, bool vec, std::vector<float>& out0,
                     std::vector<float>& out1, u32* nan_flag) {
    const int num_pools = (int)cu.size() - 1, nslots = num_pools * ntails;
    std::vector<u32> ws(4 + nslots * (1 + 4 + kBins), 0u);
    const WideWs w = wide_ws(ws.data(), num_pools, ntails);  // the kernels' own view of the layout
    std::vector<uint2> cand(2 * n, uint2{0xDEADBEEFu, 0xDEADBEEFu});  // poisoned: only live entries are read
    // Packing::tiles: every pool cut into tiles of at most 16384 tokens, (start, end, pool).
    std::vector<int> tile_tab;
    for (int q = 0; q < num_pools; ++q)
        for (int s = cu[q]; s < cu[q + 1]; s += 16384)
            tile_tab.insert(tile_tab.end(), {s, std::min(s + 16384, cu[q + 1]), q});
    const unsigned tiles = (unsigned)(tile_tab.size() / 3);
    // The candidate kernels' parts per tile: the host's 4 with fused scans, an uneven 3 (parts of 5462, not a
    // multiple of the 2048-position batch) with the scan kernel. The fused runs launch blocks in reverse.
    const int split = fuse ? 4 : 3;
    const int copies = fuse;  // pass 0's two histogram copies with the fused scans, one histogram without
    auto grid = [&](unsigned blocks, auto body) { launch(blocks, body, fuse); };
    auto aligned = [](const void* p) { return p == nullptr || (uintptr_t)p % 16 == 0; };
    float* o1 = ntails > 1 ? out1.data() : nullptr;
    vec = vec && aligned(sc) && aligned(valid.data()) && aligned(out0.data()) && aligned(o1);
    auto scan = [&](int pass) {
        if (!fuse) launch((unsigned)std::min(num_pools, 65535), [&] {
            select_wide_scan(ws.data(), num_pools, ntails, pass, frac, slack);
        });
    };
    for (int pass = 0; pass < 2; ++pass) {
        grid(tiles, [&] {
            select_wide_data(ws.data(), tile_tab.data(), out0.data(), o1, sc, valid.data(), cu.data(), num_pools, n,
                             seed, ntails, pass, cand.data(), vec, fuse, copies, frac, slack);
        });
        scan(pass);
    }
    // After pass 1, a slot still resolving holds exactly its pool's valid tokens whose tail-oriented key has
    // the slot's 11-bit prefix, each once, as (key, index); a slot with k = 0 holds none.
    bool compact_ok = true;
    for (int q = 0; q < num_pools; ++q) {
        for (int t = 0; t < ntails; ++t) {
            const int slot = q * ntails + t;
            const u32* st = w.state + slot * 4;
            const u32 prefix = wide_digit(1).himask;  // the first key digit, resolved by pass 0
            std::vector<std::pair<u32, u32>> want, got;
            for (int i = cu[q]; st[ST_MODE] == MODE_KEY && i < cu[q + 1]; ++i) {
                const u32 e0 = valid[i] != 0.0f ? (sc ? host_float_key(sc[i]) : host_hash(seed, i)) : 0u;
                const u32 e = t ? ~e0 : e0;
                if (valid[i] != 0.0f && (e & prefix) == (st[ST_KEY] & prefix)) want.push_back({e, (u32)i});
            }
            for (u32 j = 0; j < w.counts[slot]; ++j) {
                const uint2 c = cand[t * n + cu[q] + j];
                got.push_back({c.x, c.y});
            }
            std::sort(want.begin(), want.end());
            std::sort(got.begin(), got.end());
            compact_ok &= want == got;
        }
    }
    if (!compact_ok) std::printf("wide: the candidates after pass 1 differ from the prefix's tokens\n");
    for (int pass = 2; pass < 6; ++pass) {
        grid(tiles * split, [&] {
            select_wide_cand(ws.data(), tile_tab.data(), split, cand.data(), cu.data(), num_pools, n, ntails, pass,
                             fuse, frac, slack);
        });
        scan(pass);
    }
    grid(tiles * split, [&] {
        select_wide_cand_mask(out0.data(), o1, ws.data(), tile_tab.data(), split, cand.data(), cu.data(), num_pools,
                              n, ntails);
    });
    *nan_flag = w.flags[1];
    return w.flags[2] == 0u && compact_ok;
}

// Scores of a select case: small values with many ties, ±0 and +inf (Mixed), uniform in [0, 1) (Distinct), or
// all equal (Equal: every valid token is a candidate and the index passes decide).
enum class Scores { Mixed, Distinct, Equal };

static bool select_case(const char* name, const std::vector<int>& pool_lens, bool random, std::mt19937_64& rng,
                        const HistVersion& hv, Scores kind = Scores::Mixed, int ntails = 2) {
    const double frac = 0.2, slack = 1.0 - 1e-12;
    const int num_pools = (int)pool_lens.size();
    std::vector<int> cu{0};
    for (int l : pool_lens) cu.push_back(cu.back() + l);
    const long long n = cu.back();
    std::uniform_int_distribution<int> small(-3, 3);
    std::vector<float> scores(n), valid(n);
    for (long long i = 0; i < n; ++i) {
        const int r = small(rng);
        scores[i] = r == 3 ? INFINITY : r == -3 ? -0.0f : r == 2 ? 0.0f : (float)r * 0.5f + (float)(i % 5) * 1e-3f;
        if (kind == Scores::Distinct) scores[i] = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
        if (kind == Scores::Equal) scores[i] = 0.75f;
        valid[i] = (i % 11 == 4) ? 0.0f : 1.0f;
    }
    // a pool with no valid token
    if (num_pools > 3)
        for (int i = cu[3]; i < cu[4]; ++i) valid[i] = 0.0f;
    const u64 seed = 0x5eed;
    const int nslots = num_pools * ntails;
    std::vector<u32> hist(nslots * 256, 0u), state(nslots * 4, 0u), flags(2, 0u);
    std::vector<float> out0(n, NAN), out1(n, NAN);
    float* o1 = ntails > 1 ? out1.data() : nullptr;  // as the host passes it for one tail
    // the keys version's buffers, poisoned (pass 0 must write every word it later reads)
    std::vector<u32> keys_buf(n, 0xDEADBEEFu), bits((n + 31) / 32, 0xA5A5A5A5u);
    const float* sc = random ? nullptr : scores.data();
    const unsigned tiles = (unsigned)((n + kTile - 1) / kTile);
    for (int pass = 0; pass < 8 && !hv.wide; ++pass) {
        launch(tiles, [&] {
            if (hv.fn)
                hv.fn(hist.data(), state.data(), flags.data(), sc, valid.data(), cu.data(), num_pools, n, seed, ntails,
                      pass);
            else
                select_hist_keys(hist.data(), state.data(), flags.data(), sc, valid.data(), cu.data(), num_pools, n,
                                 seed, ntails, pass, keys_buf.data(), bits.data());
        });
        launch((unsigned)std::min(nslots, 65535), [&] {
            select_scan(hist.data(), state.data(), flags.data(), nslots, pass, frac, slack);
        });
    }
    bool ticket_ok = true;
    if (hv.wide) {
        ticket_ok = run_wide(sc, valid, cu, n, seed, ntails, frac, slack, hv.wide == 1, hv.wide == 1, out0, out1, &flags[1]);
    } else if (hv.lean_mask) {
        launch(tiles, [&] {
            select_mask_lean(out0.data(), o1, state.data(), sc, valid.data(), cu.data(), num_pools, n, seed,
                             ntails);
        });
    } else {
        launch(3, [&] {
            if (hv.fn)
                select_mask(out0.data(), o1, state.data(), sc, valid.data(), cu.data(), num_pools, n, seed,
                            ntails);
            else
                select_mask_keys(out0.data(), o1, state.data(), cu.data(), num_pools, n, ntails,
                                 keys_buf.data(), bits.data());
        });
    }

    // reference: per pool, the k smallest valid (key, index) — key complemented for the top tail
    long long wrong = 0;
    for (int q = 0; q < num_pools; ++q) {
        std::vector<long long> ids;
        for (long long i = cu[q]; i < cu[q + 1]; ++i)
            if (valid[i] != 0.0f) ids.push_back(i);
        const double x = frac * (double)ids.size() * slack;
        const size_t k = std::min((size_t)std::ceil(x), ids.size());
        for (int t = 0; t < ntails; ++t) {
            auto key = [&](long long i) {
                const u32 e = random ? host_hash(seed, i) : host_float_key(scores[i]);
                return t ? ~e : e;
            };
            std::vector<long long> order = ids;
            std::sort(order.begin(), order.end(), [&](long long a, long long b) {
                return key(a) != key(b) ? key(a) < key(b) : a < b;
            });
            std::vector<float> want(cu[q + 1] - cu[q], 0.0f);
            for (size_t j = 0; j < k; ++j) want[order[j] - cu[q]] = 1.0f;
            const std::vector<float>& got = t ? out1 : out0;
            for (long long i = cu[q]; i < cu[q + 1]; ++i) wrong += got[i] != want[i - cu[q]];
        }
    }
    const bool ok = wrong == 0 && flags[1] == 0u && ticket_ok;
    std::printf("%-40s %-4s %lld wrong mask entries (%d pools, %lld tokens)\n", name, ok ? "ok" : "FAIL", wrong,
                num_pools, n);
    return ok;
}

using ScatterFn = void (*)(u32*, int*, const u32*, const int*, const u32*, const u32*, long long, long long, int);

static bool sort_case(const char* name, long long n, std::mt19937_64& rng, ScatterFn scatter) {
    std::uniform_int_distribution<int> small(-50, 50);
    std::vector<float> x(n);
    for (long long i = 0; i < n; ++i) {
        const int r = small(rng);
        x[i] = r == 50 ? NAN : r == -50 ? -0.0f : r == 49 ? -INFINITY : (float)r * 0.25f;
    }
    const long long tiles = (n + kTile - 1) / kTile;
    std::vector<u32> ka(n), kb(n), counts(256 * tiles), totals(256);
    std::vector<int> ia(n), ib(n);
    std::vector<float> out(n, 1234.5f);
    launch(4, [&] { radix_sort_init_f32(ka.data(), ia.data(), x.data(), n); });
    for (int pass = 0; pass < 4; ++pass) {
        const int shift = 8 * pass;
        u32 *kin = pass % 2 ? kb.data() : ka.data(), *kout = pass % 2 ? ka.data() : kb.data();
        int *iin = pass % 2 ? ib.data() : ia.data(), *iout = pass % 2 ? ia.data() : ib.data();
        launch((unsigned)tiles, [&] { radix_sort_hist(counts.data(), kin, n, tiles, shift); });
        launch(256, [&] { radix_sort_scan(counts.data(), totals.data(), tiles); });
        launch((unsigned)tiles,
               [&] { scatter(kout, iout, kin, iin, counts.data(), totals.data(), n, tiles, shift); });
    }
    launch(4, [&] { radix_sort_gather_f32(out.data(), x.data(), ia.data(), n); });
    std::vector<int> want(n);
    for (long long i = 0; i < n; ++i) want[i] = (int)i;
    std::stable_sort(want.begin(), want.end(), [&](int a, int b) { return host_float_key(x[a]) < host_float_key(x[b]); });
    long long wrong = 0;
    for (long long j = 0; j < n; ++j) {
        u32 a, b;
        std::memcpy(&a, &out[j], 4);
        std::memcpy(&b, &x[want[j]], 4);
        wrong += ia[j] != want[j] || a != b;
    }
    const bool ok = wrong == 0;
    std::printf("%-40s %-4s %lld misplaced of %lld\n", name, ok ? "ok" : "FAIL", wrong, n);
    return ok;
}

int main() {
    std::mt19937_64 rng(20261130);
    bool ok = true;
    for (const HistVersion& hv : kHistVersions) {
        std::printf("select_hist_%s:\n", hv.name);
        ok &= select_case("tails, 1 pool over 3 tiles", {9001}, false, rng, hv);
        ok &= select_case("tails, 9 pools incl. empty / 1 / invalid", {0, 1, 15, 40, 3000, 2, 0, 5100, 77}, false, rng,
                          hv);
        ok &= select_case("random, 6 pools", {4200, 13, 1, 60, 900, 333}, true, rng, hv);
        ok &= select_case("random, 1 tail, 5 pools", {3000, 0, 9000, 17, 5000}, true, rng, hv, Scores::Mixed, 1);
        if (!hv.wide) continue;
        // tiles of 16384 inside one pool (full float4 batches and a ragged last tile), and mixed tiles
        ok &= select_case("tails, 1 pool over 3 wide tiles", {40000}, false, rng, hv);
        ok &= select_case("distinct scores, 1 pool (no tie)", {37000}, false, rng, hv, Scores::Distinct);
        ok &= select_case("equal scores, 1 pool over 2 wide tiles", {20000}, false, rng, hv, Scores::Equal);
        // pools of 1-3 tokens at offsets 1, 2, 3 mod 4, and pools whose 1-3 peeled tokens are followed by
        // one whole batch that ends exactly at the pool's end (starts 1, 4102, 8203)
        ok &= select_case("peel: short and batch-exact pools",
                          {1, 3 + 4096, 2, 2 + 4096, 3, 1 + 4096, 1, 2, 3}, false, rng, hv, Scores::Distinct);
        ok &= select_case("tails, long and short pools", {100, 33000, 5, 7, 20000, 1}, false, rng, hv);
        ok &= select_case("bottom tail only, 2 long pools", {16384, 20001}, false, rng, hv, Scores::Mixed, 1);
        // pools drawn at random around the tile and batch sizes (16384, 4096), 1 or 2 tails
        for (int c = 0; c < 6; ++c) {
            std::vector<int> lens(1 + rng() % 6);
            for (int& l : lens) {
                const int edges[] = {0, 1, 4095, 4096, 4097, 16383, 16384, 16385};
                l = rng() % 2 ? edges[rng() % 8] : (int)(rng() % 30000);
            }
            char label[64];
            std::snprintf(label, sizeof label, "random pools #%d (%zu pools)", c, lens.size());
            ok &= select_case(label, lens, c % 3 == 2, rng, hv, c % 2 == 1 ? Scores::Distinct : Scores::Mixed, 1 + c % 2);
        }
    }
    for (auto [label, scatter] : {std::pair<const char*, ScatterFn>{"radix_sort_scatter", radix_sort_scatter},
                                  {"radix_sort_scatter_local", radix_sort_scatter_local}}) {
        std::printf("%s:\n", label);
        ok &= sort_case("radix sort 9000 (NaN, -0, -inf, ties)", 9000, rng, scatter);
        ok &= sort_case("radix sort 255", 255, rng, scatter);
        ok &= sort_case("radix sort 12288 (3 full tiles)", 12288, rng, scatter);
    }
    return ok ? 0 : 1;
}
