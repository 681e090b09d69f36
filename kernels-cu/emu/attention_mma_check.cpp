// Executes attn_fwd_mma_d{32,64,128} (cuda/attention_mma.cu, compiled unchanged against the emu/ shims) on the
// CPU and compares O, LSE and entropy with an f64 reference on the same bf16 inputs: varlen packs with
// length-1 and odd-length sequences, several query blocks per sequence, GQA ratios 1, 2, 4 and 6, and peaky
// (near one-hot) softmax rows. Outputs start poisoned (NaN) so an unwritten row fails. Prints one line per
// case; exits 1 on any failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "attention_mma.cu"

#include <algorithm>
#include <cstdio>
#include <random>

alignas(128) unsigned char smem[MmaSmem<128>::bytes];

using Kernel = void (*)(bf16*, float*, float*, const bf16*, const bf16*, const bf16*, const int*, int, int, float,
                        int);

struct Case {
    const char* name;
    std::vector<int> lens;
    int hq, hkv, d;
    float q_std;  // larger: peakier softmax rows
};

struct Outputs {
    std::vector<bf16> o;
    std::vector<float> lse, ent;
};

static Outputs launch(Kernel f, const Case& cs, const std::vector<int>& cu, const std::vector<bf16>& q,
                      const std::vector<bf16>& k, const std::vector<bf16>& v, int want_entropy) {
    const int total = cu.back(), nseq = (int)cs.lens.size();
    const int max_len = *std::max_element(cs.lens.begin(), cs.lens.end());
    Outputs out{std::vector<bf16>((size_t)total * cs.hq * cs.d, bf16{0x7fc0}),
                std::vector<float>((size_t)total * cs.hq, NAN), std::vector<float>((size_t)total * cs.hq, NAN)};
    gridDim = dim3{(unsigned)((max_len + kBlockM - 1) / kBlockM), (unsigned)cs.hq, (unsigned)nseq};
    blockDim = dim3{(unsigned)kThreads, 1, 1};
    const float scale = 1.0f / std::sqrt((float)cs.d);
    for (unsigned z = 0; z < gridDim.z; ++z)
        for (unsigned y = 0; y < gridDim.y; ++y)
            for (unsigned x = 0; x < gridDim.x; ++x) {
                blockIdx = dim3{x, y, z};
                emu::run_cta(kThreads, [&] {
                    f(out.o.data(), out.lse.data(), want_entropy ? out.ent.data() : nullptr, q.data(), k.data(),
                      v.data(), cu.data(), cs.hq, cs.hkv, scale, want_entropy);
                });
            }
    return out;
}

static bool run_case(const Case& cs, std::mt19937_64& rng) {
    std::vector<int> cu{0};
    for (int len : cs.lens) cu.push_back(cu.back() + len);
    const int total = cu.back(), d = cs.d;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto draw = [&](size_t n, float std_dev) {
        std::vector<bf16> x(n);
        for (auto& e : x) e = bf16{f32_to_bf16_bits(std_dev * normal(rng))};
        return x;
    };
    const auto q = draw((size_t)total * cs.hq * d, cs.q_std);
    const auto k = draw((size_t)total * cs.hkv * d, 1.0f);
    const auto v = draw((size_t)total * cs.hkv * d, 1.0f);
    const Kernel f = d == 32 ? attn_fwd_mma_d32 : d == 64 ? attn_fwd_mma_d64 : attn_fwd_mma_d128;
    const Outputs with_h = launch(f, cs, cu, q, k, v, 1);
    const Outputs without_h = launch(f, cs, cu, q, k, v, 0);

    // f64 reference: s_j = scale·q·k_j over j <= i within the sequence
    double err_o = 0, err_lse = 0, err_h = 0;
    bool same = true;
    const double scale = 1.0 / std::sqrt((double)d);
    for (size_t s = 0; s + 1 < cu.size(); ++s)
        for (int h = 0; h < cs.hq; ++h) {
            const int kvh = h / (cs.hq / cs.hkv);
            for (int i = cu[s]; i < cu[s + 1]; ++i) {
                const int n = i - cu[s] + 1;
                std::vector<double> sc(n);
                for (int j = 0; j < n; ++j) {
                    double acc = 0;
                    for (int c = 0; c < d; ++c)
                        acc += (double)bf16_to_f32(q[((size_t)i * cs.hq + h) * d + c]) *
                               bf16_to_f32(k[((size_t)(cu[s] + j) * cs.hkv + kvh) * d + c]);
                    sc[j] = scale * acc;
                }
                const double m = *std::max_element(sc.begin(), sc.end());
                double l = 0;
                for (double x : sc) l += std::exp(x - m);
                double ent = 0;
                for (double x : sc) {
                    const double p = std::exp(x - m) / l;
                    if (p > 0) ent -= p * std::log(p);
                }
                const size_t row = (size_t)i * cs.hq + h;
                for (int c = 0; c < d; ++c) {
                    double o = 0;
                    for (int j = 0; j < n; ++j)
                        o += std::exp(sc[j] - m) / l * bf16_to_f32(v[((size_t)(cu[s] + j) * cs.hkv + kvh) * d + c]);
                    const double got = bf16_to_f32(with_h.o[row * d + c]);
                    err_o = std::max(err_o, std::isnan(got) ? INFINITY : std::abs(got - o) / (1.0 + std::abs(o)));
                    same &= with_h.o[row * d + c].bits == without_h.o[row * d + c].bits;
                }
                const double lse = m + std::log(l);
                err_lse = std::max(err_lse, std::isnan(with_h.lse[row]) ? INFINITY
                                                                         : std::abs(with_h.lse[row] - lse) / (1.0 + std::abs(lse)));
                err_h = std::max(err_h, std::isnan(with_h.ent[row]) ? INFINITY : std::abs(with_h.ent[row] - ent) / (1.0 + ent));
                same &= with_h.lse[row] == without_h.lse[row];
            }
        }
    // O goes through bf16 P and a bf16 store; LSE and H are f32 all the way.
    const bool ok = err_o < 2e-2 && err_lse < 1e-5 && err_h < 1e-4 && same;
    std::printf("%-34s %-4s err O %.2e  LSE %.2e  H %.2e  O/LSE identical without H: %s\n", cs.name,
                ok ? "ok" : "FAIL", err_o, err_lse, err_h, same ? "yes" : "no");
    return ok;
}

int main() {
    const std::vector<Case> cases = {
        {"d32 gqa2 lens 1,70,200", {1, 70, 200}, 4, 2, 32, 1.0f},
        {"d64 gqa6 lens 129,37,1", {129, 37, 1}, 6, 1, 64, 1.0f},
        {"d64 gqa1 peaky len 131", {131}, 2, 2, 64, 6.0f},
        {"d128 gqa4 lens 300,5", {300, 5}, 4, 1, 128, 1.0f},
        {"d128 gqa1 peaky lens 64,65", {64, 65}, 2, 2, 128, 4.0f},
    };
    std::mt19937_64 rng(20261126);
    bool ok = true;
    for (const auto& cs : cases) ok &= run_case(cs, rng);
    return ok ? 0 : 1;
}
