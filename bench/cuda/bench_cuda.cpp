// backend::cuda benchmarks (Google Benchmark, device time from CUDA events; docs/benchmarks.md
// "CUDA"). Built only with ALIGNGPT_WITH_CUDA=ON; run by scripts/device-check on a GPU machine.
//
//   gemm_exact/M/N/K   our exact-mode GEMM (every output one fma chain, k ascending), Y = X W^T
//   gemm_cublas/M/N/K  cublasSgemm at the same shape in the same run, FP32 (TF32 off), the reference
//   vit_encode         CLIP ViT-L/14-336, one image, features at layer -2, exact mode, fp32
//   llama_prefill      a LLaMA-7B-shaped model (fp32 weights, constant values), 600 tokens, 32 layers
//   llama_decode       the same model, seconds per decoded token (a 64-token prompt, 16 new tokens)
//   Counters: TFLOP/s (2 M N K per call) for the GEMMs; seconds per call are the reported time.
//
// Without a visible GPU every benchmark skips with that message.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "aligngpt/aligngpt.h"
#include "aligngpt/backend/cuda.h"

using namespace aligngpt;
using backend::cuda;

namespace {

cuda* gpu() {
    static std::unique_ptr<cuda> g = cuda::device_count() > 0 ? std::make_unique<cuda>(0) : nullptr;
    return g.get();
}

bool skip_without_gpu(benchmark::State& state) {
    if (gpu()) return false;
    state.SkipWithError("no CUDA device visible");
    for (auto _ : state) {}
    return true;
}

/// Elapsed device time of f() on the backend's stream, in seconds.
template <class F>
double device_seconds(const cuda& be, F f) {
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    const auto s = static_cast<cudaStream_t>(be.stream());
    cudaEventRecord(a, s);
    f();
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a), cudaEventDestroy(b);
    return double(ms) * 1e-3;
}

struct gemm_problem {
    cuda::buffer<float> X, W, Y;
    explicit gemm_problem(index_t M, index_t N, index_t K)
        : X(gpu()->allocate<float>(M * K)), W(gpu()->allocate<float>(N * K)), Y(gpu()->allocate<float>(M * N)) {
        gpu()->fill(X.data(), M * K, 0.5f);
        gpu()->fill(W.data(), N * K, 0.25f);
    }
};

void gemm_exact(benchmark::State& state) {
    if (skip_without_gpu(state)) return;
    const index_t M = state.range(0), N = state.range(1), K = state.range(2);
    gemm_problem p(M, N, K);
    for (auto _ : state)
        state.SetIterationTime(device_seconds(*gpu(), [&] {
            linear_forward(*gpu(), p.Y.data(), p.X.data(), p.W.data(), static_cast<const float*>(nullptr), M, N, K);
        }));
    state.counters["TFLOP/s"] =
        benchmark::Counter(2e-12 * double(M) * double(N) * double(K), benchmark::Counter::kIsIterationInvariantRate);
}

void gemm_cublas(benchmark::State& state) {
    if (skip_without_gpu(state)) return;
    const index_t M = state.range(0), N = state.range(1), K = state.range(2);
    gemm_problem p(M, N, K);
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return state.SkipWithError("cublasCreate failed");
    cublasSetStream(h, static_cast<cudaStream_t>(gpu()->stream()));
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);  // FP32 on CUDA cores: no TF32
    const float one = 1, zero = 0;
    // Row-major Y[M,N] = X[M,K] W[N,K]^T is column-major Y^T[N,M] = W X^T.
    for (auto _ : state)
        state.SetIterationTime(device_seconds(*gpu(), [&] {
            cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, p.W.data(), int(K), p.X.data(), int(K), &zero,
                        p.Y.data(), int(N));
        }));
    cublasDestroy(h);
    state.counters["TFLOP/s"] =
        benchmark::Counter(2e-12 * double(M) * double(N) * double(K), benchmark::Counter::kIsIterationInvariantRate);
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
    b->Args({4096, 4096, 4096});  // the 25%-of-peak target's shape
    b->Args({600, 4096, 4096});   // LLaMA-7B prefill: q, k, v, o
    b->Args({600, 11008, 4096});  // gate, up
    b->Args({600, 4096, 11008});  // down
    b->Args({577, 4096, 1024});   // ViT-L fc1
    b->Args({1, 4096, 4096});     // a decode step's GEMV
    b->UseManualTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(gemm_exact)->Apply(gemm_shapes);
BENCHMARK(gemm_cublas)->Apply(gemm_shapes);

/// Every parameter set to a constant on the device: exact mode has no data-dependent work, so the
/// timing is that of real weights, without a host fill of billions of values.
template <class M>
void fill_params(M& m, float v) {
    m.visit([&](auto& p) { p.value().fill(v); });
}

void vit_encode(benchmark::State& state) {
    if (skip_without_gpu(state)) return;
    models::clip_vision_config cfg;  // ViT-L/14-336
    cfg.image_size = 336, cfg.patch_size = 14, cfg.hidden_size = 1024, cfg.intermediate_size = 4096;
    cfg.num_hidden_layers = 24, cfg.num_attention_heads = 16;
    auto m = models::clip_vision_model<float, cuda>::make(cfg, "vision_model.", *gpu());
    fill_params(m, 0.01f);
    auto px = autograd::variable<float, cuda>::leaf(tensor<float, cuda>({1, 3, 336, 336}, *gpu()));
    px.value().fill(0.5f);
    for (auto _ : state) state.SetIterationTime(device_seconds(*gpu(), [&] { m.features(nullptr, px, -2); }));
}
BENCHMARK(vit_encode)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

models::llama_config llama_7b() {
    models::llama_config c;
    c.hidden_size = 4096, c.intermediate_size = 11008, c.num_hidden_layers = 32, c.num_attention_heads = 32;
    c.num_key_value_heads = 32, c.vocab_size = 32000;
    return c;
}

struct llama_fixture {
    models::llama_model<float, cuda> m;
    llama_fixture() : m(llama_7b(), *gpu()) { fill_params(m, 0.001f); }
    static llama_fixture& get() {
        static llama_fixture f;
        return f;
    }
};

void llama_prefill(benchmark::State& state) {
    if (skip_without_gpu(state)) return;
    auto& f = llama_fixture::get();
    const index_t T = 600;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(T)), pos(ids.size());
    for (index_t t = 0; t < T; t++) ids[std::size_t(t)] = 1 + t % 1000, pos[std::size_t(t)] = t;
    for (auto _ : state)
        state.SetIterationTime(device_seconds(*gpu(), [&] {
            auto x = ag::reshape<float, cuda>(nullptr, f.m.embed(nullptr, ids), {1, T, 4096});
            f.m.forward(nullptr, x, pos);
        }));
}
BENCHMARK(llama_prefill)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);

void llama_decode(benchmark::State& state) {
    if (skip_without_gpu(state)) return;
    auto& f = llama_fixture::get();
    std::vector<std::int64_t> prompt(64);
    for (std::size_t t = 0; t < prompt.size(); t++) prompt[t] = std::int64_t(1 + t);
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        f.m.generate(prompt, {1});
        const auto t1 = std::chrono::steady_clock::now();
        f.m.generate(prompt, {17});
        const auto t2 = std::chrono::steady_clock::now();
        // 16 more tokens than the first call: their time alone, per token.
        state.SetIterationTime((std::chrono::duration<double>(t2 - t1).count() - std::chrono::duration<double>(t1 - t0).count()) /
                               16);
    }
}
BENCHMARK(llama_decode)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);

}  // namespace

BENCHMARK_MAIN();
