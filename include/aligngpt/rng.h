#pragma once
// Counter-based random numbers: bits = f(seed, stream, index), no hidden state.
//
//   splitmix64(z):  z += 0x9E3779B97F4A7C15
//                   z  = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//                   z  = (z ^ (z >> 27)) * 0x94D049BB133111EB
//                   return z ^ (z >> 31)                               (Steele et al., 2014)
//   bits(seed, stream, i) = splitmix64( splitmix64( splitmix64(seed) ^ stream ) ^ i )
//   uniform01            = float(bits >> 40) * 2^-24                    exact, in [0, 1)
//   uniform(-a, a)       = (uniform01 * 2 - 1) * a                      float32 ops, each rounded
//
// Why counter-based: any element can be drawn without drawing the ones before it, so parallel
// fills and resumed runs give the same numbers, and tests/tools/hashfill.py computes the same
// values in Python (the golden fixtures fill full-size weights this way instead of storing them).
// std::*_distribution is avoided on purpose: its algorithms differ between standard libraries.
#include <cstdint>
#include <string_view>

namespace aligngpt::rng {

constexpr std::uint64_t splitmix64(std::uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

constexpr std::uint64_t bits(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
    return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ index);
}

/// 128-bit unsigned arithmetic (GCC and Clang; __extension__ keeps -Wpedantic quiet): exact
/// products of 64-bit draws, e.g. floor(bits * n / 2^64) for unbiased-enough index picks.
__extension__ using uint128 = unsigned __int128;

/// FNV-1a 64 of a string: turns a tensor name into a stream id.
constexpr std::uint64_t fnv1a64(std::string_view s) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

/// Uniform in [0, 1) with 24 random bits (every value exactly representable in float).
inline float uniform01(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
    return float(bits(seed, stream, index) >> 40) * 0x1p-24f;
}

/// Uniform in [-a, a): the distribution of PyTorch's kaiming/xavier uniform initialisers.
inline float uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t index, float a) {
    return (uniform01(seed, stream, index) * 2.0f - 1.0f) * a;
}

/// Fills out[0..n) with uniform(-a, a) drawn at indices 0..n-1 of (seed, stream).
template <class T>
void fill_uniform(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, float a) {
    for (std::int64_t i = 0; i < n; i++) out[i] = T(uniform(seed, stream, std::uint64_t(i), a));
}

}  // namespace aligngpt::rng
