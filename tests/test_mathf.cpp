// The project's own float log and erf (ops/log.h, ops/erf.h), and their users:
//   1. accuracy against the double functions (std::log, std::erf: under 1 ulp of double, far below a
//      float ulp), over dense sweeps, with the bound each header states;
//   2. special values, odd symmetry and monotonicity;
//   3. gelu (ops/activations.h) and cross-entropy's lse (ops/cross_entropy.h) run them, on every
//      instruction set with the same bits;
//   4. "repro:" the bits of both over the sweeps against tests/golden/bits.lock (the Clang
//      -march=native tree checks them too: contraction or a vector path must not move a bit).
// Exhaustive runs (every float; 40 s, not a test) measured 0.84 ulp for log and 0.9955 ulp for erf
// (|x| <= 5), and both monotone; tests/tools/fit_mathf.py fits the coefficients.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "aligngpt/ops/activations.h"
#include "aligngpt/ops/cross_entropy.h"
#include "aligngpt/ops/erf.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/isa.h"
#include "aligngpt/ops/log.h"
#include "support/golden.h"

namespace test_mathf {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

using ops::detail::bits_from_float;  // the bit casts of ops/exp.h
using ops::detail::float_from_bits;

/// |got - ref| in ulps of the float nearest ref (2^-149 for a subnormal or zero one). Where ref rounds
/// up to a power of two, the ulp of the binade below, the smaller one.
double ulp_error(float got, double ref) {
    const float rf = float(ref), a = std::fabs(rf);
    double ulp = rf == 0.0f ? std::ldexp(1.0, -149) : double(std::nextafter(a, inf)) - double(a);
    if (std::fabs(ref) < double(a)) ulp = std::min(ulp, double(a) - double(std::nextafter(a, 0.0f)));
    return std::fabs(double(got) - ref) / ulp;
}

/// Every `stride`-th float bit pattern from `from` to `to` (both positive), and the extra points.
std::vector<float> sweep(std::uint32_t from, std::uint32_t to, std::uint32_t stride, std::vector<float> extra = {}) {
    for (std::uint64_t b = from; b <= to; b += stride) extra.push_back(float_from_bits(std::uint32_t(b)));
    return extra;
}

/// The log sweep: every 257th positive finite float (257 = 2^8 + 1, so the low mantissa bits vary
/// too), the powers of two, and the exhaustive run's worst point.
std::vector<float> log_points() {
    std::vector<float> extra = {float_from_bits(1), 0x1.69cf3ep+0f, std::numeric_limits<float>::max()};
    for (int k = -149; k <= 127; k++) extra.push_back(std::ldexp(1.0f, k));
    return sweep(1, 0x7f7fffffu, 257, extra);
}

/// The erf sweep over [0, 5]: every 251st float (subnormals to 5), a uniform grid of step 2^-14, and
/// the exhaustive run's worst points near the two forms' boundary 0.90625.
std::vector<float> erf_points() {
    std::vector<float> extra = {0x1.025b8ap+0f, 0x1.bffa1cp-1f, 0x1.ac9424p-1f, 0.90625f, 3.92f, 4.0f, 5.0f};
    for (int i = 0; i <= 5 << 14; i++) extra.push_back(float(i) * 0x1p-14f);
    return sweep(0, bits_from_float(5.0f), 251, extra);
}

}  // namespace

TEST_CASE("log (float): under 1 ulp of log x over every 257th positive float, subnormals included") {
    // The bound ops/log.h states (a faithful rounding's); exhaustively 0.84 ulp.
    double worst = 0;
    float worst_x = 0;
    for (float x : log_points()) {
        const double e = ulp_error(ops::log_scalar(x), std::log(double(x)));
        if (e > worst) worst = e, worst_x = x;
    }
    MESSAGE("log: worst error ", worst, " ulp at x = ", worst_x);
    CHECK(worst < 1.0);
}

TEST_CASE("log (float): special values, exact points and monotonicity") {
    const float qnan = std::numeric_limits<float>::quiet_NaN();
    CHECK(bits_from_float(ops::log_scalar(1.0f)) == bits_from_float(0.0f));  // +0, not -0
    CHECK(ops::log_scalar(0.0f) == -inf);
    CHECK(ops::log_scalar(-0.0f) == -inf);
    CHECK(ops::log_scalar(inf) == inf);
    CHECK(bits_from_float(ops::log_scalar(qnan)) == bits_from_float(qnan));
    CHECK(bits_from_float(ops::log_scalar(-qnan)) == bits_from_float(-qnan));
    // Negative arguments: one NaN pattern, whatever the device's invalid operation makes.
    for (float x : {-1.0f, -inf, -1e-40f, -std::numeric_limits<float>::max()})
        CHECK(bits_from_float(ops::log_scalar(x)) == 0x7fc00000u);
    CHECK(ops::log_scalar(2.0f) == float(std::log(2.0)));
    CHECK(ops::log_scalar(float_from_bits(1)) == float(std::log(0x1p-149)));  // the smallest subnormal
    CHECK(ops::log_scalar(std::numeric_limits<float>::max()) == doctest::Approx(88.7228391).epsilon(1e-7));
    // Monotone along the sweep (bit-pattern order is value order for positive floats).
    const std::vector<float> xs = sweep(1, 0x7f7fffffu, 4099);
    for (size_t i = 1; i < xs.size(); i++)
        if (ops::log_scalar(xs[i]) < ops::log_scalar(xs[i - 1])) {
            CAPTURE(xs[i]);
            CHECK(ops::log_scalar(xs[i]) >= ops::log_scalar(xs[i - 1]));
            break;
        }
}

TEST_CASE("erf (float): under 1 ulp of erf x over |x| <= 5, odd, monotone") {
    // The bound ops/erf.h states; exhaustively 0.9955 ulp. erf(-x) is -erf(x) bit for bit, and erf
    // never decreases (checked on the grid part of the sweep, which is in increasing order).
    double worst = 0;
    float worst_x = 0;
    const std::vector<float> xs = erf_points();
    for (float x : xs) {
        const float y = ops::erf_scalar(x);
        const double e = ulp_error(y, std::erf(double(x)));
        if (e > worst) worst = e, worst_x = x;
        if (bits_from_float(ops::erf_scalar(-x)) != (bits_from_float(y) ^ 0x80000000u)) {
            CAPTURE(x);
            CHECK(ops::erf_scalar(-x) == -y);
        }
    }
    MESSAGE("erf: worst error ", worst, " ulp at x = ", worst_x);
    CHECK(worst < 1.0);
    for (int i = 1; i <= 5 << 14; i++) {
        const float x0 = float(i - 1) * 0x1p-14f, x1 = float(i) * 0x1p-14f;
        if (ops::erf_scalar(x1) < ops::erf_scalar(x0)) {
            CAPTURE(x1);
            CHECK(ops::erf_scalar(x1) >= ops::erf_scalar(x0));
            break;
        }
    }
}

TEST_CASE("erf (float): special values and saturation") {
    const float qnan = std::numeric_limits<float>::quiet_NaN();
    CHECK(bits_from_float(ops::erf_scalar(0.0f)) == bits_from_float(0.0f));
    CHECK(bits_from_float(ops::erf_scalar(-0.0f)) == bits_from_float(-0.0f));
    CHECK(ops::erf_scalar(inf) == 1.0f);
    CHECK(ops::erf_scalar(-inf) == -1.0f);
    CHECK(bits_from_float(ops::erf_scalar(qnan)) == bits_from_float(qnan));
    CHECK(ops::erf_scalar(float_from_bits(1)) == float_from_bits(1));  // 2/sqrt(pi) 2^-149 rounds to 2^-149
    // erfc(3.9) = 3.5e-8 is above half an ulp below 1 (2^-25 = 3.0e-8): not yet 1. From 3.92 on it is.
    CHECK(ops::erf_scalar(3.9f) == std::nextafter(1.0f, 0.0f));
    CHECK(ops::erf_scalar(3.92f) == 1.0f);
    CHECK(ops::erf_scalar(1e30f) == 1.0f);
}

TEST_CASE("log_of, erf_of, exp_of: ours for float, the C library's for double") {
    for (float x : {0.3f, 1.7f, 42.0f}) {
        CHECK(bits_from_float(ops::log_of(x)) == bits_from_float(ops::log_scalar(x)));
        CHECK(bits_from_float(ops::erf_of(x)) == bits_from_float(ops::erf_scalar(x)));
        CHECK(bits_from_float(ops::exp_of(x)) == bits_from_float(ops::exp_scalar(x)));
        CHECK(ops::log_of(double(x)) == std::log(double(x)));
        CHECK(ops::erf_of(double(x)) == std::erf(double(x)));
        CHECK(ops::exp_of(double(x)) == std::exp(double(x)));
    }
}

TEST_CASE("gelu forward and backward run ops/erf.h, with the same bits on every instruction set") {
    // gelu_forward's loop may be vectorised by the compiler (GCC does for AVX-512): every lane must
    // still be gelu_scalar's bits, and the backward gelu_grad_scalar's. Lengths leave tails.
    std::vector<float> x = {0.0f, -0.0f, inf, -inf, 1e-30f, -1e-30f, 0.90625f, -0.90625f, 5.66f, -5.66f, 40.0f, -40.0f};
    for (int i = 0; i < 1000; i++) x.push_back(float(i - 500) * 0.0137f);
    const index_t n = index_t(x.size()) - 3;
    for (int level = 0; level <= int(ops::cpu_isa()); level++) {
        CAPTURE(ops::isa_name(ops::isa(level)));
        const ops::isa_override use{ops::isa(level)};
        std::vector<float> y(x.size(), 7.0f), dx(x.size(), 0.0f), dy(x.size(), 1.0f);
        ops::gelu_forward(backend::cpu{}, y.data(), x.data(), n);
        ops::gelu_backward(backend::cpu{}, dx.data(), dy.data(), x.data(), n);
        int bad = 0;
        for (index_t i = 0; i < n; i++) {
            const float want = x[size_t(i)] * 0.5f * (1.0f + ops::erf_scalar(x[size_t(i)] * 0.70710678f));
            bad += bits_from_float(y[size_t(i)]) != bits_from_float(want) ||
                   bits_from_float(y[size_t(i)]) != bits_from_float(ops::gelu_scalar(x[size_t(i)]));
            bad += bits_from_float(dx[size_t(i)]) != bits_from_float(ops::gelu_grad_scalar(x[size_t(i)]));
        }
        CHECK(bad == 0);
        CHECK(y[size_t(n)] == 7.0f);  // nothing written past n
    }
}

TEST_CASE("cross_entropy's log-sum-exp is ops/log.h's log") {
    // Equal logits c over V classes: the max is c, the exps are exactly 1 and sum to V exactly, so
    // lse = c + log_scalar(V) to the bit (with std::log's logf it would be that function's bits).
    for (index_t V : {3, 1000, 32000}) {
        std::vector<float> z(size_t(V), 0.375f), lse(1);
        const std::int64_t target = 0;
        float loss = 0;
        ops::cross_entropy_forward(backend::cpu{}, &loss, lse.data(), z.data(), &target, 1, V);
        CHECK(bits_from_float(lse[0]) == bits_from_float(0.375f + ops::log_scalar(float(V))));
        CHECK(bits_from_float(loss) == bits_from_float(lse[0] - 0.375f));
    }
}

TEST_CASE("repro: float log and erf over their sweeps give the locked bits") {
    std::vector<float> l, e;
    for (float x : log_points()) l.push_back(ops::log_scalar(x));
    for (float x : erf_points()) e.push_back(ops::erf_scalar(x));
    CHECK(golden::lock_matches("mathf.log.sweep", l));
    CHECK(golden::lock_matches("mathf.erf.sweep", e));
}

}  // namespace test_mathf
