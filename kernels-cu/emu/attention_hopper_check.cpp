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
#include "attention_ref.h"
#include "harness.h"

#include <cstdio>

alignas(1024) unsigned char smem[HopperSmem<128>::bytes];

using Kernel = void (*)(const AttnHopperParams);

struct Outputs {
    std::vector<bf16> o;
    std::vector<float> lse, stat[kOnlineStats];
};

// [T][H][D] bf16, box (64, 1, 128), 128-byte swizzle: what engine/src/cuda/tma.rs asks the driver for.
static TmaDesc map_of(const std::vector<bf16>& x, int total, int heads, int d) {
    const unsigned long long dims[3] = {(unsigned long long)d, (unsigned long long)heads, (unsigned long long)total};
    const unsigned long long strides[2] = {(unsigned long long)d * 2, (unsigned long long)heads * d * 2};
    const unsigned box[3] = {64, 1, 128};
    return emu_encode_tma(x.data(), dims, strides, box, 2, true);
}

static Outputs launch(Kernel f, const AttnProblem& p, bool stats, int sink_keys) {
    const size_t rows = (size_t)p.total * p.hq;
    Outputs out{std::vector<bf16>(rows * p.d, bf16{0x7fc0}), std::vector<float>(rows, NAN), {}};
    for (auto& st : out.stat) st.assign(rows, NAN);
    const dim3 g{(unsigned)((p.max_len() + kHBlockM - 1) / kHBlockM), (unsigned)p.hq, (unsigned)p.lens.size()};
    AttnHopperParams hp{};
    hp.tq = map_of(p.q, p.total, p.hq, p.d);
    hp.tk = map_of(p.k, p.total, p.hkv, p.d);
    hp.tv = map_of(p.v, p.total, p.hkv, p.d);
    AttnFwdParams& prm = hp.fwd;
    prm.o = out.o.data();
    prm.lse = out.lse.data();
    for (int st = 0; st < kOnlineStats; ++st) prm.stat[st] = stats ? out.stat[st].data() : nullptr;
    prm.q = p.q.data();
    prm.k = p.k.data();
    prm.v = p.v.data();
    prm.cu_seqlens = p.cu.data();
    prm.hq = p.hq;
    prm.hkv = p.hkv;
    prm.scale = 1.0f / std::sqrt((float)p.d);
    prm.sink_keys = sink_keys;
    int finished = 0;
    run_grid(g, kHThreads, [&] {
        f(hp);
        // the CTA's last thread: no named barrier may be left half-arrived (the GPU resets them per CTA)
        if (++finished % kHThreads == 0 && !emu_named_barriers_idle()) {
            std::printf("FAIL CTA (%u, %u, %u) ended with a named barrier half-arrived\n", blockIdx.x, blockIdx.y,
                        blockIdx.z);
            std::fflush(stdout);
            std::_Exit(1);
        }
    });
    return out;
}

static bool run_case(const char* name, const std::vector<int>& lens, int hq, int hkv, int d, float q_std, int sink_keys,
                     std::mt19937_64& rng) {
    const AttnProblem p = make_problem(lens, hq, hkv, d, q_std, rng);
    const Kernel plain = d == 64 ? attn_fwd_hopper_d64 : attn_fwd_hopper_d128;
    const Kernel all = d == 64 ? attn_fwd_hopper_stats_d64 : attn_fwd_hopper_stats_d128;
    const Outputs with_h = launch(all, p, true, sink_keys), plain_h = launch(plain, p, true, sink_keys),
                  without_h = launch(plain, p, false, sink_keys);
    const AttnReference r = attention_reference(p, false, sink_keys);
    const double err_o = rel1_err(r.o, [&](size_t i) { return (double)bf16_to_f32(with_h.o[i]); });
    const double err_lse = rel1_err(r.lse, [&](size_t i) { return (double)with_h.lse[i]; });
    double err_stat[kOnlineStats];
    bool stats_ok = true;
    for (int st = 0; st < kOnlineStats; ++st) {
        err_stat[st] = rel1_err(r.stat[st], [&](size_t i) { return (double)with_h.stat[st][i]; });
        stats_ok &= err_stat[st] < (st == kStatEntropy ? 1e-4 : 1e-5);
    }
    bool same = true;
    for (size_t i = 0; i < with_h.o.size(); ++i)
        same &= with_h.o[i].bits == without_h.o[i].bits && with_h.o[i].bits == plain_h.o[i].bits;
    for (size_t i = 0; i < with_h.lse.size(); ++i) {
        same &= with_h.lse[i] == without_h.lse[i] && with_h.lse[i] == plain_h.lse[i];
        same &= with_h.stat[kStatEntropy][i] == plain_h.stat[kStatEntropy][i];
        for (int st = 0; st < kOnlineStats; ++st) {
            same &= std::isnan(without_h.stat[st][i]);
            if (st != kStatEntropy) same &= std::isnan(plain_h.stat[st][i]);
        }
    }
    const bool ok = err_o < 2e-2 && err_lse < 1e-5 && stats_ok && same;
    std::printf("%-38s %-4s err O %.2e  LSE %.2e", name, ok ? "ok" : "FAIL", err_o, err_lse);
    for (int st = 0; st < kOnlineStats; ++st) std::printf("  %s %.2e", row_stat_name(st), err_stat[st]);
    std::printf("  (sink@%d)  plain entry agrees: %s\n", sink_keys, same ? "yes" : "no");
    return ok;
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
