// GEMM benchmarks at the model's shapes: Y[M, N] = X[M, K] W^T, W[N, K] as in the checkpoints.
//
//   linear_packed : our deterministic kernel on weights packed once (only X is packed per call)
//   gemm          : our deterministic general gemm on the raw W (packs X and W per call; one row,
//                   the decode GEMV, reads W in place)
//   openblas      : cblas_sgemm(RowMajor, NoTrans, Trans) / cblas_sgemv, for comparison only
//
// Counters: GFLOP/s (2 M N K per call) and, for the decode GEMV (M = 1), GB/s of weight bytes
// (bf16 counts 2 bytes a weight). The GEMV cycles through several copies of the weights (> 2x the
// L3 reported by lscpu) so the bytes come from memory, as in a real decode step.
// Threads come from the environment (docs/benchmarks.md "GEMM" has the commands):
//   OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 OPENBLAS_CORETYPE=SKYLAKEX ./bench_gemm
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "aligngpt/half.h"
#include "aligngpt/ops/gemm.h"
#include "aligngpt/ops/packed.h"
#include "aligngpt/rng.h"

#if defined(ALIGNGPT_BENCH_HAVE_BLAS)
#include <cblas.h>
#endif

using namespace aligngpt;

namespace {

/// One problem's data, built once per process and shared by the benchmarks of that shape.
struct problem {
    index_t M, N, K;
    std::vector<float> X, W, Y, bias;
    ops::packed_weight<float> pw;
    problem(index_t M_, index_t N_, index_t K_) : M(M_), N(N_), K(K_) {
        X.resize(size_t(M * K));
        W.resize(size_t(N * K));
        Y.resize(size_t(M * N));
        bias.resize(size_t(N));
        rng::fill_uniform(X.data(), M * K, 1, 1, 1.f);
        rng::fill_uniform(W.data(), N * K, 1, 2, 0.05f);
        rng::fill_uniform(bias.data(), N, 1, 3, 0.1f);
        pw = ops::packed_weight<float>::pack(W.data(), N, K);
    }
};

problem& get_problem(index_t M, index_t N, index_t K) {
    static std::map<std::tuple<index_t, index_t, index_t>, std::unique_ptr<problem>> cache;
    auto& p = cache[{M, N, K}];
    if (!p) p = std::make_unique<problem>(M, N, K);
    return *p;
}

void set_counters(benchmark::State& st, double M, double N, double K) {
    st.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["threads"] = max_threads();
}

// ---- GEMM shapes: args = {M, K, N} ---------------------------------------------------------
void BM_linear_packed(benchmark::State& st) {
    auto& p = get_problem(st.range(0), st.range(2), st.range(1));
    for (auto _ : st) {
        ops::linear_packed(backend::cpu{}, p.Y.data(), p.X.data(), p.pw, p.bias.data(), p.M);
        benchmark::ClobberMemory();
    }
    set_counters(st, double(p.M), double(p.N), double(p.K));
}

void BM_gemm(benchmark::State& st) {
    auto& p = get_problem(st.range(0), st.range(2), st.range(1));
    for (auto _ : st) {
        // Y = X W^T: A = X (rs K, cs 1), B = W^T (rs 1, cs K)
        ops::gemm(backend::cpu{}, p.M, p.N, p.K, p.X.data(), p.K, index_t(1), p.W.data(), index_t(1), p.K, p.Y.data(), p.N,
                  ops::gemm_init::bias, p.bias.data());
        benchmark::ClobberMemory();
    }
    set_counters(st, double(p.M), double(p.N), double(p.K));
}

#if defined(ALIGNGPT_BENCH_HAVE_BLAS)
void BM_openblas_sgemm(benchmark::State& st) {
    auto& p = get_problem(st.range(0), st.range(2), st.range(1));
    for (auto _ : st) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(p.M), int(p.N), int(p.K), 1.0f, p.X.data(), int(p.K), p.W.data(),
                    int(p.K), 0.0f, p.Y.data(), int(p.N));
        benchmark::ClobberMemory();
    }
    set_counters(st, double(p.M), double(p.N), double(p.K));
}
#endif

// ---- decode GEMV: 1 x 4096 by 11008 ---------------------------------------------------------
constexpr index_t gemv_N = 11008, gemv_K = 4096;
constexpr std::size_t gemv_stream_bytes = std::size_t(520) << 20;  // >= 2x the 260 MiB L3 lscpu reports

/// The decode weights, as f32 row-major (for OpenBLAS), filled once.
const std::vector<float>& gemv_weights() {
    static const std::vector<float> w = [] {
        std::vector<float> v(size_t(gemv_N * gemv_K));
        rng::fill_uniform(v.data(), gemv_N * gemv_K, 2, 1, 0.05f);
        return v;
    }();
    return w;
}

/// Copies of the packed weights, cycled so each call streams weights that are not in the cache.
template <class S>
struct gemv_problem {
    std::vector<ops::packed_weight<S>> copies;
    std::vector<float> x, y, bias;
    gemv_problem() {
        const auto& w = gemv_weights();
        std::vector<S> ws(w.size());
        for (size_t i = 0; i < w.size(); i++) ws[i] = narrow<S>(w[i]);
        const std::size_t bytes = w.size() * sizeof(S);
        const std::size_t n = std::max<std::size_t>(1, (gemv_stream_bytes + bytes - 1) / bytes);
        for (std::size_t c = 0; c < n; c++) copies.push_back(ops::packed_weight<S>::pack(ws.data(), gemv_N, gemv_K));
        x.resize(size_t(gemv_K));
        y.resize(size_t(gemv_N));
        bias.resize(size_t(gemv_N));
        rng::fill_uniform(x.data(), gemv_K, 2, 2, 1.f);
        rng::fill_uniform(bias.data(), gemv_N, 2, 3, 0.1f);
    }
};

template <class S>
gemv_problem<S>& get_gemv() {
    static gemv_problem<S> p;
    return p;
}

template <class S>
void BM_gemv_linear_packed(benchmark::State& st) {
    auto& p = get_gemv<S>();
    std::size_t c = 0;
    for (auto _ : st) {
        ops::linear_packed(backend::cpu{}, p.y.data(), p.x.data(), p.copies[c], p.bias.data(), 1);
        benchmark::ClobberMemory();
        c = (c + 1) % p.copies.size();
    }
    const double bytes = double(gemv_N) * double(gemv_K) * double(sizeof(S));
    st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    set_counters(st, 1, double(gemv_N), double(gemv_K));
}

/// Copies of the f32 row-major weights (as a checkpoint holds them), cycled like the packed ones.
const std::vector<std::vector<float>>& gemv_raw_copies() {
    static const std::vector<std::vector<float>> raw = [] {
        std::vector<std::vector<float>> r;
        const std::size_t bytes = gemv_weights().size() * sizeof(float);
        for (std::size_t c = 0; c < (gemv_stream_bytes + bytes - 1) / bytes; c++) r.push_back(gemv_weights());
        return r;
    }();
    return raw;
}

/// ops::gemm with M == 1 on the raw weights: what nn::linear runs for f32 weights in a decode step.
void BM_gemv_gemm_f32(benchmark::State& st) {
    const auto& raw = gemv_raw_copies();
    std::vector<float> x(static_cast<size_t>(gemv_K)), y(static_cast<size_t>(gemv_N));
    rng::fill_uniform(x.data(), gemv_K, 2, 2, 1.f);
    std::size_t c = 0;
    for (auto _ : st) {
        ops::gemm(backend::cpu{}, index_t(1), gemv_N, gemv_K, x.data(), gemv_K, index_t(1), raw[c].data(), index_t(1), gemv_K,
                  y.data(), gemv_N);
        benchmark::ClobberMemory();
        c = (c + 1) % raw.size();
    }
    const double bytes = double(gemv_N) * double(gemv_K) * 4.0;
    st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    set_counters(st, 1, double(gemv_N), double(gemv_K));
}

#if defined(ALIGNGPT_BENCH_HAVE_BLAS)
void BM_gemv_openblas_sgemv(benchmark::State& st) {
    const auto& raw = gemv_raw_copies();
    static std::vector<float> x(static_cast<size_t>(gemv_K)), y(static_cast<size_t>(gemv_N));
    rng::fill_uniform(x.data(), gemv_K, 2, 2, 1.f);
    std::size_t c = 0;
    for (auto _ : st) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, int(gemv_N), int(gemv_K), 1.0f, raw[c].data(), int(gemv_K), x.data(), 1, 0.0f,
                    y.data(), 1);
        benchmark::ClobberMemory();
        c = (c + 1) % raw.size();
    }
    const double bytes = double(gemv_N) * double(gemv_K) * 4.0;
    st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    set_counters(st, 1, double(gemv_N), double(gemv_K));
}
#endif

}  // namespace

int main(int argc, char** argv) {
    // Per shape: ours then OpenBLAS, so each pair is measured close in time on this shared machine.
    // ALIGNGPT_BENCH_SMOKE=1 (CI) registers small shapes only: it proves the binary runs.
    const char* smoke_env = std::getenv("ALIGNGPT_BENCH_SMOKE");
    const bool smoke = smoke_env && std::string(smoke_env) == "1";
    const std::vector<std::array<index_t, 3>> shapes =
        smoke ? std::vector<std::array<index_t, 3>>{{70, 96, 130}, {1, 256, 100}}
              : std::vector<std::array<index_t, 3>>{{577, 1024, 3072},   // CLIP ViT-L QKV      (M, K, N)
                                                    {577, 1024, 4096},   // CLIP ViT-L MLP
                                                    {600, 4096, 11008},  // LLaMA-7B MLP
                                                    {1024, 1024, 1024}};
    for (const auto& s : shapes) {
        auto reg = [&](const char* name, void (*fn)(benchmark::State&)) {
            benchmark::RegisterBenchmark(name, fn)
                ->ArgNames({"M", "K", "N"})
                ->Args({s[0], s[1], s[2]})
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
        };
        reg("linear_packed", BM_linear_packed);
        reg("gemm", BM_gemm);
#if defined(ALIGNGPT_BENCH_HAVE_BLAS)
        reg("openblas_sgemm", BM_openblas_sgemm);
#endif
    }
    if (!smoke) {  // the decode GEMV streams ~520 MB of weights
        benchmark::RegisterBenchmark("gemv/linear_packed_f32", BM_gemv_linear_packed<float>)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark("gemv/linear_packed_bf16", BM_gemv_linear_packed<bf16>)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark("gemv/gemm_f32", BM_gemv_gemm_f32)->UseRealTime()->Unit(benchmark::kMicrosecond);
#if defined(ALIGNGPT_BENCH_HAVE_BLAS)
        benchmark::RegisterBenchmark("gemv/openblas_sgemv", BM_gemv_openblas_sgemv)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
