#pragma once
// Run-time choice of the instruction set the hot kernels run on (docs/design.md "Run-time dispatch").
//
// The kernels whose speed depends on the vector width (GEMM and GEMV micro-kernels, packing, exp)
// are written once, in ops/kernels/*.inc, and compiled three times inside the headers: for plain
// x86-64 (or whatever the translation unit targets), for AVX2+FMA+F16C and for AVX-512
// (ops/isa_regions.inc). The program picks one the first time a kernel runs:
//
//   the best the CPU supports   (cpuid, through __builtin_cpu_supports)
//   lowered by ALIGNGPT_ISA=scalar|avx2|avx512 in the environment (tests, bug reports)
//   lowered or raised by isa_override{...} in code (tests compare every path in one process)
//
// so a consumer's plain `-O2` build runs AVX-512 on a machine that has it, without -march=native.
// Every path computes the same op sequence (vectors run across outputs, never across a reduction),
// so the choice changes the speed, never the bits: tests/test_gemm.cpp compares the paths.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>

#include "aligngpt/config.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define ALIGNGPT_ISA_X86 1
#include <cpuid.h>
#include <immintrin.h>  // declares every intrinsic; each region enables the ones it may use
#else
#define ALIGNGPT_ISA_X86 0
#endif

namespace aligngpt::ops {

/// f(i) for i in [0, n), split over the OpenMP team (a static schedule: the split is a function of n
/// and the thread count only). The kernels in the regions use it instead of a bare `omp parallel
/// for`: Clang outlines a loop body without the enclosing function's target, so the body has to be
/// a function of the region (f) for its code to be compiled for that set.
template <class F>
void parallel_for(index_t n, F&& f) {
    ALIGNGPT_OMP_FOR
    for (index_t i = 0; i < n; i++) f(i);
}

/// f(i0, i1) for the consecutive chunks [i0, i1) of at most `chunk` indices of [0, n), split as
/// parallel_for (element-wise kernels: one call per chunk, not per element).
template <class F>
void parallel_chunks(index_t n, index_t chunk, F&& f) {
    parallel_for((n + chunk - 1) / chunk, [&](index_t c) { f(c * chunk, std::min(n, c * chunk + chunk)); });
}

/// The instruction sets the kernels are compiled for, in order of preference.
enum class isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

inline const char* isa_name(isa i) {
    switch (i) {
        case isa::avx512: return "avx512";
        case isa::avx2: return "avx2";
        default: return "scalar";
    }
}

/// The best set this CPU runs: avx512 needs F, BW, VL and DQ; avx2 needs AVX2, FMA and F16C.
inline isa cpu_isa() {
#if ALIGNGPT_ISA_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        return isa::avx512;
    // (Clang 14's __builtin_cpu_supports does not know "f16c": cpuid leaf 1 says it, and the OS
    // saves its registers whenever it saves AVX2's.)
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) return isa::avx2;
#endif
    return isa::scalar;
}

/// ALIGNGPT_ISA parsed; throws on a name it does not know (a typo must not silently test the wrong path).
inline isa parse_isa(std::string_view name, isa best) {
    if (name.empty()) return best;
    for (isa i : {isa::scalar, isa::avx2, isa::avx512})
        if (name == isa_name(i)) return int(i) <= int(best) ? i : best;
    fail("ALIGNGPT_ISA=", std::string(name), ": expected scalar, avx2 or avx512");
}

namespace detail {
inline std::atomic<int>& isa_state() {
    static std::atomic<int> state{[] {
        const char* env = std::getenv("ALIGNGPT_ISA");
        return int(parse_isa(env ? env : "", cpu_isa()));
    }()};
    return state;
}
}  // namespace detail

/// The set the kernels run on now.
inline isa active_isa() { return isa(detail::isa_state().load(std::memory_order_relaxed)); }

/// Runs the kernels on `i` (at most what the CPU supports) until destroyed. Not for use while
/// another thread runs kernels: the choice is process-wide.
class isa_override {
public:
    explicit isa_override(isa i) : saved_(active_isa()) {
        ALIGNGPT_CHECK(int(i) <= int(cpu_isa()), "isa_override: this CPU does not run ", isa_name(i));
        detail::isa_state().store(int(i), std::memory_order_relaxed);
    }
    ~isa_override() { detail::isa_state().store(int(saved_), std::memory_order_relaxed); }
    isa_override(const isa_override&) = delete;
    isa_override& operator=(const isa_override&) = delete;

private:
    isa saved_;
};

}  // namespace aligngpt::ops

/// FP contraction off between BEGIN and END, whatever the command line says (-ffp-contract=fast is
/// GCC's default in GNU mode, Clang contracts within expressions by default): the kernels' bits
/// depend on every a*b + c being two roundings.
#if defined(__clang__)
#define ALIGNGPT_FP_STRICT_BEGIN _Pragma("float_control(push)") _Pragma("clang fp contract(off)")
#define ALIGNGPT_FP_STRICT_END _Pragma("float_control(pop)")
#elif defined(__GNUC__) && defined(__CUDACC__)
// nvcc: its front end does not know GCC's optimize pragma (warning 1675) but hands it on to the host
// compiler, which applies it. Device code ignores it: nvcc contracts there unless given --fmad=false.
#define ALIGNGPT_FP_STRICT_BEGIN                                                               \
    _Pragma("nv_diagnostic push") _Pragma("nv_diag_suppress 1675") _Pragma("GCC push_options") \
        _Pragma("GCC optimize(\"fp-contract=off\")") _Pragma("nv_diagnostic pop")
#define ALIGNGPT_FP_STRICT_END _Pragma("GCC pop_options")
#elif defined(__GNUC__)
#define ALIGNGPT_FP_STRICT_BEGIN _Pragma("GCC push_options") _Pragma("GCC optimize(\"fp-contract=off\")")
#define ALIGNGPT_FP_STRICT_END _Pragma("GCC pop_options")
#else
#define ALIGNGPT_FP_STRICT_BEGIN
#define ALIGNGPT_FP_STRICT_END
#endif

/// Calls FN(args...) from the namespace of the active instruction set: ops::isa_avx512::FN, ...
#if ALIGNGPT_ISA_X86
#define ALIGNGPT_ISA_DISPATCH(FN, ...)                                                          \
    switch (::aligngpt::ops::active_isa()) {                                                    \
        case ::aligngpt::ops::isa::avx512: return ::aligngpt::ops::isa_avx512::FN(__VA_ARGS__); \
        case ::aligngpt::ops::isa::avx2: return ::aligngpt::ops::isa_avx2::FN(__VA_ARGS__);     \
        default: return ::aligngpt::ops::isa_scalar::FN(__VA_ARGS__);                           \
    }
#else
#define ALIGNGPT_ISA_DISPATCH(FN, ...) return ::aligngpt::ops::isa_scalar::FN(__VA_ARGS__);
#endif
