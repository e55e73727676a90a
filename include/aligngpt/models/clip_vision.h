#pragma once
// CLIP vision tower (transformers 4.31 CLIPVisionTransformer; Radford et al. 2021 with the ViT of
// Dosovitskiy et al. 2021, eq. 1-4). AlignGPT uses ViT-L/14-336 (docs/model.md §3): 577 tokens of width
// 1024, 24 pre-LN blocks, and takes hidden_states[-2] without the CLS token (docs/model.md §3.2, "Feature
// selection"; the reference's clip_encoder.py feature_select).
//
//   P   = patch_embed(pixels, patch_embedding.weight)             [B, NP, D]   conv, no bias
//   X0  = concat(class_embedding, P) + position_embedding[0..NP]  [B, NP+1, D]
//   hidden_states[0]   = pre_layrnorm(X0)                         (HF key spelling "pre_layrnorm")
//   hidden_states[i+1] = encoder.layers[i](hidden_states[i])      i = 0 .. L-1, no mask
//   pooled             = post_layernorm(hidden_states[L][:, 0])   [B, D]  (CLIPModel only)
//
// forward(tp, pixels, up_to) stops at hidden_states[up_to]: the layers after it are never run.
// Indices may be negative, Python style over the L+1 entries: -1 = L, -2 = L-1 (AlignGPT's
// mm_vision_select_layer = -2 needs layers 0 .. L-2 only; the last layer and post_layernorm
// do not influence AlignGPT).
//
// Parameter names: "<prefix>embeddings.class_embedding" [D], "<prefix>embeddings.patch_embedding.weight"
// [D, 3, P, P], "<prefix>embeddings.position_embedding.weight" [NP+1, D], "<prefix>pre_layrnorm.*",
// "<prefix>encoder.layers.{j}.*" (clip_encoder.h), "<prefix>post_layernorm.*". prefix is
// "vision_model." in CLIPVisionModel and CLIPModel files, "vision_tower.vision_tower.vision_model."
// inside the AlignGPT checkpoint.
//
//   auto cfg = models::clip_vision_config::from_file(dir + "/config.json");
//   auto vit = models::clip_vision_model<float>::make(cfg);          // zero weights; load them by name
//   auto hs  = vit.forward(nullptr, pixels, -2);                      // pixels [B, 3, 336, 336]
//   auto f   = vit.select_features(nullptr, hs, -2, "patch");         // [B, 576, 1024]
#include <string>
#include <vector>

#include "aligngpt/models/clip_config.h"
#include "aligngpt/models/clip_encoder.h"
#include "aligngpt/ops/patch_embed.h"
#include "aligngpt/ops/shape.h"
#include "aligngpt/trace.h"

namespace aligngpt::models {

/// Python-style index i into a list of n entries (-1 = last); errors name what is indexed.
inline index_t resolve_index(index_t i, index_t n, const char* what) {
    const index_t r = i < 0 ? i + n : i;
    ALIGNGPT_CHECK(r >= 0 && r < n, what, ": index ", i, " is outside [-", n, ", ", n, ")");
    return r;
}

template <class T = float, class Backend = backend::cpu>
struct clip_vision_model {
    clip_vision_config cfg;
    std::string prefix;
    index_t select_layer = -2;                           ///< AlignGPT's mm_vision_select_layer
    std::string select_feature = "patch";                ///< AlignGPT's mm_vision_select_feature
    variable<T, Backend> class_embedding;                ///< embeddings.class_embedding [D]
    variable<T, Backend> patch_embedding;                ///< embeddings.patch_embedding.weight [D, C, P, P]
    nn::embedding<T, Backend> position_embedding;        ///< embeddings.position_embedding [NP+1, D]
    nn::layer_norm<T, Backend> pre_layrnorm;             ///< [D]
    std::vector<clip_encoder_layer<T, Backend>> layers;  ///< encoder.layers.{j}
    nn::layer_norm<T, Backend> post_layernorm;           ///< [D]

    /// Zero-initialised parameters named "<prefix>..." (LayerNorm weights 1).
    static clip_vision_model make(const clip_vision_config& cfg, const std::string& prefix = "vision_model.",
                                  const Backend& be = Backend::instance()) {
        cfg.validate(prefix + ": ");
        clip_vision_model m;
        m.cfg = cfg;
        m.prefix = prefix;
        const index_t D = cfg.hidden_size, P = cfg.patch_size;
        const T eps = T(cfg.layer_norm_eps);
        m.class_embedding = nn::parameter<T, Backend>(prefix + "embeddings.class_embedding", {D}, be);
        m.patch_embedding =
            nn::parameter<T, Backend>(prefix + "embeddings.patch_embedding.weight", {D, cfg.num_channels, P, P}, be);
        m.position_embedding =
            nn::embedding<T, Backend>::make(prefix + "embeddings.position_embedding", cfg.num_positions(), D, -1, be);
        m.pre_layrnorm = nn::layer_norm<T, Backend>::make(prefix + "pre_layrnorm", D, eps, be);
        for (index_t j = 0; j < cfg.num_hidden_layers; j++)
            m.layers.push_back(clip_encoder_layer<T, Backend>::make(prefix + "encoder.layers." + std::to_string(j) + ".", D,
                                                                    cfg.intermediate_size, int(cfg.num_attention_heads), eps,
                                                                    cfg.hidden_act, be));
        m.post_layernorm = nn::layer_norm<T, Backend>::make(prefix + "post_layernorm", D, eps, be);
        return m;
    }

    index_t num_layers() const { return index_t(layers.size()); }

    /// pre_layrnorm(concat(cls, patches) + positions): hidden_states[0], [B, NP+1, D].
    variable<T, Backend> embed(tape<T, Backend>* tp, const variable<T, Backend>& pixels) const {
        const index_t D = cfg.hidden_size, S = cfg.image_size;
        ALIGNGPT_CHECK(
            pixels.value().dim() == 4 && pixels.size(1) == cfg.num_channels && pixels.size(2) == S && pixels.size(3) == S, prefix,
            "embeddings: pixels ", detail::shape_str(pixels.shape()), " are not [B, ", cfg.num_channels, ", ", S, ", ", S, "]");
        const index_t Bn = pixels.size(0), N = cfg.num_positions();
        const variable<T, Backend> p = ag::patch_embed(tp, pixels, patch_embedding);  // [B, NP, D]
        const std::vector<std::int64_t> zeros(size_t(Bn), 0);
        const variable<T, Backend> cls =  // [B, 1, D]
            ag::reshape(tp, ag::index_rows(tp, ag::reshape(tp, class_embedding, {1, D}), zeros), {Bn, 1, D});
        const variable<T, Backend> x = ag::concat(tp, {cls, p}, 1);  // [B, N, D]
        // + position_embedding, broadcast over the batch: rows of [B, N*D] plus one row [N*D]
        const variable<T, Backend> pos = ag::reshape(tp, position_embedding.weight, {N * D});
        const variable<T, Backend> x0 = ag::reshape(tp, ag::add_row(tp, ag::reshape(tp, x, {Bn, N * D}), pos), {Bn, N, D});
        return pre_layrnorm(tp, x0);
    }

    /// hidden_states[0 .. up_to] (up_to Python-style over L+1 entries; -1 = all layers); each one
    /// goes to `trace` as "vision.hidden_states.<i>" when given.
    std::vector<variable<T, Backend>> forward(tape<T, Backend>* tp, const variable<T, Backend>& pixels, index_t up_to = -1,
                                              trace_sink<T, Backend>* trace = nullptr) const {
        const index_t last = resolve_index(up_to, num_layers() + 1, "clip_vision_model::forward up_to");
        std::vector<variable<T, Backend>> hs{embed(tp, pixels)};
        for (index_t i = 0; i < last; i++) hs.push_back(layers[size_t(i)](tp, hs.back(), {}));
        if (trace)
            for (size_t i = 0; i < hs.size(); i++) trace->put("vision.hidden_states." + std::to_string(i), hs[i].value());
        return hs;
    }
    std::vector<variable<T, Backend>> forward(tape<T, Backend>* tp, const tensor<T, Backend>& pixels, index_t up_to = -1,
                                              trace_sink<T, Backend>* trace = nullptr) const {
        return forward(tp, variable<T, Backend>::leaf(pixels), up_to, trace);
    }

    /// post_layernorm(hidden_states[L][:, 0]) -> [B, D]; needs the full list (up_to = -1).
    variable<T, Backend> pooled(tape<T, Backend>* tp, const std::vector<variable<T, Backend>>& hs) const {
        ALIGNGPT_CHECK(index_t(hs.size()) == num_layers() + 1, prefix, "post_layernorm: pooling needs all ", num_layers() + 1,
                       " hidden states, got ", hs.size(), " (run forward with up_to = -1)");
        const variable<T, Backend>& h = hs.back();
        const variable<T, Backend> cls = ag::reshape(tp, ag::slice(tp, h, 1, 0, 1), {h.size(0), h.size(2)});
        return post_layernorm(tp, cls);
    }

    /// AlignGPT's feature_select: hidden_states[layer] ("patch": without the CLS token,
    /// [B, NP, D]; "cls_patch": all NP+1 tokens). layer is Python-style over the full list
    /// of L+1 entries (-2 = index L-1), whatever prefix of it `hs` holds.
    variable<T, Backend> select_features(tape<T, Backend>* tp, const std::vector<variable<T, Backend>>& hs, index_t layer = -2,
                                         const std::string& feature = "patch") const {
        const index_t i = resolve_index(layer, num_layers() + 1, "select_features select_layer");
        ALIGNGPT_CHECK(feature == "patch" || feature == "cls_patch", "select_features: mm_vision_select_feature \"", feature,
                       "\" is not supported (patch, cls_patch)");
        ALIGNGPT_CHECK(i < index_t(hs.size()), "select_features: hidden_states[", i, "] was not computed (", hs.size(),
                       " entries; run forward with up_to >= ", i, ")");
        const variable<T, Backend>& h = hs[size_t(i)];
        return feature == "patch" ? ag::slice(tp, h, 1, 1, h.size(1)) : h;
    }

    /// The image features AlignGPT feeds the projector: runs only the layers `layer` needs.
    /// With `trace`: the hidden states computed and "vision.features".
    variable<T, Backend> features(tape<T, Backend>* tp, const variable<T, Backend>& pixels, index_t layer,
                                  const std::string& feature = "patch", trace_sink<T, Backend>* trace = nullptr) const {
        auto f = select_features(tp, forward(tp, pixels, layer, trace), layer, feature);
        if (trace) trace->put("vision.features", f.value());
        return f;
    }
    /// The same with this tower's AlignGPT settings (select_layer, select_feature).
    variable<T, Backend> features(tape<T, Backend>* tp, const variable<T, Backend>& pixels,
                                  trace_sink<T, Backend>* trace = nullptr) const {
        return features(tp, pixels, select_layer, select_feature, trace);
    }

    template <class F>
    void visit(F&& f) {
        f(class_embedding), f(patch_embedding);
        position_embedding.visit(f);
        pre_layrnorm.visit(f);
        for (auto& l : layers) l.visit(f);
        post_layernorm.visit(f);
    }
};

}  // namespace aligngpt::models
