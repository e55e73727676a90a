// Loading benchmarks (aligngpt/pretrained.h over io/checkpoint.h).
//
//   BM_load_tiny       the tiny AlignGPT directory of tests/golden/model_dirs (always; CI smoke)
//   BM_load_7b_bf16    a synthetic full-size AlignGPT-7B checkpoint in bf16 (2-GB safetensors shards
//                      + index, a CLIP copy inside as published, and a CLIP ViT-L/14-336 fp32 vision
//                      tower directory), loaded with weights_dtype=bf16. OPT-IN: set
//                      ALIGNGPT_BENCH_LOAD_7B=1. The files (~15.4 GB) are written once with the
//                      project's own safetensors writer to $ALIGNGPT_BENCH_DIR (default
//                      /tmp/aligngpt_bench_7b) and reused; the run is skipped with a message if the
//                      disk has less free space than that. Counters: load_s, GB_per_s (bytes read /
//                      load time), peak_rss_GiB (getrusage ru_maxrss: the whole process), packed_GiB.
//                      Target: peak RSS < 16 GiB.
//
// backend::cpu zeroes large buffers lazily (anonymous mmap), so the f32 slots of the packed
// linears, never written, cost no memory: the measured RSS is what the loaded model keeps
// (packed bf16 LLM linears + f32 everything else).
#include <benchmark/benchmark.h>
#include <sys/statvfs.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "aligngpt/pretrained.h"

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
        benchmark::DoNotOptimize(m.model->llm.lm_head.value().data());
    }
    state.SetBytesProcessed(std::int64_t(bytes) * state.iterations());
}
BENCHMARK(BM_load_tiny)->Unit(benchmark::kMillisecond);

// --- the synthetic 7B checkpoint ------------------------------------------------------------------

nlohmann::json config_7b(const std::string& vision) {
    return {{"architectures", {"AlignGPTForCausalLM"}},
            {"model_type", "aligngpt"},
            {"bos_token_id", 1},
            {"eos_token_id", 2},
            {"pad_token_id", 0},
            {"hidden_act", "silu"},
            {"hidden_size", 4096},
            {"intermediate_size", 11008},
            {"num_hidden_layers", 32},
            {"num_attention_heads", 32},
            {"num_key_value_heads", 32},
            {"max_position_embeddings", 4096},
            {"rms_norm_eps", 1e-5},
            {"rope_scaling", nullptr},
            {"tie_word_embeddings", false},
            {"vocab_size", 32000},
            {"torch_dtype", "bfloat16"},
            {"image_aspect_ratio", "pad"},
            {"mm_hidden_size", 1024},
            {"mm_projector_type", "mlp2x_gelu"},
            {"mm_use_im_patch_token", false},
            {"mm_use_im_start_end", false},
            {"mm_vision_select_feature", "patch"},
            {"mm_vision_select_layer", -2},
            {"mm_vision_tower", vision},
            {"tokenizer_model_max_length", 2048},
            {"tokenizer_padding_side", "right"},
            {"use_mm_proj", true},
            {"transformers_version", "4.31.0"}};
}
nlohmann::json clip_config_l336() {
    return {{"model_type", "clip_vision_model"}, {"hidden_size", 1024},   {"intermediate_size", 4096}, {"num_hidden_layers", 24},
            {"num_attention_heads", 16},         {"image_size", 336},     {"patch_size", 14},          {"projection_dim", 768},
            {"hidden_act", "quick_gelu"},        {"layer_norm_eps", 1e-5}};
}

/// Cheap deterministic values in [-0.05, 0.05), as raw bytes of dtype S.
template <class S>
std::vector<std::byte> synth(const std::string& name, index_t n) {
    std::vector<std::byte> out(std::size_t(n) * sizeof(S));
    std::uint64_t x = rng::fnv1a64(name) | 1;
    S* p = reinterpret_cast<S*>(out.data());
    for (index_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = S(float(std::int32_t(x >> 40) - (1 << 23)) * (0.05f / float(1 << 23)));
    }
    return out;
}

template <class M>
std::vector<std::pair<std::string, std::vector<index_t>>> names_shapes(M& m) {
    std::vector<std::pair<std::string, std::vector<index_t>>> out;
    m.visit([&](autograd::variable<float, backend::cpu>& p) { out.emplace_back(p.name(), p.shape()); });
    return out;
}

bool enough_disk(const std::string& dir, std::uint64_t need) {
    struct statvfs s {};
    if (::statvfs(dir.c_str(), &s) != 0) return false;
    return std::uint64_t(s.f_bavail) * s.f_frsize >= need;
}

/// Writes the checkpoint once (a DONE marker guards reuse). Returns "" or a reason to skip.
std::string ensure_7b(const std::string& dir) {
    if (fs::exists(dir + "/DONE")) return {};
    fs::create_directories(dir + "/clip");
    if (!enough_disk(dir, 16'500'000'000ull))
        return "less than 16.5 GB free in " + dir + " for the synthetic 7B checkpoint (set ALIGNGPT_BENCH_DIR)";
    const auto t0 = std::chrono::steady_clock::now();
    std::cerr << "[bench_load] writing a synthetic AlignGPT-7B bf16 checkpoint to " << dir << " (once)\n";
    const auto cfg = pretrained::aligngpt_dir_config::from_json(config_7b("clip"), "config_7b");
    const auto vcfg = models::clip_vision_config::from_json(clip_config_l336(), "clip_l336");
    models::aligngpt_model<float, backend::cpu> m(cfg.model);
    auto tensors = names_shapes(m);
    auto copy = models::clip_vision_model<float, backend::cpu>::make(vcfg, "vision_tower.vision_tower.vision_model.");
    for (auto& t : names_shapes(copy)) tensors.push_back(std::move(t));
    for (int l = 0; l < 32; l++)  // transformers 4.31 saves the rotary buffers too (ignored on load)
        tensors.push_back({"model.layers." + std::to_string(l) + ".self_attn.rotary_emb.inv_freq", {64}});

    nlohmann::json weight_map = nlohmann::json::object();
    std::uint64_t total = 0, shard_bytes = 0;
    std::vector<std::vector<std::string>> shards(1);
    for (auto& [name, shape] : tensors) {
        std::uint64_t b = 2;
        for (index_t d : shape) b *= std::uint64_t(d);
        if (shard_bytes + b > 2'000'000'000ull && shard_bytes > 0) shards.emplace_back(), shard_bytes = 0;
        shards.back().push_back(name);
        shard_bytes += b;
        total += b;
    }
    std::map<std::string, std::vector<index_t>> shape_of(tensors.begin(), tensors.end());
    const std::size_t S = shards.size();
    for (std::size_t s = 0; s < S; s++) {
        char fname[64];
        std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", s + 1, S);
        io::safetensors_writer w;
        w.set_metadata("format", "pt");
        for (const auto& name : shards[s]) {
            const auto& shape = shape_of[name];
            index_t n = 1;
            for (index_t d : shape) n *= d;
            const auto bytes = synth<bf16>(name, n);
            w.add(name, io::dtype::BF16, shape, bytes.data(), bytes.size());
            weight_map[name] = fname;
        }
        w.write(dir + "/" + fname);
        std::cerr << "[bench_load]   " << fname << " (" << shards[s].size() << " tensors)\n";
    }
    std::ofstream(dir + "/model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(1);
    std::ofstream(dir + "/config.json") << config_7b("clip").dump(2);

    // the vision tower directory: fp32, like openai/clip-vit-large-patch14-336
    auto vit = models::clip_vision_model<float, backend::cpu>::make(vcfg, "vision_model.");
    io::safetensors_writer w;
    for (auto& [name, shape] : names_shapes(vit)) {
        index_t n = 1;
        for (index_t d : shape) n *= d;
        const auto bytes = synth<float>(name, n);
        w.add(name, io::dtype::F32, shape, bytes.data(), bytes.size());
    }
    w.write(dir + "/clip/model.safetensors");
    std::ofstream(dir + "/clip/config.json") << clip_config_l336().dump(2);
    std::ofstream(dir + "/DONE") << "ok\n";
    std::cerr << "[bench_load] written in " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
              << " s\n";
    return {};
}

void BM_load_7b_bf16(benchmark::State& state) {
    const char* env = std::getenv("ALIGNGPT_BENCH_DIR");
    const std::string dir = env && *env ? env : "/tmp/aligngpt_bench_7b";
    if (const std::string why = ensure_7b(dir); !why.empty()) {
        state.SkipWithError(why.c_str());
        for (auto _ : state) {}
        return;
    }
    pretrained::load_options o;
    o.dtype = io::weights_dtype::bf16;
    o.packed_store_only = true;  // lm_head stays packed only, without its f32 widening
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
