// Executes decode_chunk_{f32,bf16}_d{32,64,128} + decode_combine (cuda/decode.cu, compiled unchanged against
// the emu/ shims) on the CPU and compares the decode attention output with an f64 reference over the same
// cache: ragged lengths (1 key, exactly one chunk, chunk + 1, several chunks), GQA groups of 1, 4 and 12
// (12 is split into CTAs of 6 heads), bf16 and f32. Outputs start poisoned. One line per case; exit 1 on
// failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "decode.cu"
#include "harness.h"

#include <algorithm>
#include <cstdio>
#include <random>

alignas(128) unsigned char smem[64 * 1024];

struct Case {
    const char* name;
    int hq, hkv, d;
    bool bf16;
};

template <typename T>
static bool run_case(const Case& cs, std::mt19937_64& rng,
                     void (*chunk)(float*, float*, float*, const T*, const T*, const T*, const int*, const int*, int,
                                   int, int, int, float),
                     void (*combine)(T*, const float*, const float*, const float*, int, int, int)) {
    const std::vector<int> lens = {1, 256, 257, 700, 77};
    const int batch = (int)lens.size(), slots = batch + 1, max_len = 768, d = cs.d, hq = cs.hq, hkv = cs.hkv;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<T> kc((size_t)slots * max_len * hkv * d), vc(kc.size()), q((size_t)batch * hq * d);
    for (auto& x : kc) x = from_f32<T>(normal(rng));
    for (auto& x : vc) x = from_f32<T>(normal(rng));
    for (auto& x : q) x = from_f32<T>(normal(rng));
    std::vector<int> slot(batch);
    for (int b = 0; b < batch; ++b) slot[b] = (b + 2) % slots;  // requests do not sit in slot order

    const int group = hq / hkv;
    int heads = std::min(group, kMaxGroup);
    while (group % heads) --heads;
    const int max_keys = *std::max_element(lens.begin(), lens.end());
    const int chunks = (max_keys + kChunk - 1) / kChunk;
    std::vector<float> ws_o((size_t)batch * hq * chunks * d, NAN), ws_m((size_t)batch * hq * chunks, NAN),
        ws_l(ws_m.size(), NAN);
    std::vector<T> o((size_t)batch * hq * d, from_f32<T>(NAN));
    const float scale = 1.0f / std::sqrt((float)d);
    run_grid(dim3{(unsigned)batch, (unsigned)(hq / heads), (unsigned)chunks}, kDecodeThreads, [&] {
        chunk(ws_o.data(), ws_m.data(), ws_l.data(), q.data(), kc.data(), vc.data(), slot.data(), lens.data(), hq, hkv,
              heads, max_len, scale);
    });
    run_grid(dim3{(unsigned)batch, (unsigned)hq, 1}, kDecodeThreads,
             [&] { combine(o.data(), ws_o.data(), ws_m.data(), ws_l.data(), hq, d, chunks); });

    double err = 0;
    const size_t row = (size_t)hkv * d;
    for (int b = 0; b < batch; ++b)
        for (int h = 0; h < hq; ++h) {
            const int kvh = h / group;
            std::vector<double> s(lens[b]);
            for (int j = 0; j < lens[b]; ++j) {
                double acc = 0;
                for (int c = 0; c < d; ++c)
                    acc += (double)to_f32(q[((size_t)b * hq + h) * d + c]) *
                           to_f32(kc[((size_t)slot[b] * max_len + j) * row + (size_t)kvh * d + c]);
                s[j] = acc / std::sqrt((double)d);
            }
            const double m = *std::max_element(s.begin(), s.end());
            double l = 0;
            for (double& x : s) l += (x = std::exp(x - m));
            for (int c = 0; c < d; ++c) {
                double acc = 0;
                for (int j = 0; j < lens[b]; ++j)
                    acc += s[j] / l * to_f32(vc[((size_t)slot[b] * max_len + j) * row + (size_t)kvh * d + c]);
                const double got = to_f32(o[((size_t)b * hq + h) * d + c]);
                err = std::max(err, std::isnan(got) ? INFINITY : std::abs(got - acc) / (1.0 + std::abs(acc)));
            }
        }
    const double tol = cs.bf16 ? 1e-2 : 1e-5;
    const bool ok = err < tol;
    std::printf("%-30s %-4s max rel err %.2e (tol %.0e, %d heads per CTA, %d chunks)\n", cs.name, ok ? "ok" : "FAIL", err,
                tol, heads, chunks);
    return ok;
}

int main() {
    std::mt19937_64 rng(20261129);
    bool ok = true;
    ok &= run_case<__nv_bfloat16>({"bf16 d128 hq 32 hkv 8", 32, 8, 128, true}, rng, decode_chunk_bf16_d128,
                                  decode_combine_bf16);
    ok &= run_case<float>({"f32 d64 hq 8 hkv 2", 8, 2, 64, false}, rng, decode_chunk_f32_d64, decode_combine_f32);
    ok &= run_case<__nv_bfloat16>({"bf16 d32 hq 12 hkv 1", 12, 1, 32, true}, rng, decode_chunk_bf16_d32,
                                  decode_combine_bf16);
    ok &= run_case<float>({"f32 d128 hq 4 hkv 4", 4, 4, 128, false}, rng, decode_chunk_f32_d128, decode_combine_f32);
    return ok ? 0 : 1;
}
