#pragma once
// CLIP configurations read from a transformers config.json (transformers 4.31 semantics).
//
// Accepted files:
//   CLIPVisionConfig   {"model_type": "clip_vision_model", "hidden_size": ..., ...}
//   CLIPTextConfig     {"model_type": "clip_text_model", ...}
//   CLIPConfig         {"model_type": "clip", "vision_config": {...}, "text_config": {...}, "projection_dim": P}
// A key that is absent takes transformers' default (CLIPVisionConfig / CLIPTextConfig __init__);
// a key that is present must have the right type. validate() runs before any allocation, and
// every error names the file and the field:
//   "tests/golden/x/config.json: vision_config.hidden_size = 30 is not divisible by num_attention_heads = 4"
//
//   auto vc = models::clip_vision_config::from_file("clip-vit-large-patch14-336/config.json");
//   vc.num_patches();                  // (336/14)^2 = 576;  num_positions() = 577
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"

namespace aligngpt::models {

namespace config_detail {

/// Reads the whole JSON file; errors name the path.
inline nlohmann::json read_json_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    ALIGNGPT_CHECK(in.good(), path, ": cannot open config file");
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail(path, ": invalid JSON: ", e.what());
    }
}

/// j[key] as an integer in [lo, hi], or `def` if absent. `where` = "<file>: <section.>".
inline index_t int_field(const nlohmann::json& j, const char* key, index_t def, index_t lo, index_t hi,
                         const std::string& where) {
    index_t v = def;
    if (auto it = j.find(key); it != j.end()) {
        ALIGNGPT_CHECK(it->is_number_integer(), where, key, " must be an integer, got ", it->dump());
        v = it->get<index_t>();
    }
    ALIGNGPT_CHECK(v >= lo && v <= hi, where, key, " = ", v, " is outside [", lo, ", ", hi, "]");
    return v;
}

inline double float_field(const nlohmann::json& j, const char* key, double def, double lo, double hi,
                          const std::string& where) {
    double v = def;
    if (auto it = j.find(key); it != j.end()) {
        ALIGNGPT_CHECK(it->is_number(), where, key, " must be a number, got ", it->dump());
        v = it->get<double>();
    }
    ALIGNGPT_CHECK(std::isfinite(v) && v >= lo && v <= hi, where, key, " = ", v, " is outside [", lo, ", ", hi, "]");
    return v;
}

/// The activations CLIP checkpoints use: "quick_gelu" (OpenAI) or "gelu" (exact erf; some ports).
inline std::string act_field(const nlohmann::json& j, const std::string& where) {
    std::string act = "quick_gelu";
    if (auto it = j.find("hidden_act"); it != j.end()) {
        ALIGNGPT_CHECK(it->is_string(), where, "hidden_act must be a string, got ", it->dump());
        act = it->get<std::string>();
    }
    ALIGNGPT_CHECK(act == "quick_gelu" || act == "gelu", where, "hidden_act = \"", act,
                   "\" is not supported (quick_gelu, gelu)");
    return act;
}

/// The sub-object `section` ("vision_config" / "text_config") of a CLIPConfig file, or the whole
/// object of a single-tower file whose model_type is `tower_type`. An absent or null section of a
/// CLIPConfig means all defaults, as in transformers. `where` receives the error-message prefix.
inline const nlohmann::json& tower_section(const nlohmann::json& j, const char* section, const char* tower_type,
                                           const std::string& path, std::string& where) {
    static const nlohmann::json empty = nlohmann::json::object();
    ALIGNGPT_CHECK(j.is_object(), path, ": top level is not a JSON object");
    std::string type;
    if (auto it = j.find("model_type"); it != j.end() && it->is_string()) type = it->get<std::string>();
    where = path + ": ";
    if (auto it = j.find(section); it != j.end() || type == "clip") {
        ALIGNGPT_CHECK(type.empty() || type == "clip", path, ": model_type \"", type, "\" has a ", section,
                       " section; expected a CLIPConfig (\"clip\")");
        if (it == j.end() || it->is_null()) return empty;
        ALIGNGPT_CHECK(it->is_object(), path, ": ", section, " must be an object, got ", it->dump());
        where += std::string(section) + ".";
        return *it;
    }
    ALIGNGPT_CHECK(type.empty() || type == tower_type, path, ": model_type \"", type, "\" is neither \"clip\" nor \"",
                   tower_type, "\"");
    return j;
}

// Bounds: generous for any real CLIP, small enough that sizes multiply without overflow.
constexpr index_t max_width = 1 << 16, max_layers = 1024, max_heads = 1024, max_image = 1 << 14;

}  // namespace config_detail

/// CLIPVisionConfig (defaults: transformers 4.31, i.e. ViT-B/32 at 224).
struct clip_vision_config {
    index_t hidden_size = 768, intermediate_size = 3072, num_hidden_layers = 12, num_attention_heads = 12;
    index_t num_channels = 3, image_size = 224, patch_size = 32, projection_dim = 512;
    double layer_norm_eps = 1e-5;
    std::string hidden_act = "quick_gelu";

    index_t head_dim() const { return hidden_size / num_attention_heads; }
    index_t grid() const { return image_size / patch_size; }
    index_t num_patches() const { return grid() * grid(); }
    index_t num_positions() const { return num_patches() + 1; }

    /// Reads the fields of a CLIPVisionConfig object (`where` prefixes every error message).
    static clip_vision_config from_json(const nlohmann::json& j, const std::string& where) {
        using namespace config_detail;
        clip_vision_config c;
        c.hidden_size = int_field(j, "hidden_size", c.hidden_size, 1, max_width, where);
        c.intermediate_size = int_field(j, "intermediate_size", c.intermediate_size, 1, 4 * max_width, where);
        c.num_hidden_layers = int_field(j, "num_hidden_layers", c.num_hidden_layers, 1, max_layers, where);
        c.num_attention_heads = int_field(j, "num_attention_heads", c.num_attention_heads, 1, max_heads, where);
        c.num_channels = int_field(j, "num_channels", c.num_channels, 1, 64, where);
        c.image_size = int_field(j, "image_size", c.image_size, 1, max_image, where);
        c.patch_size = int_field(j, "patch_size", c.patch_size, 1, max_image, where);
        c.projection_dim = int_field(j, "projection_dim", c.projection_dim, 1, max_width, where);
        c.layer_norm_eps = float_field(j, "layer_norm_eps", c.layer_norm_eps, 0.0, 1.0, where);
        c.hidden_act = act_field(j, where);
        c.validate(where);
        return c;
    }
    /// A CLIPVisionConfig file, or the "vision_config" part of a CLIPConfig file.
    static clip_vision_config from_file(const std::string& path) {
        const nlohmann::json j = config_detail::read_json_file(path);
        std::string where;
        const nlohmann::json& s = config_detail::tower_section(j, "vision_config", "clip_vision_model", path, where);
        return from_json(s, where);
    }
    /// Cross-field checks (single fields are range-checked while parsing).
    void validate(const std::string& where) const {
        ALIGNGPT_CHECK(hidden_size % num_attention_heads == 0, where, "hidden_size = ", hidden_size,
                       " is not divisible by num_attention_heads = ", num_attention_heads);
        ALIGNGPT_CHECK(patch_size <= image_size && image_size % patch_size == 0, where, "image_size = ", image_size,
                       " is not a multiple of patch_size = ", patch_size);
        ALIGNGPT_CHECK(num_positions() <= (index_t(1) << 20), where, "image_size / patch_size = ", grid(),
                       " gives ", num_patches(), " patches, more than supported (2^20)");
    }
};

/// CLIPTextConfig (defaults: transformers 4.31).
struct clip_text_config {
    index_t vocab_size = 49408, hidden_size = 512, intermediate_size = 2048, num_hidden_layers = 12;
    index_t num_attention_heads = 8, max_position_embeddings = 77, projection_dim = 512;
    index_t pad_token_id = 1, bos_token_id = 49406, eos_token_id = 49407;
    double layer_norm_eps = 1e-5;
    std::string hidden_act = "quick_gelu";

    index_t head_dim() const { return hidden_size / num_attention_heads; }

    static clip_text_config from_json(const nlohmann::json& j, const std::string& where) {
        using namespace config_detail;
        clip_text_config c;
        c.vocab_size = int_field(j, "vocab_size", c.vocab_size, 1, index_t(1) << 24, where);
        c.hidden_size = int_field(j, "hidden_size", c.hidden_size, 1, max_width, where);
        c.intermediate_size = int_field(j, "intermediate_size", c.intermediate_size, 1, 4 * max_width, where);
        c.num_hidden_layers = int_field(j, "num_hidden_layers", c.num_hidden_layers, 1, max_layers, where);
        c.num_attention_heads = int_field(j, "num_attention_heads", c.num_attention_heads, 1, max_heads, where);
        c.max_position_embeddings = int_field(j, "max_position_embeddings", c.max_position_embeddings, 1, 1 << 16, where);
        c.projection_dim = int_field(j, "projection_dim", c.projection_dim, 1, max_width, where);
        // token ids may be null in a config; only the EOT id matters here (pooling uses argmax, see clip_text.h)
        for (auto [key, dst] : {std::pair{"pad_token_id", &c.pad_token_id}, std::pair{"bos_token_id", &c.bos_token_id},
                                std::pair{"eos_token_id", &c.eos_token_id}})
            if (auto it = j.find(key); it == j.end() || !it->is_null())
                *dst = int_field(j, key, *dst, -1, index_t(1) << 24, where);
        c.layer_norm_eps = float_field(j, "layer_norm_eps", c.layer_norm_eps, 0.0, 1.0, where);
        c.hidden_act = act_field(j, where);
        c.validate(where);
        return c;
    }
    static clip_text_config from_file(const std::string& path) {
        const nlohmann::json j = config_detail::read_json_file(path);
        std::string where;
        const nlohmann::json& s = config_detail::tower_section(j, "text_config", "clip_text_model", path, where);
        return from_json(s, where);
    }
    void validate(const std::string& where) const {
        ALIGNGPT_CHECK(hidden_size % num_attention_heads == 0, where, "hidden_size = ", hidden_size,
                       " is not divisible by num_attention_heads = ", num_attention_heads);
    }
};

/// CLIPConfig: both towers plus the shared projection width and the initial logit scale.
struct clip_config {
    clip_vision_config vision;
    clip_text_config text;
    index_t projection_dim = 512;          ///< top-level "projection_dim" (the towers' own are unused by CLIPModel)
    double logit_scale_init_value = 2.6592;

    static clip_config from_file(const std::string& path) {
        const nlohmann::json j = config_detail::read_json_file(path);
        ALIGNGPT_CHECK(j.is_object(), path, ": top level is not a JSON object");
        const auto type = j.find("model_type");
        ALIGNGPT_CHECK(type == j.end() || *type == "clip", path, ": model_type ", type->dump(),
                       " is not a CLIPModel config (\"clip\")");
        clip_config c;
        std::string where;
        c.vision = clip_vision_config::from_json(config_detail::tower_section(j, "vision_config", "clip_vision_model", path, where), where);
        c.text = clip_text_config::from_json(config_detail::tower_section(j, "text_config", "clip_text_model", path, where), where);
        c.projection_dim = config_detail::int_field(j, "projection_dim", c.projection_dim, 1, config_detail::max_width, path + ": ");
        c.logit_scale_init_value =
            config_detail::float_field(j, "logit_scale_init_value", c.logit_scale_init_value, -100.0, 100.0, path + ": ");
        return c;
    }
};

}  // namespace aligngpt::models
