// Executes the WMMA attention kernels of dev/attention_wmma.cu (the dev harness's losing version) and the
// shipped helpers of cuda/attention.cu on the CPU, compiled unchanged against the emu/ shims (emu/mma.h stands in for nvcuda::wmma): the forward
// (O, LSE, entropy), attn_bwd_dot (D), the backward (dQ, dK, dV) and attn_entropy_norm (H / ln(pos+1) and its
// head mean), against the f64 reference of attention_ref.h. Outputs start poisoned. One line per case; exit 1
// on failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "attention.cu"
#include "attention_wmma.cu"
#include "attention_ref.h"
#include "harness.h"

#include <cstdio>

alignas(128) unsigned char smem[Layout<128>::bwd_bytes];

using Fwd = void (*)(bf16*, float*, float*, const bf16*, const bf16*, const bf16*, const int*, int, int, float, int);
using Bwd = void (*)(float*, bf16*, bf16*, const bf16*, const bf16*, const bf16*, const bf16*, const float*,
                     const float*, const int*, int, int, float);


static bool run_case(const char* name, const std::vector<int>& lens, int hq, int hkv, int d, std::mt19937_64& rng) {
    const AttnProblem p = make_problem(lens, hq, hkv, d, 1.0f, rng);
    const AttnReference r = attention_reference(p, true);
    const Fwd fwd = d == 32 ? attn_fwd_d32 : d == 64 ? attn_fwd_d64 : attn_fwd_d128;
    const Bwd bwd = d == 32 ? attn_bwd_d32 : d == 64 ? attn_bwd_d64 : attn_bwd_d128;
    const size_t nq = (size_t)p.total * hq * d, nk = (size_t)p.total * hkv * d, rows = (size_t)p.total * hq;
    const unsigned blocks = (unsigned)((p.max_len() + kBlockM - 1) / kBlockM), nseq = (unsigned)lens.size();
    const float scale = 1.0f / std::sqrt((float)d);

    // forward
    std::vector<bf16> o(nq, bf16{0x7fc0});
    std::vector<float> lse(rows, NAN), ent(rows, NAN);
    run_grid(dim3{blocks, (unsigned)hq, nseq}, kThreads, [&] {
        fwd(o.data(), lse.data(), ent.data(), p.q.data(), p.k.data(), p.v.data(), p.cu.data(), hq, hkv, scale, 1);
    });
    const double e_o = rel1_err(r.o, [&](size_t i) { return (double)bf16_to_f32(o[i]); });
    const double e_lse = rel1_err(r.lse, [&](size_t i) { return (double)lse[i]; });
    const double e_h = rel1_err(r.stat[kStatEntropy], [&](size_t i) { return (double)ent[i]; });

    // normalised entropy and its head mean
    std::vector<float> norm(rows, NAN), mean(p.total, NAN);
    run_grid(dim3{2, 1, 1}, 64, [&] {
        attn_entropy_norm(norm.data(), mean.data(), ent.data(), p.cu.data(), (int)nseq, p.total, hq);
    });
    std::vector<double> want_norm(rows), want_mean(p.total, 0.0);
    for (size_t s = 0; s + 1 < p.cu.size(); ++s)
        for (int t = p.cu[s]; t < p.cu[s + 1]; ++t)
            for (int h = 0; h < hq; ++h) {
                const int pos = t - p.cu[s];
                const double x = pos == 0 ? 0.0 : r.stat[kStatEntropy][(size_t)t * hq + h] / std::log(pos + 1.0);
                want_norm[(size_t)t * hq + h] = x;
                want_mean[t] += x / hq;
            }
    const double e_norm = std::max(rel1_err(want_norm, [&](size_t i) { return (double)norm[i]; }),
                                   rel1_err(want_mean, [&](size_t i) { return (double)mean[i]; }));

    // backward: D from the kernel's own O, then the main kernel
    std::vector<float> dvec(rows, NAN), dq_acc(nq, 0.0f);
    std::vector<bf16> dk(nk, bf16{0x7fc0}), dv(nk, bf16{0x7fc0});
    run_grid(dim3{3, 1, 1}, kThreads, [&] { attn_bwd_dot(dvec.data(), o.data(), p.dout.data(), (long long)rows, d); });
    std::vector<double> want_dvec(r.dvec_f.begin(), r.dvec_f.end());
    const double e_dvec = normwise_err(want_dvec, [&](size_t i) { return (double)dvec[i]; });
    run_grid(dim3{blocks, (unsigned)hkv, nseq}, kThreads, [&] {
        bwd(dq_acc.data(), dk.data(), dv.data(), p.q.data(), p.k.data(), p.v.data(), p.dout.data(), lse.data(),
            dvec.data(), p.cu.data(), hq, hkv, scale);
    });
    const double e_dq = normwise_err(r.dq, [&](size_t i) { return (double)dq_acc[i]; });
    const double e_dk = normwise_err(r.dk, [&](size_t i) { return (double)bf16_to_f32(dk[i]); });
    const double e_dv = normwise_err(r.dv, [&](size_t i) { return (double)bf16_to_f32(dv[i]); });

    const bool ok = e_o < 2e-2 && e_lse < 1e-5 && e_h < 1e-4 && e_norm < 1e-4 && e_dvec < 1e-2 && e_dq < 1e-2 &&
                    e_dk < 1e-2 && e_dv < 1e-2;
    std::printf("%-28s %-4s O %.1e LSE %.1e H %.1e Hnorm %.1e D %.1e dQ %.1e dK %.1e dV %.1e\n", name,
                ok ? "ok" : "FAIL", e_o, e_lse, e_h, e_norm, e_dvec, e_dq, e_dk, e_dv);
    return ok;
}

int main() {
    std::mt19937_64 rng(20261132);
    bool ok = true;
    ok &= run_case("d32 gqa2 lens 1,70,9", {1, 70, 9}, 4, 2, 32, rng);
    ok &= run_case("d64 gqa6 lens 65,1", {65, 1}, 6, 1, 64, rng);
    ok &= run_case("d128 gqa1 lens 70", {70}, 2, 2, 128, rng);
    return ok ? 0 : 1;
}
