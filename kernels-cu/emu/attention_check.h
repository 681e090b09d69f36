// emu/attention_check.h: what the fused-attention harnesses share beyond the reference (attention_ref.h): the
// forward's outputs with their poisoned start, the forward comparison (O, LSE, every online statistic; the
// plain entry bit-identical on O, LSE and entropy and silent on the other slots) and the backward's.
#pragma once

#include "attention_params.cuh"
#include "attention_ref.h"

#include <cmath>
#include <cstdio>
#include <vector>

struct FwdOutputs {
    std::vector<__nv_bfloat16> o;
    std::vector<float> lse, stat[kOnlineStats];
};

// O, LSE and every statistic of `rows` rows of width d, poisoned (NaN) so an unwritten row fails.
inline FwdOutputs poisoned_outputs(size_t rows, int d) {
    FwdOutputs out{std::vector<__nv_bfloat16>(rows * d, __nv_bfloat16{0x7fc0}), std::vector<float>(rows, NAN), {}};
    for (auto& st : out.stat) st.assign(rows, NAN);
    return out;
}

// The forward's parameters for problem p writing into `out`: every statistic slot when `stats`, else none.
inline AttnFwdParams fwd_params(const AttnProblem& p, FwdOutputs& out, bool stats, int sink_keys) {
    AttnFwdParams prm{};
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
    return prm;
}

// One report line for a forward case: `with_h` is the statistics entry with every slot set, `plain_h` the
// plain entry with every slot set, `without_h` the plain entry with none. True when everything agrees.
inline bool report_forward(const char* name, const AttnReference& r, const FwdOutputs& with_h,
                           const FwdOutputs& plain_h, const FwdOutputs& without_h, int sink_keys) {
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
    // O goes through bf16 P and a bf16 store; LSE and the statistics are f32 all the way.
    const bool ok = err_o < 2e-2 && err_lse < 1e-5 && stats_ok && same;
    std::printf("%-38s %-4s err O %.2e  LSE %.2e", name, ok ? "ok" : "FAIL", err_o, err_lse);
    for (int st = 0; st < kOnlineStats; ++st) std::printf("  %s %.2e", row_stat_name(st), err_stat[st]);
    std::printf("  (sink@%d)  plain entry agrees: %s\n", sink_keys, same ? "yes" : "no");
    return ok;
}

// One report line for a backward case: dQ from the f32 accumulator, dK and dV after the GQA reduce (bf16).
inline bool report_backward(const char* name, const AttnReference& r, const std::vector<float>& dq_acc,
                            const std::vector<__nv_bfloat16>& dk, const std::vector<__nv_bfloat16>& dv) {
    const double e_dq = normwise_err(r.dq, [&](size_t i) { return (double)dq_acc[i]; });
    const double e_dk = normwise_err(r.dk, [&](size_t i) { return (double)bf16_to_f32(dk[i]); });
    const double e_dv = normwise_err(r.dv, [&](size_t i) { return (double)bf16_to_f32(dv[i]); });
    // P and dS enter the tensor-core products as bf16; dK/dV are stored as bf16.
    const bool ok = e_dq < 1e-2 && e_dk < 1e-2 && e_dv < 1e-2;
    std::printf("%-38s %-4s normwise err dQ %.2e  dK %.2e  dV %.2e\n", name, ok ? "ok" : "FAIL", e_dq, e_dk, e_dv);
    return ok;
}
