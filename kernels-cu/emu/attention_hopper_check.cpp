// Executes attn_fwd_hopper_stats_d{64,128} and attn_fwd_hopper_d{64,128} (cuda/attention_hopper.cu, compiled
// unchanged against the emu/ shims, emu/hopper.cuh modelling TMA, mbarrier phases and wgmma on descriptors) on
// the CPU and compares them with the f64 reference (attention_ref.h) on the same bf16 inputs: O, LSE and every
// online row statistic. Cases: varlen packs with empty, length-1 and odd-length sequences, a last sequence
// whose boxes run past T (zero fill), several query blocks and more key tiles than stages (the stages are
// reused, so the empty barriers matter), GQA ratios 1, 2 and 4, peaky rows, S ≥ 4096. Outputs start poisoned
// (NaN). The plain entry must give the same O, LSE and entropy bit for bit and leave the other slots
// untouched. Every case runs with the default and the reversed fiber order (the long one once). One line per
// case; exit 1 on failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "attention_hopper.cu"
#include "attention_check.h"
#include "hopper_harness.h"
#include "harness.h"

#include <cstdio>

alignas(1024) unsigned char smem[HopperSmem<128>::bytes];

using Kernel = void (*)(const AttnHopperParams);

static FwdOutputs launch(Kernel f, const AttnProblem& p, bool stats, int sink_keys) {
    FwdOutputs out = poisoned_outputs((size_t)p.total * p.hq, p.d);
    const dim3 g{(unsigned)((p.max_len() + kHBlockM - 1) / kHBlockM), (unsigned)p.hq, (unsigned)p.lens.size()};
    AttnHopperParams hp{};
    hp.tq = tma_rows(p.q, p.total, p.hq, p.d, kHBlockM);
    hp.tk = tma_rows(p.k, p.total, p.hkv, p.d, kHBlockN);
    hp.tv = tma_rows(p.v, p.total, p.hkv, p.d, kHBlockN);
    hp.fwd = fwd_params(p, out, stats, sink_keys);
    run_hopper_grid(g, kHThreads, [&] { f(hp); });
    return out;
}

static bool run_case(const char* name, const std::vector<int>& lens, int hq, int hkv, int d, float q_std, int sink_keys,
                     std::mt19937_64& rng) {
    const AttnProblem p = make_problem(lens, hq, hkv, d, q_std, rng);
    const Kernel plain = d == 64 ? attn_fwd_hopper_d64 : attn_fwd_hopper_d128;
    const Kernel all = d == 64 ? attn_fwd_hopper_stats_d64 : attn_fwd_hopper_stats_d128;
    const FwdOutputs with_h = launch(all, p, true, sink_keys), plain_h = launch(plain, p, true, sink_keys),
                     without_h = launch(plain, p, false, sink_keys);
    return report_forward(name, attention_reference(p, false, sink_keys), with_h, plain_h, without_h, sink_keys);
}

int main() {
    bool ok = true;
    // every case with the fiber scheduler's default order, then reversed (consumers before the producer, the
    // second warpgroup before the first): a second interleaving, not every one (emu/hopper.cuh)
    for (bool reversed : {false, true}) {
        emu::reverse_schedule = reversed;
        std::mt19937_64 rng(20261205);
        std::printf("-- scheduler order: %s\n", reversed ? "reversed" : "default");
        ok &= run_case("hopper d64 gqa2 lens 1,0,70,200", {1, 0, 70, 200}, 4, 2, 64, 1.0f, 4, rng);
        ok &= run_case("hopper d64 gqa1 peaky len 131", {131}, 2, 2, 64, 6.0f, 5, rng);
        ok &= run_case("hopper d128 gqa4 lens 300,5", {300, 5}, 4, 1, 128, 1.0f, 64, rng);
        ok &= run_case("hopper d128 gqa2 len 700 (6 key tiles)", {700}, 2, 1, 128, 1.0f, 1, rng);
        ok &= run_case("hopper d128 gqa1 peaky lens 128,129", {128, 129}, 2, 2, 128, 4.0f, 4, rng);
        if (!reversed)  // one long row, once
            ok &= run_case("hopper d64 gqa1 len 4100 (S >= 4096)", {4100}, 1, 1, 64, 1.0f, 4, rng);
    }
    return ok ? 0 : 1;
}
