// emu/select_ref.h: what the radix-select harnesses share (emu/select_check.cpp for the shipped kernels,
// dev/select_versions_check.cpp for the dev versions): a select problem (pools, scores with ties, ±0, ±inf,
// validity), the host keys, the reference masks (per pool and tail the k smallest (key, index) pairs by a host
// sort), the 8-bit select's host protocol as engine/src/cuda/select.rs runs it, and one report line per case.
// Included after select.cu (it launches select_scan).
#pragma once

#include "harness.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

inline u32 host_float_key(float x) {
    u32 b;
    std::memcpy(&b, &x, 4);
    if ((b & 0x7FFFFFFFu) == 0u) b = 0u;
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) b = 0x7FC00000u;
    return b ^ ((b & 0x80000000u) ? 0xFFFFFFFFu : 0x80000000u);
}

inline u32 host_hash(u64 seed, long long i) {
    auto mix = [](u64 z) {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    };
    return (u32)(mix(mix(seed) + ((u64)i + 1ull) * 0x9E3779B97F4A7C15ull) >> 32);
}

// Scores of a select case: small values with many ties, ±0 and ±inf (Mixed), uniform in [0, 1) (Distinct), or
// all equal (Equal: every valid token is a candidate and the index passes decide).
enum class Scores { Mixed, Distinct, Equal };

struct SelectProblem {
    std::vector<int> cu;
    std::vector<float> scores, valid;
    long long n;
    int num_pools, ntails;
    bool random;  // seeded hash keys instead of the scores
    double frac, slack = 1.0 - 1e-12;
    u64 seed = 0x5eed;
    // What the host passes as scores: null for random selection.
    const float* sc() const { return random ? nullptr : scores.data(); }
};

// Pools of `lens` tokens; every 11th token invalid (and every token of pool 3, when there is one) unless
// `valid_p` < 1 draws validity at random instead (0: no valid token at all).
inline SelectProblem make_select_problem(const std::vector<int>& lens, bool random, std::mt19937_64& rng,
                                         Scores kind = Scores::Mixed, int ntails = 2, double frac = 0.2,
                                         double valid_p = 1.0) {
    SelectProblem p;
    p.cu = {0};
    for (int l : lens) p.cu.push_back(p.cu.back() + l);
    p.n = p.cu.back();
    p.num_pools = (int)lens.size();
    p.ntails = ntails;
    p.random = random;
    p.frac = frac;
    std::uniform_int_distribution<int> small(-4, 3);
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    p.scores.resize(p.n);
    p.valid.resize(p.n);
    for (long long i = 0; i < p.n; ++i) {
        const int r = small(rng);
        float x = r == 3    ? INFINITY
                  : r == -4 ? -INFINITY
                  : r == -3 ? -0.0f
                  : r == 2  ? 0.0f
                            : (float)r * 0.5f + (float)(i % 5) * 1e-3f;
        if (kind == Scores::Distinct) x = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
        if (kind == Scores::Equal) x = 0.75f;
        p.scores[i] = x;
        p.valid[i] = valid_p < 1.0 ? (u01(rng) < valid_p ? 1.0f : 0.0f) : (i % 11 == 4) ? 0.0f : 1.0f;
    }
    if (valid_p >= 1.0 && p.num_pools > 3)  // a pool with no valid token
        for (int i = p.cu[3]; i < p.cu[4]; ++i) p.valid[i] = 0.0f;
    return p;
}

// Mask entries (both tails) that differ from the reference: per pool, the k = ceil(frac·n_valid·slack) smallest
// valid (key, index) pairs, the key complemented for the top tail (out1).
inline long long wrong_mask_entries(const SelectProblem& p, const std::vector<float>& out0,
                                    const std::vector<float>& out1) {
    long long wrong = 0;
    for (int q = 0; q < p.num_pools; ++q) {
        std::vector<long long> ids;
        for (long long i = p.cu[q]; i < p.cu[q + 1]; ++i)
            if (p.valid[i] != 0.0f) ids.push_back(i);
        const size_t k = std::min((size_t)std::ceil(p.frac * (double)ids.size() * p.slack), ids.size());
        for (int t = 0; t < p.ntails; ++t) {
            auto key = [&](long long i) {
                const u32 e = p.random ? host_hash(p.seed, i) : host_float_key(p.scores[i]);
                return t ? ~e : e;
            };
            std::vector<long long> order = ids;
            std::sort(order.begin(), order.end(),
                      [&](long long a, long long b) { return key(a) != key(b) ? key(a) < key(b) : a < b; });
            std::vector<float> want(p.cu[q + 1] - p.cu[q], 0.0f);
            for (size_t j = 0; j < k; ++j) want[order[j] - p.cu[q]] = 1.0f;
            const std::vector<float>& got = t ? out1 : out0;
            for (long long i = p.cu[q]; i < p.cu[q + 1]; ++i) wrong += got[i] != want[i - p.cu[q]];
        }
    }
    return wrong;
}

// The 8-bit select's buffers as engine/src/cuda/select.rs allocates them: per slot a zeroed 256-bin histogram
// and state [kk, key, idx, mode], the flags [need index passes, NaN score], and the masks (poisoned).
struct Radix8 {
    std::vector<u32> hist, state, flags;
    std::vector<float> out0, out1;
    bool index_passes = false;  // some slot had a partial tie at its threshold key
    explicit Radix8(const SelectProblem& p)
        : hist((size_t)p.num_pools * p.ntails * 256, 0u), state((size_t)p.num_pools * p.ntails * 4, 0u),
          flags(2, 0u), out0(p.n, NAN), out1(p.n, NAN) {}
    // The kernels' parameters for problem p on these buffers, as the host fills them (out1 null with one tail).
    SelectParams params(const SelectProblem& p) {
        SelectParams s{};
        s.hist = hist.data();
        s.state = state.data();
        s.flags = flags.data();
        s.out0 = out0.data();
        s.out1 = p.ntails > 1 ? out1.data() : nullptr;
        s.scores = p.sc();
        s.valid = p.valid.data();
        s.cu = p.cu.data();
        s.n = p.n;
        s.seed = p.seed;
        s.frac = p.frac;
        s.slack = p.slack;
        s.num_pools = p.num_pools;
        s.ntails = p.ntails;
        return s;
    }
};

// engine/src/cuda/select.rs's protocol: 4 key passes of hist(params, pass) over ceil(n / kTile) blocks +
// select_scan, the 4 index passes only when flags[0] is set after them, then mask(params).
template <class Hist, class Mask> void run_radix8(const SelectProblem& p, Radix8& w, Hist hist, Mask mask) {
    const unsigned tiles = (unsigned)((p.n + kTile - 1) / kTile);
    const long long nslots = (long long)p.num_pools * p.ntails;
    const SelectParams params = w.params(p);
    for (int pass = 0; pass < 8; ++pass) {
        if (pass == 4 && w.flags[0] == 0u) break;
        run_grid(tiles, kThreads, [&] { hist(params, pass); });
        run_grid((unsigned)std::min<long long>(nslots, 65535), kThreads, [&] { select_scan(params, pass); });
    }
    w.index_passes = w.flags[0] != 0u;
    mask(params);
}

// One result line: ok when no mask entry is wrong, no NaN was flagged (the problems have none) and `extra_ok`.
inline bool report_select(const char* name, const SelectProblem& p, long long wrong, u32 nan_flag, bool extra_ok,
                          bool index_passes) {
    const bool ok = wrong == 0 && nan_flag == 0u && extra_ok;
    std::printf("%-44s %-4s %lld wrong mask entries (%d pools, %lld tokens%s)\n", name, ok ? "ok" : "FAIL", wrong,
                p.num_pools, p.n, index_passes ? ", index passes" : "");
    return ok;
}
