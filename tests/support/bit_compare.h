#pragma once
// Helpers of the bit-for-bit backend tests (tests/test_cuda_exact.cpp, tests/cuda/): seeded inputs
// with the values that are easy to get subtly wrong, and exact comparison.
#include <cstdint>
#include <cstring>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/rng.h"

namespace aligngpt::test {

/// n values U(-a, a) of stream `stream`, with a -0, a +0 and a repeated value among them.
template <class T>
std::vector<T> rand_vec(index_t n, std::uint64_t stream, float a = 2.0f) {
    std::vector<T> v(static_cast<std::size_t>(n));
    rng::fill_uniform(v.data(), n, 11, stream, a);
    if (n > 3) v[1] = T(-0.0), v[2] = T(0), v[3] = v[0];
    return v;
}

/// Same length and the same bytes (so -0 != +0 and NaN payloads count).
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace aligngpt::test
