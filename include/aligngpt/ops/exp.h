#pragma once
// exp for float as one fixed sequence of IEEE operations, so the scalar, AVX2 and AVX-512 paths give
// the same bits lane by lane, and no libm is involved (docs/design.md "The deterministic contract":
// the bits we promise do not depend on the SIMD width, the compiler or the C library). Double keeps
// std::exp (the finite difference checks run in double; their bits are not promised across libms).
//
//   x   = clamp(x, -104, 89)                   beyond these e^x rounds to 0 or overflows to inf anyway
//   n   = (x log2(e) + 1.5 2^23) - 1.5 2^23    x log2(e) rounded to an integer, half to even, by the
//                                              FPU's own rounding (no libm call, no rounding mode)
//   r   = (x - n ln2_hi) - n ln2_lo            Cody-Waite: ln2_hi has 9 bits, so n ln2_hi is exact
//   p   = Horner of the degree-5 polynomial of Cephes' expf for (e^r - 1 - r) / r^2
//   e^r = (p r^2 + r) + 1
//   e^x = e^r 2^(n - n/2) 2^(n/2)               two exact powers of two: a subnormal result rounds once
//   NaN in, the same NaN out
//
// Each step is a separate multiply or add (no fma), so a build without FMA runs it at full speed and
// the bits still match. Contraction is switched off around it (ALIGNGPT_FP_STRICT_BEGIN), so that
// holds whatever -ffp-contract the including code uses.
// Accuracy: under 1 ulp of e^x (0.97 ulp worst over 2^20 points of [-104, 89], tests/test_ops.cpp).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "aligngpt/config.h"
#include "aligngpt/ops/isa.h"

namespace aligngpt::ops {

namespace detail::expf_consts {
inline constexpr float lo = -104.0f, hi = 89.0f;
inline constexpr float log2e = 1.44269504088896341f;
inline constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23
inline constexpr float ln2_hi = 0.693359375f;      // 9 significant bits: n * ln2_hi is exact
inline constexpr float ln2_lo = -2.12194440e-4f;   // ln2 - ln2_hi
inline constexpr float p0 = 1.9875691500e-4f, p1 = 1.3981999507e-3f, p2 = 8.3334519073e-3f, p3 = 4.1665795894e-2f,
                       p4 = 1.6666665459e-1f, p5 = 5.0000001201e-1f;
}  // namespace detail::expf_consts

ALIGNGPT_FP_STRICT_BEGIN
namespace detail {
/// The float with bit pattern b, and back (the scalar math's exponent work; ops/log.h too).
ALIGNGPT_HD inline float float_from_bits(std::uint32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
}
ALIGNGPT_HD inline std::uint32_t bits_from_float(float f) {
    std::uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return b;
}

/// c_n x^n + ... + c_0 by Horner's rule, coefficients from the highest: p = c_n, then p = p x + c_k,
/// one multiply and one add per step (ops/log.h and ops/erf.h use it too).
template <class... C>
ALIGNGPT_HD inline float horner(float x, float c_n, C... rest) {
    float p = c_n;
    ((p = p * x + rest), ...);
    return p;
}
}  // namespace detail

/// e^x for float, the definition every vector path reproduces bit for bit.
ALIGNGPT_HD inline float exp_scalar(float x) {
    namespace c = detail::expf_consts;
    if (x != x) return x;
    x = x < c::lo ? c::lo : x > c::hi ? c::hi : x;
    const float n = (x * c::log2e + c::round_magic) - c::round_magic;
    float r = (n * -c::ln2_hi + x);
    r = (n * -c::ln2_lo + r);
    const float p = detail::horner(r, c::p0, c::p1, c::p2, c::p3, c::p4, c::p5);
    const float y = (p * (r * r) + r) + 1.0f;
    const std::int32_t k = std::int32_t(n), k1 = k >> 1, k2 = k - k1;
    const auto pow2 = [](std::int32_t e) { return detail::float_from_bits(std::uint32_t(e + 127) << 23); };
    return y * pow2(k2) * pow2(k1);
}
ALIGNGPT_FP_STRICT_END

/// e^x: ours for float, std::exp for double.
template <class T>
ALIGNGPT_HD inline T exp_of(T x) {
    if constexpr (std::is_same_v<T, float>)
        return exp_scalar(x);
    else
        return std::exp(x);
}

}  // namespace aligngpt::ops

#define ALIGNGPT_ISA_KERNELS "aligngpt/ops/kernels/exp.inc"
#include "aligngpt/ops/isa_regions.inc"

namespace aligngpt::ops {

/// y[i] = e^(x[i] - shift) for i < n (y may equal x); the same bits as exp_scalar(x[i] - shift),
/// vectorised for the active instruction set (ops/isa.h).
template <class T>
inline void exp_shifted(T* y, const T* x, T shift, index_t n) {
    ALIGNGPT_ISA_DISPATCH(exp_shifted<T>, y, x, shift, n)
}

}  // namespace aligngpt::ops
