// Executes attn_fwd_mma_stats_d{32,64,128} and attn_fwd_mma_d{32,64,128} (cuda/attention_mma.cu, compiled
// unchanged against the emu/ shims) on the CPU. The statistics entry runs with every slot set and is compared
// with the f64 reference (attention_ref.h) on the same bf16 inputs: O, LSE and every online row statistic
// (each slot of attention_row_stats.cuh; the sink mass over the first 1, 4, 5 or 64 keys). Cases: varlen
// packs with length-1 and odd-length sequences, several query blocks per sequence, GQA ratios 1, 2, 4 and 6,
// and peaky (near one-hot) softmax rows. Outputs start poisoned (NaN) so an unwritten row fails. The plain
// entry, with every slot set, must give the same O, LSE and entropy bit for bit and leave the other slots
// untouched; with no slot set, the same O and LSE and no statistic. One line per case; exit 1 on failure.
// Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "attention_mma.cu"
#include "attention_check.h"
#include "harness.h"

#include <cstdio>

alignas(128) unsigned char smem[MmaSmem<128>::bytes];

using Kernel = void (*)(const AttnFwdParams);

static FwdOutputs launch(Kernel f, const AttnProblem& p, bool stats, int sink_keys) {
    // f is the plain or the statistics entry; `stats` sets every slot
    FwdOutputs out = poisoned_outputs((size_t)p.total * p.hq, p.d);
    const dim3 g{(unsigned)((p.max_len() + kBlockM - 1) / kBlockM), (unsigned)p.hq, (unsigned)p.lens.size()};
    const AttnFwdParams prm = fwd_params(p, out, stats, sink_keys);
    run_grid(g, kThreads, [&] { f(prm); });
    return out;
}

static bool run_case(const char* name, const std::vector<int>& lens, int hq, int hkv, int d, float q_std, int sink_keys,
                     std::mt19937_64& rng) {
    const AttnProblem p = make_problem(lens, hq, hkv, d, q_std, rng);
    const Kernel plain = d == 32 ? attn_fwd_mma_d32 : d == 64 ? attn_fwd_mma_d64 : attn_fwd_mma_d128;
    const Kernel all = d == 32 ? attn_fwd_mma_stats_d32 : d == 64 ? attn_fwd_mma_stats_d64 : attn_fwd_mma_stats_d128;
    const FwdOutputs with_h = launch(all, p, true, sink_keys), plain_h = launch(plain, p, true, sink_keys),
                     without_h = launch(plain, p, false, sink_keys);
    return report_forward(name, attention_reference(p, false, sink_keys), with_h, plain_h, without_h, sink_keys);
}

int main() {
    std::mt19937_64 rng(20261126);
    bool ok = true;
    ok &= run_case("d32 gqa2 lens 1,70,200", {1, 70, 200}, 4, 2, 32, 1.0f, 4, rng);
    ok &= run_case("d64 gqa6 lens 129,37,1", {129, 37, 1}, 6, 1, 64, 1.0f, 1, rng);
    ok &= run_case("d64 gqa1 peaky len 131", {131}, 2, 2, 64, 6.0f, 5, rng);
    ok &= run_case("d128 gqa4 lens 300,5", {300, 5}, 4, 1, 128, 1.0f, 64, rng);
    ok &= run_case("d128 gqa1 peaky lens 64,65", {64, 65}, 2, 2, 128, 4.0f, 4, rng);
    return ok ? 0 : 1;
}
