#pragma once
// Correctly rounded square root and fused multiply-add on the host and in CUDA kernels
// (ALIGNGPT_HD): the one-rounding operations the work items of ops/ (ops::item) and of
// backend/cuda/exact.h are written with, so that both sides give the same bits.
#include <cmath>
#include <type_traits>

#include "aligngpt/config.h"

namespace aligngpt::ops {

/// sqrt, correctly rounded on both sides (IEEE requires it; nvcc's default -prec-sqrt=true keeps it).
template <class T>
ALIGNGPT_HD inline T sqrt_ieee(T x) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same_v<T, float>)
        return ::sqrtf(x);
    else
        return ::sqrt(x);
#else
    return std::sqrt(x);
#endif
}

/// fma, a single rounding on both sides (the CPU GEMM's vector fma and std::fma are exact too).
template <class T>
ALIGNGPT_HD inline T fma_ieee(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same_v<T, float>)
        return ::fmaf(a, b, c);
    else
        return ::fma(a, b, c);
#else
    return std::fma(a, b, c);
#endif
}

}  // namespace aligngpt::ops
