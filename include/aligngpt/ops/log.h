#pragma once
// Natural log for float as one fixed sequence of IEEE operations, so the bits depend neither on the C
// library nor on the device: the same header compiles for CUDA kernels (ALIGNGPT_HD), whose logf
// differs from glibc's (docs/design.md "The deterministic contract", issue #13). Double keeps
// std::log (finite difference checks only).
//
//   NaN -> the same NaN;  x < 0 -> NaN (one fixed pattern);  +-0 -> -inf;  +inf -> +inf
//   subnormal x: x 2^23 (exact), k = -23
//   x = 2^k m,  m in [sqrt(1/2), sqrt 2)        from the bits: subtracting sqrt(1/2)'s bits moves the
//                                               exponent boundary to sqrt(1/2), so one shift gives k
//   f = m - 1                                   exact (Sterbenz), |f| <= sqrt 2 - 1
//   s = f / (2 + f)                             log(1 + f) = log((1 + s)/(1 - s)) = 2 atanh(s)
//   2 atanh(s) = 2s + s R(z),  z = s^2 <= (3 - 2 sqrt2)^2,  R(z) = 2 (z/3 + z^2/5 + ...)
//   R      = z (c0 + c1 z + c2 z^2 + c3 z^3)    minimax on [0, 17 - 12 sqrt2], |error| < 1e-10
//                                               (fitted by tests/tools/fit_mathf.py)
//   with h = f^2 / 2:  2s = f - s f  and  s f = h (1 - s)  (both from s (2 + f) = f), so
//   log(1 + f) = f - (h - s (h + R))            f enters exactly; the rounding errors of s only touch
//                                               the correction h - s (h + R), about f^2 / 2
//   log x  = k ln2_hi - ((h - (s (h + R) + k ln2_lo)) - f)
//                                               ln2_hi has 16 bits and |k| <= 149 has 8: k ln2_hi is
//                                               exact (Cody-Waite, as in ops/exp.h)
//
// Each step is one IEEE multiply, add or divide (no fma), contraction off around it: the same bits
// under GCC, Clang and nvcc (--fmad=false), with or without FMA hardware.
// Accuracy: under 1 ulp of log x (0.84 ulp worst over every positive float, tests/test_mathf.cpp).
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "aligngpt/config.h"
#include "aligngpt/ops/exp.h"  // detail::horner, detail::float_from_bits
#include "aligngpt/ops/isa.h"

namespace aligngpt::ops {

namespace detail::logf_consts {
inline constexpr std::int32_t sqrt_half_bits = 0x3f3504f3;  // float(sqrt(1/2))
inline constexpr float ln2_hi = 0.693145751953125f;         // 45426 / 2^16: 16 significant bits
inline constexpr float ln2_lo = 1.4286068e-6f;              // ln2 - ln2_hi
inline constexpr float c0 = 0x1.555554p-1f, c1 = 0x1.999c26p-2f, c2 = 0x1.23d3ep-2f, c3 = 0x1.f13aeap-3f;
inline constexpr std::uint32_t nan_bits = 0x7fc00000u, minus_inf_bits = 0xff800000u;
}  // namespace detail::logf_consts

ALIGNGPT_FP_STRICT_BEGIN
/// log x (natural) for float, the definition every path reproduces bit for bit.
ALIGNGPT_HD inline float log_scalar(float x) {
    namespace c = detail::logf_consts;
    if (x != x) return x;
    // One NaN pattern on every device (x86's invalid operation gives 0xffc00000, a GPU's 0x7fffffff).
    if (x < 0.0f) return detail::float_from_bits(c::nan_bits);
    if (x == 0.0f) return detail::float_from_bits(c::minus_inf_bits);
    if (x > 3.4028235e38f) return x;  // +inf
    std::int32_t k = 0;
    if (x < 1.1754944e-38f) {  // subnormal: scale into the normal range, exactly
        x = x * 8388608.0f;
        k = -23;
    }
    const std::int32_t ix = std::int32_t(detail::bits_from_float(x));
    const std::int32_t e = (ix - c::sqrt_half_bits) >> 23;  // floor(log2(x / sqrt(1/2)))
    k += e;
    const float m = detail::float_from_bits(std::uint32_t(ix - e * 8388608));  // x 2^-e
    const float f = m - 1.0f;
    const float s = f / (2.0f + f);
    const float z = s * s;
    const float R = detail::horner(z, c::c3, c::c2, c::c1, c::c0) * z;
    const float h = 0.5f * f * f;
    const float kf = float(k);
    return kf * c::ln2_hi - ((h - (s * (h + R) + kf * c::ln2_lo)) - f);
}
ALIGNGPT_FP_STRICT_END

/// log x: ours for float, std::log for double.
template <class T>
ALIGNGPT_HD inline T log_of(T x) {
    if constexpr (std::is_same_v<T, float>)
        return log_scalar(x);
    else
        return std::log(x);
}

}  // namespace aligngpt::ops
