// Executes sample_rows_{f32,bf16} (cuda/sample.cu, compiled unchanged against the emu/ shims) on the CPU and
// checks every pick against an f64 inverse CDF of the same row: the token's CDF interval must hold u·total
// (to 1e-5), it must have nonzero probability (unless u = 0 picks index 0), greedy picks must be the first
// maximum exactly, and log-probs must match to 1e-5. Rows include a Qwen3-size vocabulary, odd sizes,
// masked (−inf) stretches, u = 0 and u → 1. One line per case; exit 1 on failure.
// Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "sample.cu"
#include "harness.h"

#include <algorithm>
#include <cstdio>
#include <random>

alignas(128) unsigned char smem[(kSampleThreads + 1) * 4];

struct Case {
    const char* name;
    int rows, vocab;
    bool bf16_logits, greedy, masked, ties;  // ties: small integer logits (many equal maxima)
    float temperature;
};

template <typename T>
static bool run_case(const Case& cs, std::mt19937_64& rng,
                     void (*kern)(int*, float*, const T*, const int*, const float*, int, float, int)) {
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    const int n_logit_rows = cs.rows + 2;  // the kernel reads rows[] indirectly: skip two rows
    std::vector<T> logits((size_t)n_logit_rows * cs.vocab);
    for (int r = 0; r < n_logit_rows; ++r)
        for (int i = 0; i < cs.vocab; ++i) {
            const bool off = cs.masked && (i % 7 == 3 || i > cs.vocab - cs.vocab / 5);
            const float x = cs.ties ? std::round(normal(rng) / 3.0f) : normal(rng);
            logits[(size_t)r * cs.vocab + i] = from_f32<T>(off ? -INFINITY : x);
        }
    std::vector<int> rows(cs.rows);
    std::vector<float> u(cs.rows);
    for (int i = 0; i < cs.rows; ++i) {
        rows[i] = (i * 3 + 1) % n_logit_rows;
        u[i] = i == 0 ? 0.0f : i == 1 ? 0.99999994f : (float)uni(rng);
    }
    std::vector<int> tokens(cs.rows, -1);
    std::vector<float> logps(cs.rows, NAN);
    const float inv_t = cs.greedy ? 1.0f : 1.0f / cs.temperature;
    run_grid((unsigned)cs.rows, kSampleThreads, [&] {
        kern(tokens.data(), logps.data(), logits.data(), rows.data(), u.data(), cs.vocab, inv_t, cs.greedy);
    });
    bool ok = true;
    double worst_cdf = 0, worst_logp = 0;
    for (int i = 0; i < cs.rows; ++i) {
        const T* z = logits.data() + (size_t)rows[i] * cs.vocab;
        std::vector<double> x(cs.vocab);
        for (int j = 0; j < cs.vocab; ++j) x[j] = (double)to_f32(z[j]) * inv_t;
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
        if (cs.greedy) {
            const int first = (int)(std::find(x.begin(), x.end(), m) - x.begin());
            ok &= tok == first;
            continue;
        }
        double before = 0;
        for (int j = 0; j < tok; ++j) before += std::exp(x[j] - m);
        const double p = std::exp(x[tok] - m), target = u[i] * total;
        // distance of the target outside [before, before + p], relative to the row mass
        const double miss = std::max({0.0, before - target, target - (before + p)}) / total;
        worst_cdf = std::max(worst_cdf, miss);
        ok &= miss < 1e-5 && (p > 0 || (u[i] == 0.0f && tok == 0));
    }
    ok &= worst_logp < 1e-5;
    std::printf("%-34s %-4s worst CDF miss %.1e  logp err %.1e\n", cs.name, ok ? "ok" : "FAIL", worst_cdf, worst_logp);
    return ok;
}

int main() {
    std::mt19937_64 rng(20261128);
    bool ok = true;
    ok &= run_case<float>({"f32 vocab 151936 T=1", 6, 151936, false, false, false, false, 1.0f}, rng, sample_rows_f32);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 1001 T=0.7 masked", 9, 1001, true, false, true, false, 0.7f}, rng,
                                  sample_rows_bf16);
    ok &= run_case<float>({"f32 vocab 19 T=1.3 masked", 8, 19, false, false, true, false, 1.3f}, rng, sample_rows_f32);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 151936 greedy", 4, 151936, true, true, false, false, 0.0f}, rng,
                                  sample_rows_bf16);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 300 greedy masked", 5, 300, true, true, true, false, 0.0f}, rng,
                                  sample_rows_bf16);
    ok &= run_case<__nv_bfloat16>({"bf16 vocab 5003 greedy ties", 5, 5003, true, true, false, true, 0.0f}, rng,
                                  sample_rows_bf16);
    ok &= run_case<float>({"f32 vocab 777 T=1 ties", 7, 777, false, false, false, true, 1.0f}, rng, sample_rows_f32);
    return ok ? 0 : 1;
}
