// Executes sample_rows_{f32,bf16} (cuda/sample.cu, compiled unchanged against the emu/ shims) on the CPU and
// checks every pick against an independent f64 reference of the same row and key: the keyed uniform
// (splitmix64, bit-identical to engine/src/cpu/sampling.rs — checked against fixed values), the kept set by
// sorting (z descending, ties by id; the first top-k; the shortest prefix reaching mass top-p), and the
// inverse CDF over the kept weights in id order. A pick must equal the reference's or lie within 1e-5 of the
// kept mass of its CDF interval (rounding at a boundary), be kept, and have a positive weight; greedy picks
// must be the first maximum exactly; log-probs (full distribution) must match to 1e-5. Output buffers start
// poisoned, so an unwritten output fails. Cases: a Qwen3-size vocabulary, odd sizes, masked (−inf)
// stretches, ties, top-k only, top-p only, both, k = 1, k past the vocabulary, a tiny top-p, f32 and bf16.
// One line per case; exit 1 on failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "sample.cu"
#include "harness.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>

alignas(128) unsigned char smem[(2 * kSampleThreads + 2) * 4];

struct Case {
    const char* name;
    int rows, vocab;
    bool bf16_logits, masked, ties;  // ties: small integer logits (many equal values)
    float temperature;               // 0 = greedy
    int top_k;                       // 0 = off
    float top_p;                     // 1 = off
};

static double host_uniform(unsigned long long seed, unsigned long long pos) {
    return sample_uniform(seed, pos);  // the kernel file's function, compiled for the host
}

// The f64 reference: (token, kept weights) for row z (already temperature-scaled).
static int reference_pick(const std::vector<double>& z, double u, const Case& cs, std::vector<double>& kept) {
    const int n = (int)z.size();
    const double m = *std::max_element(z.begin(), z.end());
    std::vector<double> w(n);
    double total = 0;
    for (int j = 0; j < n; ++j) total += (w[j] = std::exp(z[j] - m));
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
    int keep = n;
    if (cs.top_k > 0) keep = std::min(keep, cs.top_k);
    if (cs.top_p < 1.0f) {
        double mass = 0;
        for (int i = 0; i < keep; ++i) {
            mass += w[order[i]];
            if (mass >= (double)cs.top_p * total) {
                keep = i + 1;
                break;
            }
        }
    }
    kept.assign(n, 0.0);
    for (int i = 0; i < keep; ++i) kept[order[i]] = w[order[i]];
    double kt = 0;
    for (double x : kept) kt += x;
    const double target = u * kt;
    double run = 0;
    int last = n - 1;
    for (int j = 0; j < n; ++j) {
        if (kept[j] <= 0) continue;
        last = j;
        run += kept[j];
        if (run >= target) return j;
    }
    return last;
}

template <typename T>
static bool run_case(const Case& cs, std::mt19937_64& rng,
                     void (*kern)(int*, float*, const T*, const int*, const unsigned*, int, float, int, int, float)) {
    std::normal_distribution<float> normal(0.0f, 3.0f);
    const int n_logit_rows = cs.rows + 2;  // the kernel reads rows[] indirectly: skip two rows
    std::vector<T> logits((size_t)n_logit_rows * cs.vocab);
    for (int r = 0; r < n_logit_rows; ++r)
        for (int i = 0; i < cs.vocab; ++i) {
            const bool off = cs.masked && (i % 7 == 3 || i > cs.vocab - cs.vocab / 5);
            const float x = cs.ties ? std::round(normal(rng) / 3.0f) : normal(rng);
            logits[(size_t)r * cs.vocab + i] = from_f32<T>(off ? -INFINITY : x);
        }
    std::vector<int> rows(cs.rows);
    std::vector<unsigned> keys(4 * cs.rows);
    std::vector<unsigned long long> seeds(cs.rows), positions(cs.rows);
    for (int i = 0; i < cs.rows; ++i) {
        rows[i] = (i * 3 + 1) % n_logit_rows;
        seeds[i] = rng();
        positions[i] = i == 0 ? 0 : i == 1 ? (1ull << 40) + 3 : rng() % 4096;
        keys[4 * i] = (unsigned)seeds[i];
        keys[4 * i + 1] = (unsigned)(seeds[i] >> 32);
        keys[4 * i + 2] = (unsigned)positions[i];
        keys[4 * i + 3] = (unsigned)(positions[i] >> 32);
    }
    std::vector<int> tokens(cs.rows, -7);          // poisoned
    std::vector<float> logps(cs.rows, 12345.0f);  // poisoned
    const bool greedy = cs.temperature == 0.0f;
    const float inv_t = greedy ? 1.0f : 1.0f / cs.temperature;
    run_grid((unsigned)cs.rows, kSampleThreads, [&] {
        kern(tokens.data(), logps.data(), logits.data(), rows.data(), keys.data(), cs.vocab, inv_t, greedy,
             cs.top_k, cs.top_p);
    });
    bool ok = true;
    double worst_cdf = 0, worst_logp = 0;
    int same = 0;
    for (int i = 0; i < cs.rows; ++i) {
        const T* zr = logits.data() + (size_t)rows[i] * cs.vocab;
        std::vector<double> x(cs.vocab);
        for (int j = 0; j < cs.vocab; ++j) x[j] = (double)(to_f32(zr[j]) * inv_t);  // the kernel's f32 z
        const double m = *std::max_element(x.begin(), x.end());
        double total = 0;
        for (double v : x) total += std::exp(v - m);
        const int tok = tokens[i];
        if (tok < 0 || tok >= cs.vocab) {
            ok = false;
            continue;
        }
        const double logp = x[tok] - m - std::log(total);
        worst_logp = std::max(worst_logp, std::abs(logp - logps[i]));
        if (greedy) {
            const int first = (int)(std::find(x.begin(), x.end(), m) - x.begin());
            ok &= tok == first;
            same += tok == first;
            continue;
        }
        const double u = host_uniform(seeds[i], positions[i]);
        std::vector<double> kept;
        const int ref = reference_pick(x, u, cs, kept);
        if (tok == ref) {
            ++same;
            continue;
        }
        double kt = 0, before = 0;
        for (double v : kept) kt += v;
        for (int j = 0; j < tok; ++j) before += kept[j];
        const double target = u * kt;
        const double miss = std::max({0.0, before - target, target - (before + kept[tok])}) / kt;
        worst_cdf = std::max(worst_cdf, miss);
        ok &= miss < 1e-5 && kept[tok] > 0;
    }
    ok &= worst_logp < 1e-5 && same >= cs.rows - 1;
    std::printf("%-44s %-4s same pick %d/%d  worst CDF miss %.1e  logp err %.1e\n", cs.name, ok ? "ok" : "FAIL",
                same, cs.rows, worst_cdf, worst_logp);
    return ok;
}

int main() {
    // the keyed uniform against values of engine/src/cpu/sampling.rs sample_uniform (its test pins the same three)
    bool ok = true;
    const double u0 = host_uniform(0, 0), u1 = host_uniform(7, 3), u2 = host_uniform(~0ull, ~0ull);
    const double two53 = 9007199254740992.0;
    ok &= u0 * two53 == 5876733520225071.0 && u1 * two53 == 5442463288602051.0 && u2 * two53 == 2403545779318817.0;
    std::printf("%-44s %-4s u(0,0)=%.17g u(7,3)=%.17g\n", "keyed uniform", ok ? "ok" : "FAIL", u0, u1);
    std::mt19937_64 rng(20261128);
    const float off = 1.0f;
    ok &= run_case<float>({"f32 vocab 151936 T=1", 6, 151936, false, false, false, 1.0f, 0, off}, rng,
                          sample_rows_f32);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 1001 T=0.7 masked", 9, 1001, true, true, false, 0.7f, 0, off}, rng,
                                  sample_rows_bf16);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 151936 greedy", 4, 151936, true, false, false, 0.0f, 0, off}, rng,
                                  sample_rows_bf16);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 5003 greedy ties", 5, 5003, true, false, true, 0.0f, 0, off}, rng,
                                  sample_rows_bf16);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 151936 top-k 50", 5, 151936, true, false, false, 1.0f, 50, off},
                                  rng, sample_rows_bf16);
    ok &= run_case<float>({"f32 vocab 151936 top-p 0.9 T=0.8", 5, 151936, false, false, false, 0.8f, 0, 0.9f}, rng,
                          sample_rows_f32);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 4099 top-k 20 top-p 0.95", 8, 4099, true, false, false, 1.0f, 20,
                                   0.95f},
                                  rng, sample_rows_bf16);
    ok &= run_case<float>({"f32 vocab 777 ties top-k 7 top-p 0.8", 9, 777, false, false, true, 1.0f, 7, 0.8f}, rng,
                          sample_rows_f32);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 1001 masked ties top-k 3", 8, 1001, true, true, true, 1.2f, 3, off},
                                  rng, sample_rows_bf16);
    ok &= run_case<float>({"f32 vocab 19 top-k 1000 (k > vocab)", 6, 19, false, false, false, 1.0f, 1000, off}, rng,
                          sample_rows_f32);
    ok &= run_case<float>({"f32 vocab 301 top-k 1", 6, 301, false, false, false, 0.9f, 1, off}, rng,
                          sample_rows_f32);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 4097 top-p 1e-6", 5, 4097, true, false, false, 1.0f, 0, 1e-6f}, rng,
                                  sample_rows_bf16);
    ok &= run_case<float>({"f32 vocab 257 masked top-p 0.5", 7, 257, false, true, false, 1.3f, 0, 0.5f}, rng,
                          sample_rows_f32);
    return ok ? 0 : 1;
}
