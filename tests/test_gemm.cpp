// GEMM: the fast path equals the one-fma-chain-per-element definition bit for bit, for every
// transpose the models use, every init mode, and odd sizes that exercise the edges of blocking.
// The packed-weight linear (f32, bf16, f16 weights) and its decode GEMV follow the same chains.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "aligngpt/half.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/gemm.h"
#include "aligngpt/ops/isa.h"
#include "aligngpt/ops/packed.h"
#include "aligngpt/rng.h"

namespace test_gemm {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;

namespace {

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// FNV-1a 64 over the bytes of a float array (the fingerprint compared across builds).
std::uint64_t fnv1a_bytes(const float* p, std::size_t n, std::uint64_t h = 0xcbf29ce484222325ull) {
    const auto* b = reinterpret_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/// Restores the thread count a test changed.
struct thread_guard {
    int saved = max_threads();
    ~thread_guard() { set_threads(saved); }
};

/// Y = X W^T (+ bias) by gemm_reference on the widened weights: the definition linear_packed meets.
template <class S>
std::vector<float> linear_ref(const std::vector<float>& X, const std::vector<S>& W, const float* bias, index_t M, index_t N,
                              index_t K) {
    std::vector<float> Wf(W.size()), Y(size_t(M * N));
    for (size_t i = 0; i < W.size(); i++) Wf[i] = widen(W[i]);
    ops::gemm_reference(M, N, K, X.data(), K, index_t(1), Wf.data(), index_t(1), K, Y.data(), N,
                        bias ? ops::gemm_init::bias : ops::gemm_init::zero, bias);
    return Y;
}

template <class S>
std::vector<S> random_weights(index_t N, index_t K, std::uint64_t stream) {
    std::vector<float> w(size_t(N * K));
    rng::fill_uniform(w.data(), N * K, 7, stream, 0.5f);
    std::vector<S> out(w.size());
    for (size_t i = 0; i < w.size(); i++) out[i] = narrow<S>(w[i]);
    return out;
}

template <class S>
void check_linear_packed_equals_reference() {
    for (index_t M : {1, 2, 5, 64, 577})
        for (const auto& nk : std::vector<std::array<index_t, 2>>{{1, 1}, {67, 131}, {33, 300}, {97, 513}}) {
            const index_t N = nk[0], K = nk[1];
            if (M == 577 && K > 300) continue;  // keeps the scalar reference quick in unoptimised builds
            const auto W = random_weights<S>(N, K, 11);
            std::vector<float> X(size_t(M * K)), bias(static_cast<size_t>(N));
            rng::fill_uniform(X.data(), M * K, 7, 12, 1.f);
            rng::fill_uniform(bias.data(), N, 7, 13, 1.f);
            const auto pw = ops::packed_weight<S>::pack(W.data(), N, K);
            REQUIRE(pw.N() == N);
            REQUIRE(pw.K() == K);
            for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
                const auto ref = linear_ref(X, W, b, M, N, K);
                std::vector<float> Y(size_t(M * N), -1.f);
                ops::linear_packed(backend::cpu{}, Y.data(), X.data(), pw, b, M);
                CAPTURE(M);
                CAPTURE(N);
                CAPTURE(K);
                CAPTURE(b != nullptr);
                CHECK(same_bits(Y, ref));
            }
        }
}

}  // namespace

TEST_CASE("gemm equals gemm_reference bit for bit (all transposes, init modes, edge sizes)") {
    for (const auto& mnk : std::vector<std::array<index_t, 3>>{{1, 1, 1}, {1, 33, 17}, {7, 5, 3}, {13, 47, 129}, {65, 96, 300}}) {
        const index_t M = mnk[0], N = mnk[1], K = mnk[2];
        std::vector<float> A(size_t(M * K)), B(size_t(K * N)), bias(static_cast<size_t>(N));
        rng::fill_uniform(A.data(), M * K, 1, 1, 1.f);
        rng::fill_uniform(B.data(), K * N, 1, 2, 1.f);
        rng::fill_uniform(bias.data(), N, 1, 3, 1.f);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (auto init : {ops::gemm_init::zero, ops::gemm_init::bias, ops::gemm_init::accumulate}) {
                    const index_t rsa = ta ? 1 : K, csa = ta ? M : 1, rsb = tb ? 1 : N, csb = tb ? K : 1;
                    std::vector<float> c_ref(size_t(M * N)), c(size_t(M * N));
                    rng::fill_uniform(c_ref.data(), M * N, 1, 4, 1.f);
                    c = c_ref;
                    ops::gemm_reference(M, N, K, A.data(), rsa, csa, B.data(), rsb, csb, c_ref.data(), N, init, bias.data());
                    ops::gemm(backend::cpu{}, M, N, K, A.data(), rsa, csa, B.data(), rsb, csb, c.data(), N, init, bias.data());
                    CAPTURE(M);
                    CAPTURE(N);
                    CAPTURE(K);
                    CAPTURE(ta);
                    CAPTURE(tb);
                    CHECK(std::memcmp(c.data(), c_ref.data(), c.size() * sizeof(float)) == 0);
                }
    }
}

TEST_CASE("every instruction set this CPU runs gives the reference's bits: gemm, linear_packed, GEMV, exp") {
    // The run-time dispatch (ops/isa.h) must change only the speed. Each set up to the CPU's best is
    // forced in turn; the scalar one is also what a CPU without AVX2 runs.
    for (int level = 0; level <= int(ops::cpu_isa()); level++) {
        const ops::isa_override use{ops::isa(level)};
        CAPTURE(ops::isa_name(ops::isa(level)));
        for (const auto& mnk : std::vector<std::array<index_t, 3>>{{1, 1, 1}, {15, 47, 129}, {65, 96, 531}}) {
            const index_t M = mnk[0], N = mnk[1], K = mnk[2];
            std::vector<double> A(size_t(M * K)), B(size_t(K * N)), bias(static_cast<size_t>(N));
            rng::fill_uniform(A.data(), M * K, 3, 1, 1.f);
            rng::fill_uniform(B.data(), K * N, 3, 2, 1.f);
            rng::fill_uniform(bias.data(), N, 3, 3, 1.f);
            std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end()), biasf(bias.begin(), bias.end());
            for (int tb = 0; tb < 2; tb++) {  // B row-major, and B = W^T of a linear (the packing transpose)
                const index_t rsb = tb ? 1 : N, csb = tb ? K : 1;
                std::vector<double> cr(size_t(M * N)), c(size_t(M * N));
                std::vector<float> crf(size_t(M * N)), cf(size_t(M * N));
                ops::gemm_reference(M, N, K, A.data(), K, index_t(1), B.data(), rsb, csb, cr.data(), N, ops::gemm_init::bias,
                                    bias.data());
                ops::gemm(backend::cpu{}, M, N, K, A.data(), K, index_t(1), B.data(), rsb, csb, c.data(), N, ops::gemm_init::bias,
                          bias.data());
                ops::gemm_reference(M, N, K, Af.data(), K, index_t(1), Bf.data(), rsb, csb, crf.data(), N, ops::gemm_init::bias,
                                    biasf.data());
                ops::gemm(backend::cpu{}, M, N, K, Af.data(), K, index_t(1), Bf.data(), rsb, csb, cf.data(), N,
                          ops::gemm_init::bias, biasf.data());
                CAPTURE(M);
                CAPTURE(N);
                CAPTURE(K);
                CAPTURE(tb);
                CHECK(same_bits(c, cr));
                CHECK(same_bits(cf, crf));
            }
        }
        check_linear_packed_equals_reference<float>();
        check_linear_packed_equals_reference<bf16>();
        check_linear_packed_equals_reference<f16>();
        std::vector<float> x(1000), y(x.size()), ref(x.size());
        rng::fill_uniform(x.data(), index_t(x.size()), 3, 4, 90.f);
        x[3] = std::numeric_limits<float>::quiet_NaN();
        x[4] = -std::numeric_limits<float>::infinity();
        for (std::size_t i = 0; i < x.size(); i++) ref[i] = ops::exp_scalar(x[i] - 0.5f);
        ops::exp_shifted(y.data(), x.data(), 0.5f, index_t(x.size()));
        CHECK(same_bits(y, ref));
    }
}

TEST_CASE("gemm with one row (a decode step: B read in place, W^T by register transposes) equals gemm_reference") {
    // M == 1 skips packing (kernels/gemm.inc gemv): both layouts of B, padded rows of W (cs_b > K,
    // as a KV cache's keys), K around the 16-wide transposes, N around the 4-vector blocks, every
    // init, a strided A, on every instruction set this CPU runs.
    for (int level = 0; level <= int(ops::cpu_isa()); level++) {
        const ops::isa_override use{ops::isa(level)};
        for (index_t N : {1, 64, 100, 131, 1000})
            for (index_t K : {1, 15, 16, 33, 300})
                for (int layout = 0; layout < 3; layout++) {  // B row-major; W^T; W^T with padded rows
                    const index_t ldw = layout == 2 ? K + 5 : K, rsb = layout ? 1 : N, csb = layout ? ldw : 1;
                    const index_t cs_a = 3;
                    std::vector<float> A(size_t(K * cs_a)), B(size_t(layout ? N * ldw : K * N)), bias(static_cast<size_t>(N)),
                        c0(static_cast<size_t>(N));
                    rng::fill_uniform(A.data(), index_t(A.size()), 8, 1, 1.f);
                    rng::fill_uniform(B.data(), index_t(B.size()), 8, 2, 1.f);
                    rng::fill_uniform(bias.data(), N, 8, 3, 1.f);
                    rng::fill_uniform(c0.data(), N, 8, 4, 1.f);
                    for (auto init : {ops::gemm_init::zero, ops::gemm_init::bias, ops::gemm_init::accumulate}) {
                        auto cr = c0, c = c0;
                        ops::gemm_reference(index_t(1), N, K, A.data(), index_t(0), cs_a, B.data(), rsb, csb, cr.data(), N, init,
                                            bias.data());
                        ops::gemm(backend::cpu{}, index_t(1), N, K, A.data(), index_t(0), cs_a, B.data(), rsb, csb, c.data(), N,
                                  init, bias.data());
                        CAPTURE(ops::isa_name(ops::isa(level)));
                        CAPTURE(N);
                        CAPTURE(K);
                        CAPTURE(layout);
                        CAPTURE(int(init));
                        CHECK(same_bits(c, cr));
                    }
                }
    }
}

TEST_CASE("ALIGNGPT_ISA: a known name picks that set (never above the CPU's), an unknown one is an error") {
    CHECK(ops::parse_isa("", ops::isa::avx2) == ops::isa::avx2);
    CHECK(ops::parse_isa("scalar", ops::isa::avx512) == ops::isa::scalar);
    CHECK(ops::parse_isa("avx2", ops::isa::avx512) == ops::isa::avx2);
    CHECK(ops::parse_isa("avx512", ops::isa::avx2) == ops::isa::avx2);
    CHECK_THROWS_WITH_AS(ops::parse_isa("avx-512", ops::isa::avx512),
                         doctest::Contains("ALIGNGPT_ISA=avx-512: expected scalar, avx2 or avx512"), error);
    if (ops::cpu_isa() != ops::isa::avx512)
        CHECK_THROWS_WITH_AS(ops::isa_override{ops::isa::avx512}, doctest::Contains("does not run avx512"), error);
}

TEST_CASE("gemm: double, padded ldc, K == 0 and the blocking edges equal gemm_reference") {
    // Sizes straddle the blocking (KC = 256, MR = 14/6/4, NR = 32/16/8) and the thread split.
    for (const auto& mnk : std::vector<std::array<index_t, 3>>{{29, 37, 257}, {3, 70, 513}, {150, 33, 40}, {9, 9, 0}}) {
        const index_t M = mnk[0], N = mnk[1], K = mnk[2], ldc = N + 3;
        std::vector<double> A(size_t(M * K)), B(size_t(K * N)), bias(static_cast<size_t>(N)), c0(size_t(M * ldc));
        rng::fill_uniform(A.data(), M * K, 2, 1, 1.f);
        rng::fill_uniform(B.data(), K * N, 2, 2, 1.f);
        rng::fill_uniform(bias.data(), N, 2, 3, 1.f);
        rng::fill_uniform(c0.data(), M * ldc, 2, 4, 1.f);
        std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end()), biasf(bias.begin(), bias.end()),
            c0f(c0.begin(), c0.end());
        for (auto init : {ops::gemm_init::zero, ops::gemm_init::bias, ops::gemm_init::accumulate}) {
            CAPTURE(M);
            CAPTURE(N);
            CAPTURE(K);
            CAPTURE(int(init));
            auto cr = c0, c = c0;
            ops::gemm_reference(M, N, K, A.data(), K, index_t(1), B.data(), N, index_t(1), cr.data(), ldc, init, bias.data());
            ops::gemm(backend::cpu{}, M, N, K, A.data(), K, index_t(1), B.data(), N, index_t(1), c.data(), ldc, init,
                      bias.data());
            CHECK(same_bits(c, cr));  // includes the untouched columns N..ldc-1
            auto crf = c0f, cf = c0f;
            ops::gemm_reference(M, N, K, Af.data(), index_t(1), M, Bf.data(), index_t(1), K, crf.data(), ldc, init, biasf.data());
            ops::gemm(backend::cpu{}, M, N, K, Af.data(), index_t(1), M, Bf.data(), index_t(1), K, cf.data(), ldc, init,
                      biasf.data());
            CHECK(same_bits(cf, crf));
        }
    }
}

TEST_CASE("linear_packed equals gemm_reference on the widened weights: f32 weights") {
    check_linear_packed_equals_reference<float>();
}
TEST_CASE("linear_packed equals gemm_reference on the widened weights: bf16 weights") {
    check_linear_packed_equals_reference<bf16>();
}
TEST_CASE("linear_packed equals gemm_reference on the widened weights: f16 weights") {
    check_linear_packed_equals_reference<f16>();
}

TEST_CASE("packed_weight: layout, padding and unpack_row") {
    const index_t N = 45, K = 7;
    const auto W = random_weights<bf16>(N, K, 21);
    const auto pw = ops::packed_weight<bf16>::pack(W.data(), N, K);
    CHECK(pw.panels() == 2);
    CHECK(pw.bytes() == size_t(2 * K * 32 * 2));
    for (index_t j = 0; j < N; j++)
        for (index_t k = 0; k < K; k++) CHECK(bits16(pw.panel(j / 32)[k * 32 + j % 32]) == bits16(W[size_t(j * K + k)]));
    for (index_t j = N; j < 64; j++) CHECK(bits16(pw.panel(1)[3 * 32 + j % 32]) == 0);  // zero padding
    std::vector<float> row(static_cast<size_t>(K));
    pw.unpack_row(40, row.data());
    for (index_t k = 0; k < K; k++) CHECK(row[size_t(k)] == widen(W[size_t(40 * K + k)]));
    CHECK_THROWS_AS(pw.unpack_row(N, row.data()), aligngpt::error);
}

TEST_CASE("linear_packed: a decoded token (M == 1) equals the same row of a batch, bit for bit") {
    const index_t M = 37, N = 301, K = 260;
    const auto W = random_weights<bf16>(N, K, 31);
    const auto pw = ops::packed_weight<bf16>::pack(W.data(), N, K);
    std::vector<float> X(size_t(M * K)), bias(static_cast<size_t>(N)), Y(size_t(M * N));
    rng::fill_uniform(X.data(), M * K, 7, 32, 1.f);
    rng::fill_uniform(bias.data(), N, 7, 33, 1.f);
    ops::linear_packed(backend::cpu{}, Y.data(), X.data(), pw, bias.data(), M);
    for (index_t i = 0; i < M; i++) {
        std::vector<float> y1(static_cast<size_t>(N)), yb(Y.begin() + i * N, Y.begin() + (i + 1) * N);
        ops::linear_packed(backend::cpu{}, y1.data(), X.data() + i * K, pw, bias.data(), 1);
        CAPTURE(i);
        CHECK(same_bits(y1, yb));
    }
    // and a batch of 2 taken from the middle equals the same rows of the batch of 37
    std::vector<float> y2(size_t(2 * N));
    ops::linear_packed(backend::cpu{}, y2.data(), X.data() + 20 * K, pw, bias.data(), 2);
    CHECK(same_bits(y2, std::vector<float>(Y.begin() + 20 * N, Y.begin() + 22 * N)));
}

TEST_CASE("repro: gemm bits do not depend on thread count") {
    thread_guard guard;
    const index_t M = 203, N = 301, K = 517;
    std::vector<float> A(size_t(M * K)), B(size_t(K * N)), bias(static_cast<size_t>(N));
    rng::fill_uniform(A.data(), M * K, 3, 1, 1.f);
    rng::fill_uniform(B.data(), K * N, 3, 2, 1.f);
    rng::fill_uniform(bias.data(), N, 3, 3, 1.f);
    const auto Wb = random_weights<bf16>(N, K, 4);
    const auto pwb = ops::packed_weight<bf16>::pack(Wb.data(), N, K);
    const auto pwf = ops::packed_weight<float>::pack(B.data(), N, K);  // B read as W[N, K]
    std::vector<float> ref_gemm, ref_lin, ref_linf, ref_gemv;
    for (int threads : {1, 2, 3, 4}) {
        set_threads(threads);
        CAPTURE(threads);
        std::vector<float> c(size_t(M * N)), y(size_t(M * N)), yf(size_t(M * N)), g(static_cast<size_t>(N));
        ops::gemm(backend::cpu{}, M, N, K, A.data(), K, index_t(1), B.data(), N, index_t(1), c.data(), N, ops::gemm_init::bias,
                  bias.data());
        ops::linear_packed(backend::cpu{}, y.data(), A.data(), pwb, bias.data(), M);
        ops::linear_packed(backend::cpu{}, yf.data(), A.data(), pwf, nullptr, M);
        ops::linear_packed(backend::cpu{}, g.data(), A.data() + 100 * K, pwb, bias.data(), 1);
        if (threads == 1) {
            ref_gemm = c, ref_lin = y, ref_linf = yf, ref_gemv = g;
            std::vector<float> r(size_t(M * N));
            ops::gemm_reference(M, N, K, A.data(), K, index_t(1), B.data(), N, index_t(1), r.data(), N, ops::gemm_init::bias,
                                bias.data());
            CHECK(same_bits(c, r));
            CHECK(same_bits(y, linear_ref(A, Wb, bias.data(), M, N, K)));
            CHECK(same_bits(g, std::vector<float>(y.begin() + 100 * N, y.begin() + 101 * N)));
        } else {
            CHECK(same_bits(c, ref_gemm));
            CHECK(same_bits(y, ref_lin));
            CHECK(same_bits(yf, ref_linf));
            CHECK(same_bits(g, ref_gemv));
        }
    }
}

TEST_CASE("gemm: several shared B blocks, A blocks and K blocks, at 1-4 threads, equal gemm_reference") {
    // gemm packs B one KC x NC block at a time into buffers the team shares, and each thread packs
    // its rows of A once per K block when they fit one A block (gemm.h). These sizes give two or
    // more K blocks, B blocks (N > NC = B_bytes / (KC * 4)) and, for M = 1100, several A blocks
    // per task at one thread; every transpose of A and B, and every thread count, must give the
    // definition's bits.
    thread_guard guard;
    for (const auto& mnk : std::vector<std::array<index_t, 3>>{{45, 2000, 600}, {1100, 40, 600}}) {
        const index_t M = mnk[0], N = mnk[1], K = mnk[2];
        std::vector<float> A(size_t(M * K)), B(size_t(K * N)), bias(static_cast<size_t>(N));
        rng::fill_uniform(A.data(), M * K, 8, 1, 1.f);
        rng::fill_uniform(B.data(), K * N, 8, 2, 1.f);
        rng::fill_uniform(bias.data(), N, 8, 3, 1.f);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const index_t rsa = ta ? 1 : K, csa = ta ? M : 1, rsb = tb ? 1 : N, csb = tb ? K : 1;
                std::vector<float> ref(size_t(M * N));
                ops::gemm_reference(M, N, K, A.data(), rsa, csa, B.data(), rsb, csb, ref.data(), N, ops::gemm_init::bias,
                                    bias.data());
                for (int threads : {1, 2, 3, 4}) {
                    set_threads(threads);
                    std::vector<float> c(size_t(M * N), -1.f);
                    ops::gemm(backend::cpu{}, M, N, K, A.data(), rsa, csa, B.data(), rsb, csb, c.data(), N, ops::gemm_init::bias,
                              bias.data());
                    CAPTURE(M);
                    CAPTURE(N);
                    CAPTURE(K);
                    CAPTURE(ta);
                    CAPTURE(tb);
                    CAPTURE(threads);
                    CHECK(same_bits(c, ref));
                }
            }
    }
}

TEST_CASE("gemm: 120 random problems (sizes, transposes, padded ldc, init, threads) equal gemm_reference") {
    // Seeded draws, so a failure names a problem that reruns exactly. Sizes cross MR, NR, the 16 x 16
    // transposes and the thread split; ldc is padded so untouched columns are checked too.
    thread_guard guard;
    for (std::uint64_t p = 0; p < 120; p++) {
        auto draw = [&](std::uint64_t field, index_t lo, index_t hi) {
            return lo + index_t(rng::bits(9, p, field) % std::uint64_t(hi - lo + 1));
        };
        const index_t M = draw(0, 1, 90), N = draw(1, 1, 140), K = draw(2, 1, 160), ldc = N + draw(3, 0, 5);
        const int ta = int(draw(4, 0, 1)), tb = int(draw(5, 0, 1)), threads = int(draw(6, 1, 4));
        const auto init = ops::gemm_init(draw(7, 0, 2));
        std::vector<float> A(size_t(M * K)), B(size_t(K * N)), bias(static_cast<size_t>(N)), c0(size_t(M * ldc));
        rng::fill_uniform(A.data(), M * K, 10, 4 * p, 1.f);
        rng::fill_uniform(B.data(), K * N, 10, 4 * p + 1, 1.f);
        rng::fill_uniform(bias.data(), N, 10, 4 * p + 2, 1.f);
        rng::fill_uniform(c0.data(), M * ldc, 10, 4 * p + 3, 1.f);
        const index_t rsa = ta ? 1 : K, csa = ta ? M : 1, rsb = tb ? 1 : N, csb = tb ? K : 1;
        auto ref = c0, c = c0;
        ops::gemm_reference(M, N, K, A.data(), rsa, csa, B.data(), rsb, csb, ref.data(), ldc, init, bias.data());
        set_threads(threads);
        ops::gemm(backend::cpu{}, M, N, K, A.data(), rsa, csa, B.data(), rsb, csb, c.data(), ldc, init, bias.data());
        CAPTURE(p);
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        CAPTURE(ldc);
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(threads);
        CHECK(same_bits(c, ref));
    }
}

TEST_CASE("repro: gemm and linear_packed bits are locked (same hash in every build)") {
    // FNV-1a 64 of the outputs; the values are a property of the math (fma chains in order), so
    // generic x86-64, -march=native (AVX-512) and clang builds must all print and match these.
    const index_t M = 77, N = 131, K = 300;
    std::vector<float> A(size_t(M * K)), B(size_t(K * N)), bias(static_cast<size_t>(N)), c(size_t(M * N)), y(size_t(M * N)),
        g(static_cast<size_t>(N));
    rng::fill_uniform(A.data(), M * K, 5, 1, 1.f);
    rng::fill_uniform(B.data(), K * N, 5, 2, 1.f);
    rng::fill_uniform(bias.data(), N, 5, 3, 1.f);
    ops::gemm(backend::cpu{}, M, N, K, A.data(), K, index_t(1), B.data(), N, index_t(1), c.data(), N, ops::gemm_init::bias,
              bias.data());
    const auto Wh = random_weights<f16>(N, K, 6);
    const auto pwh = ops::packed_weight<f16>::pack(Wh.data(), N, K);
    ops::linear_packed(backend::cpu{}, y.data(), A.data(), pwh, bias.data(), M);
    ops::linear_packed(backend::cpu{}, g.data(), A.data(), pwh, bias.data(), 1);
    const std::uint64_t hg = fnv1a_bytes(c.data(), c.size()), hl = fnv1a_bytes(y.data(), y.size()),
                        hv = fnv1a_bytes(g.data(), g.size());
    MESSAGE("simd=", std::string(ops::isa_name(ops::active_isa())), " gemm=", hg, " linear_f16=", hl, " gemv_f16=", hv);
    CHECK(hg == 0xc707ee7b32b1834eull);
    CHECK(hl == 0xae8eb26096759534ull);
    CHECK(hv == 0xd8d03771a14a432eull);
}

TEST_CASE("gemm and linear_packed: shape errors name the op") {
    std::vector<float> a(16), b(16), c(16);
    for (const auto& mnk : std::vector<std::array<index_t, 3>>{{-1, 2, 2}, {2, -1, 2}, {2, 2, -3}}) {
        try {
            ops::gemm(backend::cpu{}, mnk[0], mnk[1], mnk[2], a.data(), 2, index_t(1), b.data(), 2, index_t(1), c.data(), 2);
            FAIL("gemm accepted a negative size");
        } catch (const aligngpt::error& e) { CHECK(std::string(e.what()).find("gemm") != std::string::npos); }
    }
    CHECK_THROWS_AS(ops::gemm(backend::cpu{}, 2, 2, 2, a.data(), 2, index_t(1), b.data(), 2, index_t(1), c.data(), 2,
                              ops::gemm_init::bias, static_cast<const float*>(nullptr)),
                    aligngpt::error);
    const auto pw = ops::packed_weight<float>::pack(b.data(), 4, 4);
    try {
        ops::linear_packed(backend::cpu{}, c.data(), a.data(), pw, nullptr, -1);
        FAIL("linear_packed accepted M < 0");
    } catch (const aligngpt::error& e) { CHECK(std::string(e.what()).find("linear_packed") != std::string::npos); }
    CHECK_THROWS_AS(ops::packed_weight<float>::pack(b.data(), -4, 4), aligngpt::error);
    // K == 0: no terms, the outputs are their start values.
    const auto pw0 = ops::packed_weight<float>::pack(b.data(), 3, 0);
    std::vector<float> y(6, -1.f), bias{1.f, 2.f, 3.f};
    ops::linear_packed(backend::cpu{}, y.data(), a.data(), pw0, bias.data(), 2);
    CHECK(y == std::vector<float>{1.f, 2.f, 3.f, 1.f, 2.f, 3.f});
}

TEST_CASE("gemm_batched: each item equals gemm_reference alone (shared and per-item operands)") {
    const index_t batch = 3, M = 9, N = 37, K = 21;
    std::vector<float> A(size_t(batch * M * K)), B(size_t(batch * K * N)), C(size_t(batch * M * N)), R = C;
    rng::fill_uniform(A.data(), index_t(A.size()), 3, 1, 1.f);
    rng::fill_uniform(B.data(), index_t(B.size()), 3, 2, 1.f);
    for (index_t shared_b : {0, 1}) {
        const index_t bb = shared_b ? 0 : K * N;
        ops::gemm_batched(backend::cpu{}, batch, M, N, K, A.data(), K, 1, M * K, B.data(), 1, K, bb, C.data(), N, M * N);
        for (index_t b = 0; b < batch; b++)
            ops::gemm_reference(M, N, K, A.data() + b * M * K, K, 1, B.data() + b * bb, 1, K, R.data() + b * M * N, N,
                                ops::gemm_init::zero, static_cast<const float*>(nullptr));
        CAPTURE(shared_b);
        CHECK(std::memcmp(C.data(), R.data(), C.size() * sizeof(float)) == 0);
    }
}

}  // namespace test_gemm
