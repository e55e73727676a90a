#pragma once
// erf for float as one fixed sequence of IEEE operations (and ops/exp.h's exp), so the bits depend
// neither on the C library nor on the device: the same header compiles for CUDA kernels
// (ALIGNGPT_HD), whose erff differs from glibc's (docs/design.md "The deterministic contract",
// issue #13). The exact GELU (ops/activations.h) is its user. Double keeps std::erf (finite
// difference checks only).
//
//   NaN -> the same NaN;  erf(-x) = -erf(x) (so -0 -> -0);  a = |x|
//   a < b:      erf = a + a P(a^2)            b = 0.90625. P(t) ~ erf(sqrt t)/sqrt t - 1, degree 6:
//                                             a enters exactly, a P is a small correction
//   b <= a < 4: erf = 1 - e^(-a^2) Q(a - b)   Q ~ e^(a^2) erfc(a), degree 9, fitted for the error of
//                                             erf itself: e^(-a^2) |Q - e^(a^2) erfc(a)| < 3e-9;
//                                             e^(-a^2) is ops/exp.h's
//   a >= 4:     erf = 1                       erfc(a) < 2^-25 from a = 3.92 on: 1 - erfc rounds to 1
//   (minimax coefficients rounded to float one by one: tests/tools/fit_mathf.py; b is where the
//   two forms' worst errors meet)
//
// a^2 is rounded before the exp. An erfc, whose small result needs relative accuracy, would split it
// (a_hi^2 exact with a_hi of 12 bits, the rest through a second factor); erf needs e^(-a^2) Q only to
// an absolute error under its ulp, and the rounding of a^2 moves e^(-a^2) Q by at most
// a^2 erfc(a) 2^-24 <= 0.165 2^-24 (at a = b): 0.17 ulp, included in the bound below.
//
// Each step is one IEEE multiply or add (no fma), contraction off around it: the same bits under
// GCC, Clang and nvcc (--fmad=false), with or without FMA hardware.
// Accuracy: under 1 ulp of erf x (0.9955 ulp worst over every float with |x| <= 5,
// tests/test_mathf.cpp).
#include <cmath>
#include <type_traits>

#include "aligngpt/config.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/isa.h"

namespace aligngpt::ops {

namespace detail::erff_consts {
inline constexpr float small_max = 0.90625f, one_max = 4.0f;
// P(t), t = a^2 in [0, 0.90625^2]
inline constexpr float p0 = 0x1.06eba8p-3f, p1 = -0x1.81274p-2f, p2 = 0x1.ce2d6p-4f, p3 = -0x1.b8007ep-6f, p4 = 0x1.54423ep-8f,
                       p5 = -0x1.a5b7c2p-11f, p6 = 0x1.4e3814p-14f;
// Q(u), u = a - 0.90625 in [0, 3.09375]
inline constexpr float q0 = 0x1.d18882p-2f, q1 = -0x1.37ae9p-2f, q2 = 0x1.6e2972p-3f, q3 = -0x1.84e3ecp-4f, q4 = 0x1.7c4de4p-5f,
                       q5 = -0x1.56ebcap-6f, q6 = 0x1.1107dcp-7f, q7 = -0x1.5692aep-9f, q8 = 0x1.18bd8cp-11f,
                       q9 = -0x1.aaa296p-15f;
}  // namespace detail::erff_consts

ALIGNGPT_FP_STRICT_BEGIN
/// erf x for float, the definition every path reproduces bit for bit.
ALIGNGPT_HD inline float erf_scalar(float x) {
    namespace c = detail::erff_consts;
    if (x != x) return x;
    const float a = x < 0.0f ? -x : x;
    float r;
    if (a < c::small_max) {
        const float t = a * a;
        const float p = detail::horner(t, c::p6, c::p5, c::p4, c::p3, c::p2, c::p1, c::p0);
        r = a + a * p;
    } else if (a < c::one_max) {
        const float u = a - c::small_max;  // exact: small_max (29 2^-5) is a multiple of a's last bit
        const float q = detail::horner(u, c::q9, c::q8, c::q7, c::q6, c::q5, c::q4, c::q3, c::q2, c::q1, c::q0);
        r = 1.0f - exp_scalar(-(a * a)) * q;
    } else {
        r = 1.0f;
    }
    return x < 0.0f ? -r : r;
}
ALIGNGPT_FP_STRICT_END

/// erf x: ours for float, std::erf for double.
template <class T>
ALIGNGPT_HD inline T erf_of(T x) {
    if constexpr (std::is_same_v<T, float>)
        return erf_scalar(x);
    else
        return std::erf(x);
}

}  // namespace aligngpt::ops
