// The basic ops (ops/{rms_norm,layer_norm,activations,softmax,embedding,cross_entropy,elementwise,
// shape,reduce}.h), each tested three ways:
//   1. finite differences in double (autograd::grad_check, central differences, h = 1e-6);
//   2. parity with PyTorch in float32 (tests/golden/op_*.safetensors, recipes in
//      tests/tools/golden/ops_basic.py) at torch.testing.assert_close's fp32 defaults
//      rtol 1.3e-6, atol 1e-5 unless a test says otherwise and why;
//   3. "repro:" the same bits for 1, 2, 3 and 4 threads, and against tests/golden/bits.lock.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "aligngpt/autograd/grad_check.h"
#include "aligngpt/ops/activations.h"
#include "aligngpt/ops/batched_matvec.h"
#include "aligngpt/ops/cross_entropy.h"
#include "aligngpt/ops/elementwise.h"
#include "aligngpt/ops/embedding.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/l2_normalize.h"
#include "aligngpt/ops/layer_norm.h"
#include "aligngpt/ops/masked_mean.h"
#include "aligngpt/ops/reduce.h"
#include "aligngpt/ops/rms_norm.h"
#include "aligngpt/ops/shape.h"
#include "aligngpt/ops/softmax.h"
#include "support/golden.h"

namespace test_ops {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using autograd::grad_check;
using autograd::op_under_test;
using autograd::random_leaf;
using autograd::tape;
using autograd::variable;

namespace {

using vd = variable<double>;
using vf = variable<float>;
using ids_t = std::vector<std::int64_t>;

// ---------------------------------------------------------------------------------------------
// Golden helpers
// ---------------------------------------------------------------------------------------------

constexpr double kRtol = 1.3e-6, kAtol = 1e-5;  // torch.testing.assert_close defaults for float32

/// max |a - b| / (atol + rtol |b|); <= 1 passes. Run the binary with -s to see the measured ratios.
double ratio(const tensor<float>& actual, const std::vector<float>& expected, double rtol = kRtol, double atol = kAtol) {
    return golden::close_ratio(actual.to_vector(), expected, rtol, atol);
}

/// Copies (concat, slice, gather, transpose) must reproduce torch exactly.
double exact(const tensor<float>& actual, const std::vector<float>& expected) {
    return golden::max_abs_diff(actual.to_vector(), expected);
}

vf leaf(const golden::fixture& fx, const std::string& key, bool requires_grad = true) {
    return vf::leaf(fx.tensor<float>(key), requires_grad, key);
}

/// Runs backward from `y` with the fixture's upstream gradient `dy_key`.
void backward(tape<float>& tp, const vf& y, const golden::fixture& fx, const std::string& dy_key) {
    tensor<float> dy = fx.tensor<float>(dy_key);
    tp.backward(y, dy.reshape(y.shape()));
}

/// Finite-difference checks run thousands of tiny forward passes; on one thread they stay fast even
/// on a loaded CI machine (an oversubscribed OpenMP barrier can stall for a time slice). Thread
/// independence is the repro: test's job.
struct one_thread {
    int saved = max_threads();
    one_thread() { set_threads(1); }
    ~one_thread() { set_threads(saved); }
};

}  // namespace

// =============================================================================================
// 1. Finite differences (double). grad_check returns max |analytic - numeric| / max(1, |numeric|);
//    with h = 1e-6 the truncation error is ~1e-12 and the rounding error ~1e-10 for these sizes,
//    so 1e-8 leaves a wide margin while still catching any wrong term (those show up at >= 1e-3).
// =============================================================================================

TEST_CASE("rms_norm backward matches finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto x = random_leaf<double>({2, 3, 8}, 1, true, 2.f), g = random_leaf<double>({8}, 2);
    op_under_test<double> f = [](tape<double>* tp, const std::vector<vd>& v) { return ag::rms_norm(tp, v[0], v[1]); };
    CHECK(grad_check(f, {x, g}) <= 1e-8);
}

TEST_CASE("layer_norm backward matches finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto x = random_leaf<double>({4, 9}, 1, true, 2.f), w = random_leaf<double>({9}, 2), b = random_leaf<double>({9}, 3);
    op_under_test<double> f = [](tape<double>* tp, const std::vector<vd>& v) { return ag::layer_norm(tp, v[0], v[1], v[2]); };
    CHECK(grad_check(f, {x, w, b}) <= 1e-8);
    op_under_test<double> no_bias = [](tape<double>* tp, const std::vector<vd>& v) { return ag::layer_norm(tp, v[0], v[1]); };
    CHECK(grad_check(no_bias, {x, w}) <= 1e-8);
}

TEST_CASE("gelu, quick_gelu, silu backward match finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto x = random_leaf<double>({3, 17}, 1, true, 5.f);
    op_under_test<double> gelu = [](tape<double>* tp, const std::vector<vd>& v) { return ag::gelu(tp, v[0]); };
    op_under_test<double> qg = [](tape<double>* tp, const std::vector<vd>& v) { return ag::quick_gelu(tp, v[0]); };
    op_under_test<double> silu = [](tape<double>* tp, const std::vector<vd>& v) { return ag::silu(tp, v[0]); };
    CHECK(grad_check(gelu, {x}) <= 1e-8);
    CHECK(grad_check(qg, {x}) <= 1e-8);
    CHECK(grad_check(silu, {x}) <= 1e-8);
}

TEST_CASE("swiglu backward matches finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto g = random_leaf<double>({3, 11}, 1, true, 5.f), u = random_leaf<double>({3, 11}, 2, true, 2.f);
    op_under_test<double> f = [](tape<double>* tp, const std::vector<vd>& v) { return ag::swiglu(tp, v[0], v[1]); };
    CHECK(grad_check(f, {g, u}) <= 1e-8);
}

TEST_CASE("softmax backward matches finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto x = random_leaf<double>({2, 3, 7}, 1, true, 4.f);
    op_under_test<double> f = [](tape<double>* tp, const std::vector<vd>& v) { return ag::softmax(tp, v[0]); };
    CHECK(grad_check(f, {x}) <= 1e-8);
}

TEST_CASE("embedding backward matches finite differences, repeated ids (double, tol 1e-8)") {
    one_thread guard;
    auto w = random_leaf<double>({6, 5}, 1);
    op_under_test<double> f = [](tape<double>* tp, const std::vector<vd>& v) {
        return ag::embedding(tp, v[0], ids_t{2, 0, 5, 2, 2, 1}, -1);  // no padding row: every row is live
    };
    CHECK(grad_check(f, {w}) <= 1e-8);
}

TEST_CASE("cross_entropy backward matches finite differences, ignored rows (double, tol 1e-8)") {
    one_thread guard;
    auto z = random_leaf<double>({5, 7}, 1, true, 3.f);
    op_under_test<double> f = [](tape<double>* tp, const std::vector<vd>& v) {
        return ag::cross_entropy(tp, v[0], ids_t{3, -100, 0, 6, -100});
    };
    CHECK(grad_check(f, {z}) <= 1e-8);
    op_under_test<double> leading = [](tape<double>* tp, const std::vector<vd>& v) {  // logits [B, S, V]
        return ag::cross_entropy(tp, ag::reshape(tp, v[0], {1, 5, 7}), ids_t{1, 2, -100, 4, 5});
    };
    CHECK(grad_check(leading, {z}) <= 1e-8);
}

TEST_CASE("add, mul, scale, add_row backward match finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto a = random_leaf<double>({3, 4}, 1), b = random_leaf<double>({3, 4}, 2), r = random_leaf<double>({4}, 3);
    op_under_test<double> add = [](tape<double>* tp, const std::vector<vd>& v) { return ag::add(tp, v[0], v[1]); };
    op_under_test<double> mul = [](tape<double>* tp, const std::vector<vd>& v) { return ag::mul(tp, v[0], v[1]); };
    op_under_test<double> square = [](tape<double>* tp, const std::vector<vd>& v) { return ag::mul(tp, v[0], v[0]); };
    op_under_test<double> scale = [](tape<double>* tp, const std::vector<vd>& v) { return ag::scale(tp, v[0], 0.37); };
    op_under_test<double> add_row = [](tape<double>* tp, const std::vector<vd>& v) { return ag::add_row(tp, v[0], v[1]); };
    CHECK(grad_check(add, {a, b}) <= 1e-8);
    CHECK(grad_check(mul, {a, b}) <= 1e-8);
    CHECK(grad_check(square, {a}) <= 1e-8);  // the same variable twice: both gradients add
    CHECK(grad_check(scale, {a}) <= 1e-8);
    CHECK(grad_check(add_row, {a, r}) <= 1e-8);
}

TEST_CASE("concat, slice, index_rows, reshape, transpose backward match finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto x0 = random_leaf<double>({2, 3, 4}, 1), x1 = random_leaf<double>({2, 1, 4}, 2);
    auto x2 = random_leaf<double>({2, 2, 4}, 3);
    for (int d : {1, -2}) {
        op_under_test<double> concat = [d](tape<double>* tp, const std::vector<vd>& v) { return ag::concat(tp, v, d); };
        CHECK(grad_check(concat, {x0, x1, x2}) <= 1e-8);
    }
    op_under_test<double> concat0 = [](tape<double>* tp, const std::vector<vd>& v) { return ag::concat(tp, v, 0); };
    CHECK(grad_check(concat0, {x0, x0}) <= 1e-8);  // the same input twice
    op_under_test<double> slice = [](tape<double>* tp, const std::vector<vd>& v) { return ag::slice(tp, v[0], 2, 1, 3); };
    CHECK(grad_check(slice, {x0}) <= 1e-8);
    op_under_test<double> rows = [](tape<double>* tp, const std::vector<vd>& v) {
        return ag::index_rows(tp, ag::reshape(tp, v[0], {6, 4}), ids_t{5, 0, 5, 3});
    };
    CHECK(grad_check(rows, {x0}) <= 1e-8);
    for (auto [a, b] : {std::pair{0, 2}, std::pair{2, 1}, std::pair{1, 1}, std::pair{-1, 0}}) {
        op_under_test<double> tr = [a = a, b = b](tape<double>* tp, const std::vector<vd>& v) {
            return ag::transpose(tp, v[0], a, b);
        };
        CHECK(grad_check(tr, {x0}) <= 1e-8);
    }
}

TEST_CASE("sum and mean backward match finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto x = random_leaf<double>({3, 4, 5}, 1);
    for (int d : {0, 1, 2, -1}) {
        op_under_test<double> s = [d](tape<double>* tp, const std::vector<vd>& v) { return ag::sum(tp, v[0], d); };
        op_under_test<double> m = [d](tape<double>* tp, const std::vector<vd>& v) { return ag::mean(tp, v[0], d); };
        CHECK(grad_check(s, {x}) <= 1e-8);
        CHECK(grad_check(m, {x}) <= 1e-8);
    }
    op_under_test<double> s = [](tape<double>* tp, const std::vector<vd>& v) { return ag::sum(tp, v[0]); };
    op_under_test<double> m = [](tape<double>* tp, const std::vector<vd>& v) { return ag::mean(tp, v[0]); };
    CHECK(grad_check(s, {x}) <= 1e-8);
    CHECK(grad_check(m, {x}) <= 1e-8);
}

TEST_CASE("masked_mean, batched_matvec, l2_normalize backward match finite differences (double, tol 1e-8)") {
    one_thread guard;
    auto x = random_leaf<double>({2, 4, 3}, 1), m = random_leaf<double>({2, 5, 3}, 2), v = random_leaf<double>({2, 3}, 3);
    const std::vector<std::uint8_t> mask{1, 0, 1, 1, 0, 0, 0, 1};  // 3 and 1 counted rows
    op_under_test<double> mean = [&](tape<double>* tp, const std::vector<vd>& a) {
        return ag::masked_mean(tp, a[0], mask, 1e-8);
    };
    op_under_test<double> mv = [](tape<double>* tp, const std::vector<vd>& a) { return ag::batched_matvec(tp, a[0], a[1]); };
    op_under_test<double> l2 = [](tape<double>* tp, const std::vector<vd>& a) { return ag::l2_normalize(tp, a[0]); };
    CHECK(grad_check(mean, {x}) <= 1e-8);
    CHECK(grad_check(mv, {m, v}) <= 1e-8);
    CHECK(grad_check(l2, {x}) <= 1e-8);
    // An all-zero mask row gives a zero mean (eps keeps it finite) and no gradient.
    const std::vector<std::uint8_t> none(8, 0);
    CHECK(ag::masked_mean<double, backend::cpu>(nullptr, x, none, 1e-8).value().to_vector() == std::vector<double>(6, 0.0));
}

// =============================================================================================
// Masking and edge cases
// =============================================================================================

TEST_CASE("cross_entropy with every row ignored: loss 0 and zero gradient (torch: NaN; documented)") {
    auto z = random_leaf<float>({4, 9}, 1);
    tape<float> tp;
    auto loss = ag::cross_entropy(&tp, z, ids_t{-100, -100, -100, -100});
    CHECK(loss.value().data()[0] == 0.f);
    CHECK(loss.shape().empty());
    tp.backward(loss);
    for (float g : z.grad().to_vector()) CHECK(g == 0.f);
}

TEST_CASE("cross_entropy rejects out-of-range targets naming the op, position and value") {
    auto z = random_leaf<float>({3, 5}, 1);
    tape<float>* none = nullptr;
    CHECK_THROWS_WITH_AS(ag::cross_entropy(none, z, ids_t{1, 5, 0}),
                         doctest::Contains("cross_entropy: target 5 at position 1 is outside [0, 5)"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::cross_entropy(none, z, ids_t{1, 2, -1}), doctest::Contains("cross_entropy: target -1 at position 2"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::cross_entropy(none, z, ids_t{1, 2}),
                         doctest::Contains("cross_entropy: logits [3,5] do not match targets [2]"), aligngpt::error);
    CHECK_NOTHROW(ag::cross_entropy(none, z, ids_t{-7, 2, -7}, /*ignore_index=*/-7));
}

TEST_CASE("embedding: padding row gets no gradient, other rows as without padding; bad ids throw") {
    auto w = random_leaf<float>({6, 5}, 1);
    const ids_t ids{2, 0, 5, 0, 2};
    tensor<float> seed({5, 5});
    rng::fill_uniform(seed.data(), seed.numel(), 3, 3, 1.f);
    tape<float> tp1;
    tp1.backward(ag::embedding(&tp1, w, ids, -1), seed);
    const auto no_pad = w.grad().to_vector();
    w.zero_grad();
    tape<float> tp2;
    auto y = ag::embedding(&tp2, w, ids, 0);
    CHECK(y.value().at({1, 3}) == w.value().at({0, 3}));  // the padding row is still looked up
    tp2.backward(y, seed);
    const auto pad = w.grad().to_vector();
    for (int i = 0; i < 30; i++) CHECK(pad[size_t(i)] == (i < 5 ? 0.f : no_pad[size_t(i)]));
    tape<float>* none = nullptr;
    CHECK_THROWS_WITH_AS(ag::embedding(none, w, ids_t{1, 6}), doctest::Contains("embedding: id 6 at position 1"),
                         aligngpt::error);
}

TEST_CASE("ops reject mismatched shapes naming the op and both shapes") {
    auto x = random_leaf<float>({2, 3}, 1), w4 = random_leaf<float>({4}, 2), y = random_leaf<float>({3, 2}, 3);
    tape<float>* none = nullptr;
    CHECK_THROWS_WITH_AS(ag::rms_norm(none, x, w4), doctest::Contains("rms_norm: input [2,3] does not match weight [4]"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::layer_norm(none, x, w4), doctest::Contains("layer_norm: input [2,3] does not match weight [4]"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::swiglu(none, x, y), doctest::Contains("swiglu: gate [2,3] and up [3,2] differ"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::add(none, x, y), doctest::Contains("add: shapes [2,3] and [3,2] differ"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::mul(none, x, y), doctest::Contains("mul: shapes [2,3] and [3,2] differ"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::add_row(none, x, w4), doctest::Contains("add_row: input [2,3] does not match row [4]"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::concat(none, {x, y}, 0),
                         doctest::Contains("concat: input [3,2] does not match input [2,3] outside dimension 0"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::slice(none, x, 1, 2, 4), doctest::Contains("slice: range [2,4) out of bounds"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::index_rows(none, x, ids_t{0, 2}), doctest::Contains("index_rows: row 2 at position 1"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::reshape(none, x, {4, 2}), doctest::Contains("reshape: cannot view [2,3] as [4,2]"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::transpose(none, x, 0, 2), doctest::Contains("transpose: dimension 2 out of range"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::sum(none, x, 3), doctest::Contains("sum: dimension 3 out of range for shape [2,3]"),
                         aligngpt::error);
}

TEST_CASE("frozen inputs get no gradient buffer") {
    auto x = random_leaf<float>({2, 4}, 1, true), w = random_leaf<float>({4}, 2, false);
    auto b = random_leaf<float>({4}, 3, false), u = random_leaf<float>({2, 4}, 4, false);
    tape<float> tp;
    auto y = ag::sum(&tp, ag::swiglu(&tp, ag::add_row(&tp, ag::layer_norm(&tp, ag::rms_norm(&tp, x, w), w, b), b), u));
    tp.backward(y);
    CHECK(x.grad().defined());
    CHECK_FALSE(w.grad().defined());
    CHECK_FALSE(b.grad().defined());
    CHECK_FALSE(u.grad().defined());
    tape<float> tp2;  // nothing requires a gradient: nothing is recorded
    auto z = ag::softmax(&tp2, ag::concat(&tp2, {u, u}, 0));
    CHECK(tp2.size() == 0);
    CHECK_FALSE(z.requires_grad());
}

// =============================================================================================
// 2. Parity with PyTorch (float32 goldens)
// =============================================================================================

namespace {
float float_of_bits(std::uint32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
}
std::uint32_t bits_of(float f) {
    std::uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return b;
}
}  // namespace

TEST_CASE("exp (float): under 1 ulp from e^x over 2^20 points of [-104, 89]") {
    // Reference: std::exp in double, whose error (< 1 ulp of double) is far below a float ulp. The
    // ulp is that of the reference rounded to float (2^-149 where the result is subnormal). The
    // bound, under 1 ulp, is what ops/exp.h states: the error a faithful rounding may have.
    double worst = 0;
    float worst_x = 0;
    const std::uint32_t n = 1u << 20;
    for (std::uint32_t i = 0; i <= n; i++) {
        const float x = -104.0f + 193.0f * float(double(i) / n);
        const double ref = std::exp(double(x));
        const float got = ops::exp_scalar(x);
        const float rf = float(ref);
        if (std::isinf(rf)) {
            CHECK(std::isinf(got));
            continue;
        }
        const double ulp =
            rf == 0.0f ? std::ldexp(1.0, -149)
                       : double(std::nextafter(std::fabs(rf), std::numeric_limits<float>::infinity())) - double(std::fabs(rf));
        const double e = std::fabs(double(got) - ref) / ulp;
        if (e > worst) worst = e, worst_x = x;
    }
    MESSAGE("exp: worst error ", worst, " ulp at x = ", worst_x);
    CHECK(worst < 1.0);
}

TEST_CASE("exp (float): special values, and the vector path equals the scalar definition bit for bit") {
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(ops::exp_scalar(0.0f) == 1.0f);
    CHECK(ops::exp_scalar(-0.0f) == 1.0f);
    CHECK(ops::exp_scalar(-inf) == 0.0f);
    CHECK(!std::signbit(ops::exp_scalar(-inf)));
    CHECK(ops::exp_scalar(inf) == inf);
    CHECK(ops::exp_scalar(88.8f) == inf);
    CHECK(std::isfinite(ops::exp_scalar(88.72f)));
    CHECK(ops::exp_scalar(-110.0f) == 0.0f);
    CHECK(ops::exp_scalar(-100.0f) > 0.0f);  // subnormal, not flushed
    const float qnan = std::numeric_limits<float>::quiet_NaN();
    CHECK(bits_of(ops::exp_scalar(qnan)) == bits_of(qnan));
    // Every lane of the vector path (exp_shifted) against the scalar definition: the specials, a sweep
    // of bit patterns over the whole float line, and a shift, with lengths that leave scalar tails.
    std::vector<float> x = {0.0f,
                            -0.0f,
                            inf,
                            -inf,
                            qnan,
                            88.72f,
                            88.8f,
                            -87.5f,
                            -100.0f,
                            -103.9f,
                            -104.0f,
                            -110.0f,
                            1e-30f,
                            -1e-30f,
                            float_of_bits(1),
                            float_of_bits(0x80000001u)};
    for (std::uint64_t b = 0; b < (std::uint64_t(1) << 32); b += 4099) x.push_back(float_of_bits(std::uint32_t(b)));
    for (float shift : {0.0f, 3.5f, -40.0f}) {
        std::vector<float> y(x.size());
        ops::exp_shifted(y.data(), x.data(), shift, index_t(x.size()) - 3);
        for (size_t i = 0; i + 3 < x.size(); i++) {
            const float want = ops::exp_scalar(x[i] - shift);
            if (bits_of(y[i]) != bits_of(want)) {
                CAPTURE(i);
                CAPTURE(x[i]);
                CAPTURE(shift);
                CHECK(bits_of(y[i]) == bits_of(want));
                break;
            }
        }
    }
}

TEST_CASE("rms_norm matches transformers LlamaRMSNorm (golden op_rms_norm)") {
    const auto fx = golden::load("op_rms_norm");
    auto x = leaf(fx, "x"), w = leaf(fx, "w");
    tape<float> tp;
    auto y = ag::rms_norm(&tp, x, w, 1e-5f);
    backward(tp, y, fx, "dy");
    CHECK(ratio(y.value(), fx.get("y")) <= 1);
    CHECK(ratio(x.grad(), fx.get("dx")) <= 1);
    CHECK(ratio(w.grad(), fx.get("dw")) <= 1);
}

TEST_CASE("layer_norm matches torch layer_norm (golden op_layer_norm)") {
    const auto fx = golden::load("op_layer_norm");
    auto x = leaf(fx, "x"), w = leaf(fx, "w"), b = leaf(fx, "b");
    tape<float> tp;
    auto y = ag::layer_norm(&tp, x, w, b, 1e-5f);
    backward(tp, y, fx, "dy");
    CHECK(ratio(y.value(), fx.get("y")) <= 1);
    CHECK(ratio(x.grad(), fx.get("dx")) <= 1);
    CHECK(ratio(w.grad(), fx.get("dw")) <= 1);
    CHECK(ratio(b.grad(), fx.get("db")) <= 1);
}

TEST_CASE("gelu, quick_gelu, silu, swiglu match torch / transformers (golden op_activations)") {
    const auto fx = golden::load("op_activations");
    using unary = vf (*)(tape<float>*, const vf&);
    const std::pair<const char*, unary> ops[] = {{"gelu", ag::gelu<float, backend::cpu>},
                                                 {"quick_gelu", ag::quick_gelu<float, backend::cpu>},
                                                 {"silu", ag::silu<float, backend::cpu>}};
    for (const auto& name_op : ops) {
        const auto& name = name_op.first;  // plain locals: Clang 14 cannot capture structured bindings
        const auto& op = name_op.second;
        INFO(name);
        const std::string p = std::string(name) + ".";
        auto x = leaf(fx, p + "x");
        tape<float> tp;
        auto y = op(&tp, x);
        backward(tp, y, fx, p + "dy");
        CHECK(ratio(y.value(), fx.get(p + "y")) <= 1);
        CHECK(ratio(x.grad(), fx.get(p + "dx")) <= 1);
    }
    auto g = leaf(fx, "swiglu.g"), u = leaf(fx, "swiglu.u");
    tape<float> tp;
    auto y = ag::swiglu(&tp, g, u);
    backward(tp, y, fx, "swiglu.dy");
    CHECK(ratio(y.value(), fx.get("swiglu.y")) <= 1);
    CHECK(ratio(g.grad(), fx.get("swiglu.dg")) <= 1);
    CHECK(ratio(u.grad(), fx.get("swiglu.du")) <= 1);
}

TEST_CASE("softmax matches torch.softmax (golden op_softmax)") {
    const auto fx = golden::load("op_softmax");
    auto x = leaf(fx, "x");
    tape<float> tp;
    auto y = ag::softmax(&tp, x);
    backward(tp, y, fx, "dy");
    CHECK(ratio(y.value(), fx.get("y")) <= 1);
    CHECK(ratio(x.grad(), fx.get("dx")) <= 1);
}

TEST_CASE("embedding with padding_idx 0 matches torch (golden op_embedding)") {
    const auto fx = golden::load("op_embedding");
    auto w = leaf(fx, "w");
    const auto ids = tensor<std::int64_t>::from(fx.get<std::int64_t>("ids"), fx.shape("ids"));
    tape<float> tp;
    auto y = ag::embedding(&tp, w, ids, 0);
    CHECK(y.shape() == shape_t{3, 4, 16});
    backward(tp, y, fx, "dy");
    CHECK(exact(y.value(), fx.get("y")) == 0);  // a copy: exact
    CHECK(ratio(w.grad(), fx.get("dw")) <= 1);  // sums of up to 3 rows in another order
    for (int c = 0; c < 16; c++) CHECK(w.grad().at({0, c}) == 0.f);
}

TEST_CASE("cross_entropy with ignored rows matches torch (golden op_cross_entropy)") {
    const auto fx = golden::load("op_cross_entropy");
    auto z = leaf(fx, "z");
    const auto t = fx.get<std::int64_t>("targets");
    tape<float> tp;
    auto loss = ag::cross_entropy(&tp, z, t);
    backward(tp, loss, fx, "dloss");
    CHECK(ratio(loss.value(), fx.get("loss")) <= 1);
    CHECK(ratio(z.grad(), fx.get("dz")) <= 1);
    for (int n : {2, 5, 6})
        for (int v = 0; v < 37; v++) CHECK(z.grad().at({n, v}) == 0.f);  // ignored rows
}

TEST_CASE("add, mul, scale, add_row match torch (golden op_elementwise)") {
    const auto fx = golden::load("op_elementwise");
    struct result {
        vf y;
        vf a, b, r;
    };
    auto run = [&](const std::string& name) {
        auto a = leaf(fx, "a"), b = leaf(fx, "b"), r = leaf(fx, "r");
        tape<float> tp;
        vf y = name == "add"     ? ag::add(&tp, a, b)
               : name == "mul"   ? ag::mul(&tp, a, b)
               : name == "scale" ? ag::scale(&tp, a, 0.37f)
                                 : ag::add_row(&tp, a, r);
        backward(tp, y, fx, name + ".dy");
        return result{y, a, b, r};
    };
    for (const std::string name : {"add", "mul", "scale", "add_row"}) {
        INFO(name);
        const result res = run(name);
        CHECK(ratio(res.y.value(), fx.get(name + ".y")) <= 1);
        CHECK(ratio(res.a.grad(), fx.get(name + ".da")) <= 1);
        if (fx.has(name + ".db")) CHECK(ratio(res.b.grad(), fx.get(name + ".db")) <= 1);
        if (fx.has(name + ".dr")) CHECK(ratio(res.r.grad(), fx.get(name + ".dr")) <= 1);
    }
}

TEST_CASE("concat, slice, index_rows, transpose match torch (golden op_shape)") {
    const auto fx = golden::load("op_shape");
    // Copies are exact; gradients are copies too except index_rows (repeated rows add up: rtol/atol).
    {
        std::vector<vf> xs{leaf(fx, "concat.x0"), leaf(fx, "concat.x1"), leaf(fx, "concat.x2")};
        tape<float> tp;
        auto y = ag::concat(&tp, xs, 1);
        backward(tp, y, fx, "concat.dy");
        CHECK(exact(y.value(), fx.get("concat.y")) == 0);
        for (int k = 0; k < 3; k++) CHECK(exact(xs[size_t(k)].grad(), fx.get("concat.dx" + std::to_string(k))) == 0);
    }
    {
        auto x = leaf(fx, "slice.x");
        tape<float> tp;
        auto y = ag::slice(&tp, x, 1, 2, 6);
        backward(tp, y, fx, "slice.dy");
        CHECK(exact(y.value(), fx.get("slice.y")) == 0);
        CHECK(exact(x.grad(), fx.get("slice.dx")) == 0);
    }
    {
        auto x = leaf(fx, "index_rows.x");
        tape<float> tp;
        auto y = ag::index_rows(&tp, x, fx.get<std::int64_t>("index_rows.rows"));
        backward(tp, y, fx, "index_rows.dy");
        CHECK(exact(y.value(), fx.get("index_rows.y")) == 0);
        CHECK(ratio(x.grad(), fx.get("index_rows.dx")) <= 1);
    }
    {
        auto x = leaf(fx, "transpose.x");
        tape<float> tp;
        auto y = ag::transpose(&tp, x, 1, 3);
        CHECK(y.shape() == shape_t{2, 5, 4, 3});
        backward(tp, y, fx, "transpose.dy");
        CHECK(exact(y.value(), fx.get("transpose.y")) == 0);
        CHECK(exact(x.grad(), fx.get("transpose.dx")) == 0);
    }
}

TEST_CASE("sum and mean match torch (golden op_reduce)") {
    const auto fx = golden::load("op_reduce");
    for (const std::string name : {"sum_all", "mean_all", "sum_dim1", "mean_dim0"}) {
        INFO(name);
        auto x = leaf(fx, "x");
        tape<float> tp;
        vf y = name == "sum_all"    ? ag::sum(&tp, x)
               : name == "mean_all" ? ag::mean(&tp, x)
               : name == "sum_dim1" ? ag::sum(&tp, x, 1)
                                    : ag::mean(&tp, x, 0);
        backward(tp, y, fx, name + ".dy");
        CHECK(ratio(y.value(), fx.get(name + ".y")) <= 1);
        CHECK(ratio(x.grad(), fx.get(name + ".dx")) <= 1);
    }
}

// =============================================================================================
// 3. Reproducibility: bits independent of the thread count, and locked
// =============================================================================================

namespace {

/// A small chain through every op family, forward and backward; returns the bits of the loss,
/// an intermediate and every gradient, concatenated.
std::vector<float> op_chain_bits() {
    const index_t Tn = 96, V = 40, C = 48;
    auto W = random_leaf<float>({V, C}, 11), w = random_leaf<float>({C}, 12), b = random_leaf<float>({C}, 13);
    auto g = random_leaf<float>({C}, 14), r = random_leaf<float>({C / 2}, 15);
    ids_t ids(static_cast<size_t>(Tn)), targets(static_cast<size_t>(Tn));
    for (index_t t = 0; t < Tn; t++) {
        ids[size_t(t)] = std::int64_t(rng::bits(5, 1, std::uint64_t(t)) % std::uint64_t(V));  // id 0 = padding
        targets[size_t(t)] = t % 7 == 3 ? -100 : std::int64_t(rng::bits(5, 2, std::uint64_t(t)) % (C / 2));
    }
    tape<float> tp;
    auto e = ag::embedding(&tp, W, ids, 0);  // [T, C]
    auto h = ag::rms_norm(&tp, ag::layer_norm(&tp, e, w, b), g);
    // One recording call per argument list: the tape order must not depend on the compiler's
    // (unspecified) argument evaluation order.
    auto h0 = ag::slice(&tp, h, 1, 0, C / 2);
    auto h1 = ag::slice(&tp, h, 1, C / 2, C);
    auto a = ag::swiglu(&tp, h0, h1);
    auto a_gelu = ag::gelu(&tp, a);
    auto a_qg = ag::quick_gelu(&tp, a);
    auto a_silu = ag::silu(&tp, a);
    auto z = ag::add_row(&tp, ag::add(&tp, a_gelu, ag::mul(&tp, a_qg, a_silu)), r);
    auto zt = ag::transpose(&tp, ag::reshape(&tp, z, {C / 2, Tn}), 0, 1);
    auto zz = ag::index_rows(&tp, ag::concat(&tp, {z, zt}, 0), ids);  // repeated rows
    auto ce = ag::cross_entropy(&tp, zz, targets);
    auto reg = ag::scale(&tp, ag::mean(&tp, ag::sum(&tp, ag::softmax(&tp, zz), 0)), 0.5f);
    auto loss = ag::add(&tp, ce, reg);
    tp.backward(loss);
    std::vector<float> bits = loss.value().to_vector();
    for (const tensor<float>& t : {zz.value(), W.grad(), w.grad(), b.grad(), g.grad(), r.grad()}) {
        const auto part = t.to_vector();
        bits.insert(bits.end(), part.begin(), part.end());
    }
    return bits;
}

}  // namespace

TEST_CASE("repro: ops forward+backward give identical bits for 1, 2, 3, 4 threads, and match bits.lock") {
    const int saved = max_threads();
    set_threads(1);
    const auto ref = op_chain_bits();
    for (int n : {2, 3, 4}) {
        set_threads(n);
        const auto got = op_chain_bits();
        INFO("threads = " << n);
        REQUIRE(got.size() == ref.size());
        CHECK(std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)) == 0);
    }
    set_threads(saved);
    CHECK(std::isfinite(ref[0]));
    CHECK(golden::lock_matches("op.chain.loss_and_grads", ref));
    CHECK(golden::lock_matches("op.chain.loss", std::vector<float>{ref[0]}));
}

}  // namespace test_ops
