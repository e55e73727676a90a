#pragma once
// Loading a pretrained AlignGPT model directory in the published layout (docs/model.md §11): the
// layer above models/ that the CLI and users call. io/ reads the files and fills named parameters; this header knows
// which models to build from which config, and where their weights live.
//
//   pretrained::load_options opt;
//   opt.vision_tower = "clip-vit-large-patch14-336";         // a local CLIPVisionModel directory
//   opt.dtype = io::weights_dtype::bf16;                      // frozen LLM linears stay 16-bit
//   auto m = pretrained::load_aligngpt("aligngpt-7b", opt);
//   auto out = m.model->forward_pixels(nullptr, {{ids}}, *m.vision, pixels, models::stage::inference);
//
// load_aligngpt(dir, options)
//   config.json (LLaMA fields + mm_* fields) is parsed and validated before anything is allocated;
//   errors name the file and the field. Weights: sharded or single .bin / safetensors
//   (io::checkpoint_dir). The CLIP copy "vision_tower.vision_tower.*" inside the checkpoint is
//   ignored (the reference drops it too). A stage-1 file (mm_projector_align.bin, also accepted as
//   mm_projector.bin) is read when the directory is a pretrain output (then the LLM comes from
//   options.base_llm) or when options.mm_projector names it; its keys map by suffix as in the
//   reference (the part after "mm_projector." -> "mm_projector.<rest>"; any key containing
//   "indicator_embs" -> "align_indicators.indicator_embs"; anything else ignored). The vision
//   tower comes from its own directory: options.vision_tower, else config mm_vision_tower
//   (relative paths resolve against the working directory, then the model directory).
//   The image-token count (the gate's input width) is the tower's patch count, (image_size /
//   patch_size)^2: 576 for CLIP-L/14-336, 256 at 224 px. A checkpoint whose gate was trained for
//   another count is refused before any tensor is read.
//   weights_dtype bf16/f16 packs the frozen LLM linears (is_llm_linear_weight) 16-bit; see
//   io/checkpoint.h.
// image_pixels(path, loaded)
//   an image file as the loaded model's tower takes it: the tower directory's
//   preprocessor_config.json (CLIP-L/14-336's defaults when it has none), the model's
//   image_aspect_ratio (pad or square), [1, 3, S, S].
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/io/checkpoint.h"
#include "aligngpt/io/image.h"
#include "aligngpt/io/json.h"
#include "aligngpt/models/aligngpt.h"
#include "aligngpt/models/clip_config.h"
#include "aligngpt/models/clip_vision.h"

namespace aligngpt::pretrained {

/// The LLaMA Linear weights that weights_dtype bf16/f16 keeps 16-bit (frozen at inference).
inline bool is_llm_linear_weight(std::string_view name) {
    return name == "lm_head.weight" || (name.starts_with("model.layers.") && name.ends_with("_proj.weight"));
}

/// The gate's first linear [256, n_image_tokens]: its input width is the image-token count.
inline constexpr const char* gate_input_weight = "gated_weight_layer.mlp.0.weight";

/// io::load_options (progress, dtype, packing) plus where the parts of an AlignGPT model live.
struct load_options : io::load_options {
    std::string vision_tower{};  ///< overrides config mm_vision_tower
    std::string mm_projector{};  ///< explicit stage-1 file (mm_projector_align.bin)
    std::string base_llm{};      ///< LLM weights for a pretrain output directory
    bool load_vision = true;     ///< false: no vision tower (precomputed features)
};

/// The stage-1 file's keys mapped as the reference's loader maps them:
/// "<anything>mm_projector.<rest>" -> "mm_projector.<rest>", "*indicator_embs*" ->
/// "align_indicators.indicator_embs", everything else dropped.
inline io::tensor_source stage1_source(const std::string& file) {
    return io::tensor_source::open(file).renamed(
        [](const std::string& k) -> std::optional<std::string> {
            if (k.find("indicator_embs") != std::string::npos) return "align_indicators.indicator_embs";
            const auto at = k.find("mm_projector.");
            if (at != std::string::npos) return "mm_projector." + k.substr(at + 13);
            return std::nullopt;
        },
        file);
}

/// config.json of an AlignGPT model directory: the LLaMA fields + the mm_* fields.
struct aligngpt_dir_config {
    models::aligngpt_config model;
    std::string path;             ///< the config.json read
    std::string mm_vision_tower;  ///< hub id or directory ("" if absent)
    index_t mm_vision_select_layer = -2;
    std::string mm_vision_select_feature = "patch";
    std::string image_aspect_ratio = "square";  ///< "pad" or anything else (= square)

    static aligngpt_dir_config from_json(const nlohmann::json& j, const std::string& path) {
        const io::json_reader r(j, path);  // null reads as absent
        const std::string type =
            r.nulls(io::json_nulls::refused)
                .one_of("model_type", "aligngpt", {"aligngpt", "llava", "llava_llama"}, "an AlignGPT or LLaVA config");
        aligngpt_dir_config c;
        c.path = path;
        c.model = models::aligngpt_config::from_json(j, path);  // LLaMA fields + mm_hidden_size etc., validated
        c.model.alignment_module = type == "aligngpt";          // LLaVA-1.5: no level embeddings, no gate
        c.mm_vision_tower = r.string("mm_vision_tower", "");
        c.mm_vision_select_feature = r.one_of("mm_vision_select_feature", "patch", {"patch"},
                                              "one token per patch, the gate's width; \"cls_patch\" is not supported");
        c.image_aspect_ratio = r.string("image_aspect_ratio", "square");
        c.mm_vision_select_layer = r.integer("mm_vision_select_layer", -2, -1024, 1024);
        if (r.boolean("mm_use_im_start_end", false)) r.must_be("mm_use_im_start_end", "false (as in AlignGPT)");
        if (r.boolean("mm_use_im_patch_token", false)) r.must_be("mm_use_im_patch_token", "false (as in AlignGPT)");
        return c;
    }
    static aligngpt_dir_config load(const std::string& path) {
        return from_json(io::read_json_file(path, {.max_bytes = 1 << 20}), path);
    }
};

template <class T = float, class Backend = backend::cpu>
struct loaded_aligngpt {
    aligngpt_dir_config config;  ///< config.model.n_image_tokens: the tower's patch count
    std::optional<models::aligngpt_model<T, Backend>> model;
    std::optional<models::clip_vision_model<T, Backend>> vision;
    models::clip_vision_config vision_config;
    std::string vision_dir;   ///< where the vision tower was read from
    std::string stage1_file;  ///< the stage-1 file read, if any
    io::packed_store packed;  ///< weights_dtype bf16/f16: the packed LLM linears
    io::load_stats stats;
};

namespace detail {
inline bool has_llm_weights(const std::string& dir) {
    namespace fs = std::filesystem;
    for (const char* f :
         {"model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin"})
        if (fs::exists(dir + "/" + f)) return true;
    return false;
}
inline std::string stage1_in(const std::string& dir) {
    namespace fs = std::filesystem;
    for (const char* f : {"mm_projector_align.bin", "mm_projector.bin"})
        if (fs::exists(dir + "/" + f)) return dir + "/" + f;
    return {};
}
}  // namespace detail

/// Loads an AlignGPT model directory (see the file comment) onto `be` (a backend with state, such
/// as backend::cuda, must be named). Nothing is returned unless every tensor of every part was
/// found, checked and read.
template <class T = float, class Backend = backend::cpu>
loaded_aligngpt<T, Backend> load_aligngpt(const std::string& dir, const load_options& opt = {},
                                          const Backend& be = Backend::instance()) {
    namespace fs = std::filesystem;
    std::error_code ec;
    ALIGNGPT_CHECK(fs::is_directory(dir, ec), dir, ": not a directory (expected an AlignGPT model directory with config.json)");
    loaded_aligngpt<T, Backend> out;
    out.config = aligngpt_dir_config::load(dir + "/config.json");
    auto& cfg = out.config;
    static const nlohmann::json no_fields = nlohmann::json::object();
    const io::json_reader field(no_fields, cfg.path);  // for messages about config.json fields

    // --- which files, validated before anything large is allocated
    const bool llm_here = detail::has_llm_weights(dir);
    std::string stage1 = opt.mm_projector;
    if (stage1.empty() && !llm_here) stage1 = detail::stage1_in(dir);
    ALIGNGPT_CHECK(llm_here || !opt.base_llm.empty(), dir, ": no LLM weights (pytorch_model*.bin / model*.safetensors)",
                   stage1.empty() ? std::string()
                                  : "; it is a stage-1 (pretrain) output: pass the base LLM directory (base_llm, --base-llm)");
    if (!stage1.empty()) ALIGNGPT_CHECK(fs::is_regular_file(stage1, ec), stage1, ": stage-1 file does not exist");
    out.stage1_file = stage1;

    std::string vdir;
    std::string expected =
        "the model expects " + std::to_string(cfg.model.n_image_tokens) + " (the default; no vision tower is loaded)";
    if (opt.load_vision) {
        vdir = opt.vision_tower.empty() ? cfg.mm_vision_tower : opt.vision_tower;
        if (vdir.empty())
            field.fail("mm_vision_tower",
                       "must name the vision tower, but it is missing; pass the vision tower directory (--vision-tower DIR)");
        if (!fs::is_directory(vdir, ec) && opt.vision_tower.empty() && fs::is_directory(dir + "/" + vdir, ec))
            vdir = dir + "/" + vdir;
        if (!fs::is_directory(vdir, ec)) {
            const std::string hint =
                " (Hugging Face hub downloads are not supported): download the CLIP model "
                "(e.g. openai/clip-vit-large-patch14-336) and pass --vision-tower DIR";
            if (opt.vision_tower.empty()) field.fail("mm_vision_tower", "must be a local directory, got \"", vdir, "\"", hint);
            fail("vision tower \"", vdir, "\" is not a local directory", hint);
        }
        const std::string vpath = vdir + "/config.json";
        out.vision_config = models::clip_vision_config::from_file(vpath);
        const auto& vc = out.vision_config;
        if (vc.hidden_size != cfg.model.mm_hidden_size)
            field.fail("mm_hidden_size", "must be the vision tower's hidden_size, ", vc.hidden_size, " (", vpath, "), got ",
                       cfg.model.mm_hidden_size);
        const index_t n_hs = vc.num_hidden_layers + 1;  // hidden_states: embeddings + one per layer
        if (cfg.mm_vision_select_layer < -n_hs || cfg.mm_vision_select_layer >= n_hs)
            field.fail("mm_vision_select_layer", "must be in [", -n_hs, ", ", n_hs - 1, "] for the ", vc.num_hidden_layers,
                       "-layer vision tower ", vdir, ", got ", cfg.mm_vision_select_layer);
        cfg.model.n_image_tokens = vc.num_patches();
        expected = "the vision tower gives " + std::to_string(vc.num_patches()) + " patches per image (" + vpath +
                   ": (image_size " + std::to_string(vc.image_size) + " / patch_size " + std::to_string(vc.patch_size) + ")^2)";
        out.vision_dir = vdir;
    }

    // --- sources
    io::tensor_source llm_src = io::tensor_source::open(llm_here ? dir : opt.base_llm);
    if (!llm_here) {  // a base LLM directory: take the LLaMA tensors only
        llm_src.filter([](const std::string& k) { return k.starts_with("model.") || k == "lm_head.weight"; });
    }
    if (!cfg.model.alignment_module)  // LLaVA keeps its projector inside LlavaLlamaModel: "model.mm_projector.*"
        llm_src = llm_src.renamed([](const std::string& k) -> std::optional<std::string> {
            return k.starts_with("model.mm_projector.") ? k.substr(6) : k;
        });
    if (!stage1.empty()) llm_src.overlay(stage1_source(stage1));

    // --- the gate's input width must be the tower's patch count (its weight is [256, width])
    if (const auto* e = cfg.model.alignment_module ? llm_src.find(gate_input_weight) : nullptr) {
        const auto& shape = e->info->shape;
        const index_t width = shape.size() == 2 ? shape[1] : -1;
        ALIGNGPT_CHECK(width == cfg.model.n_image_tokens, e->file->path(), ": tensor \"", gate_input_weight, "\" ",
                       aligngpt::detail::shape_str(shape), " takes ", width, " image tokens, but ", expected,
                       ": the checkpoint's gate was trained for another vision tower");
    }

    // --- models (parameters named by HF key), then staged loads, then one commit
    out.model.emplace(cfg.model, be);
    io::load_options mopt = opt;
    mopt.ignore.push_back("vision_tower.vision_tower.*");  // the CLIP copy the reference drops
    if (!mopt.pack_if) mopt.pack_if = is_llm_linear_weight;
    if (!llm_here && !stage1.empty()) mopt.allow_missing.push_back("gated_weight_layer.*");  // stage 1 trains no gate
    io::staged_load<T, Backend> s;
    s.stage(*out.model, llm_src, mopt, "aligngpt");
    if (opt.load_vision) {
        out.vision.emplace(models::clip_vision_model<T, Backend>::make(out.vision_config, "vision_model.", be));
        out.vision->select_layer = cfg.mm_vision_select_layer;  // AlignGPT's feature_select
        out.vision->select_feature = cfg.mm_vision_select_feature;
        io::load_options vopt = opt;
        vopt.dtype = io::weights_dtype::f32;
        vopt.scope = {"vision_model."};  // a CLIPModel directory also holds the text tower
        s.stage(*out.vision, io::tensor_source::open(vdir), vopt, "vision tower");
    }
    if (!s.ok()) fail(s.errors("load_aligngpt: " + dir));
    s.commit();
    out.packed = std::move(s.packed());
    out.stats = s.stats();
    return out;
}

/// The image at `path` preprocessed for m's vision tower (see the file comment), [1, 3, S, S] on the
/// host; errors name the file.
template <class T, class Backend>
tensor<float> image_pixels(const std::string& path, const loaded_aligngpt<T, Backend>& m) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const std::string pc = m.vision_dir + "/preprocessor_config.json";
    io::clip_image_processor_config cfg =
        fs::exists(pc, ec) ? io::clip_image_processor_config::from_json_file(pc) : io::clip_image_processor_config{};
    cfg.aspect = io::parse_aspect_mode(m.config.image_aspect_ratio);
    tensor<float> x = io::clip_preprocess(io::load_image(path), cfg, path);
    const index_t S = m.vision_config.image_size;
    ALIGNGPT_CHECK(x.size(1) == S && x.size(2) == S, path, ": preprocessing gives ", x.size(1), "x", x.size(2),
                   " pixels but the vision tower takes ", S, "x", S, " (check ", pc, ")");
    return x.reshape({1, 3, S, S});
}

}  // namespace aligngpt::pretrained
