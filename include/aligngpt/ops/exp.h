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
// the bits still match; like every op here it relies on -ffp-contract=off (aligngpt::reproducible).
// Accuracy: under 1 ulp of e^x (0.97 ulp worst over 2^20 points of [-104, 89], tests/test_ops.cpp).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "aligngpt/config.h"

namespace aligngpt::ops {

namespace detail::expf_consts {
inline constexpr float lo = -104.0f, hi = 89.0f;
inline constexpr float log2e = 1.44269504088896341f;
inline constexpr float round_magic = 12582912.0f;   // 1.5 * 2^23
inline constexpr float ln2_hi = 0.693359375f;        // 9 significant bits: n * ln2_hi is exact
inline constexpr float ln2_lo = -2.12194440e-4f;     // ln2 - ln2_hi
inline constexpr float p0 = 1.9875691500e-4f, p1 = 1.3981999507e-3f, p2 = 8.3334519073e-3f,
                       p3 = 4.1665795894e-2f, p4 = 1.6666665459e-1f, p5 = 5.0000001201e-1f;
}  // namespace detail::expf_consts

/// e^x for float, the definition every vector path reproduces bit for bit.
inline float exp_scalar(float x) {
    namespace c = detail::expf_consts;
    if (x != x) return x;
    x = x < c::lo ? c::lo : x > c::hi ? c::hi : x;
    const float n = (x * c::log2e + c::round_magic) - c::round_magic;
    float r = (n * -c::ln2_hi + x);
    r = (n * -c::ln2_lo + r);
    float p = c::p0;
    p = (p * r + c::p1);
    p = (p * r + c::p2);
    p = (p * r + c::p3);
    p = (p * r + c::p4);
    p = (p * r + c::p5);
    const float y = (p * (r * r) + r) + 1.0f;
    const std::int32_t k = std::int32_t(n), k1 = k >> 1, k2 = k - k1;
    auto pow2 = [](std::int32_t e) {
        const std::uint32_t b = std::uint32_t(e + 127) << 23;
        float f;
        std::memcpy(&f, &b, sizeof f);
        return f;
    };
    return y * pow2(k2) * pow2(k1);
}

/// e^x: ours for float, std::exp for double.
template <class T>
inline T exp_of(T x) {
    if constexpr (std::is_same_v<T, float>) return exp_scalar(x);
    else return std::exp(x);
}

namespace detail {
#if defined(__AVX512F__)
inline __m512 exp_v(__m512 x) {
    namespace c = expf_consts;
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    // (maskz forms with all-ones masks: the same instructions, without GCC 12's false
    // -Wmaybe-uninitialized from the _mm512_undefined_* inside the unmasked intrinsics)
    const __m512 xc =
        _mm512_maskz_min_ps(0xFFFF, _mm512_maskz_max_ps(0xFFFF, x, _mm512_set1_ps(c::lo)), _mm512_set1_ps(c::hi));
    const __m512 magic = _mm512_set1_ps(c::round_magic);
    const __m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(xc, _mm512_set1_ps(c::log2e)), magic), magic);
    __m512 r = _mm512_add_ps(_mm512_mul_ps(n, _mm512_set1_ps(-c::ln2_hi)), xc);
    r = _mm512_add_ps(_mm512_mul_ps(n, _mm512_set1_ps(-c::ln2_lo)), r);
    __m512 p = _mm512_set1_ps(c::p0);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c::p1));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c::p2));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c::p3));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c::p4));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c::p5));
    const __m512 y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0f));
    const __m512i k = _mm512_maskz_cvtps_epi32(0xFFFF, n), k1 = _mm512_maskz_srai_epi32(0xFFFF, k, 1), k2 = _mm512_sub_epi32(k, k1);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 s2 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_add_epi32(k2, bias), 23));
    const __m512 s1 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_add_epi32(k1, bias), 23));
    return _mm512_mask_blend_ps(nan, _mm512_mul_ps(_mm512_mul_ps(y, s2), s1), x);
}
inline constexpr int exp_lanes = 16;
inline void exp_store(float* y, const float* x) { _mm512_storeu_ps(y, exp_v(_mm512_loadu_ps(x))); }
inline void exp_shift_store(float* y, const float* x, float s) {
    _mm512_storeu_ps(y, exp_v(_mm512_sub_ps(_mm512_loadu_ps(x), _mm512_set1_ps(s))));
}
#elif defined(__AVX2__) && defined(__FMA__)
inline __m256 exp_v(__m256 x) {
    namespace c = expf_consts;
    const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(c::lo)), _mm256_set1_ps(c::hi));
    const __m256 magic = _mm256_set1_ps(c::round_magic);
    const __m256 n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xc, _mm256_set1_ps(c::log2e)), magic), magic);
    __m256 r = _mm256_add_ps(_mm256_mul_ps(n, _mm256_set1_ps(-c::ln2_hi)), xc);
    r = _mm256_add_ps(_mm256_mul_ps(n, _mm256_set1_ps(-c::ln2_lo)), r);
    __m256 p = _mm256_set1_ps(c::p0);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c::p1));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c::p2));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c::p3));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c::p4));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c::p5));
    const __m256 y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0f));
    const __m256i k = _mm256_cvtps_epi32(n), k1 = _mm256_srai_epi32(k, 1), k2 = _mm256_sub_epi32(k, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    return _mm256_blendv_ps(_mm256_mul_ps(_mm256_mul_ps(y, s2), s1), x, nan);
}
inline constexpr int exp_lanes = 8;
inline void exp_store(float* y, const float* x) { _mm256_storeu_ps(y, exp_v(_mm256_loadu_ps(x))); }
inline void exp_shift_store(float* y, const float* x, float s) {
    _mm256_storeu_ps(y, exp_v(_mm256_sub_ps(_mm256_loadu_ps(x), _mm256_set1_ps(s))));
}
#else
inline constexpr int exp_lanes = 1;
inline void exp_store(float* y, const float* x) { *y = exp_scalar(*x); }
inline void exp_shift_store(float* y, const float* x, float s) { *y = exp_scalar(*x - s); }
#endif
}  // namespace detail

/// y[i] = e^(x[i] - shift) for i < n (y may equal x); the same bits as exp_scalar(x[i] - shift).
template <class T>
inline void exp_shifted(T* y, const T* x, T shift, index_t n) {
    index_t i = 0;
    if constexpr (std::is_same_v<T, float>)
        for (; i + detail::exp_lanes <= n; i += detail::exp_lanes) detail::exp_shift_store(y + i, x + i, shift);
    for (; i < n; i++) y[i] = exp_of(T(x[i] - shift));
}

}  // namespace aligngpt::ops
