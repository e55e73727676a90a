#pragma once
// 16-bit storage types. Eigen supplies them (Eigen::half = IEEE binary16, Eigen::bfloat16);
// both convert from float with round-to-nearest-even, the same rounding as PyTorch's .half()
// and .bfloat16() casts, and widen to float exactly. Compute is always float or double.
#include <Eigen/Core>
#include <cstdint>
#include <cstring>

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

/// Raw bit pattern of a 16-bit value (for hashing and file I/O).
template <class S>
inline std::uint16_t bits16(S v) {
    std::uint16_t u;
    std::memcpy(&u, &v, 2);
    return u;
}

}  // namespace aligngpt
