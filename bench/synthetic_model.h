#pragma once
// Synthetic AlignGPT checkpoints for the benchmarks (bench_load, bench_generate): a model
// directory in the published layout (bf16 safetensors shards of at most 2 GB with an index, the
// CLIP copy inside as published, the rotary buffers transformers 4.31 saves) and a CLIP vision
// tower directory in fp32, like openai/clip-vit-large-patch14-336. Written once with the project's
// own safetensors writer; a DONE marker holding the shapes guards reuse. Weights are cheap
// deterministic values in [-0.05, 0.05): only time and memory are measured with them.
//
//   const auto sh = aligngpt_bench::model_shapes::aligngpt_7b();
//   if (auto why = aligngpt_bench::ensure_checkpoint(dir, sh); !why.empty()) skip(why);
//   load_aligngpt(dir, opt)   // the tower is dir/clip (config mm_vision_tower "clip")
#include <sys/statvfs.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "aligngpt/pretrained.h"

namespace aligngpt_bench {

using aligngpt::index_t;

/// The shapes of a synthetic AlignGPT: LLaMA and the CLIP vision tower.
struct model_shapes {
    index_t hidden = 4096, layers = 32, heads = 32, intermediate = 11008, vocab = 32000;
    index_t v_hidden = 1024, v_layers = 24, v_heads = 16, v_intermediate = 4096, image = 336, patch = 14;

    /// AlignGPT-7B as published: LLaMA-7B (vicuna-7b-v1.5) and CLIP ViT-L/14-336.
    static model_shapes aligngpt_7b() { return {}; }
    /// A model that loads and generates in milliseconds, with the 7B's vocabulary and image-token
    /// count (576): the sequence is as long as the 7B's.
    static model_shapes tiny() { return {64, 2, 4, 172, 32000, 32, 3, 2, 64, 336, 14}; }

    index_t n_patches() const { return (image / patch) * (image / patch); }
    /// "H,L,NH,I,V,vH,vL,vNH,vI,image,patch": torch_generate.py's --shapes, and the DONE marker.
    std::string str() const {
        std::string s;
        for (index_t d : {hidden, layers, heads, intermediate, vocab, v_hidden, v_layers, v_heads, v_intermediate, image, patch})
            s += (s.empty() ? "" : ",") + std::to_string(d);
        return s;
    }
};

inline nlohmann::json llm_config(const model_shapes& sh, const std::string& vision) {
    return {{"architectures", {"AlignGPTForCausalLM"}},
            {"model_type", "aligngpt"},
            {"bos_token_id", 1},
            {"eos_token_id", 2},
            {"pad_token_id", 0},
            {"hidden_act", "silu"},
            {"hidden_size", sh.hidden},
            {"intermediate_size", sh.intermediate},
            {"num_hidden_layers", sh.layers},
            {"num_attention_heads", sh.heads},
            {"num_key_value_heads", sh.heads},
            {"max_position_embeddings", 4096},
            {"rms_norm_eps", 1e-5},
            {"rope_scaling", nullptr},
            {"tie_word_embeddings", false},
            {"vocab_size", sh.vocab},
            {"torch_dtype", "bfloat16"},
            {"image_aspect_ratio", "pad"},
            {"mm_hidden_size", sh.v_hidden},
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

inline nlohmann::json clip_config(const model_shapes& sh) {
    return {{"model_type", "clip_vision_model"},
            {"hidden_size", sh.v_hidden},
            {"intermediate_size", sh.v_intermediate},
            {"num_hidden_layers", sh.v_layers},
            {"num_attention_heads", sh.v_heads},
            {"image_size", sh.image},
            {"patch_size", sh.patch},
            {"projection_dim", 768},
            {"hidden_act", "quick_gelu"},
            {"layer_norm_eps", 1e-5}};
}

/// Cheap deterministic values in [-0.05, 0.05), as raw bytes of dtype S.
template <class S>
std::vector<std::byte> synth(const std::string& name, index_t n) {
    std::vector<std::byte> out(std::size_t(n) * sizeof(S));
    std::uint64_t x = aligngpt::rng::fnv1a64(name) | 1;
    S* p = reinterpret_cast<S*>(out.data());
    for (index_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = S(float(std::int32_t(x >> 40) - (1 << 23)) * (0.05f / float(1 << 23)));
    }
    return out;
}

using named_shapes = std::vector<std::pair<std::string, std::vector<index_t>>>;

template <class M>
named_shapes names_shapes(M& m) {
    named_shapes out;
    m.visit([&](aligngpt::autograd::variable<float, aligngpt::backend::cpu>& p) { out.emplace_back(p.name(), p.shape()); });
    return out;
}

inline index_t numel(const std::vector<index_t>& shape) {
    index_t n = 1;
    for (index_t d : shape) n *= d;
    return n;
}

inline bool enough_disk(const std::string& dir, std::uint64_t need) {
    struct statvfs s {};
    if (::statvfs(dir.c_str(), &s) != 0) return false;
    return std::uint64_t(s.f_bavail) * s.f_frsize >= need;
}

/// Writes the checkpoint of `sh` to dir once (dir/clip: the tower). Returns "" or a reason to skip.
/// A directory holding another model's checkpoint is refused, not overwritten.
inline std::string ensure_checkpoint(const std::string& dir, const model_shapes& sh, const std::string& who = "bench") {
    namespace fs = std::filesystem;
    using namespace aligngpt;
    if (fs::exists(dir + "/DONE")) {
        std::ifstream f(dir + "/DONE");
        std::string got;
        std::getline(f, got);
        // "ok": the marker bench_load wrote before the shapes were recorded (always the 7B)
        if (got == sh.str() || (got == "ok" && sh.str() == model_shapes::aligngpt_7b().str())) return {};
        return dir + " holds a synthetic checkpoint of other shapes (" + got + ", want " + sh.str() +
               "): remove it or set ALIGNGPT_BENCH_DIR";
    }
    fs::create_directories(dir + "/clip");
    const auto t0 = std::chrono::steady_clock::now();
    const auto cfg = pretrained::aligngpt_dir_config::from_json(llm_config(sh, "clip"), "synthetic config.json");
    const auto vcfg = models::clip_vision_config::from_json(clip_config(sh), "synthetic clip config.json");
    models::aligngpt_model<float, backend::cpu> m(cfg.model);  // never written: backend::cpu zeroes lazily
    auto tensors = names_shapes(m);
    auto copy = models::clip_vision_model<float, backend::cpu>::make(vcfg, "vision_tower.vision_tower.vision_model.");
    for (auto& t : names_shapes(copy)) tensors.push_back(std::move(t));
    for (index_t l = 0; l < sh.layers; l++)  // transformers 4.31 saves the rotary buffers too (ignored on load)
        tensors.push_back({"model.layers." + std::to_string(l) + ".self_attn.rotary_emb.inv_freq", {sh.hidden / sh.heads / 2}});
    auto vit = models::clip_vision_model<float, backend::cpu>::make(vcfg, "vision_model.");
    const named_shapes vit_tensors = names_shapes(vit);

    std::uint64_t total = 0, vit_bytes = 0;
    for (auto& t : tensors) total += 2 * std::uint64_t(numel(t.second));
    for (auto& t : vit_tensors) vit_bytes += 4 * std::uint64_t(numel(t.second));
    const std::uint64_t need = (total + vit_bytes) / 20 * 21;  // 5% for the headers and the file system
    if (!enough_disk(dir, need))
        return "less than " + std::to_string(need / 1'000'000) + " MB free in " + dir +
               " for the synthetic checkpoint (set ALIGNGPT_BENCH_DIR)";
    const bool big = total > 1'000'000'000ull;
    if (big)
        std::cerr << "[" << who << "] writing a synthetic AlignGPT bf16 checkpoint (" << sh.str() << ") to " << dir
                  << " (once)\n";

    nlohmann::json weight_map = nlohmann::json::object();
    std::uint64_t shard_bytes = 0;
    std::vector<std::vector<std::string>> shards(1);
    for (auto& [name, shape] : tensors) {
        const std::uint64_t b = 2 * std::uint64_t(numel(shape));
        if (shard_bytes + b > 2'000'000'000ull && shard_bytes > 0) shards.emplace_back(), shard_bytes = 0;
        shards.back().push_back(name);
        shard_bytes += b;
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
            const auto bytes = synth<bf16>(name, numel(shape));
            w.add(name, io::dtype::BF16, shape, bytes.data(), bytes.size());
            weight_map[name] = fname;
        }
        w.write(dir + "/" + fname);
        if (big) std::cerr << "[" << who << "]   " << fname << " (" << shards[s].size() << " tensors)\n";
    }
    std::ofstream(dir + "/model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(1);
    std::ofstream(dir + "/config.json") << llm_config(sh, "clip").dump(2);

    io::safetensors_writer w;
    for (auto& [name, shape] : vit_tensors) {
        const auto bytes = synth<float>(name, numel(shape));
        w.add(name, io::dtype::F32, shape, bytes.data(), bytes.size());
    }
    w.write(dir + "/clip/model.safetensors");
    std::ofstream(dir + "/clip/config.json") << clip_config(sh).dump(2);
    std::ofstream(dir + "/DONE") << sh.str() << "\n";
    if (big)
        std::cerr << "[" << who << "] written in " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
                  << " s\n";
    return {};
}

}  // namespace aligngpt_bench
