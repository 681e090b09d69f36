// Executes the strided elementwise and reduction kernels (cuda/elementwise.cu, cuda/reduce.cu, compiled
// unchanged against the emu/ shims) against host formulas: broadcast add/sub/mul over a 3-D shape with
// size-1 and stride-0 dims, a strided copy (a transpose), split_last's parts and their concatenation, casts both ways, fill/scale/axpy, reduce_sum over
// an inner and an outer axis with a scale, the clipping pipeline (sumsq partials → sum → coefficient →
// scale), and the counter-based normal generator's moments. One line per kernel; exit 1 on failure.
// Built and run by kernels-cu/tests/emulated_kernels.rs.
#include "elementwise.cu"
#include "reduce.cu"

#include "harness.h"

#include <algorithm>

static std::mt19937_64 rng(20261134);
static std::vector<float> randn(size_t n, float sd = 1.0f) { return randn_vec(rng, n, sd); }

static double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
    double e = 0;
    for (size_t i = 0; i < b.size(); ++i) e = std::max(e, std::isnan(a[i]) ? INFINITY : std::abs(a[i] - b[i]));
    return e;
}

int main() {
    bool ok = true;
    // broadcast: out [4, 5, 6] = a [4, 1, 6] op b [5, 1] (b broadcast over dims 0 and 2)
    {
        const int D0 = 4, D1 = 5, D2 = 6, n = D0 * D1 * D2;
        auto a = randn(D0 * D2), b = randn(D1);
        BcastGeo g{3, {D0, D1, D2, 1, 1, 1}, {D2, 0, 1, 0, 0, 0}, {0, 1, 0, 0, 0, 0}};
        double err = 0;
        for (int op = 0; op < 3; ++op) {
            std::vector<float> out(n, NAN);
            run_grid(2, 64, [&] {
                if (op == 0) bcast_add_f32(out.data(), a.data(), b.data(), n, g);
                if (op == 1) bcast_sub_f32(out.data(), a.data(), b.data(), n, g);
                if (op == 2) bcast_mul_f32(out.data(), a.data(), b.data(), n, g);
            });
            std::vector<double> want(n);
            for (int i = 0; i < D0; ++i)
                for (int j = 0; j < D1; ++j)
                    for (int k = 0; k < D2; ++k) {
                        const double x = a[i * D2 + k], y = b[j];
                        want[(i * D1 + j) * D2 + k] = op == 0 ? x + y : op == 1 ? x - y : x * y;
                    }
            err = std::max(err, max_abs_diff(out, want));
        }
        ok &= report("bcast add / sub / mul", err, 1e-6);
    }
    // strided copy: out [7, 3] = transpose of x [3, 7]
    {
        auto x = randn(21);
        CopyGeo g{2, {7, 3, 1, 1, 1, 1}, {1, 7, 0, 0, 0, 0}};
        std::vector<float> out(21, NAN);
        run_grid(1, 32, [&] { copy_strided_f32(out.data(), x.data(), 21, g); });
        std::vector<double> want(21);
        for (int i = 0; i < 7; ++i)
            for (int j = 0; j < 3; ++j) want[i * 3 + j] = x[j * 7 + i];
        ok &= report("copy_strided (transpose)", max_abs_diff(out, want), 1e-12);
    }
    // split_last on a GPU: each part [3, w] of x [3, 10] by copy_strided from a shifted base pointer, and
    // the parts placed back into their columns by place_cols (the concatenation its backward makes)
    {
        const int R = 3, C = 10, W[3] = {3, 5, 2};
        auto x = randn(R * C);
        std::vector<float> back(R * C, NAN);
        double e = 0;
        for (int j = 0, off = 0; j < 3; off += W[j], ++j) {
            CopyGeo g{2, {R, W[j], 1, 1, 1, 1}, {C, 1, 0, 0, 0, 0}};
            std::vector<float> part(R * W[j], NAN);
            run_grid(1, 32, [&] { copy_strided_f32(part.data(), x.data() + off, R * W[j], g); });
            for (int r = 0; r < R; ++r)
                for (int c = 0; c < W[j]; ++c) e = std::max(e, (double)std::abs(part[r * W[j] + c] - x[r * C + off + c]));
            run_grid(2, 32, [&] { place_cols_f32(back.data(), part.data(), R, W[j], C, off); });
        }
        for (int i = 0; i < R * C; ++i) e = std::max(e, std::isnan(back[i]) ? INFINITY : (double)std::abs(back[i] - x[i]));
        ok &= report("split_last parts and place_cols", e, 1e-12);
    }
    // casts, fill, scale, axpy
    {
        const long long n = 1001;
        auto x = randn(n);
        std::vector<__nv_bfloat16> h(n);
        std::vector<float> back(n, NAN), filled(n, NAN), scaled(n, NAN), y(n, 1.0f);
        run_grid(2, 128, [&] { cast_f32_to_bf16(h.data(), x.data(), n); });
        run_grid(2, 128, [&] { cast_bf16_to_f32(back.data(), h.data(), n); });
        run_grid(2, 128, [&] { fill_f32(filled.data(), 2.5f, n); });
        run_grid(2, 128, [&] { scale_f32(scaled.data(), x.data(), -3.0f, n); });
        run_grid(2, 128, [&] { axpy_f32(y.data(), x.data(), 0.5f, n); });
        double e = 0;
        for (long long i = 0; i < n; ++i) {
            e = std::max(e, (double)std::abs(back[i] - bf16_to_f32(__nv_bfloat16{f32_to_bf16_bits(x[i])})));
            e = std::max(e, (double)std::abs(filled[i] - 2.5f));
            e = std::max(e, std::abs(scaled[i] + 3.0 * x[i]));
            e = std::max(e, std::abs(y[i] - (1.0 + 0.5 * x[i])));
        }
        ok &= report("cast / fill / scale / axpy", e, 1e-6);
    }
    // a bf16 accumulator: y = round_rn(y + alpha * x), the sum formed in f32 and rounded once (bit-exact)
    {
        const long long n = 1003;
        auto y0 = randn(n), xf = randn(n);
        std::vector<__nv_bfloat16> y_f(n), y_h(n), xh(n);
        for (long long i = 0; i < n; ++i) {
            y_f[i] = y_h[i] = __nv_bfloat16{f32_to_bf16_bits(y0[i])};
            xh[i] = __nv_bfloat16{f32_to_bf16_bits(xf[i] * 1e-3f)};
        }
        run_grid(2, 128, [&] { axpy_bf16_acc_f32(y_f.data(), xf.data(), 0.75f, n); });
        run_grid(2, 128, [&] { axpy_bf16_acc_bf16(y_h.data(), xh.data(), 1.0f, n); });
        long long bad = 0;
        for (long long i = 0; i < n; ++i) {
            const float y = bf16_to_f32(__nv_bfloat16{f32_to_bf16_bits(y0[i])});
            bad += f32_to_bf16_bits(y + 0.75f * xf[i]) != y_f[i].bits;
            bad += f32_to_bf16_bits(y + bf16_to_f32(xh[i])) != y_h[i].bits;
        }
        ok &= report("axpy into a bf16 accumulator (elements off)", (double)bad, 0.5);
    }
    // reduce_sum over the inner axis (x [9, 130] -> [9]) and the outer axis (-> [130]) with scale 0.5
    {
        const int R = 9, C = 130;
        auto x = randn(R * C);
        std::vector<float> inner(R, NAN), outer(C, NAN);
        ReduceGeo gi{1, {R, 1, 1, 1, 1, 1}, {C, 0, 0, 0, 0, 0}, 1, {C, 1, 1, 1, 1, 1}, {1, 0, 0, 0, 0, 0}};
        ReduceGeo go{1, {C, 1, 1, 1, 1, 1}, {1, 0, 0, 0, 0, 0}, 1, {R, 1, 1, 1, 1, 1}, {C, 0, 0, 0, 0, 0}};
        run_grid(4, 64, [&] { reduce_sum_f32(inner.data(), x.data(), R, C, 0.5f, gi); });
        run_grid(4, 64, [&] { reduce_sum_f32(outer.data(), x.data(), C, R, 0.5f, go); });
        std::vector<double> wi(R, 0.0), wo(C, 0.0);
        for (int r = 0; r < R; ++r)
            for (int c = 0; c < C; ++c) {
                wi[r] += 0.5 * x[r * C + c];
                wo[c] += 0.5 * x[r * C + c];
            }
        ok &= report("reduce_sum inner / outer axis", std::max(max_abs_diff(inner, wi), max_abs_diff(outer, wo)), 1e-5);
        // the two-stage form (few outputs, long rows): 7 chunks per output, chunk = ceil(130 / 7) = 19,
        // and 4 chunks of ceil(9 / 4) = 3 over the outer axis (the last one empty)
        std::vector<float> pi(R * 7, NAN), po(C * 4, NAN), si(R, NAN), so(C, NAN);
        run_grid(5, 64, [&] { reduce_split_f32(pi.data(), x.data(), R, C, 7, gi); });
        run_grid(3, 64, [&] { reduce_partials_f32(si.data(), pi.data(), R, 7, 0.5f); });
        run_grid(5, 64, [&] { reduce_split_f32(po.data(), x.data(), C, R, 4, go); });
        run_grid(3, 64, [&] { reduce_partials_f32(so.data(), po.data(), C, 4, 0.5f); });
        ok &= report("reduce_split + reduce_partials", std::max(max_abs_diff(si, wi), max_abs_diff(so, wo)), 1e-5);
    }
    // clipping pipeline: ||x|| = sqrt(Σ x²), coef = min(1, max / (||x|| + 1e-6)), x *= coef
    {
        const long long n = 5000;
        auto x = randn(n);
        const unsigned blocks = 7;
        std::vector<float> partials(blocks, NAN), sumsq(1, NAN), coef(1, NAN), y = x;
        run_grid(blocks, 128, [&] { sumsq_partials_f32(partials.data(), x.data(), n); });
        run_grid(1, 64, [&] { reduce_partials_f32(sumsq.data(), partials.data(), 1, (int)blocks, 1.0f); });
        run_grid(1, 32, [&] { clip_coef_f32(coef.data(), sumsq.data(), 10.0f); });
        run_grid(3, 128, [&] { scale_by_f32(y.data(), coef.data(), n); });
        double ss = 0;
        for (float v : x) ss += (double)v * v;
        const double c = std::min(1.0, 10.0 / (std::sqrt(ss) + 1e-6));
        std::vector<double> want(n);
        for (long long i = 0; i < n; ++i) want[i] = x[i] * c;
        ok &= report("clip pipeline (sumsq, coef, scale)",
                     std::max({std::abs(sumsq[0] - ss) / ss, std::abs(coef[0] - c), max_abs_diff(y, want)}), 1e-5);
    }
    // counter-based normals: mean ~ 0, std ~ 0.5 over 100,003 samples
    {
        const long long n = 100003;
        std::vector<float> r(n, NAN);
        run_grid(8, 256, [&] { randn_f32(r.data(), n, 0x1234ull, 0.5f); });
        double m = 0, v = 0;
        for (float e : r) m += e / n;
        for (float e : r) v += (e - m) * (e - m) / n;
        ok &= report("randn moments (|mean|, |std/0.5 - 1|)", std::max(std::abs(m) / 0.5, std::abs(std::sqrt(v) / 0.5 - 1)),
                     0.02);
    }
    return ok ? 0 : 1;
}
