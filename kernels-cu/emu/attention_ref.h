// emu/attention_ref.h: what the attention harnesses share — a random bf16 problem (packed varlen sequences,
// GQA) and the f64 reference of causal attention on it: O, LSE, every online row statistic of
// attention_row_stats.cuh by its slot (row_stat_reference), the head-mixture entropy, and the backward dQ,
// dK, dV with D = rowsum(dO ∘ bf16(O)) as the engine forms it from the stored output.
#pragma once

#include "attention_row_stats.cuh"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

struct AttnProblem {
    std::vector<int> lens, cu;
    int hq, hkv, d, total;
    std::vector<__nv_bfloat16> q, k, v, dout;
    int max_len() const { return *std::max_element(lens.begin(), lens.end()); }
};

inline AttnProblem make_problem(const std::vector<int>& lens, int hq, int hkv, int d, float q_std, std::mt19937_64& rng) {
    AttnProblem p{lens, {0}, hq, hkv, d, 0, {}, {}, {}, {}};
    for (int len : lens) p.cu.push_back(p.cu.back() + len);
    p.total = p.cu.back();
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto draw = [&](size_t n, float sd) {
        std::vector<__nv_bfloat16> x(n);
        for (auto& e : x) e = __nv_bfloat16{f32_to_bf16_bits(sd * normal(rng))};
        return x;
    };
    p.q = draw((size_t)p.total * hq * d, q_std);
    p.k = draw((size_t)p.total * hkv * d, 1.0f);
    p.v = draw((size_t)p.total * hkv * d, 1.0f);
    p.dout = draw((size_t)p.total * hq * d, 1.0f);
    return p;
}

// A statistic's name and its f64 value on one row's normalised probabilities p[0 .. n) (keys 0 .. n−1 of
// the query's sequence), by RowStatSlot.
inline const char* row_stat_name(int slot) {
    static const char* const names[kOnlineStats] = {"H", "pmax", "sink", "dist"};
    return names[slot];
}
inline double row_stat_reference(int slot, const std::vector<double>& p, int sink_keys) {
    double r = 0;
    switch (slot) {
        case kStatEntropy:
            for (double x : p)
                if (x > 0) r -= x * std::log(x);
            return r;
        case kStatMaxProb: return *std::max_element(p.begin(), p.end());
        case kStatSink:
            for (int j = 0; j < std::min((int)p.size(), sink_keys); ++j) r += p[j];
            return r;
        case kStatDistance: {
            const int i = (int)p.size() - 1;
            for (int j = 0; j < i; ++j) r += p[j] * (i - j);
            return i > 0 ? r / i : 0.0;
        }
    }
    return NAN;
}

struct AttnReference {
    std::vector<double> o, lse;       // [T, Hq, D], [T, Hq]
    std::vector<double> stat[kOnlineStats];  // [T, Hq] by RowStatSlot
    std::vector<float> lse_f, dvec_f;  // as the kernels take them
    std::vector<double> dq, dk, dv;   // [T, Hq, D], [T, Hkv, D], [T, Hkv, D] (when asked for)
};

inline AttnReference attention_reference(const AttnProblem& p, bool backward, int sink_keys = 4) {
    const int d = p.d, hq = p.hq, hkv = p.hkv, group = hq / hkv;
    const double scale = 1.0 / std::sqrt((double)d);
    auto f = [](const std::vector<__nv_bfloat16>& x, size_t i) { return (double)bf16_to_f32(x[i]); };
    AttnReference r;
    r.o.assign((size_t)p.total * hq * d, 0.0);
    r.lse.assign((size_t)p.total * hq, 0.0);
    for (auto& st : r.stat) st = r.lse;
    r.lse_f.assign(r.lse.size(), 0.0f);
    r.dvec_f = r.lse_f;
    if (backward) {
        r.dq.assign(r.o.size(), 0.0);
        r.dk.assign((size_t)p.total * hkv * d, 0.0);
        r.dv = r.dk;
    }
    for (size_t s = 0; s + 1 < p.cu.size(); ++s)
        for (int h = 0; h < hq; ++h) {
            const int kvh = h / group;
            for (int i = p.cu[s]; i < p.cu[s + 1]; ++i) {
                const int n = i - p.cu[s] + 1;
                const size_t qrow = ((size_t)i * hq + h) * d, row = (size_t)i * hq + h;
                std::vector<double> pr(n);
                for (int j = 0; j < n; ++j) {
                    double acc = 0;
                    for (int c = 0; c < d; ++c) acc += f(p.q, qrow + c) * f(p.k, ((size_t)(p.cu[s] + j) * hkv + kvh) * d + c);
                    pr[j] = scale * acc;
                }
                const double m = *std::max_element(pr.begin(), pr.end());
                double l = 0;
                for (double& x : pr) l += (x = std::exp(x - m));
                for (double& x : pr) x /= l;
                r.lse[row] = m + std::log(l);
                r.lse_f[row] = (float)r.lse[row];
                for (int st = 0; st < kOnlineStats; ++st) r.stat[st][row] = row_stat_reference(st, pr, sink_keys);
                double dd = 0;
                for (int c = 0; c < d; ++c) {
                    double o = 0;
                    for (int j = 0; j < n; ++j) o += pr[j] * f(p.v, ((size_t)(p.cu[s] + j) * hkv + kvh) * d + c);
                    r.o[qrow + c] = o;
                    dd += (double)bf16_to_f32(__nv_bfloat16{f32_to_bf16_bits((float)o)}) * f(p.dout, qrow + c);
                }
                r.dvec_f[row] = (float)dd;
                if (!backward) continue;
                for (int j = 0; j < n; ++j) {
                    const size_t krow = ((size_t)(p.cu[s] + j) * hkv + kvh) * d;
                    double dp = 0;
                    for (int c = 0; c < d; ++c) dp += f(p.dout, qrow + c) * f(p.v, krow + c);
                    const double ds = pr[j] * (dp - r.dvec_f[row]);
                    for (int c = 0; c < d; ++c) {
                        r.dv[krow + c] += pr[j] * f(p.dout, qrow + c);
                        r.dk[krow + c] += scale * ds * f(p.q, qrow + c);
                        r.dq[qrow + c] += scale * ds * f(p.k, krow + c);
                    }
                }
            }
        }
    return r;
}

// max |got − ref| / max |ref| (inf on NaN).
template <class F> inline double normwise_err(const std::vector<double>& ref, F got) {
    double e = 0, m = 1e-12;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double g = got(i);
        e = std::max(e, std::isnan(g) ? INFINITY : std::abs(g - ref[i]));
        m = std::max(m, std::abs(ref[i]));
    }
    return e / m;
}

// max |got − ref| / (1 + |ref|) (inf on NaN).
template <class F> inline double rel1_err(const std::vector<double>& ref, F got) {
    double e = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double g = got(i);
        e = std::max(e, std::isnan(g) ? INFINITY : std::abs(g - ref[i]) / (1.0 + std::abs(ref[i])));
    }
    return e;
}

// Head-mixture entropy per token [T]: −Σ_j p̄_j ln p̄_j with p̄_j the mean over the Hq heads of p_hj (f64).
inline std::vector<double> hmix_reference(const AttnProblem& p) {
    const int d = p.d, hq = p.hq, hkv = p.hkv, group = hq / hkv;
    const double scale = 1.0 / std::sqrt((double)d);
    auto f = [](const std::vector<__nv_bfloat16>& x, size_t i) { return (double)bf16_to_f32(x[i]); };
    std::vector<double> out((size_t)p.total, 0.0);
    for (size_t s = 0; s + 1 < p.cu.size(); ++s)
        for (int i = p.cu[s]; i < p.cu[s + 1]; ++i) {
            const int n = i - p.cu[s] + 1;
            std::vector<double> mix(n, 0.0);
            for (int h = 0; h < hq; ++h) {
                const size_t qrow = ((size_t)i * hq + h) * d;
                std::vector<double> pr(n);
                for (int j = 0; j < n; ++j) {
                    double acc = 0;
                    const size_t krow = ((size_t)(p.cu[s] + j) * hkv + h / group) * d;
                    for (int c = 0; c < d; ++c) acc += f(p.q, qrow + c) * f(p.k, krow + c);
                    pr[j] = scale * acc;
                }
                const double m = *std::max_element(pr.begin(), pr.end());
                double l = 0;
                for (double& x : pr) l += (x = std::exp(x - m));
                for (int j = 0; j < n; ++j) mix[j] += pr[j] / l / hq;
            }
            double e = 0;
            for (double x : mix)
                if (x > 0) e -= x * std::log(x);
            out[i] = e;
        }
    return out;
}
