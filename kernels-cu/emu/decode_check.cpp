// Executes kv_write + kv_copy_blocks + decode_chunk_{f32,bf16}_d{32,64,128} + decode_combine
// (cuda/decode.cu, compiled unchanged against the emu/ shims) on the CPU and compares the decode attention
// output with an f64 reference over the logical (unpaged) K/V: ragged lengths (1 key, exactly one chunk,
// chunk + 1, several chunks), GQA groups of 1, 4 and 12 (12 is split into CTAs of 6 heads), bf16 and f32,
// block sizes 16, 7, 1 and one block per request (the contiguous layout), blocks scattered over the pool,
// the first request's last block moved by a block copy, a write row outside the pool raising the error
// flag, and a padding row (−1) writing nothing (decode_chunk with start = null, slot0 = 0, slots = chunks).
// Then shared-prefix (cascade) decode: decode_prefix_{f32,bf16}_d{32,64,128} + decode_chunk from start[r] into slots
// after the prefix slots + decode_combine over all slots, against full attention over each row's [0, len): groups of
// 1, 2, 3, 8 and 16 members mixed with singletons of prefix 0, prefixes of 0 (a group of 16 too), one block, non-multiples of the block,
// exactly kPrefixChunk and several prefix chunks, member suffixes of 1 key to 3 chunks, GQA groups of 1, 4 and 8 query
// heads per KV head (up to kMaxPrefixRows = 64 query rows per prefix CTA), block sizes 16 and 7, shuffled pools,
// members' own copies of a partial prefix block holding NaN at the prefix positions, workspaces, outputs and shared
// memory poisoned with NaN. One line per case; exit 1 on failure. Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "decode.cu"
#include "harness.h"

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <random>

alignas(128) unsigned char smem[227 * 1024];  // the H100/H200 opt-in limit per CTA

struct Case {
    const char* name;
    int hq, hkv, d;
    bool bf16;
    int block_size;  // 0: one block of max_len per request
};

// Largest error of o [batch, hq, d] against f64 attention of row b over logical keys lk / lv
// [batch, max_len, hkv, d] at positions 0..lens[b] (NaN counts as infinite).
template <typename T>
static double max_err_vs_reference(const std::vector<T>& o, const std::vector<T>& q, const std::vector<T>& lk,
                                   const std::vector<T>& lv, const std::vector<int>& lens, int max_len, int hq,
                                   int hkv, int d) {
    const int batch = (int)lens.size(), group = hq / hkv;
    const size_t row = (size_t)hkv * d;
    double err_max = 0;
    for (int b = 0; b < batch; ++b)
        for (int h = 0; h < hq; ++h) {
            const int kvh = h / group;
            std::vector<double> s(lens[b]);
            for (int j = 0; j < lens[b]; ++j) {
                double acc = 0;
                for (int c = 0; c < d; ++c)
                    acc += (double)to_f32(q[((size_t)b * hq + h) * d + c]) *
                           to_f32(lk[((size_t)b * max_len + j) * row + (size_t)kvh * d + c]);
                s[j] = acc / std::sqrt((double)d);
            }
            const double m = *std::max_element(s.begin(), s.end());
            double l = 0;
            for (double& x : s) l += (x = std::exp(x - m));
            for (int c = 0; c < d; ++c) {
                double acc = 0;
                for (int j = 0; j < lens[b]; ++j)
                    acc += s[j] / l * to_f32(lv[((size_t)b * max_len + j) * row + (size_t)kvh * d + c]);
                const double got = to_f32(o[((size_t)b * hq + h) * d + c]);
                err_max = std::max(err_max, std::isnan(got) ? INFINITY : std::abs(got - acc) / (1.0 + std::abs(acc)));
            }
        }
    return err_max;
}

template <typename T>
static bool run_case(const Case& cs, std::mt19937_64& rng,
                     void (*write)(T*, T*, const T*, const T*, const int*, int, int, int, int, int*),
                     void (*copy)(T*, const int*, const int*, int, long long),
                     void (*chunk)(float*, float*, float*, const T*, const T*, const T*, const int*, const int*,
                                   const int*, int, int, int, int, int, float, int, int),
                     void (*combine)(T*, const float*, const float*, const float*, int, int, int)) {
    const std::vector<int> lens = {700, 1, 256, 257, 77};
    const int batch = (int)lens.size(), max_len = 768, d = cs.d, hq = cs.hq, hkv = cs.hkv;
    const int bs = cs.block_size ? cs.block_size : max_len, width = (max_len + bs - 1) / bs;
    const int blocks = batch * width + 1;  // the last spare block receives the copy
    const size_t row = (size_t)hkv * d;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    // logical K/V per request and position, written into the pool through kv_write
    std::vector<T> lk((size_t)batch * max_len * row), lv(lk.size()), q((size_t)batch * hq * d);
    for (auto& x : lk) x = from_f32<T>(normal(rng));
    for (auto& x : lv) x = from_f32<T>(normal(rng));
    for (auto& x : q) x = from_f32<T>(normal(rng));
    std::vector<T> kc((size_t)blocks * bs * row, from_f32<T>(NAN)), vc(kc.size(), from_f32<T>(NAN));
    // block tables: a shuffled pool, so neighbours in a table are far apart in memory
    std::vector<int> perm(blocks);
    for (int i = 0; i < blocks; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int> table((size_t)batch * width);
    for (size_t i = 0; i < table.size(); ++i) table[i] = perm[i];
    const int spare = perm[blocks - 1];
    std::vector<int> dst;
    std::vector<T> wk, wv;
    for (int b = 0; b < batch; ++b)
        for (int j = 0; j < lens[b]; ++j) {
            dst.push_back(table[(size_t)b * width + j / bs] * bs + j % bs);
            const size_t src = ((size_t)b * max_len + j) * row;
            wk.insert(wk.end(), lk.begin() + src, lk.begin() + src + row);
            wv.insert(wv.end(), lv.begin() + src, lv.begin() + src + row);
        }
    // a padding row (−1) writes nothing and raises nothing: written alone first, the pool must stay untouched
    int pad_err = 0;
    const std::vector<int> pad = {-1};
    const std::vector<T> pad_rows(row, from_f32<T>(0.0f));
    const std::vector<T> kc_before = kc;
    run_grid(dim3{(unsigned)((row + 127) / 128), 1, 1}, 128, [&] {
        write(kc.data(), vc.data(), pad_rows.data(), pad_rows.data(), pad.data(), 1, hkv, d, blocks * bs, &pad_err);
    });
    bool pad_ok = pad_err == 0;
    for (size_t e = 0; e < kc.size(); ++e)
        pad_ok &= std::isnan(to_f32(kc[e])) && std::isnan(to_f32(kc_before[e]));
    dst.push_back(blocks * bs);  // outside the pool: flagged and skipped
    wk.insert(wk.end(), row, from_f32<T>(0.0f));
    wv.insert(wv.end(), row, from_f32<T>(0.0f));
    int err = 0;
    const int n = (int)dst.size();
    run_grid(dim3{(unsigned)((n * row + 127) / 128), 1, 1}, 128, [&] {
        write(kc.data(), vc.data(), wk.data(), wv.data(), dst.data(), n, hkv, d, blocks * bs, &err);
    });
    // request 0 continues in a copy of its last block (copy-on-write of a shared prompt block)
    const int last = (lens[0] - 1) / bs;
    const int csrc = table[last], cdst = spare;
    const long long block_elems = (long long)bs * row;
    for (T* cache : {kc.data(), vc.data()})
        run_grid(dim3{(unsigned)((block_elems + 127) / 128), 1, 1}, 128,
                 [&] { copy(cache, &csrc, &cdst, 1, block_elems); });
    for (size_t e = (size_t)csrc * block_elems; e < (size_t)(csrc + 1) * block_elems; ++e)  // the old block is stale
        kc[e] = vc[e] = from_f32<T>(NAN);
    table[last] = spare;

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
        chunk(ws_o.data(), ws_m.data(), ws_l.data(), q.data(), kc.data(), vc.data(), table.data(), lens.data(), nullptr,
              hq, hkv, heads, bs, width, scale, 0, chunks);
    });
    run_grid(dim3{(unsigned)batch, (unsigned)hq, 1}, kDecodeThreads,
             [&] { combine(o.data(), ws_o.data(), ws_m.data(), ws_l.data(), hq, d, chunks); });

    const double err_max = max_err_vs_reference(o, q, lk, lv, lens, max_len, hq, hkv, d);
    const double tol = cs.bf16 ? 1e-2 : 1e-5;
    const bool ok = err_max < tol && err == 1 && pad_ok;
    std::printf(
        "%-34s %-4s max rel err %.2e (tol %.0e, %d heads per CTA, %d chunks, block %d, error flag %d, padding row %s)\n",
        cs.name, ok ? "ok" : "FAIL", err_max, tol, heads, chunks, bs, err, pad_ok ? "untouched" : "WROTE");
    return ok;
}


// Shared-prefix (cascade) decode: groups of rows sharing a prompt's first `prefix` keys (the members' block-table rows
// point at the leader's full prefix blocks; a member's own copy of a partial prefix block holds NaN at the prefix
// positions, so its suffix pass must start at start[r]). decode_prefix writes slots [0, prefix_chunks), decode_chunk
// (start, slot0 = prefix_chunks) the rest, decode_combine merges all; o against full attention over [0, len[r]).
struct Group {
    int members, prefix;
};
struct PrefixCase {
    const char* name;
    int hq, hkv, d;
    bool bf16;
    int block_size;
    std::vector<Group> groups;
};

template <typename T>
static bool run_prefix_case(const PrefixCase& cs, std::mt19937_64& rng,
                            void (*prefix)(float*, float*, float*, const T*, const T*, const T*, const int*,
                                           const int*, const int*, int, int, int, int, int, float, int),
                            void (*chunk)(float*, float*, float*, const T*, const T*, const T*, const int*,
                                          const int*, const int*, int, int, int, int, int, float, int, int),
                            void (*combine)(T*, const float*, const float*, const float*, int, int, int)) {
    const int d = cs.d, hq = cs.hq, hkv = cs.hkv, bs = cs.block_size, group = hq / hkv;
    int heads = std::min(group, kMaxGroup);  // as the launcher picks group_heads
    while (group % heads) --heads;
    // member suffixes (own keys after the prefix, the new token included): 1 key to several chunks
    const std::vector<int> suffixes = {1, 300, 37, 600, 256, 5, 129, 257};
    std::vector<int> leader, lens, prefix_len, group_rows, start;
    int k = 0, max_rows = 0;
    for (const Group& g : cs.groups) {
        const int first = (int)leader.size();
        max_rows = std::max(max_rows, g.members * heads);
        for (int m = 0; m < g.members; ++m) {
            leader.push_back(first);
            lens.push_back(g.prefix + suffixes[k++ % suffixes.size()]);
            prefix_len.push_back(g.prefix);
            group_rows.push_back(m == 0 ? g.members : 0);
            start.push_back(g.prefix);
        }
    }
    const int batch = (int)leader.size(), max_len = *std::max_element(lens.begin(), lens.end());
    const int width = (max_len + bs - 1) / bs, blocks = batch * width;
    const size_t row = (size_t)hkv * d;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<T> lk((size_t)batch * max_len * row), lv(lk.size()), q((size_t)batch * hq * d);
    for (auto& x : lk) x = from_f32<T>(normal(rng));
    for (auto& x : lv) x = from_f32<T>(normal(rng));
    for (auto& x : q) x = from_f32<T>(normal(rng));
    for (int r = 0; r < batch; ++r)  // a member's prefix is its leader's
        for (size_t e = 0; e < (size_t)prefix_len[r] * row; ++e) {
            lk[(size_t)r * max_len * row + e] = lk[(size_t)leader[r] * max_len * row + e];
            lv[(size_t)r * max_len * row + e] = lv[(size_t)leader[r] * max_len * row + e];
        }
    std::vector<T> kc((size_t)blocks * bs * row, from_f32<T>(NAN)), vc(kc.size(), from_f32<T>(NAN));
    std::vector<int> perm(blocks);
    for (int i = 0; i < blocks; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int> table((size_t)batch * width);
    for (size_t i = 0; i < table.size(); ++i) table[i] = perm[i];
    for (int r = 0; r < batch; ++r) {
        const int L = leader[r], P = prefix_len[r];
        for (int t = 0; r != L && t < P / bs; ++t) table[(size_t)r * width + t] = table[(size_t)L * width + t];
        for (int j = r == L ? 0 : P; j < lens[r]; ++j) {
            const size_t at = ((size_t)table[(size_t)r * width + j / bs] * bs + j % bs) * row;
            std::copy_n(lk.begin() + ((size_t)r * max_len + j) * row, row, kc.begin() + at);
            std::copy_n(lv.begin() + ((size_t)r * max_len + j) * row, row, vc.begin() + at);
        }
    }
    int max_prefix = 0, max_suffix = 0;
    for (int r = 0; r < batch; ++r) {
        max_prefix = std::max(max_prefix, prefix_len[r]);
        max_suffix = std::max(max_suffix, lens[r] - start[r]);
    }
    const int prefix_chunks = (max_prefix + kPrefixChunk - 1) / kPrefixChunk;
    const int suffix_chunks = (max_suffix + kChunk - 1) / kChunk, slots = prefix_chunks + suffix_chunks;
    // the launcher's shared-memory formula must fit the buffer (227 KB, the device's per-CTA limit)
    const size_t prefix_smem = 8 * kPrefixChunk + 2 * (size_t)kPrefixChunk * (d * sizeof(T) + 16) +
                               4 * (size_t)max_rows * (d + kPrefixChunk + 8);
    std::vector<float> ws_o((size_t)batch * hq * slots * d, NAN), ws_m((size_t)batch * hq * slots, NAN),
        ws_l(ws_m.size(), NAN);
    std::vector<T> o((size_t)batch * hq * d, from_f32<T>(NAN));
    const float scale = 1.0f / std::sqrt((float)d);
    bool ok = max_rows <= kMaxPrefixRows && prefix_smem <= sizeof(smem);
    if (ok) {
        std::memset(smem, 0xff, sizeof(smem));  // NaN in every f32 word the kernel reads before writing
        if (prefix_chunks > 0)
            run_grid(dim3{(unsigned)batch, (unsigned)(hq / heads), (unsigned)prefix_chunks}, kDecodeThreads, [&] {
                prefix(ws_o.data(), ws_m.data(), ws_l.data(), q.data(), kc.data(), vc.data(), table.data(),
                       prefix_len.data(), group_rows.data(), hq, hkv, heads, bs, width, scale, slots);
            });
        run_grid(dim3{(unsigned)batch, (unsigned)(hq / heads), (unsigned)suffix_chunks}, kDecodeThreads, [&] {
            chunk(ws_o.data(), ws_m.data(), ws_l.data(), q.data(), kc.data(), vc.data(), table.data(), lens.data(),
                  start.data(), hq, hkv, heads, bs, width, scale, prefix_chunks, slots);
        });
        run_grid(dim3{(unsigned)batch, (unsigned)hq, 1}, kDecodeThreads,
                 [&] { combine(o.data(), ws_o.data(), ws_m.data(), ws_l.data(), hq, d, slots); });
    }

    const double err_max = max_err_vs_reference(o, q, lk, lv, lens, max_len, hq, hkv, d);
    const double tol = cs.bf16 ? 1e-2 : 1e-5;
    ok &= err_max < tol;
    std::printf("%-34s %-4s max rel err %.2e (tol %.0e, %d rows, %d heads per CTA, max %d rows per prefix CTA, "
                "%d prefix + %d suffix chunks, block %d, prefix smem %zu B)\n",
                cs.name, ok ? "ok" : "FAIL", err_max, tol, batch, heads, max_rows, prefix_chunks, suffix_chunks, bs,
                prefix_smem);
    return ok;
}

int main() {
    std::mt19937_64 rng(20261129);
    bool ok = true;
    ok &= run_case<__nv_bfloat16>({"bf16 d128 hq 32 hkv 8, blocks of 16", 32, 8, 128, true, 16}, rng, kv_write_bf16,
                                  kv_copy_blocks_bf16, decode_chunk_bf16_d128, decode_combine_bf16);
    ok &= run_case<float>({"f32 d64 hq 8 hkv 2, blocks of 7", 8, 2, 64, false, 7}, rng, kv_write_f32,
                          kv_copy_blocks_f32, decode_chunk_f32_d64, decode_combine_f32);
    ok &= run_case<__nv_bfloat16>({"bf16 d32 hq 12 hkv 1, blocks of 1", 12, 1, 32, true, 1}, rng, kv_write_bf16,
                                  kv_copy_blocks_bf16, decode_chunk_bf16_d32, decode_combine_bf16);
    ok &= run_case<float>({"f32 d128 hq 4 hkv 4, contiguous", 4, 4, 128, false, 0}, rng, kv_write_f32,
                          kv_copy_blocks_f32, decode_chunk_f32_d128, decode_combine_f32);
    // groups {members, prefix keys}: singletons of prefix 0 and of a real prefix, groups of 2, 3, 8, 16; prefixes of
    // 0, one block, a non-multiple of the block, exactly kPrefixChunk and several prefix chunks
    ok &= run_prefix_case<__nv_bfloat16>({"prefix bf16 d128 hq 32 hkv 8, blocks 16", 32, 8, 128, true, 16,
                                          {{3, 300}, {1, 0}, {16, 16}, {1, 0}, {1, 135}, {2, 0}}},
                                         rng, decode_prefix_bf16_d128, decode_chunk_bf16_d128, decode_combine_bf16);
    ok &= run_prefix_case<float>({"prefix f32 d64 hq 8 hkv 1, blocks 7", 8, 1, 64, false, 7,
                                  {{8, 7}, {1, 0}, {3, 260}, {1, 0}, {1, 128}}},
                                 rng, decode_prefix_f32_d64, decode_chunk_f32_d64, decode_combine_f32);
    ok &= run_prefix_case<__nv_bfloat16>({"prefix bf16 d32 hq 4 hkv 4, blocks 7", 4, 4, 32, true, 7,
                                          {{16, 100}, {3, 0}, {1, 0}, {1, 7}}},
                                         rng, decode_prefix_bf16_d32, decode_chunk_bf16_d32, decode_combine_bf16);
    ok &= run_prefix_case<float>({"prefix f32 d128 hq 16 hkv 2, blocks 16", 16, 2, 128, false, 16,
                                  {{8, 269}, {1, 50}, {3, 128}, {1, 0}}},
                                 rng, decode_prefix_f32_d128, decode_chunk_f32_d128, decode_combine_f32);
    ok &= run_prefix_case<__nv_bfloat16>({"prefix bf16 d64 hq 16 hkv 4, blocks 16", 16, 4, 64, true, 16,
                                          {{16, 257}, {3, 16}, {1, 0}}},
                                         rng, decode_prefix_bf16_d64, decode_chunk_bf16_d64, decode_combine_bf16);
    ok &= run_prefix_case<float>({"prefix f32 d32 hq 8 hkv 8, blocks 7", 8, 8, 32, false, 7,
                                  {{16, 0}, {2, 390}, {1, 0}}},
                                 rng, decode_prefix_f32_d32, decode_chunk_f32_d32, decode_combine_f32);
    return ok ? 0 : 1;
}
