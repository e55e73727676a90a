#pragma once
// CLIP image-caption similarity and AlignGPT's alignment levels (docs/model.md §6; transformers 4.31
// CLIPModel.forward; Radford et al. 2021, Fig. 3 pseudo-code).
//
//   img = normalize( vision.pooled(pixels)  visual_projectionᵀ )     [Ni, P]   visual_projection [P, Dv], no bias
//   txt = normalize( text.pooled(ids, mask) text_projectionᵀ )       [Nt, P]   text_projection   [P, Dt], no bias
//   cos[i, t]              = img_i . txt_t                           [Ni, Nt]
//   logits_per_image[i, t] = exp(logit_scale) * cos[i, t]            (logit_scale: scalar parameter)
//   normalize(x) = x / ||x||_2 per row (as HF: x / x.norm(p=2, dim=-1, keepdim=True))
//
// Alignment levels (docs/model.md §6.3): every pair of the pre-training set is scored by cos, ranked, and
// bucketed into N = 8 levels; level 7 = most similar. What the sources state: "rank, then bucket"
// (maintainer, AlignGPT issue #1) and that levels index 0..7. INFERRED [INF], not stated anywhere:
// equal-frequency buckets over the ascending rank, level = floor(rank * N / n), ties broken by
// original index (a stable sort), level 0 = least similar.
//
// Parameter names: "text_model.*" (clip_text.h), "vision_model.*" (clip_vision.h),
// "visual_projection.weight", "text_projection.weight", "logit_scale" (0-d).
//
//   auto clip = models::clip_model<float>::make(models::clip_config::from_file(dir + "/config.json"));
//   // ... load parameters by name (visit) ...
//   auto cos = clip.cosine(nullptr, clip.image_embeds(nullptr, pixels), clip.text_embeds(nullptr, ids, mask));
//   auto lv  = models::alignment_levels(cos.value().to_vector(), 8);
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "aligngpt/models/clip_text.h"
#include "aligngpt/models/clip_vision.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/l2_normalize.h"

namespace aligngpt::models {

template <class T = float, class Backend = backend::cpu>
struct clip_model {
    clip_config cfg;
    clip_text_model<T, Backend> text;
    clip_vision_model<T, Backend> vision;
    nn::linear<T, Backend> visual_projection;  ///< "visual_projection.weight" [P, Dv]
    nn::linear<T, Backend> text_projection;    ///< "text_projection.weight" [P, Dt]
    variable<T, Backend> logit_scale;          ///< "logit_scale", 0-d

    static clip_model make(const clip_config& cfg, const Backend& be = Backend::instance()) {
        clip_model m;
        m.cfg = cfg;
        m.text = clip_text_model<T, Backend>::make(cfg.text, "text_model.", be);
        m.vision = clip_vision_model<T, Backend>::make(cfg.vision, "vision_model.", be);
        m.visual_projection =
            nn::linear<T, Backend>::make("visual_projection", cfg.vision.hidden_size, cfg.projection_dim, false, be);
        m.text_projection = nn::linear<T, Backend>::make("text_projection", cfg.text.hidden_size, cfg.projection_dim, false, be);
        m.logit_scale = nn::parameter<T, Backend>("logit_scale", {}, be);
        m.logit_scale.value().fill(T(cfg.logit_scale_init_value));
        return m;
    }

    /// Unnormalised projections (CLIPModel.get_image_features / get_text_features).
    variable<T, Backend> image_features(tape<T, Backend>* tp, const variable<T, Backend>& pixels) const {
        return visual_projection(tp, vision.pooled(tp, vision.forward(tp, pixels)));
    }
    variable<T, Backend> text_features(tape<T, Backend>* tp, const tensor<std::int64_t>& ids,
                                       const std::vector<std::uint8_t>& attention_mask = {}) const {
        return text_projection(tp, text.forward(tp, ids, attention_mask).pooled);
    }
    /// L2-normalised embeddings: [Ni, P] and [Nt, P].
    variable<T, Backend> image_embeds(tape<T, Backend>* tp, const variable<T, Backend>& pixels) const {
        return ag::l2_normalize(tp, image_features(tp, pixels));
    }
    variable<T, Backend> text_embeds(tape<T, Backend>* tp, const tensor<std::int64_t>& ids,
                                     const std::vector<std::uint8_t>& attention_mask = {}) const {
        return ag::l2_normalize(tp, text_features(tp, ids, attention_mask));
    }
    /// cos[i, t] = img_i . txt_t  ->  [Ni, Nt]  (a linear map with the text embeddings as weight).
    variable<T, Backend> cosine(tape<T, Backend>* tp, const variable<T, Backend>& img, const variable<T, Backend>& txt) const {
        return ag::linear(tp, img, txt);
    }
    /// exp(logit_scale) * cos. logit_scale enters as a constant (read to the host once): no gradient
    /// reaches it.
    variable<T, Backend> logits_per_image(tape<T, Backend>* tp, const variable<T, Backend>& cos) const {
        return ag::scale(tp, cos, T(ops::exp_of(logit_scale.value().to_vector().at(0))));
    }

    template <class F>
    void visit(F&& f) {  // the order of CLIPModel's state dict
        text.visit(f);
        vision.visit(f);
        visual_projection.visit(f);
        text_projection.visit(f);
        f(logit_scale);
    }
};

/// Alignment level of each pair from its similarity [INF, see the header]: equal-frequency buckets
/// over the ascending rank, level = floor(rank * n_levels / n), ties in ascending original index.
/// With n = 558,128 pairs and 8 levels every level holds exactly 69,766 pairs.
template <class S>
std::vector<int> alignment_levels(const std::vector<S>& similarities, int n_levels = 8) {
    ALIGNGPT_CHECK(n_levels >= 1 && n_levels <= 65536, "alignment_levels: n_levels = ", n_levels, " is outside [1, 65536]");
    const std::size_t n = similarities.size();
    for (std::size_t i = 0; i < n; i++)
        ALIGNGPT_CHECK(!std::isnan(double(similarities[i])), "alignment_levels: similarity ", i, " is NaN");
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return similarities[a] < similarities[b]; });
    std::vector<int> level(n);
    for (std::size_t rank = 0; rank < n; rank++)  // rank * n_levels < 2^48 * 2^16: fits 64 bits
        level[order[rank]] = int((unsigned long long)rank * (unsigned long long)n_levels / n);
    return level;
}

}  // namespace aligngpt::models
