#pragma once
// 16-bit storage types. Eigen supplies them (Eigen::half = IEEE binary16, Eigen::bfloat16);
// both convert from float with round-to-nearest-even, the same rounding as PyTorch's .half()
// and .bfloat16() casts, and widen to float exactly. Compute is always float or double.
#include <Eigen/Core>
#include <cstdint>
#include <cstring>

#include "aligngpt/config.h"

namespace aligngpt {

using f16 = Eigen::half;
using bf16 = Eigen::bfloat16;

/// Exact widening of a storage value to float (identity for float).
template <class S>
inline float widen(S v) {
    return static_cast<float>(v);
}

/// Correctly rounded (nearest-even) narrowing of float to a storage type.
template <class S>
inline S narrow(float v) {
    return S(v);
}

/// Exact widening of raw storage bits, with integer operations and one exact product, so that
/// CUDA kernels (which have no Eigen types) share it with the host: bf16 is the high half of a
/// float; binary16 rebiases its exponent, and a subnormal m * 2^-24 is exact in float. Equal to
/// widen() for every non-NaN pattern (tests/test_cuda_exact.cpp checks all 65536); a NaN stays a NaN
/// with its payload, where x86's F16C conversion would also set the quiet bit.
ALIGNGPT_HD inline float widen_bf16_bits(std::uint16_t b) {
    const std::uint32_t u = std::uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
ALIGNGPT_HD inline float widen_f16_bits(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    std::uint32_t u;
    if (e == 0x1f)
        u = sign | 0x7f800000u | (m << 13);  // infinity, NaN
    else if (e != 0)
        u = sign | ((e + 112u) << 23) | (m << 13);  // normal: exponent bias 15 -> 127
    else {
        float f = float(m) * 5.9604644775390625e-8f;  // subnormal or zero: m * 2^-24, exact
        std::uint32_t mag;
        std::memcpy(&mag, &f, sizeof mag);
        u = sign | mag;
    }
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

/// Raw bit pattern of a 16-bit value (for hashing and file I/O).
template <class S>
inline std::uint16_t bits16(S v) {
    std::uint16_t u;
    std::memcpy(&u, &v, 2);
    return u;
}

}  // namespace aligngpt
