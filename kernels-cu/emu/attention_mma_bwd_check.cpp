// Executes attn_bwd_mma_d{32,64,128} and attn_bwd_mma_reduce (cuda/attention_mma_bwd.cu, compiled unchanged
// against the emu/ shims) on the CPU and compares dQ, dK and dV with the f64 reference (attention_ref.h) on
// the same bf16 inputs, LSE and D = rowsum(dO∘O): varlen packs with length-1 and odd-length sequences,
// several key blocks per sequence, GQA ratios 1, 2, 4 and 6. Per-head dK/dV buffers start poisoned (NaN)
// so an unwritten row fails. One line per case; exit 1 on failure. Built and run by
// kernels-cu/tests/emulated_kernels.rs.
#include "attention_mma_bwd.cu"
#include "attention_check.h"
#include "harness.h"

#include <cstdio>

alignas(128) unsigned char smem[BwdSmem<128>::bytes];

using Kernel = void (*)(float*, float*, float*, const bf16*, const bf16*, const bf16*, const bf16*, const float*,
                        const float*, const int*, int, int, float);

static bool run_case(const char* name, const std::vector<int>& lens, int hq, int hkv, int d, std::mt19937_64& rng) {
    const AttnProblem p = make_problem(lens, hq, hkv, d, 1.0f, rng);
    const AttnReference r = attention_reference(p, true);
    const Kernel kern = d == 32 ? attn_bwd_mma_d32 : d == 64 ? attn_bwd_mma_d64 : attn_bwd_mma_d128;
    const size_t nq = (size_t)p.total * hq * d, nk = (size_t)p.total * hkv * d;
    std::vector<float> dq_acc(nq, 0.0f), dk_head(nq, NAN), dv_head(nq, NAN);
    std::vector<bf16> dk_out(nk, bf16{0x7fc0}), dv_out(nk, bf16{0x7fc0});
    const float scale = 1.0f / std::sqrt((float)d);
    const dim3 g{(unsigned)((p.max_len() + kBlockN - 1) / kBlockN), (unsigned)hq, (unsigned)lens.size()};
    run_grid(g, kThreads, [&] {
        kern(dq_acc.data(), dk_head.data(), dv_head.data(), p.q.data(), p.k.data(), p.v.data(), p.dout.data(),
             r.lse_f.data(), r.dvec_f.data(), p.cu.data(), hq, hkv, scale);
    });
    run_grid(3, 64, [&] {
        attn_bwd_mma_reduce(dk_out.data(), dv_out.data(), dk_head.data(), dv_head.data(), (long long)nk, hq, hkv, d);
    });
    return report_backward(name, r, dq_acc, dk_out, dv_out);
}

int main() {
    std::mt19937_64 rng(20261127);
    bool ok = true;
    ok &= run_case("d32 gqa2 lens 1,70,130", {1, 70, 130}, 4, 2, 32, rng);
    ok &= run_case("d64 gqa6 lens 129,37,1", {129, 37, 1}, 6, 1, 64, rng);
    ok &= run_case("d128 gqa4 lens 200,5", {200, 5}, 4, 1, 128, rng);
    ok &= run_case("d128 gqa1 lens 64,65", {64, 65}, 2, 2, 128, rng);
    return ok ? 0 : 1;
}
