// Executes attn_bwd_mma_d{32,64,128} and attn_bwd_mma_reduce (cuda/attention_mma_bwd.cu, compiled unchanged
// against the emu/ shims) on the CPU and compares dQ, dK and dV with an f64 reference of the attention
// backward on the same bf16 inputs, LSE and D = rowsum(dO∘O) (as the engine passes them): varlen packs with
// length-1 and odd-length sequences, several key blocks per sequence, GQA ratios 1, 2, 4 and 6. dK/dV
// per-head buffers start poisoned (NaN) so an unwritten row fails. One line per case; exit 1 on failure.
// Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "attention_mma_bwd.cu"

#include <algorithm>
#include <cstdio>
#include <random>

alignas(128) unsigned char smem[BwdSmem<128>::bytes];

using Kernel = void (*)(float*, float*, float*, const bf16*, const bf16*, const bf16*, const bf16*, const float*,
                        const float*, const int*, int, int, float);

struct Case {
    const char* name;
    std::vector<int> lens;
    int hq, hkv, d;
};

static double max_abs(const std::vector<double>& x) {
    double m = 0;
    for (double e : x) m = std::max(m, std::abs(e));
    return m;
}

// max |got − ref| / max |ref| (inf on NaN)
template <class F> static double normwise(const std::vector<double>& ref, F got) {
    double e = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double g = got(i);
        e = std::max(e, std::isnan(g) ? INFINITY : std::abs(g - ref[i]));
    }
    return e / std::max(max_abs(ref), 1e-12);
}

static bool run_case(const Case& cs, std::mt19937_64& rng) {
    std::vector<int> cu{0};
    for (int len : cs.lens) cu.push_back(cu.back() + len);
    const int total = cu.back(), d = cs.d, hq = cs.hq, hkv = cs.hkv, group = hq / hkv;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto draw = [&](size_t n) {
        std::vector<bf16> x(n);
        for (auto& e : x) e = bf16{f32_to_bf16_bits(normal(rng))};
        return x;
    };
    const auto q = draw((size_t)total * hq * d), k = draw((size_t)total * hkv * d), v = draw((size_t)total * hkv * d);
    const auto dout = draw((size_t)total * hq * d);
    auto f = [](const std::vector<bf16>& x, size_t i) { return (double)bf16_to_f32(x[i]); };
    const double scale = 1.0 / std::sqrt((double)d);

    // f64 reference forward (P, O, LSE), D from the bf16-rounded O, then the backward
    std::vector<float> lse((size_t)total * hq), dvec((size_t)total * hq);
    std::vector<double> dq((size_t)total * hq * d, 0.0), dk((size_t)total * hkv * d, 0.0), dv((size_t)total * hkv * d, 0.0);
    for (size_t s = 0; s + 1 < cu.size(); ++s)
        for (int h = 0; h < hq; ++h) {
            const int kvh = h / group;
            for (int i = cu[s]; i < cu[s + 1]; ++i) {
                const int n = i - cu[s] + 1;
                const size_t qrow = ((size_t)i * hq + h) * d;
                std::vector<double> p(n);
                for (int j = 0; j < n; ++j) {
                    double acc = 0;
                    for (int c = 0; c < d; ++c) acc += f(q, qrow + c) * f(k, ((size_t)(cu[s] + j) * hkv + kvh) * d + c);
                    p[j] = scale * acc;
                }
                const double m = *std::max_element(p.begin(), p.end());
                double l = 0;
                for (double& x : p) l += (x = std::exp(x - m));
                for (double& x : p) x /= l;
                lse[(size_t)i * hq + h] = (float)(m + std::log(l));
                double dd = 0;
                for (int c = 0; c < d; ++c) {
                    double o = 0;
                    for (int j = 0; j < n; ++j) o += p[j] * f(v, ((size_t)(cu[s] + j) * hkv + kvh) * d + c);
                    dd += (double)bf16_to_f32(__float2bfloat16_rn((float)o)) * f(dout, qrow + c);
                }
                dvec[(size_t)i * hq + h] = (float)dd;
                for (int j = 0; j < n; ++j) {
                    const size_t krow = ((size_t)(cu[s] + j) * hkv + kvh) * d;
                    double dp = 0;
                    for (int c = 0; c < d; ++c) dp += f(dout, qrow + c) * f(v, krow + c);
                    const double ds = p[j] * (dp - dvec[(size_t)i * hq + h]);
                    for (int c = 0; c < d; ++c) {
                        dv[krow + c] += p[j] * f(dout, qrow + c);
                        dk[krow + c] += scale * ds * f(q, qrow + c);
                        dq[qrow + c] += scale * ds * f(k, krow + c);
                    }
                }
            }
        }

    // the kernels: main pass over (key block, query head, sequence), then the GQA reduction
    const Kernel kern = d == 32 ? attn_bwd_mma_d32 : d == 64 ? attn_bwd_mma_d64 : attn_bwd_mma_d128;
    std::vector<float> dq_acc((size_t)total * hq * d, 0.0f), dk_head((size_t)total * hq * d, NAN),
        dv_head((size_t)total * hq * d, NAN);
    std::vector<bf16> dk_out((size_t)total * hkv * d, bf16{0x7fc0}), dv_out((size_t)total * hkv * d, bf16{0x7fc0});
    const int max_len = *std::max_element(cs.lens.begin(), cs.lens.end());
    gridDim = dim3{(unsigned)((max_len + kBlockN - 1) / kBlockN), (unsigned)hq, (unsigned)cs.lens.size()};
    blockDim = dim3{(unsigned)kThreads, 1, 1};
    for (unsigned z = 0; z < gridDim.z; ++z)
        for (unsigned y = 0; y < gridDim.y; ++y)
            for (unsigned x = 0; x < gridDim.x; ++x) {
                blockIdx = dim3{x, y, z};
                emu::run_cta(kThreads, [&] {
                    kern(dq_acc.data(), dk_head.data(), dv_head.data(), q.data(), k.data(), v.data(), dout.data(),
                         lse.data(), dvec.data(), cu.data(), hq, hkv, (float)scale);
                });
            }
    gridDim = dim3{3, 1, 1};
    blockDim = dim3{64, 1, 1};
    for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = dim3{x, 0, 0};
        emu::run_cta(64, [&] {
            attn_bwd_mma_reduce(dk_out.data(), dv_out.data(), dk_head.data(), dv_head.data(), (long long)total * hkv * d,
                                hq, hkv, d);
        });
    }

    const double e_dq = normwise(dq, [&](size_t i) { return (double)dq_acc[i]; });
    const double e_dk = normwise(dk, [&](size_t i) { return (double)bf16_to_f32(dk_out[i]); });
    const double e_dv = normwise(dv, [&](size_t i) { return (double)bf16_to_f32(dv_out[i]); });
    // P and dS enter the tensor-core products as bf16; dK/dV are stored as bf16.
    const bool ok = e_dq < 1e-2 && e_dk < 1e-2 && e_dv < 1e-2;
    std::printf("%-30s %-4s normwise err dQ %.2e  dK %.2e  dV %.2e\n", cs.name, ok ? "ok" : "FAIL", e_dq, e_dk, e_dv);
    return ok;
}

int main() {
    const std::vector<Case> cases = {
        {"d32 gqa2 lens 1,70,130", {1, 70, 130}, 4, 2, 32},
        {"d64 gqa6 lens 129,37,1", {129, 37, 1}, 6, 1, 64},
        {"d128 gqa4 lens 200,5", {200, 5}, 4, 1, 128},
        {"d128 gqa1 lens 64,65", {64, 65}, 2, 2, 128},
    };
    std::mt19937_64 rng(20261127);
    bool ok = true;
    for (const auto& cs : cases) ok &= run_case(cs, rng);
    return ok ? 0 : 1;
}
