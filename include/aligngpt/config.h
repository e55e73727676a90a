#pragma once
// Project-wide definitions: version, index type, the error type every check throws, the
// OpenMP loop macro, and the guard that refuses -ffast-math.
//
// Why the guard: every promise this library makes about bits (same result on 1 or N threads,
// with AVX-512 or scalar code, with GCC or Clang) assumes IEEE semantics. -ffast-math lets the
// compiler reassociate sums and flush subnormals, which silently breaks all of them.
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__FAST_MATH__)
#error "aligngpt: -ffast-math (or -Ofast) breaks IEEE semantics and every reproducibility promise; build without it"
#endif

#include "aligngpt/version.h"  // ALIGNGPT_VERSION, ALIGNGPT_VERSION_{MAJOR,MINOR,PATCH}

#if defined(_OPENMP)
#include <omp.h>
// Threads split only the outputs they own (rows, tiles); a static schedule keeps work
// assignment a pure function of the loop bounds. Never add reduction(...) here.
#define ALIGNGPT_OMP_FOR _Pragma("omp parallel for schedule(static)")
#define ALIGNGPT_OMP_FOR_COLLAPSE2 _Pragma("omp parallel for collapse(2) schedule(static)")
// For tasks of unequal size (causal attention's row blocks): which thread runs a task varies from
// run to run, so a task must write only its own outputs and compute them the same way anywhere.
#define ALIGNGPT_OMP_FOR_DYNAMIC _Pragma("omp parallel for schedule(dynamic, 1)")
#else
#define ALIGNGPT_OMP_FOR
#define ALIGNGPT_OMP_FOR_COLLAPSE2
#define ALIGNGPT_OMP_FOR_DYNAMIC
#endif

/// Marks the scalar math (ops/exp.h, ops/log.h, ops/erf.h) callable from CUDA kernels too, so the
/// GPU runs the very op sequence the CPU runs (one set of bits); empty outside nvcc.
#if defined(__CUDACC__)
#define ALIGNGPT_HD __host__ __device__
#else
#define ALIGNGPT_HD
#endif

namespace aligngpt {

using index_t = std::int64_t;

/// The one exception type of the library. Messages name the op or file, the field, and the values.
struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class A, class... R>
void append(std::ostringstream& os, const A& a, const R&... r) {
    os << a;
    append(os, r...);
}
inline std::string shape_str(const std::vector<index_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); i++) out += (i ? "," : "") + std::to_string(s[i]);
    return out + "]";
}
}  // namespace detail

/// Builds a message from its parts and throws aligngpt::error.
template <class... A>
[[noreturn]] void fail(const A&... parts) {
    std::ostringstream os;
    detail::append(os, parts...);
    throw error(os.str());
}

/// Checks an argument condition; never compiled out (bad input must not become UB in release builds).
#define ALIGNGPT_CHECK(cond, ...)                   \
    do {                                            \
        if (!(cond)) ::aligngpt::fail(__VA_ARGS__); \
    } while (0)

/// Number of OpenMP threads a parallel region started here will use: 1 without OpenMP, and 1 inside
/// a region when nesting is off (a task of an outer region runs its products on its own thread).
inline int max_threads() {
#if defined(_OPENMP)
    if (omp_get_active_level() >= omp_get_max_active_levels()) return 1;
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/// Inside a parallel region: this thread's number in its team, and the team's size (0 and 1 outside).
inline int thread_num() {
#if defined(_OPENMP)
    return omp_get_thread_num();
#else
    return 0;
#endif
}
inline int team_size() {
#if defined(_OPENMP)
    return omp_get_num_threads();
#else
    return 1;
#endif
}
/// Waits for the whole team (inside a parallel region; a no-op without OpenMP).
inline void team_barrier() {
#if defined(_OPENMP)
#pragma omp barrier
#endif
}

/// Sets the thread count for later parallel regions (no-op without OpenMP). Results never depend on it.
inline void set_threads(int n) {
#if defined(_OPENMP)
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

}  // namespace aligngpt
