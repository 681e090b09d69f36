// Executes the layer and optimizer kernels on the CPU, compiled unchanged against the emu/ shims, and
// compares each with its f64 formula (the kernel file's header):
//   * rmsnorm (fwd, bwd with per-block dw partials, the fused residual add + fwd);
//   * softmax and log-softmax (fwd, bwd);
//   * rope (both signs, f32 and bf16-rounded frequencies) and the fused q/k norm + rope;
//   * swiglu (fwd, bwd), adamw (three steps with a gradient scale);
//   * soft token weights (pools with invalid NaN scores and an empty pool);
//   * the index kernels (embedding fwd/bwd with an out-of-range id, gather/scatter of the last dim).
// f32 storage, odd sizes, grids smaller than the work. One line per kernel; exit 1 on failure.
// Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "adamw.cu"
#include "index.cu"
#include "rmsnorm.cu"
#include "rope.cu"
#include "softmax.cu"
#include "swiglu.cu"
#include "weights.cu"

#include "harness.h"

#include <algorithm>

unsigned char dw_smem[64 * 1024];

static std::mt19937_64 rng(20261133);
static std::vector<float> randn(size_t n, float sd = 1.0f) { return randn_vec(rng, n, sd); }

// max |got − want| / (1 + |want|), inf on NaN
static double err_of(const std::vector<float>& got, const std::vector<double>& want) {
    double e = 0;
    for (size_t i = 0; i < want.size(); ++i)
        e = std::max(e, std::isnan(got[i]) ? INFINITY : std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i])));
    return e;
}

static bool check_rmsnorm() {
    const int rows = 37, dim = 300, rpb = 5;
    const float eps = 1e-6f;
    auto x = randn(rows * dim), w = randn(dim), dy = randn(rows * dim);
    std::vector<float> out(rows * dim, NAN), rstd(rows, NAN), dx(rows * dim, NAN);
    const int blocks_bwd = (rows + rpb - 1) / rpb;
    std::vector<float> dwp(blocks_bwd * dim, NAN);
    run_grid(8, 128, [&] { rmsnorm_fwd_f32(out.data(), rstd.data(), x.data(), w.data(), rows, dim, eps); });
    run_grid(blocks_bwd, 128, [&] {
        rmsnorm_bwd_f32(dx.data(), dwp.data(), dy.data(), x.data(), w.data(), rstd.data(), rows, dim, rpb);
    });
    std::vector<double> want_out(rows * dim), want_dx(rows * dim), want_dw(dim, 0.0);
    std::vector<float> dw(dim, 0.0f);
    for (int r = 0; r < rows; ++r) {
        double ms = 0, gx = 0;
        for (int c = 0; c < dim; ++c) ms += (double)x[r * dim + c] * x[r * dim + c] / dim;
        const double rs = 1.0 / std::sqrt(ms + eps);
        for (int c = 0; c < dim; ++c) gx += (double)dy[r * dim + c] * w[c] * x[r * dim + c];
        for (int c = 0; c < dim; ++c) {
            want_out[r * dim + c] = x[r * dim + c] * rs * w[c];
            want_dx[r * dim + c] = rs * dy[r * dim + c] * w[c] - x[r * dim + c] * rs * rs * rs * gx / dim;
            want_dw[c] += (double)dy[r * dim + c] * x[r * dim + c] * rs;
        }
    }
    for (int b = 0; b < blocks_bwd; ++b)
        for (int c = 0; c < dim; ++c) dw[c] += dwp[b * dim + c];
    return report("rmsnorm fwd / bwd dx / bwd dw", std::max({err_of(out, want_out), err_of(dx, want_dx), err_of(dw, want_dw)}),
                  1e-5);
}

static bool check_softmax() {
    const int rows = 9, cols = 1001;
    auto x = randn(rows * cols, 3.0f), dy = randn(rows * cols);
    bool ok = true;
    for (int log = 0; log < 2; ++log) {
        std::vector<float> y(rows * cols, NAN), dx(rows * cols, NAN);
        run_grid(4, 128, [&] { softmax_fwd_f32(y.data(), x.data(), rows, cols, log); });
        run_grid(4, 128, [&] { softmax_bwd_f32(dx.data(), dy.data(), y.data(), rows, cols, log); });
        std::vector<double> wy(rows * cols), wdx(rows * cols);
        for (int r = 0; r < rows; ++r) {
            double m = -INFINITY, s = 0, dot = 0, sdy = 0;
            for (int c = 0; c < cols; ++c) m = std::max(m, (double)x[r * cols + c]);
            for (int c = 0; c < cols; ++c) s += std::exp(x[r * cols + c] - m);
            for (int c = 0; c < cols; ++c) {
                const double p = std::exp(x[r * cols + c] - m) / s;
                wy[r * cols + c] = log ? x[r * cols + c] - m - std::log(s) : p;
                dot += dy[r * cols + c] * p;
                sdy += dy[r * cols + c];
            }
            for (int c = 0; c < cols; ++c) {
                const double p = std::exp(x[r * cols + c] - m) / s;
                wdx[r * cols + c] = log ? dy[r * cols + c] - p * sdy : p * (dy[r * cols + c] - dot);
            }
        }
        ok &= report(log ? "log-softmax fwd / bwd" : "softmax fwd / bwd", std::max(err_of(y, wy), err_of(dx, wdx)), 1e-5);
    }
    return ok;
}

// add_rmsnorm_fwd against (x + y) and its RMSNorm in f64.
static bool check_add_rmsnorm() {
    const int rows = 9, dim = 300;
    const float eps = 1e-6f;
    auto x = randn(rows * dim), y = randn(rows * dim), w = randn(dim);
    std::vector<float> sum(rows * dim, NAN), out(rows * dim, NAN);
    run_grid(4, 128, [&] { add_rmsnorm_fwd_f32(sum.data(), out.data(), x.data(), y.data(), w.data(), rows, dim, eps); });
    std::vector<double> want_s(rows * dim), want_o(rows * dim);
    for (int r = 0; r < rows; ++r) {
        double ss = 0;
        for (int c = 0; c < dim; ++c) {
            const double s = (double)x[r * dim + c] + y[r * dim + c];
            want_s[r * dim + c] = s;
            ss += s * s;
        }
        const double rs = 1.0 / std::sqrt(ss / dim + eps);
        for (int c = 0; c < dim; ++c) want_o[r * dim + c] = want_s[r * dim + c] * rs * w[c];
    }
    return report("add_rmsnorm fwd", std::max(err_of(sum, want_s), err_of(out, want_o)), 1e-5);
}

static bool check_rope() {
    const int tokens = 7, heads = 3, hd = 64;
    const float theta = 1e6f;
    auto x = randn(tokens * heads * hd);
    std::vector<int> pos = {0, 1, 2, 50, 299, 3, 17};
    bool ok = true;
    for (int bf = 0; bf < 2; ++bf)
        for (float sign : {1.0f, -1.0f}) {
            std::vector<float> out(x.size(), NAN);
            run_grid(2, 64, [&] { rope_f32(out.data(), x.data(), pos.data(), tokens, heads, hd, theta, sign, bf); });
            std::vector<double> want(x.size());
            for (int t = 0; t < tokens; ++t)
                for (int h = 0; h < heads; ++h)
                    for (int i = 0; i < hd / 2; ++i) {
                        float inv = 1.0f / std::pow(theta, (float)(2 * i) / (float)hd);
                        if (bf) inv = bf16_to_f32(__float2bfloat16_rn(inv));
                        const double a = (double)pos[t] * inv * sign;
                        const size_t base = ((size_t)t * heads + h) * hd;
                        const double x1 = x[base + i], x2 = x[base + i + hd / 2];
                        want[base + i] = x1 * std::cos(a) - x2 * std::sin(a);
                        want[base + i + hd / 2] = x2 * std::cos(a) + x1 * std::sin(a);
                    }
            ok &= report(bf ? (sign > 0 ? "rope bf16 freqs" : "rope bf16 freqs, backward")
                            : (sign > 0 ? "rope" : "rope backward"),
                         err_of(out, want), 1e-4);
        }
    return ok;
}

// qk_norm_rope against rmsnorm then rope in f64 (its rounding to the storage type is a no-op in f32): q and
// k rows in one launch, odd head counts, a head_dim that is not a multiple of 32, a grid of several blocks.
static bool check_qk_norm_rope() {
    bool ok = true;
    for (int hd : {10, 128}) {
        const int tokens = 5, hq = 3, hk = 2;
        const float theta = 1e6f, eps = 1e-6f;
        auto q = randn(tokens * hq * hd), k = randn(tokens * hk * hd), qw = randn(hd), kw = randn(hd);
        std::vector<int> pos = {0, 1, 299, 3, 4000};
        std::vector<float> qo(q.size(), NAN), ko(k.size(), NAN);
        const int blocks = (tokens * (hq + hk) + 7) / 8;
        run_grid(blocks, 256, [&] {
            qk_norm_rope_f32(qo.data(), ko.data(), q.data(), k.data(), qw.data(), kw.data(), pos.data(), tokens, hq, hk,
                             hd, eps, theta, hd == 128);
        });
        auto want_of = [&](const std::vector<float>& x, const std::vector<float>& w, int heads) {
            std::vector<double> want(x.size());
            for (int t = 0; t < tokens; ++t)
                for (int h = 0; h < heads; ++h) {
                    const size_t base = ((size_t)t * heads + h) * hd;
                    double ss = 0;
                    for (int c = 0; c < hd; ++c) ss += (double)x[base + c] * x[base + c];
                    const double rs = 1.0 / std::sqrt(ss / hd + eps);
                    for (int i = 0; i < hd / 2; ++i) {
                        float inv = 1.0f / std::pow(theta, (float)(2 * i) / (float)hd);
                        if (hd == 128) inv = bf16_to_f32(__float2bfloat16_rn(inv));
                        const double a = (double)pos[t] * inv;
                        const double x1 = x[base + i] * rs * w[i], x2 = x[base + i + hd / 2] * rs * w[i + hd / 2];
                        want[base + i] = x1 * std::cos(a) - x2 * std::sin(a);
                        want[base + i + hd / 2] = x2 * std::cos(a) + x1 * std::sin(a);
                    }
                }
            return want;
        };
        const double e = std::max(err_of(qo, want_of(q, qw, hq)), err_of(ko, want_of(k, kw, hk)));
        ok &= report(hd == 128 ? "qk_norm_rope d 128, bf16 freqs" : "qk_norm_rope d 10", e, 1e-4);
    }
    return ok;
}

static bool check_swiglu() {
    const long long n = 1003;
    auto g = randn(n, 3.0f), u = randn(n), d = randn(n);
    std::vector<float> out(n, NAN), dg(n, NAN), du(n, NAN);
    run_grid(2, 128, [&] { swiglu_fwd_f32(out.data(), g.data(), u.data(), n); });
    run_grid(2, 128, [&] { swiglu_bwd_f32(dg.data(), du.data(), d.data(), g.data(), u.data(), n); });
    std::vector<double> wo(n), wg(n), wu(n);
    for (long long i = 0; i < n; ++i) {
        const double s = 1.0 / (1.0 + std::exp(-(double)g[i]));
        wo[i] = g[i] * s * u[i];
        wg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        wu[i] = d[i] * g[i] * s;
    }
    return report("swiglu fwd / bwd", std::max({err_of(out, wo), err_of(dg, wg), err_of(du, wu)}), 1e-5);
}

static bool check_adamw() {
    const long long n = 777;
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    auto p = randn(n), g = randn(n);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    std::vector<double> wp(p.begin(), p.end()), wm(n, 0.0), wv(n, 0.0);
    for (int t = 1; t <= 3; ++t) {
        const float bc1 = 1.0f - std::pow(b1, (float)t), bc2 = 1.0f - std::pow(b2, (float)t);
        run_grid(2, 128, [&] { adamw_f32(p.data(), m.data(), v.data(), g.data(), &gs, n, lr, b1, b2, eps, wd, bc1, bc2); });
        for (long long i = 0; i < n; ++i) {
            const double gi = (double)g[i] * gs;
            wp[i] -= lr * wd * wp[i];
            wm[i] = b1 * wm[i] + (1 - b1) * gi;
            wv[i] = b2 * wv[i] + (1 - b2) * gi * gi;
            wp[i] -= (lr / bc1) * wm[i] / (std::sqrt(wv[i]) / std::sqrt((double)bc2) + eps);
        }
    }
    return report("adamw x3 (grad scale 0.5)", std::max({err_of(p, wp), err_of(m, wm), err_of(v, wv)}), 1e-5);
}

// The bf16-parameter update from a bf16 gradient is the one from that gradient widened to f32, bit for bit.
static bool check_adamw_bf16_grad() {
    const long long n = 555;
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, gs = 0.5f, bc1 = 0.1f, bc2 = 0.001f;
    auto p0 = randn(n), gf = randn(n);
    std::vector<__nv_bfloat16> gh(n), w_a(n), w_b(n);
    for (long long i = 0; i < n; ++i) {
        gh[i] = __float2bfloat16_rn(gf[i]);
        gf[i] = bf16_to_f32(gh[i]);
    }
    std::vector<float> pa = p0, pb = p0, ma(n, 0.1f), mb(n, 0.1f), va(n, 0.2f), vb(n, 0.2f);
    run_grid(2, 128, [&] { adamw_bf16(pa.data(), w_a.data(), ma.data(), va.data(), gf.data(), &gs, n, lr, b1, b2, eps, wd, bc1, bc2); });
    run_grid(2, 128, [&] { adamw_bf16_gbf16(pb.data(), w_b.data(), mb.data(), vb.data(), gh.data(), &gs, n, lr, b1, b2, eps, wd, bc1, bc2); });
    long long off = 0;
    for (long long i = 0; i < n; ++i)
        off += pa[i] != pb[i] || ma[i] != mb[i] || va[i] != vb[i] || w_a[i].bits != w_b[i].bits;
    return report("adamw bf16 gradient = widened (elements off)", (double)off, 0.5);
}

static bool check_soft_weights() {
    const std::vector<int> cu = {0, 5, 5, 300, 301, 1000};
    const int np = (int)cu.size() - 1, n = cu.back();
    auto s = randn(n);
    std::vector<float> valid(n, 1.0f);
    for (int i = 0; i < n; i += 7) {
        valid[i] = 0.0f;
        s[i] = NAN;  // an invalid token's score must not reach its pool's moments
    }
    const float dir = -1.3f, temp = 0.7f, fl = 0.1f;
    std::vector<float> w(n, NAN);
    run_grid(2, 128, [&] { soft_weights(w.data(), s.data(), valid.data(), cu.data(), np, dir, 1.0f / temp, fl); });
    std::vector<double> want(n, 0.0);
    for (int p = 0; p < np; ++p) {
        double cnt = 0, sum = 0, sq = 0;
        for (int i = cu[p]; i < cu[p + 1]; ++i)
            if (valid[i] != 0.0f) cnt += 1, sum += s[i];
        const double mean = cnt > 0 ? sum / cnt : 0.0;
        for (int i = cu[p]; i < cu[p + 1]; ++i)
            if (valid[i] != 0.0f) sq += (s[i] - mean) * (s[i] - mean);
        const double inv_std = 1.0 / (std::sqrt(cnt > 0 ? sq / cnt : 0.0) + 1e-6);
        for (int i = cu[p]; i < cu[p + 1]; ++i)
            if (valid[i] != 0.0f) want[i] = fl + (1 - fl) / (1 + std::exp(-dir * (s[i] - mean) * inv_std / temp));
    }
    return report("soft_weights (NaN scores masked)", err_of(w, want), 1e-5);
}

static bool check_index() {
    const long long vocab = 50, dim = 33, n_ids = 11;
    auto table = randn(vocab * dim), dout = randn(n_ids * dim);
    std::vector<int> ids = {3, 0, 49, 3, 7, 50, 12, 3, -1, 0, 48};  // two out of range
    std::vector<float> out(n_ids * dim, NAN), dtable(vocab * dim, 0.0f);
    int err = 0;
    run_grid(3, 64, [&] { embedding_fwd_f32(out.data(), table.data(), ids.data(), n_ids, dim, vocab, &err); });
    run_grid(3, 64, [&] { embedding_bwd_f32(dtable.data(), dout.data(), ids.data(), n_ids, dim, vocab); });
    std::vector<double> wout(n_ids * dim, 0.0), wdt(vocab * dim, 0.0);
    for (long long i = 0; i < n_ids; ++i)
        if (ids[i] >= 0 && ids[i] < vocab)
            for (long long c = 0; c < dim; ++c) {
                wout[i * dim + c] = table[ids[i] * dim + c];
                wdt[ids[i] * dim + c] += dout[i * dim + c];
            }
    bool ok = report("embedding fwd / bwd (bad ids flagged)", std::max(err_of(out, wout), err_of(dtable, wdt)), 1e-6) && err == 1;
    // gather / scatter along the last dim
    const int rows = 6, cols = 9;
    auto x = randn(rows * cols), dg = randn(rows);
    std::vector<int> idx = {0, 8, 4, 4, 1, 7};
    std::vector<float> gathered(rows, NAN), dx(rows * cols, 0.0f);
    int err2 = 0;
    run_grid(1, 32, [&] { gather_last_f32(gathered.data(), x.data(), idx.data(), rows, cols, &err2); });
    run_grid(1, 32, [&] { scatter_last_f32(dx.data(), dg.data(), idx.data(), rows, cols); });
    std::vector<double> wg(rows), wdx(rows * cols, 0.0);
    for (int r = 0; r < rows; ++r) {
        wg[r] = x[r * cols + idx[r]];
        wdx[r * cols + idx[r]] = dg[r];
    }
    ok &= report("gather_last / scatter_last", std::max(err_of(gathered, wg), err_of(dx, wdx)), 1e-6) && err2 == 0;
    return ok;
}

int main() {
    bool ok = true;
    ok &= check_rmsnorm();
    ok &= check_softmax();
    ok &= check_add_rmsnorm();
    ok &= check_rope();
    ok &= check_qk_norm_rope();
    ok &= check_swiglu();
    ok &= check_adamw();
    ok &= check_adamw_bf16_grad();
    ok &= check_soft_weights();
    ok &= check_index();
    return ok ? 0 : 1;
}
