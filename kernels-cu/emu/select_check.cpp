// Executes, compiled unchanged against the emu/ shims, the shipped select kernels and compares with a sort on the
// host (the dev versions of the histogram pass have their own harness, dev/select_versions_check.cpp):
//   * the 8-bit radix select of select.cu (select_hist_plain / select_scan / select_mask, as
//     engine/src/cuda/select.rs launches them: the index passes only after a partial tie);
//   * the wide radix select of select_wide.cu (as engine/src/cuda/select_wide.rs launches it), with fused and
//     with separate scans (the fused runs launch blocks in reverse, so a block with candidates runs the
//     scans), vector and scalar loads, and a check of its candidates after pass 1;
//   * the LSD radix sort of select.cu (init / 4 × hist, scan, scatter / gather), both scatter kernels.
// Select cases (emu/select_ref.h): top and bottom tails of every pool (empty, one-token, invalid-only and
// multi-tile pools, more pools per tile than the shared histograms hold, thousands of one-token pools, no
// valid token at all, frac 0 and 1, ties, ±0, ±inf, partial ties that need the index passes) and seeded random
// selection; sort cases: NaNs of both signs, ±0, ±inf, ties, 1 key, partial and full tiles. One line per case;
// exit 1 on failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "select.cu"
#include "select_wide.cu"

#include "select_ref.h"

// The versions run: the shipped 8-bit select, and the wide one two ways (1: scans fused, float4 loads, pass-0
// copies; 2: the scan kernel, scalar loads, one pass-0 histogram).
struct Version {
    const char* name;
    int wide;
};
static const Version kVersions[] = {{"plain", 0}, {"wide (fused scans, float4)", 1}, {"wide (scan kernel, scalar)", 2}};

// The wide version as engine/src/cuda/select_wide.rs runs it: one zeroed workspace, passes 0-5 (3-5 exit at
// once unless some slot has a partial tie; pass 1 writes the non-candidates' masks), then the candidates'. False if the fused scans' ticket was left set or
// the candidates after pass 1 were wrong. float4 access only where every buffer is 16-byte aligned, as the
// host checks.
static bool run_wide(const SelectProblem& p, bool fuse, bool vec, std::vector<float>& out0, std::vector<float>& out1,
                     u32* nan_flag, bool* index_passes) {
    const float* sc = p.sc();
    const std::vector<float>& valid = p.valid;
    const std::vector<int>& cu = p.cu;
    const long long n = p.n;
    const u64 seed = p.seed;
    const int ntails = p.ntails;
    const double frac = p.frac, slack = p.slack;
    const int num_pools = p.num_pools, nslots = num_pools * ntails;
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
    auto grid = [&](unsigned blocks, auto body) { run_grid(blocks, kThreads, body, fuse); };
    auto aligned = [](const void* p) { return p == nullptr || (uintptr_t)p % 16 == 0; };
    float* o1 = ntails > 1 ? out1.data() : nullptr;
    vec = vec && aligned(sc) && aligned(valid.data()) && aligned(out0.data()) && aligned(o1);
    SelectWideParams wp{};
    wp.ws = ws.data();
    wp.tiles = tile_tab.data();
    wp.out0 = out0.data();
    wp.out1 = o1;
    wp.scores = sc;
    wp.valid = valid.data();
    wp.cu = cu.data();
    wp.cand = cand.data();
    wp.n = n;
    wp.seed = seed;
    wp.frac = frac;
    wp.slack = slack;
    wp.num_pools = num_pools;
    wp.ntails = ntails;
    wp.split = split;
    wp.vec = vec;
    wp.fuse = fuse;
    wp.copies = copies;
    auto scan = [&](int pass) {
        if (!fuse) run_grid((unsigned)std::min(num_pools, 65535), kThreads, [&] {
            select_wide_scan(wp, pass);
        });
    };
    for (int pass = 0; pass < 2; ++pass) {
        grid(tiles, [&] { select_wide_data(wp, pass); });
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
        grid(tiles * split, [&] { select_wide_cand(wp, pass); });
        scan(pass);
    }
    grid(tiles * split, [&] { select_wide_cand_mask(wp); });
    *nan_flag = w.flags[1];
    *index_passes = w.flags[0] != 0u;
    return w.flags[2] == 0u && compact_ok;
}

static bool select_case(const char* name, const Version& v, const SelectProblem& p, bool* index_passes) {
    Radix8 w(p);
    bool extra_ok = true, idx = false;
    if (v.wide) {
        extra_ok = run_wide(p, v.wide == 1, v.wide == 1, w.out0, w.out1, &w.flags[1], &idx);
    } else {
        run_radix8(
            p, w, [](const SelectParams& s, int pass) { select_hist_plain(s, pass); },
            [](const SelectParams& s) { run_grid(3, kThreads, [&] { select_mask(s); }); });
        idx = w.index_passes;
    }
    *index_passes |= idx;
    return report_select(name, p, wrong_mask_entries(p, w.out0, w.out1), w.flags[1], extra_ok, idx);
}

using ScatterFn = void (*)(const SortScatterParams);

static bool sort_case(const char* name, long long n, std::mt19937_64& rng, ScatterFn scatter) {
    std::uniform_int_distribution<int> small(-50, 50);
    std::vector<float> x(n);
    for (long long i = 0; i < n; ++i) {
        const int r = small(rng);
        x[i] = r == 50    ? NAN
               : r == 48  ? -NAN
               : r == -50 ? -0.0f
               : r == 49  ? -INFINITY
               : r == -49 ? INFINITY
                          : (float)r * 0.25f;
    }
    const long long tiles = (n + kTile - 1) / kTile;
    std::vector<u32> ka(n), kb(n), counts(256 * tiles), totals(256);
    std::vector<int> ia(n), ib(n);
    std::vector<float> out(n, 1234.5f);
    run_grid(4, kThreads, [&] { radix_sort_init_f32(ka.data(), ia.data(), x.data(), n); });
    for (int pass = 0; pass < 4; ++pass) {
        const int shift = 8 * pass;
        u32 *kin = pass % 2 ? kb.data() : ka.data(), *kout = pass % 2 ? ka.data() : kb.data();
        int *iin = pass % 2 ? ib.data() : ia.data(), *iout = pass % 2 ? ia.data() : ib.data();
        run_grid((unsigned)tiles, kThreads, [&] { radix_sort_hist(counts.data(), kin, n, tiles, shift); });
        run_grid(256, kThreads, [&] { radix_sort_scan(counts.data(), totals.data(), tiles); });
        run_grid((unsigned)tiles, kThreads,
                 [&] { scatter({kout, iout, kin, iin, counts.data(), totals.data(), n, tiles, shift, 0}); });
    }
    run_grid(4, kThreads, [&] { radix_sort_gather_f32(out.data(), x.data(), ia.data(), n); });
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
    for (const Version& v : kVersions) {
        std::printf("select %s:\n", v.name);
        bool idx = false;  // some case of this version needed the index passes
        auto run = [&](const char* name, const std::vector<int>& lens, bool random, Scores kind = Scores::Mixed,
                       int ntails = 2, double frac = 0.2, double valid_p = 1.0) {
            ok &= select_case(name, v, make_select_problem(lens, random, rng, kind, ntails, frac, valid_p), &idx);
        };
        run("tails, 1 pool over 3 tiles", {9001}, false);
        run("tails, 9 pools incl. empty / 1 / invalid", {0, 1, 15, 40, 3000, 2, 0, 5100, 77}, false);
        run("random, 6 pools", {4200, 13, 1, 60, 900, 333}, true);
        run("random, 1 tail, 5 pools", {3000, 0, 9000, 17, 5000}, true, Scores::Mixed, 1);
        // pools of 0-40 tokens: dozens per 4096-token tile, most past the shared histograms (global atomics)
        std::vector<int> small(300);
        for (int& l : small) l = (int)(rng() % 41);
        run("tails, 300 pools of 0-40, 60% valid", small, false, Scores::Mixed, 2, 0.37, 0.6);
        std::vector<int> mid(300);
        for (int& l : mid) l = (int)(rng() % 91);
        run("tails, frac 0, 300 pools", mid, false, Scores::Mixed, 2, 0.0);
        run("tails, frac 1, 300 pools", mid, false, Scores::Mixed, 2, 1.0);
        run("tails, no valid token, 5 pools", {0, 4096, 0, 4096, 1}, false, Scores::Mixed, 2, 0.2, 0.0);
        run("tails, 500 one-token pools", std::vector<int>(500, 1), false);
        if (v.wide) {
            // tiles of 16384 inside one pool (full float4 batches and a ragged last tile), and mixed tiles
            run("tails, 1 pool over 3 wide tiles", {40000}, false);
            run("distinct scores, 1 pool (no tie)", {37000}, false, Scores::Distinct);
            run("equal scores, 1 pool over 2 wide tiles", {20000}, false, Scores::Equal);
            // pools of 1-3 tokens at offsets 1, 2, 3 mod 4, and pools whose 1-3 peeled tokens are followed by
            // one whole batch that ends exactly at the pool's end (starts 1, 4102, 8203)
            run("peel: short and batch-exact pools", {1, 3 + 4096, 2, 2 + 4096, 3, 1 + 4096, 1, 2, 3}, false,
                Scores::Distinct);
            run("tails, long and short pools", {100, 33000, 5, 7, 20000, 1}, false);
            run("bottom tail only, 2 long pools", {16384, 20001}, false, Scores::Mixed, 1);
            // pools drawn at random around the tile and batch sizes (16384, 4096), 1 or 2 tails
            for (int c = 0; c < 6; ++c) {
                std::vector<int> lens(1 + rng() % 6);
                for (int& l : lens) {
                    const int edges[] = {0, 1, 4095, 4096, 4097, 16383, 16384, 16385};
                    l = rng() % 2 ? edges[rng() % 8] : (int)(rng() % 30000);
                }
                char label[64];
                std::snprintf(label, sizeof label, "random pools #%d (%zu pools)", c, lens.size());
                run(label, lens, c % 3 == 2, c % 2 == 1 ? Scores::Distinct : Scores::Mixed, 1 + c % 2);
            }
        }
        if (!idx) {
            std::printf("select %s: no case needed the index passes\n", v.name);
            ok = false;
        }
    }
    for (auto [label, scatter] : {std::pair<const char*, ScatterFn>{"radix_sort_scatter", radix_sort_scatter},
                                  {"radix_sort_scatter_local", radix_sort_scatter_local}}) {
        std::printf("%s:\n", label);
        ok &= sort_case("radix sort 9000 (±NaN, ±0, ±inf, ties)", 9000, rng, scatter);
        ok &= sort_case("radix sort 1", 1, rng, scatter);
        ok &= sort_case("radix sort 255", 255, rng, scatter);
        ok &= sort_case("radix sort 4097 (a tile and one key)", 4097, rng, scatter);
        ok &= sort_case("radix sort 12288 (3 full tiles)", 12288, rng, scatter);
    }
    return ok ? 0 : 1;
}
