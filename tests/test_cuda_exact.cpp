// backend::cuda's exact mode without a GPU: every work item of backend/cuda/exact.h, run on the
// host over its whole index range (last item first, to show the items do not depend on each
// other's order), must give the CPU kernel's bits exactly. The GPU launches these same functions
// one thread per item (backend/cuda/kernels.cu); tests/cuda/ checks that on a device. Where the
// CPU kernel itself loops over an ops::item function, this checks that the items are independent
// of their order; the bits are the CPU's by construction.
// Tolerance: none, bit equality (memcmp), in float and double.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "aligngpt/aligngpt.h"
#include "aligngpt/backend/cuda/exact.h"
#include "support/bit_compare.h"

namespace test_cuda_exact {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using test::rand_vec;
using test::same_bits;
namespace ex = aligngpt::backend::exact;
const backend::cpu& cpu = backend::cpu::instance();

/// f(i) for i = n-1 down to 0.
template <class F>
void items(index_t n, F f) {
    for (index_t i = n; i-- > 0;) f(i);
}

TEST_CASE_TEMPLATE("cuda exact work items: elementwise ops and activations equal the CPU kernels", T, float, double) {
    const index_t n = 4099;  // past the CPU's 4096-element chunks and its vector widths
    const auto a = rand_vec<T>(n, 1, 6.0f), b = rand_vec<T>(n, 2), dy = rand_vec<T>(n, 3);
    const T s = T(0.37);
    auto check_unary = [&](auto cpu_op, auto item) {  // y = f(a)
        std::vector<T> y1(static_cast<std::size_t>(n)), y2(static_cast<std::size_t>(n));
        cpu_op(y1.data());
        items(n, [&](index_t i) { item(i, y2.data()); });
        return same_bits(y1, y2);
    };
    CHECK(check_unary([&](T* y) { ops::add_forward(cpu, y, a.data(), b.data(), n); },
                      [&](index_t i, T* y) { ex::add_forward(i, y, a.data(), b.data()); }));
    CHECK(check_unary([&](T* y) { ops::mul_forward(cpu, y, a.data(), b.data(), n); },
                      [&](index_t i, T* y) { ex::mul_forward(i, y, a.data(), b.data()); }));
    CHECK(check_unary([&](T* y) { ops::scale_forward(cpu, y, a.data(), s, n); },
                      [&](index_t i, T* y) { ex::scale_forward(i, y, a.data(), s); }));
    CHECK(check_unary([&](T* y) { ops::gelu_forward(cpu, y, a.data(), n); },
                      [&](index_t i, T* y) { ex::gelu_forward(i, y, a.data()); }));
    CHECK(check_unary([&](T* y) { ops::quick_gelu_forward(cpu, y, a.data(), n); },
                      [&](index_t i, T* y) { ex::x_sigmoid_ax(i, y, a.data(), T(1.702)); }));
    CHECK(check_unary([&](T* y) { ops::silu_forward(cpu, y, a.data(), n); },
                      [&](index_t i, T* y) { ex::x_sigmoid_ax(i, y, a.data(), T(1)); }));
    CHECK(check_unary([&](T* y) { ops::swiglu_forward(cpu, y, a.data(), b.data(), n); },
                      [&](index_t i, T* y) { ex::swiglu_forward(i, y, a.data(), b.data()); }));

    // Backward kernels accumulate: start both from the same nonzero gradients.
    auto check_accum = [&](auto cpu_op, auto item) {
        std::vector<T> g1 = rand_vec<T>(n, 9), g2 = g1, h1 = rand_vec<T>(n, 10), h2 = h1;
        cpu_op(g1.data(), h1.data());
        items(n, [&](index_t i) { item(i, g2.data(), h2.data()); });
        return same_bits(g1, g2) && same_bits(h1, h2);
    };
    CHECK(check_accum([&](T* g, T* h) { ops::add_backward(cpu, g, h, dy.data(), n); },
                      [&](index_t i, T* g, T* h) { ex::add_backward(i, g, h, dy.data()); }));
    CHECK(check_accum([&](T* g, T* h) { ops::mul_backward(cpu, g, h, dy.data(), a.data(), b.data(), n); },
                      [&](index_t i, T* g, T* h) { ex::mul_backward(i, g, h, dy.data(), a.data(), b.data()); }));
    CHECK(check_accum([&](T* g, T*) { ops::scale_backward(cpu, g, dy.data(), s, n); },
                      [&](index_t i, T* g, T*) { ex::scale_backward(i, g, dy.data(), s); }));
    CHECK(check_accum([&](T* g, T*) { ops::gelu_backward(cpu, g, dy.data(), a.data(), n); },
                      [&](index_t i, T* g, T*) { ex::gelu_backward(i, g, dy.data(), a.data()); }));
    CHECK(check_accum([&](T* g, T*) { ops::quick_gelu_backward(cpu, g, dy.data(), a.data(), n); },
                      [&](index_t i, T* g, T*) { ex::quick_gelu_backward(i, g, dy.data(), a.data()); }));
    CHECK(check_accum([&](T* g, T*) { ops::silu_backward(cpu, g, dy.data(), a.data(), n); },
                      [&](index_t i, T* g, T*) { ex::silu_backward(i, g, dy.data(), a.data()); }));
    CHECK(check_accum([&](T* g, T* h) { ops::swiglu_backward(cpu, g, h, dy.data(), a.data(), b.data(), n); },
                      [&](index_t i, T* g, T* h) { ex::swiglu_backward(i, g, h, dy.data(), a.data(), b.data()); }));
    CHECK(check_accum([&](T* g, T*) { cpu.accumulate(g, dy.data(), n); },
                      [&](index_t i, T* g, T*) { ex::accumulate(i, g, dy.data()); }));
}

TEST_CASE_TEMPLATE("cuda exact work items: row ops, column sums and gathers equal the CPU kernels", T, float, double) {
    const index_t N = 37, C = 131;
    const auto x = rand_vec<T>(N * C, 1, 3.0f), g = rand_vec<T>(C, 2), b = rand_vec<T>(C, 3), dy = rand_vec<T>(N * C, 4);
    const T eps = T(1e-5);

    SUBCASE("rms_norm") {
        std::vector<T> y1(static_cast<std::size_t>(N * C)), y2 = y1, r1(static_cast<std::size_t>(N)), r2 = r1;
        ops::rms_norm_forward(cpu, y1.data(), r1.data(), x.data(), g.data(), N, C, eps);
        items(N, [&](index_t n) { ex::rms_norm_forward_row(n, y2.data(), r2.data(), x.data(), g.data(), C, eps); });
        CHECK(same_bits(y1, y2));
        CHECK(same_bits(r1, r2));
        auto dx1 = rand_vec<T>(N * C, 7), dx2 = dx1, dg1 = rand_vec<T>(C, 8), dg2 = dg1;
        ops::rms_norm_backward(cpu, dx1.data(), dg1.data(), dy.data(), x.data(), g.data(), r1.data(), N, C);
        items(N, [&](index_t n) { ex::rms_norm_backward_row(n, dx2.data(), dy.data(), x.data(), g.data(), r1.data(), C); });
        items(C, [&](index_t i) { ex::rms_norm_backward_channel(i, dg2.data(), dy.data(), x.data(), r1.data(), N, C); });
        CHECK(same_bits(dx1, dx2));
        CHECK(same_bits(dg1, dg2));
    }
    SUBCASE("layer_norm, with and without bias") {
        for (const T* bias : {b.data(), static_cast<const T*>(nullptr)}) {
            std::vector<T> y1(static_cast<std::size_t>(N * C)), y2 = y1, m1(static_cast<std::size_t>(N)), m2 = m1, r1 = m1,
                                                                r2 = m1;
            ops::layer_norm_forward(cpu, y1.data(), m1.data(), r1.data(), x.data(), g.data(), bias, N, C, eps);
            items(N, [&](index_t n) {
                ex::layer_norm_forward_row(n, y2.data(), m2.data(), r2.data(), x.data(), g.data(), bias, C, eps);
            });
            CHECK(same_bits(y1, y2));
            CHECK(same_bits(m1, m2));
            CHECK(same_bits(r1, r2));
            auto dx1 = rand_vec<T>(N * C, 7), dx2 = dx1, dw1 = rand_vec<T>(C, 8), dw2 = dw1, db1 = rand_vec<T>(C, 9), db2 = db1;
            ops::layer_norm_backward(cpu, dx1.data(), dw1.data(), db1.data(), dy.data(), x.data(), g.data(), m1.data(), r1.data(),
                                     N, C);
            items(N, [&](index_t n) {
                ex::layer_norm_backward_row(n, dx2.data(), dy.data(), x.data(), g.data(), m1.data(), r1.data(), C);
            });
            items(C, [&](index_t i) {
                ex::layer_norm_backward_channel(i, dw2.data(), db2.data(), dy.data(), x.data(), m1.data(), r1.data(), N, C);
            });
            CHECK(same_bits(dx1, dx2));
            CHECK(same_bits(dw1, dw2));
            CHECK(same_bits(db1, db2));
        }
    }
    SUBCASE("softmax") {
        std::vector<T> p1(static_cast<std::size_t>(N * C)), p2 = p1;
        ops::softmax_forward(cpu, p1.data(), x.data(), N, C);
        items(N, [&](index_t n) { ex::softmax_forward_row(n, p2.data(), x.data(), C); });
        CHECK(same_bits(p1, p2));
        auto dx1 = rand_vec<T>(N * C, 7), dx2 = dx1;
        ops::softmax_backward(cpu, dx1.data(), dy.data(), p1.data(), N, C);
        items(N, [&](index_t n) { ex::softmax_backward_row(n, dx2.data(), dy.data(), p1.data(), C); });
        CHECK(same_bits(dx1, dx2));
    }
    SUBCASE("l2_normalize") {
        std::vector<T> y1(static_cast<std::size_t>(N * C)), y2 = y1, r1(static_cast<std::size_t>(N)), r2 = r1;
        ops::l2_normalize_forward(cpu, y1.data(), r1.data(), x.data(), N, C);
        items(N, [&](index_t n) { ex::l2_normalize_forward_row(n, y2.data(), r2.data(), x.data(), C); });
        CHECK(same_bits(y1, y2));
        CHECK(same_bits(r1, r2));
        auto dx1 = rand_vec<T>(N * C, 7), dx2 = dx1;
        ops::l2_normalize_backward(cpu, dx1.data(), dy.data(), y1.data(), r1.data(), N, C);
        items(N, [&](index_t n) { ex::l2_normalize_backward_row(n, dx2.data(), dy.data(), y1.data(), r1.data(), C); });
        CHECK(same_bits(dx1, dx2));
    }
    SUBCASE("add_row") {
        std::vector<T> y1(static_cast<std::size_t>(N * C)), y2 = y1;
        ops::add_row_forward(cpu, y1.data(), x.data(), b.data(), N, C);
        items(N * C, [&](index_t i) { ex::add_row_forward(i, y2.data(), x.data(), b.data(), C); });
        CHECK(same_bits(y1, y2));
        auto dr1 = rand_vec<T>(C, 8), dr2 = dr1;
        ops::add_row_backward(cpu, static_cast<T*>(nullptr), dr1.data(), dy.data(), N, C);
        items(C, [&](index_t c) { ex::add_row_backward_column(c, dr2.data(), dy.data(), N, C); });
        CHECK(same_bits(dr1, dr2));
    }
    SUBCASE("sum and mean over the middle dimension") {
        const index_t outer = 3, D = 7, inner = 29;  // x holds outer * D * inner <= N * C values
        for (bool mean : {false, true}) {
            std::vector<T> y1(static_cast<std::size_t>(outer * inner)), y2 = y1;
            ops::sum_forward(cpu, y1.data(), x.data(), outer, D, inner, mean);
            items(outer * inner, [&](index_t oi) { ex::sum_forward(oi, y2.data(), x.data(), D, inner, mean); });
            CHECK(same_bits(y1, y2));
            auto dx1 = rand_vec<T>(outer * D * inner, 7), dx2 = dx1;
            ops::sum_backward(cpu, dx1.data(), y1.data(), outer, D, inner, mean);
            items(outer * D * inner, [&](index_t e) { ex::sum_backward(e, dx2.data(), y1.data(), D, inner, mean); });
            CHECK(same_bits(dx1, dx2));
        }
    }
    SUBCASE("embedding: repeated ids gather in position order, the padding row stays untouched") {
        const index_t V = 11, Tn = 23;
        std::vector<std::int64_t> ids(static_cast<std::size_t>(Tn));
        for (index_t t = 0; t < Tn; t++) ids[std::size_t(t)] = (t * 7 + t / 3) % V;  // each id several times
        const auto W = rand_vec<T>(V * C, 5);
        std::vector<T> y1(static_cast<std::size_t>(Tn * C)), y2 = y1;
        ops::embedding_forward(cpu, y1.data(), W.data(), ids.data(), Tn, V, C);
        items(Tn * C, [&](index_t e) { ex::embedding_forward(e, y2.data(), W.data(), ids.data(), C); });
        CHECK(same_bits(y1, y2));
        std::vector<index_t> order, start;  // the grouping the CUDA wrapper uploads (kernels.cu)
        ops::embedding_groups(ids.data(), Tn, order, start);
        const index_t G = index_t(start.size()) - 1;
        const auto dyv = rand_vec<T>(Tn * C, 6);
        auto dW1 = rand_vec<T>(V * C, 7), dW2 = dW1;
        ops::embedding_backward(cpu, dW1.data(), dyv.data(), ids.data(), Tn, V, C, std::int64_t(3));
        items(G * C, [&](index_t gc) {
            ex::embedding_backward(gc, dW2.data(), dyv.data(), ids.data(), order.data(), start.data(), C, std::int64_t(3));
        });
        CHECK(same_bits(dW1, dW2));
    }
    SUBCASE("copy_block and transpose_copy, assigning and accumulating") {
        for (bool acc : {false, true}) {
            const index_t outer = 3, Dy = 9, Dx = 7, Dn = 4, inner = 5;
            auto y1 = rand_vec<T>(outer * Dy * inner, 7), y2 = y1;
            ops::copy_block(cpu, y1.data(), Dy, 2, x.data(), Dx, 3, Dn, outer, inner, acc);
            items(outer * Dn * inner, [&](index_t e) { ex::copy_block(e, y2.data(), Dy, 2, x.data(), Dx, 3, Dn, inner, acc); });
            CHECK(same_bits(y1, y2));
            const index_t P = 2, A = 3, M = 4, Bn = 5, Q = 6;
            auto t1 = rand_vec<T>(P * A * M * Bn * Q, 8), t2 = t1;
            ops::transpose_copy(cpu, t1.data(), x.data(), P, A, M, Bn, Q, acc);
            items(P * A * M * Bn * Q, [&](index_t e) { ex::transpose_copy(e, t2.data(), x.data(), A, M, Bn, Q, acc); });
            CHECK(same_bits(t1, t2));
        }
    }
    SUBCASE("masked_mean and batched_matvec") {
        const index_t Bn = 3, Tn = 5, H = 7;
        std::vector<std::uint8_t> mask{1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1};  // row 1 has none
        const auto denom = ops::masked_mean_denominators(mask.data(), Bn, Tn, T(1e-6));
        std::vector<T> y1(static_cast<std::size_t>(Bn * H)), y2 = y1;
        ops::masked_mean_forward(cpu, y1.data(), x.data(), mask.data(), denom.data(), Bn, Tn, H);
        items(Bn * H, [&](index_t bh) { ex::masked_mean_forward(bh, y2.data(), x.data(), mask.data(), denom.data(), Tn, H); });
        CHECK(same_bits(y1, y2));
        auto dx1 = rand_vec<T>(Bn * Tn * H, 7), dx2 = dx1;
        ops::masked_mean_backward(cpu, dx1.data(), y1.data(), mask.data(), denom.data(), Bn, Tn, H);
        items(Bn * Tn * H,
              [&](index_t e) { ex::masked_mean_backward(e, dx2.data(), y1.data(), mask.data(), denom.data(), Tn, H); });
        CHECK(same_bits(dx1, dx2));

        const index_t J = 9;
        const auto Mx = rand_vec<T>(Bn * J * H, 5), v = rand_vec<T>(Bn * H, 6), dyb = rand_vec<T>(Bn * J, 7);
        std::vector<T> z1(static_cast<std::size_t>(Bn * J)), z2 = z1;
        ops::batched_matvec_forward(cpu, z1.data(), Mx.data(), v.data(), Bn, J, H);
        items(Bn * J, [&](index_t bj) { ex::batched_matvec_forward(bj, z2.data(), Mx.data(), v.data(), J, H); });
        CHECK(same_bits(z1, z2));
        auto dM1 = rand_vec<T>(Bn * J * H, 8), dM2 = dM1, dv1 = rand_vec<T>(Bn * H, 9), dv2 = dv1;
        ops::batched_matvec_backward(cpu, dM1.data(), dv1.data(), dyb.data(), Mx.data(), v.data(), Bn, J, H);
        items(Bn * J * H, [&](index_t e) { ex::batched_matvec_backward_matrix(e, dM2.data(), dyb.data(), v.data(), J, H); });
        items(Bn * H, [&](index_t bh) { ex::batched_matvec_backward_vector(bh, dv2.data(), dyb.data(), Mx.data(), J, H); });
        CHECK(same_bits(dM1, dM2));
        CHECK(same_bits(dv1, dv2));
    }
}

TEST_CASE_TEMPLATE("cuda exact work items: gemm elements and the linear layer equal the CPU GEMM", T, float, double) {
    // Sizes past the CPU's register and cache blocks (14 x 32 tiles, KC = 512), with every stride
    // pattern the models use (linear forward, dX, dW) and each way a chain can start.
    const index_t M = 45, N = 70, K = 531;
    const auto A = rand_vec<T>(M * K, 1), B = rand_vec<T>(K * N, 2), bias = rand_vec<T>(N, 3);
    struct layout {
        index_t rs_a, cs_a, rs_b, cs_b;
    };
    for (const layout L : {layout{K, 1, N, 1}, layout{K, 1, 1, K}, layout{1, M, N, 1}})
        for (const ops::gemm_init init : {ops::gemm_init::zero, ops::gemm_init::bias, ops::gemm_init::accumulate}) {
            auto C1 = rand_vec<T>(M * N, 4), C2 = C1;
            ops::gemm(cpu, M, N, K, A.data(), L.rs_a, L.cs_a, B.data(), L.rs_b, L.cs_b, C1.data(), N, init, bias.data());
            items(M * N, [&](index_t e) {
                ex::gemm_element(e / N, e % N, K, A.data(), L.rs_a, L.cs_a, B.data(), L.rs_b, L.cs_b, C2.data(), N, init,
                                 bias.data());
            });
            CAPTURE(L.rs_a);
            CAPTURE(L.cs_b);
            CHECK(same_bits(C1, C2));
        }
    // The bias gradient of linear_backward.
    auto db1 = rand_vec<T>(N, 5), db2 = db1;
    const auto dY = rand_vec<T>(M * N, 6);
    ops::linear_backward(cpu, static_cast<T*>(nullptr), static_cast<T*>(nullptr), db1.data(), dY.data(), A.data(), B.data(), M, N,
                         K);
    items(N, [&](index_t n) { ex::linear_bias_grad(n, db2.data(), dY.data(), M, N); });
    CHECK(same_bits(db1, db2));
}

TEST_CASE("cuda exact: the 16-bit widening of raw bits equals widen() for all 65536 patterns of bf16 and f16") {
    index_t nan_bf16 = 0, nan_f16 = 0;
    for (std::uint32_t u = 0; u < 65536; u++) {
        const auto b = std::uint16_t(u);
        const auto vb = Eigen::numext::bit_cast<bf16>(b);
        const auto vh = Eigen::numext::bit_cast<f16>(b);
        const float rb = widen(vb), rh = widen(vh), ob = widen_bf16_bits(b), oh = widen_f16_bits(b);
        if (std::isnan(rb)) {  // NaN: stays NaN (F16C-style quieting may differ in the payload)
            CHECK(std::isnan(ob));
            nan_bf16++;
        } else if (!same_bits(std::vector<float>{rb}, std::vector<float>{ob})) {
            FAIL_CHECK("bf16 bits 0x" << std::hex << u);
        }
        if (std::isnan(rh)) {
            CHECK(std::isnan(oh));
            nan_f16++;
        } else if (!same_bits(std::vector<float>{rh}, std::vector<float>{oh})) {
            FAIL_CHECK("f16 bits 0x" << std::hex << u);
        }
    }
    CHECK(nan_bf16 == 2 * 127);  // exponent all ones, mantissa (7 bits) not zero, either sign
    CHECK(nan_f16 == 2 * 1023);  // the same with 10 bits
}

TEST_CASE_TEMPLATE("cuda exact work items: the 16-bit packed linear and its unpacking equal the CPU kernels", S, bf16, f16) {
    // N spans two full panels and a partial one; K is past the CPU's k blocks; M = 1 takes the
    // CPU's GEMV path, M = 9 its GEMM path.
    const index_t N = 70, K = 531;
    std::vector<S> w(std::size_t(N * K));
    const auto wf = rand_vec<float>(N * K, 7);
    for (std::size_t i = 0; i < w.size(); i++) w[i] = narrow<S>(wf[i]);
    const auto pw = ops::packed_weight<S>::pack(w.data(), N, K);
    std::vector<std::uint16_t> bits(std::size_t(pw.panels() * K * 32));
    std::memcpy(bits.data(), pw.panel(0), bits.size() * 2);
    const auto bias = rand_vec<float>(N, 8);
    for (const index_t M : {index_t(1), index_t(9)})
        for (const bool with_bias : {false, true}) {
            CAPTURE(M);
            CAPTURE(with_bias);
            const auto X = rand_vec<float>(M * K, 9);
            auto Y1 = rand_vec<float>(M * N, 10), Y2 = Y1;
            const float* b = with_bias ? bias.data() : nullptr;
            ops::linear_packed(cpu, Y1.data(), X.data(), pw, b, M);
            items(M * N, [&](index_t e) { ex::linear_packed_element<S>(e, Y2.data(), X.data(), bits.data(), b, N, K); });
            CHECK(same_bits(Y1, Y2));
        }
    std::vector<float> W1(std::size_t(N * K)), W2(std::size_t(N * K), 1.0f);
    ops::packed_unpack(cpu, W1.data(), pw);
    items(N * K, [&](index_t e) { ex::packed_unpack_element<S>(e, W2.data(), bits.data(), K); });
    CHECK(same_bits(W1, W2));
}

TEST_CASE_TEMPLATE("cuda exact work items: attention, rope, cross-entropy and patch embedding equal the CPU kernels", T, float,
                   double) {
    SUBCASE("attention forward and backward: causal, grouped heads, padded keys, a fully masked row") {
        const index_t B = 2, Tq = 5, Tk = 7, HS = 8;
        ops::attention_options o;
        o.n_head = 4, o.n_kv_head = 2, o.causal = true;
        o.key_lengths = {7, 0};  // batch row 1: every key masked
        const ops::attention_dims d(B, Tq, Tk, int(HS), o);
        const index_t NH = 4, G = 2, C = NH * HS, Ck = 2 * HS;
        const auto q = rand_vec<T>(B * Tq * C, 1), k = rand_vec<T>(B * Tk * Ck, 2), v = rand_vec<T>(B * Tk * Ck, 3),
                   dout = rand_vec<T>(B * Tq * C, 4);
        std::vector<T> out1(static_cast<std::size_t>(B * Tq * C)), att1(static_cast<std::size_t>(B * NH * Tq * Tk));
        ops::attention_forward(cpu, out1.data(), att1.data(), q.data(), k.data(), v.data(), d, o);

        // The CUDA wrapper's sequence (kernels.cu) with the CPU's gemm for the products.
        ex::attention_mask m;
        m.causal = o.causal, m.past = d.past, m.Tk = Tk, m.key_lengths = o.key_lengths.data();
        std::vector<T> out2(out1.size()), att2(att1.size());
        for (index_t b = 0; b < B; b++)
            for (index_t h = 0; h < NH; h++)
                ops::gemm(cpu, Tq, Tk, HS, q.data() + b * Tq * C + h * HS, C, index_t(1), k.data() + b * Tk * Ck + (h / G) * HS,
                          index_t(1), Ck, att2.data() + (b * NH + h) * Tq * Tk, Tk, ops::gemm_init::zero);
        items(B * NH * Tq, [&](index_t r) { ex::attention_softmax_row(r, att2.data(), NH, Tq, Tk, T(d.scale), m); });
        for (index_t b = 0; b < B; b++)
            for (index_t h = 0; h < NH; h++)
                ops::gemm(cpu, Tq, HS, Tk, att2.data() + (b * NH + h) * Tq * Tk, Tk, index_t(1),
                          v.data() + b * Tk * Ck + (h / G) * HS, Ck, index_t(1), out2.data() + b * Tq * C + h * HS, C,
                          ops::gemm_init::zero);
        CHECK(same_bits(att1, att2));
        CHECK(same_bits(out1, out2));

        // Backward: the softmax rows and the scaled row additions (the products are gemm calls).
        std::vector<T> dS1(att1.size()), dS2(att1.size());
        for (index_t b = 0; b < B; b++)
            for (index_t h = 0; h < NH; h++)
                ops::gemm(cpu, Tq, Tk, HS, dout.data() + b * Tq * C + h * HS, C, index_t(1),
                          v.data() + b * Tk * Ck + (h / G) * HS, index_t(1), Ck, dS1.data() + (b * NH + h) * Tq * Tk, Tk,
                          ops::gemm_init::zero);
        dS2 = dS1;
        ops::attention_softmax_backward(cpu, dS1.data(), att1.data(), d, o, index_t(0), B * NH * Tq);
        items(B * NH * Tq, [&](index_t r) { ex::attention_softmax_backward_row(r, dS2.data(), att1.data(), NH, Tq, Tk, m); });
        CHECK(same_bits(dS1, dS2));
        // The whole backward through the items, against ops::attention_backward.
        auto dq1 = rand_vec<T>(B * Tq * C, 5), dk1 = rand_vec<T>(B * Tk * Ck, 6), dv1 = rand_vec<T>(B * Tk * Ck, 7);
        auto dq2 = dq1, dk2 = dk1, dv2 = dv1;
        ops::attention_backward(cpu, dq1.data(), dk1.data(), dv1.data(), dout.data(), q.data(), k.data(), v.data(), att1.data(),
                                d, o);
        const T scale = T(d.scale);
        std::vector<T> acc(static_cast<std::size_t>(Tk * HS));
        for (index_t b = 0; b < B; b++)
            for (index_t h = 0; h < NH; h++) {
                ops::gemm(cpu, Tq, HS, Tk, dS2.data() + (b * NH + h) * Tq * Tk, Tk, index_t(1),
                          k.data() + b * Tk * Ck + (h / G) * HS, Ck, index_t(1), acc.data(), HS, ops::gemm_init::zero);
                items(Tq * HS,
                      [&](index_t e) { ex::add_rows(e, dq2.data() + b * Tq * C + h * HS, C, acc.data(), HS, scale, true); });
            }
        for (index_t b = 0; b < B; b++)
            for (index_t g = 0; g < 2; g++) {
                for (index_t h = g * G; h < (g + 1) * G; h++)
                    ops::gemm(cpu, Tk, HS, Tq, att1.data() + (b * NH + h) * Tq * Tk, index_t(1), Tk,
                              dout.data() + b * Tq * C + h * HS, C, index_t(1), acc.data(), HS,
                              h == g * G ? ops::gemm_init::zero : ops::gemm_init::accumulate);
                items(Tk * HS,
                      [&](index_t e) { ex::add_rows(e, dv2.data() + b * Tk * Ck + g * HS, Ck, acc.data(), HS, scale, false); });
                for (index_t h = g * G; h < (g + 1) * G; h++)
                    ops::gemm(cpu, Tk, HS, Tq, dS2.data() + (b * NH + h) * Tq * Tk, index_t(1), Tk,
                              q.data() + b * Tq * C + h * HS, C, index_t(1), acc.data(), HS,
                              h == g * G ? ops::gemm_init::zero : ops::gemm_init::accumulate);
                items(Tk * HS,
                      [&](index_t e) { ex::add_rows(e, dk2.data() + b * Tk * Ck + g * HS, Ck, acc.data(), HS, scale, true); });
            }
        CHECK(same_bits(dq1, dq2));
        CHECK(same_bits(dk1, dk2));
        CHECK(same_bits(dv1, dv2));
    }
    SUBCASE("rope, forward and backward") {
        const index_t N = 6, NH = 3, HS = 16, h = HS / 2;
        const ops::rope_table tab(int(HS), 10000.0);
        const std::vector<std::int64_t> pos{0, 1, 2, 5, 100, 4095};
        const auto x = rand_vec<T>(N * NH * HS, 1), dy = rand_vec<T>(N * NH * HS, 2);
        std::vector<T> c(static_cast<std::size_t>(N * h)), s(c.size());
        for (index_t n = 0; n < N; n++) ops::rope_cos_sin(tab, pos[std::size_t(n)], c.data() + n * h, s.data() + n * h);
        std::vector<T> y1(x.size()), y2(x.size());
        ops::rope_forward(cpu, y1.data(), x.data(), pos.data(), N, int(NH), tab);
        items(N * NH * h, [&](index_t e) { ex::rope_forward(e, y2.data(), x.data(), c.data(), s.data(), NH, HS); });
        CHECK(same_bits(y1, y2));
        auto dx1 = rand_vec<T>(N * NH * HS, 3), dx2 = dx1;
        ops::rope_backward(cpu, dx1.data(), dy.data(), pos.data(), N, int(NH), tab);
        items(N * NH * h, [&](index_t e) { ex::rope_backward(e, dx2.data(), dy.data(), c.data(), s.data(), NH, HS); });
        CHECK(same_bits(dx1, dx2));
    }
    SUBCASE("cross-entropy with ignored rows") {
        const index_t N = 9, V = 50;
        const auto z = rand_vec<T>(N * V, 1, 8.0f);
        const std::vector<std::int64_t> targets{3, -100, 0, 49, 7, -100, 7, 1, 2};
        const index_t count = ops::cross_entropy_count(targets.data(), N, V, -100);
        T loss1 = 0, loss2 = 0;
        std::vector<T> lse1(static_cast<std::size_t>(N)), lse2(lse1.size());
        ops::cross_entropy_forward(cpu, &loss1, lse1.data(), z.data(), targets.data(), N, V);
        items(N, [&](index_t n) { ex::cross_entropy_row(n, lse2.data(), z.data(), targets.data(), V, std::int64_t(-100)); });
        ex::cross_entropy_loss(&loss2, lse2.data(), z.data(), targets.data(), N, V, std::int64_t(-100), count);
        CHECK(same_bits(lse1, lse2));
        CHECK(std::memcmp(&loss1, &loss2, sizeof(T)) == 0);
        const T dloss = T(0.75);
        auto dz1 = rand_vec<T>(N * V, 2), dz2 = dz1;
        ops::cross_entropy_backward(cpu, dz1.data(), &dloss, z.data(), lse1.data(), targets.data(), N, V);
        items(N * V, [&](index_t e) {  // the scale as kernels.cu computes it, in each item
            ex::cross_entropy_grad(e / V, e % V, dz2.data(), dloss / T(count), z.data(), lse1.data(), targets.data(), V,
                                   std::int64_t(-100));
        });
        CHECK(same_bits(dz1, dz2));
    }
    SUBCASE("patch gather and scatter") {
        const ops::patch_dims d{2, 3, 8, 12, 4, 5};
        const index_t M = d.B * d.patches(), K = d.K();
        const auto px = rand_vec<T>(d.B * d.C * d.H * d.W, 1), w = rand_vec<T>(d.D * K, 2), dout = rand_vec<T>(M * d.D, 3);
        std::vector<T> out1(static_cast<std::size_t>(M * d.D)), out2(out1.size()), cols(static_cast<std::size_t>(M * K));
        ops::patch_embed_forward(cpu, out1.data(), px.data(), w.data(), d);
        items(M * K, [&](index_t e) { ex::patch_gather(e, cols.data(), px.data(), d.C, d.H, d.W, d.P); });
        ops::gemm(cpu, M, d.D, K, cols.data(), K, index_t(1), w.data(), index_t(1), K, out2.data(), d.D, ops::gemm_init::zero);
        CHECK(same_bits(out1, out2));
        auto dpx1 = rand_vec<T>(d.B * d.C * d.H * d.W, 4), dpx2 = dpx1;
        ops::patch_embed_backward(cpu, dpx1.data(), static_cast<T*>(nullptr), dout.data(), px.data(), w.data(), d);
        ops::gemm(cpu, M, K, d.D, dout.data(), d.D, index_t(1), w.data(), K, index_t(1), cols.data(), K, ops::gemm_init::zero);
        items(M * K, [&](index_t e) { ex::patch_scatter_add(e, dpx2.data(), cols.data(), d.C, d.H, d.W, d.P); });
        CHECK(same_bits(dpx1, dpx2));
    }
}

}  // namespace test_cuda_exact
