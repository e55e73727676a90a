#pragma once
// Small helpers the benchmark programs share: environment knobs, medians, the load average, and
// the thread variables a PyTorch peer process is started with.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace aligngpt_bench {

inline int env_int(const char* name, int def) {
    const char* s = std::getenv(name);
    return s && *s ? std::atoi(s) : def;
}

inline std::string env_str(const char* name, const std::string& def) {
    const char* s = std::getenv(name);
    return s && *s ? std::string(s) : def;
}

/// ALIGNGPT_BENCH_SMOKE set and not "0": tiny shapes, no peer (CI's smoke run, .ci/run).
inline bool smoke() {
    const char* s = std::getenv("ALIGNGPT_BENCH_SMOKE");
    return s && *s && std::string(s) != "0";
}

/// The median (0 for none).
inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// The 1-minute load average (-1 if unknown): the hosts are shared.
inline double load1() {
    double l[1] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

/// "OMP_NUM_THREADS=n MKL_NUM_THREADS=n OPENBLAS_NUM_THREADS=n" for a peer's command line, plus
/// OPENBLAS_CORETYPE=SKYLAKEX on AVX-512 CPUs (Debian's OpenBLAS 0.3.21 does not recognise newer
/// ones and falls back to SSE3; docs/benchmarks.md) unless the caller set it.
inline std::string thread_env(int threads) {
    const std::string n = std::to_string(threads);
    std::string env = "OMP_NUM_THREADS=" + n + " MKL_NUM_THREADS=" + n + " OPENBLAS_NUM_THREADS=" + n;
#if defined(__x86_64__) || defined(__i386__)
    if (!std::getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx512f")) env += " OPENBLAS_CORETYPE=SKYLAKEX";
#endif
    return env;
}

}  // namespace aligngpt_bench
