// Executes attn_fwd_mma_d{32,64,128} (cuda/attention_mma.cu, compiled unchanged against the emu/ shims) on the
// CPU and compares O, LSE and entropy with the f64 reference (attention_ref.h) on the same bf16 inputs:
// varlen packs with length-1 and odd-length sequences, several query blocks per sequence, GQA ratios 1, 2, 4
// and 6, and peaky (near one-hot) softmax rows. Outputs start poisoned (NaN) so an unwritten row fails; the
// run without entropy must give the same O and LSE bit for bit. One line per case; exit 1 on failure.
// Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "attention_mma.cu"
#include "attention_ref.h"
#include "harness.h"

#include <cstdio>

alignas(128) unsigned char smem[MmaSmem<128>::bytes];

using Kernel = void (*)(bf16*, float*, float*, const bf16*, const bf16*, const bf16*, const int*, int, int, float,
                        int);

struct Outputs {
    std::vector<bf16> o;
    std::vector<float> lse, ent;
};

static Outputs launch(Kernel f, const AttnProblem& p, int want_entropy) {
    Outputs out{std::vector<bf16>((size_t)p.total * p.hq * p.d, bf16{0x7fc0}),
                std::vector<float>((size_t)p.total * p.hq, NAN), std::vector<float>((size_t)p.total * p.hq, NAN)};
    const dim3 g{(unsigned)((p.max_len() + kBlockM - 1) / kBlockM), (unsigned)p.hq, (unsigned)p.lens.size()};
    const float scale = 1.0f / std::sqrt((float)p.d);
    run_grid(g, kThreads, [&] {
        f(out.o.data(), out.lse.data(), want_entropy ? out.ent.data() : nullptr, p.q.data(), p.k.data(), p.v.data(),
          p.cu.data(), p.hq, p.hkv, scale, want_entropy);
    });
    return out;
}

static bool run_case(const char* name, const std::vector<int>& lens, int hq, int hkv, int d, float q_std,
                     std::mt19937_64& rng) {
    const AttnProblem p = make_problem(lens, hq, hkv, d, q_std, rng);
    const Kernel f = d == 32 ? attn_fwd_mma_d32 : d == 64 ? attn_fwd_mma_d64 : attn_fwd_mma_d128;
    const Outputs with_h = launch(f, p, 1), without_h = launch(f, p, 0);
    const AttnReference r = attention_reference(p, false);
    const double err_o = rel1_err(r.o, [&](size_t i) { return (double)bf16_to_f32(with_h.o[i]); });
    const double err_lse = rel1_err(r.lse, [&](size_t i) { return (double)with_h.lse[i]; });
    const double err_h = rel1_err(r.ent, [&](size_t i) { return (double)with_h.ent[i]; });
    bool same = true;
    for (size_t i = 0; i < with_h.o.size(); ++i) same &= with_h.o[i].bits == without_h.o[i].bits;
    for (size_t i = 0; i < with_h.lse.size(); ++i) same &= with_h.lse[i] == without_h.lse[i];
    // O goes through bf16 P and a bf16 store; LSE and H are f32 all the way.
    const bool ok = err_o < 2e-2 && err_lse < 1e-5 && err_h < 1e-4 && same;
    std::printf("%-34s %-4s err O %.2e  LSE %.2e  H %.2e  O/LSE identical without H: %s\n", name, ok ? "ok" : "FAIL",
                err_o, err_lse, err_h, same ? "yes" : "no");
    return ok;
}

int main() {
    std::mt19937_64 rng(20261126);
    bool ok = true;
    ok &= run_case("d32 gqa2 lens 1,70,200", {1, 70, 200}, 4, 2, 32, 1.0f, rng);
    ok &= run_case("d64 gqa6 lens 129,37,1", {129, 37, 1}, 6, 1, 64, 1.0f, rng);
    ok &= run_case("d64 gqa1 peaky len 131", {131}, 2, 2, 64, 6.0f, rng);
    ok &= run_case("d128 gqa4 lens 300,5", {300, 5}, 4, 1, 128, 1.0f, rng);
    ok &= run_case("d128 gqa1 peaky lens 64,65", {64, 65}, 2, 2, 128, 4.0f, rng);
    return ok ? 0 : 1;
}
