// Executes dapo_rows_{f32,bf16} (cuda/policy_loss.cu, compiled unchanged against the emu/ shims) on the CPU and
// compares every output with an f64 evaluation of the same formulas (the kernel header's): log-prob,
// predictive entropy, the DAPO clip-higher + dual-clip token loss with its weight and normaliser, the clip
// flags, the logit gradient and the per-row gradient-signal magnitude (the logit-gradient row's L2 norm
// before the c_t factor, checked against c_t times the norm of the dZ row the same call wrote), over rows with A = 0, A < 0 far beyond clip_ratio_c, ratios beyond the ±20
// log-ratio clamp (also with the dual clip off, where the clamp alone zeroes the gradient), zero weights and
// masks, temperature ≠ 1, and an out-of-range target (error flag, zeroed row). One line per case; exit 1 on failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "policy_loss.cu"
#include "harness.h"

#include <algorithm>
#include <cstdio>
#include <random>

struct Row {
    float adv, old_logp, mask, weight;
    int target;  // -1: out of range
};

template <typename OUT>
static bool run_case(const char* name, int vocab, float temperature, float clip_c, bool with_gnorm,
                     void (*kern)(const float*, OUT*, float*, float*, float*, float*, float*, const int*, const float*,
                                  const float*, const float*, const float*, const float*, int, int, float, float,
                                  float, float, int, int, int*),
                     std::mt19937_64& rng) {
    const float eps_low = 0.2f, eps_high = 0.28f, zn = 7.5f;
    const std::vector<Row> spec = {
        {1.0f, -7.0f, 1, 1, 3},        {-1.0f, -7.0f, 1, 1, 5},   {0.0f, -7.0f, 1, 1, 9},
        {-2.0f, -40.0f, 1, 0.5f, 11},  {2.0f, 30.0f, 1, 1, 0},    {-1.5f, 5.0f, 1, 1, vocab - 1},
        {0.7f, -6.9f, 0, 1, 17},       {1.0f, -7.0f, 1, 0, 2},    {1.0f, -7.0f, 1, 1, -1},
        {-0.3f, -6.5f, 1, 2.0f, 100},
    };
    const int rows = (int)spec.size();
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<float> logits((size_t)rows * vocab);
    for (auto& x : logits) x = normal(rng);
    std::vector<int> targets(rows);
    std::vector<float> old(rows), adv(rows), mask(rows), w(rows);
    for (int r = 0; r < rows; ++r) {
        targets[r] = spec[r].target < 0 ? vocab + 3 : spec[r].target;
        old[r] = spec[r].old_logp;
        adv[r] = spec[r].adv;
        mask[r] = spec[r].mask;
        w[r] = spec[r].weight;
    }
    std::vector<OUT> dz((size_t)rows * vocab, from_f32<OUT>(NAN));
    std::vector<float> loss(rows, NAN), logp(rows, NAN), ent(rows, NAN), gnorm(rows, NAN), flags(4 * rows, NAN);
    int err = 0;
    run_grid(3, 256, [&] {  // fewer blocks than rows: the row loop strides
        kern(logits.data(), dz.data(), loss.data(), logp.data(), ent.data(), with_gnorm ? gnorm.data() : nullptr, flags.data(), targets.data(), old.data(),
             adv.data(), mask.data(), w.data(), &zn, rows, vocab, temperature, eps_low, eps_high, clip_c, 1, 1, &err);
    });

    double worst = 0;
    auto cmp = [&](double got, double want, double scale) {
        worst = std::max(worst, std::isnan(got) ? INFINITY : std::abs(got - want) / (scale + std::abs(want)));
    };
    for (int r = 0; r < rows; ++r) {
        const double inv_t = 1.0 / temperature;
        std::vector<double> s(vocab);
        for (int j = 0; j < vocab; ++j) s[j] = (double)logits[(size_t)r * vocab + j] * inv_t;
        const double m = *std::max_element(s.begin(), s.end());
        double l = 0, t = 0;
        for (double x : s) {
            l += std::exp(x - m);
            t += std::exp(x - m) * (x - m);
        }
        const double lse = m + std::log(l);
        cmp(ent[r], std::log(l) - t / l, 1.0);
        cmp(flags[4 * r + 3], 1.0, 1.0);
        const int y = targets[r];
        double g = 0, c = 0;
        if (y >= vocab) {
            cmp(loss[r], 0.0, 1.0);
            cmp(logp[r], 0.0, 1.0);
            if (with_gnorm) cmp(gnorm[r], 0.0, 1.0);
        } else {
            const double lp = s[y] - lse, a = adv[r], raw = lp - old[r];
            const double delta = std::min(std::max(raw, -20.0), 20.0), ratio = std::exp(delta);
            const double l1 = -a * ratio, l2 = -a * std::min(std::max(ratio, 1.0 - eps_low), 1.0 + eps_high);
            const bool clipped = l2 > l1;
            double lo = std::max(l1, l2), dlogp = clipped ? 0.0 : -a * ratio;
            bool lower = false;
            if (a < 0 && -a * clip_c < lo) {
                lo = -a * clip_c;
                dlogp = 0;
                lower = true;
            }
            if (raw != delta) dlogp = 0;
            c = mask[r] * w[r] / zn;
            cmp(loss[r], c * lo, 1.0);
            cmp(logp[r], lp, 1.0);
            cmp(flags[4 * r], clipped, 1.0);
            cmp(flags[4 * r + 1], lower, 1.0);
            cmp(flags[4 * r + 2], -delta, 1.0);
            g = c * dlogp;
            // ‖∂ℓ/∂logits‖ from the probabilities directly (without gnorm: nothing written there)
            if (with_gnorm) {
                double sq = 0;
                for (int j = 0; j < vocab; ++j) {
                    const double d = (j == y ? 1.0 : 0.0) - std::exp(s[j] - lse);
                    sq += d * d;
                }
                const double want = std::abs(dlogp) * std::sqrt(sq) * inv_t;
                cmp(gnorm[r], want, std::abs(dlogp) * inv_t + 1e-6);
                // the same magnitude from the dZ row the kernel wrote (c_t times it)
                if (c > 0) {
                    double dn = 0;
                    for (int j = 0; j < vocab; ++j) {
                        const double d = to_f32(dz[(size_t)r * vocab + j]);
                        dn += d * d;
                    }
                    cmp(c * gnorm[r], std::sqrt(dn), c * std::abs(dlogp) * inv_t + 1e-6);
                }
            } else if (!std::isnan(gnorm[r])) {
                worst = INFINITY;
            }
        }
        const double gscale = std::abs(g) + 1e-3;  // dZ errors relative to the row's gradient size
        for (int j = 0; j < vocab; ++j) {
            const double p = g == 0 ? 0.0 : std::exp(s[j] - lse);
            cmp(to_f32(dz[(size_t)r * vocab + j]), g * ((j == y ? 1.0 : 0.0) - p) * inv_t, gscale);
        }
    }
    const double tol = sizeof(OUT) == 2 ? 1e-2 : 1e-4;
    const bool ok = worst < tol && err == 1;
    std::printf("%-34s %-4s worst err %.1e (tol %.0e), error flag %d\n", name, ok ? "ok" : "FAIL", worst, tol, err);
    return ok;
}

int main() {
    std::mt19937_64 rng(20261131);
    bool ok = true;
    ok &= run_case<float>("f32 dZ, vocab 1001, T=1", 1001, 1.0f, 10.0f, true, dapo_rows_f32, rng);
    ok &= run_case<__nv_bfloat16>("bf16 dZ, vocab 4099, T=0.7", 4099, 0.7f, 10.0f, true, dapo_rows_bf16, rng);
    // no dual clip: a negative advantage far past the ±20 log-ratio clamp reaches the unclipped branch
    ok &= run_case<float>("f32 dZ, clip_ratio_c 1e30", 1001, 1.0f, 1e30f, true, dapo_rows_f32, rng);
    // the gradient-signal magnitude is optional: a null pointer leaves its buffer untouched
    ok &= run_case<float>("f32 dZ, no gnorm output", 1001, 1.0f, 10.0f, false, dapo_rows_f32, rng);
    return ok ? 0 : 1;
}
