// Loading benchmarks (aligngpt/pretrained.h over io/checkpoint.h).
//
//   BM_load_tiny       the tiny AlignGPT directory of tests/golden/model_dirs (always; CI smoke)
//   BM_load_7b_bf16    a synthetic full-size AlignGPT-7B checkpoint in bf16 (2-GB safetensors shards
//                      + index, a CLIP copy inside as published, and a CLIP ViT-L/14-336 fp32 vision
//                      tower directory), loaded with weights_dtype=bf16. OPT-IN: set
//                      ALIGNGPT_BENCH_LOAD_7B=1. The files (~15.4 GB; synthetic_model.h, shared
//                      with bench_generate) are written once to $ALIGNGPT_BENCH_DIR (default
//                      /tmp/aligngpt_bench_7b) and reused; the run is skipped with a message if the
//                      disk has less free space than that. Counters: load_s, GB_per_s (bytes read /
//                      load time), peak_rss_GiB (getrusage ru_maxrss: the whole process), packed_GiB.
//                      Target: peak RSS < 16 GiB.
//
// backend::cpu zeroes large buffers lazily (anonymous mmap), so the f32 slots of the packed
// linears, never written, cost no memory: the measured RSS is what the loaded model keeps
// (packed bf16 LLM linears + f32 everything else).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "aligngpt/pretrained.h"
#include "synthetic_model.h"

namespace {

namespace fs = std::filesystem;
using namespace aligngpt;

// tests/golden/model_dirs next to this file (CMake compiles it by absolute path)
const std::string golden_dirs = (fs::path(__FILE__).parent_path().parent_path() / "tests/golden/model_dirs").string();

void BM_load_tiny(benchmark::State& state) {
    pretrained::load_options o;
    o.quiet = true;
    o.vision_tower = golden_dirs + "/clip_vision";
    std::uint64_t bytes = 0;
    for (auto _ : state) {
        auto m = pretrained::load_aligngpt(golden_dirs + "/aligngpt_st", o);
        bytes = m.stats.bytes;
        benchmark::DoNotOptimize(m.model->llm.lm_head.weight.value().data());
    }
    state.SetBytesProcessed(std::int64_t(bytes) * state.iterations());
}
BENCHMARK(BM_load_tiny)->Unit(benchmark::kMillisecond);

void BM_load_7b_bf16(benchmark::State& state) {
    const char* env = std::getenv("ALIGNGPT_BENCH_DIR");
    const std::string dir = env && *env ? env : "/tmp/aligngpt_bench_7b";
    if (const std::string why = aligngpt_bench::ensure_checkpoint(dir, aligngpt_bench::model_shapes::aligngpt_7b(), "bench_load");
        !why.empty()) {
        state.SkipWithError(why.c_str());
        for (auto _ : state) {}
        return;
    }
    pretrained::load_options o;
    o.dtype = io::weights_dtype::bf16;
    double secs = 0, packed = 0;
    std::uint64_t bytes = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        auto m = pretrained::load_aligngpt<float, backend::cpu>(dir, o);
        secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        bytes = m.stats.bytes;
        packed = double(m.packed.bytes());
        benchmark::DoNotOptimize(m.packed.bf16_weights.size());
        state.SetIterationTime(secs);
    }
    state.counters["load_s"] = secs;
    state.counters["GB_per_s"] = double(bytes) / 1e9 / secs;
    state.counters["read_GB"] = double(bytes) / 1e9;
    state.counters["packed_GiB"] = packed / double(1ull << 30);
    state.counters["peak_rss_GiB"] = double(io::peak_rss_bytes()) / double(1ull << 30);
}

}  // namespace

int main(int argc, char** argv) {
    const char* opt_in = std::getenv("ALIGNGPT_BENCH_LOAD_7B");
    if (opt_in && std::string(opt_in) == "1")
        benchmark::RegisterBenchmark("BM_load_7b_bf16", BM_load_7b_bf16)
            ->Iterations(1)
            ->UseManualTime()
            ->Unit(benchmark::kSecond);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
