// Executes attn_bwd_hopper_d{64,128} (cuda/attention_hopper_bwd.cu, compiled unchanged against the emu/ shims,
// emu/hopper.cuh modelling TMA, mbarrier phases, named barriers and wgmma with both operand majors) and
// attn_bwd_mma_reduce (attention_mma_bwd.cu) on the CPU and compares dQ, dK and dV with the f64 reference
// (attention_ref.h) on the same bf16 inputs, LSE and D = rowsum(dO∘O): varlen packs with empty, length-1 and
// odd-length sequences, more query tiles than stages, several key blocks per sequence, a last sequence whose
// boxes run past T, GQA ratios 1, 2 and 4, S ≥ 4096. Per-head dK/dV buffers start poisoned (NaN) so an
// unwritten row fails. Every case runs with the default and the reversed fiber order (the long one once).
// One line per case; exit 1 on failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "attention_hopper_bwd.cu"
#include "attention_mma_bwd.cu"
#include "attention_check.h"
#include "hopper_harness.h"
#include "harness.h"

#include <cstdio>

alignas(1024) unsigned char smem[HopperBwdSmem<128>::bytes];
// engine/src/cuda/attention.rs's hopper_bwd_smem_bytes mirrors these (its unit test holds the same numbers)
static_assert(HopperBwdSmem<64>::bytes == 102440 && HopperBwdSmem<128>::bytes == 184360, "the engine's mirror");

using Kernel = void (*)(const AttnHopperBwdParams);

static bool run_case(const char* name, const std::vector<int>& lens, int hq, int hkv, int d, std::mt19937_64& rng) {
    const AttnProblem p = make_problem(lens, hq, hkv, d, 1.0f, rng);
    const AttnReference r = attention_reference(p, true);
    const Kernel kern = d == 64 ? attn_bwd_hopper_d64 : attn_bwd_hopper_d128;
    const size_t nq = (size_t)p.total * hq * d, nk = (size_t)p.total * hkv * d;
    std::vector<float> dq_acc(nq, 0.0f), dk_head(nq, NAN), dv_head(nq, NAN);
    emu::bulk_lo = dq_acc.data();
    emu::bulk_hi = dq_acc.data() + nq;
    std::vector<bf16> dk_out(nk, bf16{0x7fc0}), dv_out(nk, bf16{0x7fc0});
    AttnHopperBwdParams prm{};
    prm.tq = tma_rows(p.q, p.total, hq, d, kBQueries);
    prm.tdo = tma_rows(p.dout, p.total, hq, d, kBQueries);
    prm.tk = tma_rows(p.k, p.total, hkv, d, kBKeys);
    prm.tv = tma_rows(p.v, p.total, hkv, d, kBKeys);
    prm.dq_accum = dq_acc.data();
    prm.dk_head = dk_head.data();
    prm.dv_head = dv_head.data();
    prm.lse = r.lse_f.data();
    prm.dvec = r.dvec_f.data();
    prm.cu_seqlens = p.cu.data();
    prm.hq = hq;
    prm.hkv = hkv;
    prm.scale = 1.0f / std::sqrt((float)d);
    const dim3 g{(unsigned)((p.max_len() + kBKeys - 1) / kBKeys), (unsigned)hq, (unsigned)lens.size()};
    run_hopper_grid(g, kBThreads, [&] { kern(prm); });
    run_grid(3, 64, [&] {
        attn_bwd_mma_reduce(dk_out.data(), dv_out.data(), dk_head.data(), dv_head.data(), (long long)nk, hq, hkv, d);
    });
    return report_backward(name, r, dq_acc, dk_out, dv_out);
}

int main() {
    bool ok = true;
    // every case with the fiber scheduler's default order, then reversed (consumers before the producer, the
    // second warpgroup before the first): a second interleaving, not every one (emu/hopper.cuh)
    for (bool reversed : {false, true}) {
        emu::reverse_schedule = reversed;
        std::mt19937_64 rng(20261205);
        std::printf("-- scheduler order: %s\n", reversed ? "reversed" : "default");
        ok &= run_case("hopper bwd d64 gqa2 lens 1,0,70,200", {1, 0, 70, 200}, 4, 2, 64, rng);
        ok &= run_case("hopper bwd d64 gqa1 len 131", {131}, 2, 2, 64, rng);
        ok &= run_case("hopper bwd d128 gqa4 lens 300,5", {300, 5}, 4, 1, 128, rng);
        ok &= run_case("hopper bwd d128 gqa1 lens 128,129", {128, 129}, 2, 2, 128, rng);
        if (!reversed)  // one long row, once
            ok &= run_case("hopper bwd d64 gqa1 len 4100 (S >= 4096)", {4100}, 1, 1, 64, rng);
    }
    return ok ? 0 : 1;
}
