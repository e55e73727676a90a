#pragma once
// Element types of weight files (the safetensors list, which also covers torch storages) and the
// one place where raw little-endian bytes become numbers.
//
// The dtype list is exactly the safetensors reference's `enum Dtype` (docs/model.md §11.4):
// any other string is refused at parse time. The exotic types (F4, F6_*, F8_*, C64) are accepted so
// such files can be opened and listed, but `convert_elements` refuses them: there is no exact
// conversion we want to promise for them.
//
// Conversion policy (used by read_as<T>/tensor_as<T> of every reader):
//   float, double targets: from any integer or float dtype. F16/BF16/F32 -> float and everything
//     except I64/U64 -> double are exact; F64 -> float and large integers round to nearest
//     (static_cast, IEEE round-to-nearest-even).
//   int64_t, int32_t targets: from integer dtypes only (BOOL gives 0/1); a value that does not fit
//     the target is refused, naming the element. Float -> int is refused (lossy, and a NaN cast is UB).
//   f16, bf16 targets: from the identical dtype only (a raw copy; keeps 7B weights at 2 bytes).
// Bytes are read with memcpy, so data at any alignment is fine (no UB under UBSan `alignment`).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "aligngpt/config.h"
#include "aligngpt/half.h"

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559, "aligngpt io needs IEEE float");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "aligngpt io reads little-endian files by memcpy and needs a little-endian host"
#endif

namespace aligngpt::io {

enum class dtype {
    BOOL,
    F4,
    F6_E2M3,
    F6_E3M2,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    F8_E8M0,
    F8_E4M3FNUZ,
    F8_E5M2FNUZ,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64
};

namespace detail {
struct dtype_row {
    dtype type;
    const char* name;
    unsigned bits;
};
inline constexpr dtype_row dtype_table[] = {
    {dtype::BOOL, "BOOL", 8},
    {dtype::F4, "F4", 4},
    {dtype::F6_E2M3, "F6_E2M3", 6},
    {dtype::F6_E3M2, "F6_E3M2", 6},
    {dtype::U8, "U8", 8},
    {dtype::I8, "I8", 8},
    {dtype::F8_E5M2, "F8_E5M2", 8},
    {dtype::F8_E4M3, "F8_E4M3", 8},
    {dtype::F8_E8M0, "F8_E8M0", 8},
    {dtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {dtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {dtype::I16, "I16", 16},
    {dtype::U16, "U16", 16},
    {dtype::F16, "F16", 16},
    {dtype::BF16, "BF16", 16},
    {dtype::I32, "I32", 32},
    {dtype::U32, "U32", 32},
    {dtype::F32, "F32", 32},
    {dtype::C64, "C64", 64},
    {dtype::F64, "F64", 64},
    {dtype::I64, "I64", 64},
    {dtype::U64, "U64", 64},
};
}  // namespace detail

inline const char* dtype_name(dtype t) { return detail::dtype_table[static_cast<int>(t)].name; }
/// Bits per element (4 for F4, 6 for F6_*).
inline unsigned dtype_bits(dtype t) { return detail::dtype_table[static_cast<int>(t)].bits; }
/// Bytes per element; 0 for the sub-byte types F4 and F6_* (use dtype_bits).
inline std::size_t dtype_size(dtype t) { return dtype_bits(t) % 8 ? 0 : dtype_bits(t) / 8; }

/// The dtype spelled exactly `s` (case-sensitive, as the reference), or nullopt.
inline std::optional<dtype> parse_dtype(std::string_view s) {
    for (const auto& r : detail::dtype_table)
        if (s == r.name) return r.type;
    return std::nullopt;
}

/// "BOOL F4 ... U64", for error messages.
inline std::string dtype_list() {
    std::string out;
    for (const auto& r : detail::dtype_table) {
        if (!out.empty()) out += ' ';
        out += r.name;
    }
    return out;
}

/// The dtype a C++ element type is written as (float->F32, double->F64, int64_t->I64, ...).
template <class T>
constexpr dtype dtype_of() {
    if constexpr (std::is_same_v<T, float>)
        return dtype::F32;
    else if constexpr (std::is_same_v<T, double>)
        return dtype::F64;
    else if constexpr (std::is_same_v<T, std::int64_t>)
        return dtype::I64;
    else if constexpr (std::is_same_v<T, std::int32_t>)
        return dtype::I32;
    else if constexpr (std::is_same_v<T, std::uint8_t>)
        return dtype::U8;
    else if constexpr (std::is_same_v<T, bf16>)
        return dtype::BF16;
    else if constexpr (std::is_same_v<T, f16>)
        return dtype::F16;
    else
        static_assert(sizeof(T) == 0, "no safetensors dtype for this element type");
}

namespace detail {
template <class S>
inline S load(const std::byte* p) {
    S v;
    std::memcpy(&v, p, sizeof(S));
    return v;
}
/// Whether integer v fits integer T (always true for other pairs, which are never range-checked).
template <class T, class V>
bool fits(V v) {
    if constexpr (std::is_integral_v<T> && std::is_integral_v<V>)
        return std::in_range<T>(v);
    else
        return (void)v, true;
}
template <class T>
constexpr bool is_half_v = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;
inline bool is_integer(dtype t) {
    switch (t) {
        case dtype::BOOL:
        case dtype::U8:
        case dtype::I8:
        case dtype::I16:
        case dtype::U16:
        case dtype::I32:
        case dtype::U32:
        case dtype::I64:
        case dtype::U64: return true;
        default: return false;
    }
}
inline bool is_plain_float(dtype t) { return t == dtype::F16 || t == dtype::BF16 || t == dtype::F32 || t == dtype::F64; }
}  // namespace detail

/// Whether convert_elements<T> accepts dtype `src` (the policy in the file comment).
template <class T>
bool convertible(dtype src) {
    if constexpr (detail::is_half_v<T>)
        return src == dtype_of<T>();
    else if constexpr (std::is_floating_point_v<T>)
        return detail::is_integer(src) || detail::is_plain_float(src);
    else
        return detail::is_integer(src);
}

/// Converts n elements of dtype `src` starting at p (any alignment) into out[0..n).
/// `what` names the tensor in errors (file and tensor name). Throws for a refused dtype or an
/// integer value that does not fit T.
template <class T>
void convert_elements(dtype src, const std::byte* p, std::size_t n, T* out, const std::string& what) {
    ALIGNGPT_CHECK(convertible<T>(src), what, ": dtype ", dtype_name(src), " cannot be read as ", dtype_name(dtype_of<T>()),
                   " (allowed: float/double from integer and F16/BF16/F32/F64,"
                   " integers from integer dtypes, f16/bf16 from the same dtype)");
    if constexpr (detail::is_half_v<T>) {
        if (n) std::memcpy(static_cast<void*>(out), p, n * sizeof(T));
        return;
    } else {
        auto put = [&](auto v, std::size_t i) {
            using V = decltype(v);
            ALIGNGPT_CHECK(detail::fits<T>(v), what, ": element ", i, " = ", +v, " does not fit ", dtype_name(dtype_of<T>()));
            if constexpr (std::is_integral_v<T> && !std::is_integral_v<V>) {
                (void)v;  // unreachable: refused above
            } else {
                out[i] = static_cast<T>(v);
            }
        };
        for (std::size_t i = 0; i < n; i++) {
            switch (src) {
                case dtype::BOOL: put(std::uint8_t(detail::load<std::uint8_t>(p + i) != 0), i); break;
                case dtype::U8: put(detail::load<std::uint8_t>(p + i), i); break;
                case dtype::I8: put(detail::load<std::int8_t>(p + i), i); break;
                case dtype::I16: put(detail::load<std::int16_t>(p + 2 * i), i); break;
                case dtype::U16: put(detail::load<std::uint16_t>(p + 2 * i), i); break;
                case dtype::I32: put(detail::load<std::int32_t>(p + 4 * i), i); break;
                case dtype::U32: put(detail::load<std::uint32_t>(p + 4 * i), i); break;
                case dtype::I64: put(detail::load<std::int64_t>(p + 8 * i), i); break;
                case dtype::U64: put(detail::load<std::uint64_t>(p + 8 * i), i); break;
                case dtype::F16: put(static_cast<float>(detail::load<f16>(p + 2 * i)), i); break;
                case dtype::BF16: put(static_cast<float>(detail::load<bf16>(p + 2 * i)), i); break;
                case dtype::F32: put(detail::load<float>(p + 4 * i), i); break;
                case dtype::F64: put(detail::load<double>(p + 8 * i), i); break;
                default: fail(what, ": dtype ", dtype_name(src), " is not convertible");
            }
        }
    }
}

}  // namespace aligngpt::io
