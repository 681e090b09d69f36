// Executes attn_hmix_d{32,64,128} (cuda/attention_hmix.cu, compiled unchanged against the emu/ shims) on the
// CPU after the emulated forward (attn_fwd_mma_d*, for the LSEs it takes) and compares the head-mixture
// entropy with the f64 reference (attention_ref.h: the entropy of the head-averaged distribution): varlen
// packs with length-1 and odd-length sequences, several query tiles per sequence, GQA ratios 1, 2, 4 and 6,
// peaky rows (where the heads disagree most), and one head. Outputs start poisoned (NaN). One line per case;
// exit 1 on failure.
#include "attention_mma.cu"
#include "attention_hmix.cu"
#include "attention_ref.h"
#include "harness.h"

#include <algorithm>
#include <cstdio>

alignas(128) unsigned char smem[std::max(MmaSmem<128>::bytes, HmixSmem<128>::bytes)];

using Fwd = void (*)(const AttnFwdParams);
using Hmix = void (*)(const AttnHmixParams);

static bool run_case(const char* name, const std::vector<int>& lens, int hq, int hkv, int d, float q_std,
                     std::mt19937_64& rng) {
    const AttnProblem p = make_problem(lens, hq, hkv, d, q_std, rng);
    const Fwd fwd = d == 32 ? attn_fwd_mma_d32 : d == 64 ? attn_fwd_mma_d64 : attn_fwd_mma_d128;
    const Hmix hmix = d == 32 ? attn_hmix_d32 : d == 64 ? attn_hmix_d64 : attn_hmix_d128;
    const size_t rows = (size_t)p.total * p.hq;
    std::vector<bf16> o(rows * d);
    std::vector<float> lse(rows, NAN), out((size_t)p.total, NAN);
    const float scale = 1.0f / std::sqrt((float)d);
    AttnFwdParams fp{};  // no statistics: every slot null
    fp.o = o.data();
    fp.lse = lse.data();
    fp.q = p.q.data();
    fp.k = p.k.data();
    fp.v = p.v.data();
    fp.cu_seqlens = p.cu.data();
    fp.hq = hq;
    fp.hkv = hkv;
    fp.scale = scale;
    run_grid(dim3{(unsigned)((p.max_len() + 127) / 128), (unsigned)hq, (unsigned)lens.size()}, 256, [&] { fwd(fp); });
    const AttnHmixParams hp{out.data(), lse.data(), p.q.data(), p.k.data(), p.cu.data(), hq, hkv, scale, 0};
    run_grid(dim3{(unsigned)((p.max_len() + kHmixRows - 1) / kHmixRows), 1, (unsigned)lens.size()}, kHmixThreads, [&] { hmix(hp); });
    const std::vector<double> ref = hmix_reference(p);
    const double err = rel1_err(ref, [&](size_t i) { return (double)out[i]; });
    // hmix is at least the heads' mean entropy (concavity), at most ln(#keys): check the reference's own sense
    const AttnReference r = attention_reference(p, false);
    bool bounds = true;
    for (size_t s = 0; s + 1 < p.cu.size(); ++s)
        for (int i = p.cu[s]; i < p.cu[s + 1]; ++i) {
            double mean_h = 0;
            for (int h = 0; h < hq; ++h) mean_h += r.stat[kStatEntropy][(size_t)i * hq + h] / hq;
            bounds &= ref[i] >= mean_h - 1e-9 && ref[i] <= std::log((double)(i - p.cu[s] + 1)) + 1e-9;
        }
    const bool ok = err < 1e-4 && bounds;
    std::printf("%-34s %-4s err hmix %.2e  mean-H <= hmix <= ln n: %s\n", name, ok ? "ok" : "FAIL", err,
                bounds ? "yes" : "no");
    return ok;
}

int main() {
    std::mt19937_64 rng(20261205);
    bool ok = true;
    ok &= run_case("d32 gqa2 lens 1,70,130", {1, 70, 130}, 4, 2, 32, 1.0f, rng);
    ok &= run_case("d64 gqa6 lens 129,37,1", {129, 37, 1}, 6, 1, 64, 1.0f, rng);
    ok &= run_case("d64 gqa1 peaky len 131", {131}, 2, 2, 64, 6.0f, rng);
    ok &= run_case("d128 gqa4 lens 200,5", {200, 5}, 8, 2, 128, 1.0f, rng);
    ok &= run_case("d128 one head peaky lens 64,65", {64, 65}, 1, 1, 128, 4.0f, rng);
    return ok ? 0 : 1;
}
