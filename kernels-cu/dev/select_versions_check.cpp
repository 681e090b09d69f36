// Executes the losing histogram versions of dev/select_versions.cu (match, unroll, match_unroll, keys, lean)
// with the shipped select_scan / select_mask of cuda/select.cu on the CPU, compiled unchanged against the emu/
// shims, as the engine ran them (emu/select_ref.h's run_radix8), and compares their masks with a host sort:
// multi-tile pools, empty / one-token / invalid-only pools, more pools per tile than the shared histograms
// hold, ties, ±0, ±inf, partial ties, seeded random selection with one and two tails. One line per case; exit 1
// on failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "select_versions.cu"

#include "select_ref.h"

using HistFn = void (*)(const SelectParams, int);
enum class Mask { Plain, Lean, Keys };
struct DevVersion {
    const char* name;
    HistFn fn;  // nullptr: select_hist_keys (two more buffers)
    Mask mask;
};
static const DevVersion kDevVersions[] = {{"match", select_hist_match, Mask::Plain},
                                          {"unroll", select_hist_unroll, Mask::Plain},
                                          {"match_unroll", select_hist_match_unroll, Mask::Plain},
                                          {"keys", nullptr, Mask::Keys},
                                          {"lean", select_hist_lean, Mask::Lean}};

static bool select_case(const char* name, const DevVersion& v, const SelectProblem& p) {
    Radix8 w(p);
    // the keys version's buffers, poisoned (pass 0 must write every word it later reads)
    std::vector<u32> keys_buf(p.n, 0xDEADBEEFu), bits((p.n + 31) / 32, 0xA5A5A5A5u);
    const unsigned tiles = (unsigned)((p.n + kTile - 1) / kTile);
    auto hist = [&](const SelectParams& s, int pass) {
        if (v.fn) v.fn(s, pass);
        else select_hist_keys(s, pass, keys_buf.data(), bits.data());
    };
    auto mask = [&](const SelectParams& s) {
        if (v.mask == Mask::Lean) run_grid(tiles, kThreads, [&] { select_mask_lean(s); });
        else if (v.mask == Mask::Keys) run_grid(3, kThreads, [&] { select_mask_keys(s, keys_buf.data(), bits.data()); });
        else run_grid(3, kThreads, [&] { select_mask(s); });
    };
    run_radix8(p, w, hist, mask);
    return report_select(name, p, wrong_mask_entries(p, w.out0, w.out1), w.flags[1], true, w.index_passes);
}

int main() {
    std::mt19937_64 rng(20261131);
    bool ok = true;
    for (const DevVersion& v : kDevVersions) {
        std::printf("select_hist_%s:\n", v.name);
        auto run = [&](const char* name, const std::vector<int>& lens, bool random, int ntails = 2) {
            ok &= select_case(name, v, make_select_problem(lens, random, rng, Scores::Mixed, ntails));
        };
        run("tails, 1 pool over 3 tiles", {9001}, false);
        run("tails, 9 pools incl. empty / 1 / invalid", {0, 1, 15, 40, 3000, 2, 0, 5100, 77}, false);
        run("random, 6 pools", {4200, 13, 1, 60, 900, 333}, true);
        run("random, 1 tail, 5 pools", {3000, 0, 9000, 17, 5000}, true, 1);
    }
    return ok ? 0 : 1;
}
