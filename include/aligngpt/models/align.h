#pragma once
// AlignGPT's alignment module (Zhao et al. 2024, arXiv 2405.14129, Eqs. 2-3; docs/model.md §5): N = 8
// alignment-indicator embeddings and the gate that mixes them (AlignGPT src/model/
// multimodal_components/mm_align.py: AlignIndicator, GatedWeightLayer).
//
// Indicator (docs/model.md §5.2), "align_indicators.indicator_embs" E [8, H], xavier_uniform init
// U(+-sqrt(6 / (H + 8))). Row 7 = the highest alignment level = the global vector H_N:
//   lookup (stage 1):         h_b = E[level_b]                               level in 0..7
//   lin_comb (stage 2, eq. 3): h_b = sum_{i<7} w_bi E[i] + E[7]               [B,7] x [7,H], then + row 7
//   AlignGPT_family ablations: global_only h = E[7];  local_only h = w E[0:7];  mean h = mean(E[0:7]) + E[7]
//
// Gate (docs/model.md §5.3, Eq. 2), keys gated_weight_layer.mlp.{0,2}.{weight,bias}: [256,P] [256] [7,256] [7]
//   a_b    = (sum_t m_bt T_bt) / (n_b + 1e-8)              ag::masked_mean: T = raw token embeddings,  [B, H]
//                                                          no BOS; m = text mask; n_b = sum_t m_bt
//   d_bj   = sum_h I_bjh a_bh                              ag::batched_matvec: I = projected image   [B, P]
//                                                          tokens [B, P, H]
//   w_b    = softmax( W2 GELU(W1 d_b + b1) + b2 )          GELU = erf form                           [B, 7]
// P is the vision tower's patch count (576 for CLIP-L/14-336; the published checkpoints): exactly
// one image per sample. Gradients reach embed_tokens through a and the projector through I
// (docs/model.md §5.6); the two ops' backward passes are in their ops/ headers.
// Text-only batches: the reference calls dummy_forward() only to keep the gate in the DDP graph; it
// adds a zero-length slice, so the gate and the indicators receive no gradient from such a batch.
// Here nothing is recorded for them: their gradient buffers stay empty (= zero), the same update.
//
// Shapes: T [B, Tt, H]  m [B*Tt] (0/1)  I [B, P, H]  a [B, H]  d [B, P]  w [B, 7]  h [B, H]
//
//   auto ind = models::align_indicator<float>::make(H);      ind.init(seed);
//   auto gate = models::gated_weight_layer<float>::make(576);  gate.init(seed);
//   auto g = gate(&tp, image_embeds, text_embeds, text_mask);   // g.weights [B, 7]
//   auto h = ind.lin_comb(&tp, g.weights);                       // [B, H]
#include <string>
#include <vector>

#include "aligngpt/nn/module.h"
#include "aligngpt/ops/activations.h"
#include "aligngpt/ops/batched_matvec.h"
#include "aligngpt/ops/elementwise.h"
#include "aligngpt/ops/masked_mean.h"
#include "aligngpt/ops/reduce.h"
#include "aligngpt/ops/shape.h"
#include "aligngpt/ops/softmax.h"

namespace aligngpt::models {

using autograd::tape;
using autograd::variable;

inline constexpr index_t n_image_tokens = 576;   ///< CLIP-L/14-336's patches: the published checkpoints' gate width
inline constexpr index_t n_indicators = 8;       ///< AlignIndicator n_indicators
inline constexpr index_t n_gate_components = 7;  ///< GatedWeightLayer n_components (rows 0..6)

/// How the indicator vector is formed (docs/model.md §5.5).
enum class align_mode {
    gated,        ///< lin_comb(gate weights): the released checkpoints (stage 2, inference)
    fixed_level,  ///< E[level] chosen by the caller: stage 1, or the family's "inference-fix"
    global_only,  ///< E[7]
    local_only,   ///< w E[0:7] (no global row)
    mean,         ///< mean(E[0:7]) + E[7] ("nogate")
    none,         ///< no indicator token: LLaVA-1.5 (the paper's baseline; aligngpt.h, alignment_module)
};

/// How finetune and inference form the indicator: an argument of the forward pass, next to the
/// stage (stage 1 always looks up each sample's own level).
struct alignment {
    align_mode mode = align_mode::gated;
    std::int64_t level = n_indicators - 1;  ///< fixed_level's row: 0..7, 7 = H_8, the global indicator
};

/// "align_indicators.indicator_embs" [8, H] and the ways of turning it into one vector per sample.
template <class T = float, class Backend = backend::cpu>
struct align_indicator {
    variable<T, Backend> indicator_embs;  ///< "align_indicators.indicator_embs" [8, H]

    static align_indicator make(index_t H, const std::string& prefix = "align_indicators",
                                const Backend& be = Backend::instance()) {
        return align_indicator{nn::parameter<T, Backend>(prefix + ".indicator_embs", {n_indicators, H}, be)};
    }
    /// xavier_uniform_: U(+-sqrt(6 / (fan_in + fan_out))) = U(+-sqrt(6 / (H + 8))), stream = the key.
    void init(std::uint64_t seed) {
        nn::init_uniform(indicator_embs, seed, float(std::sqrt(6.0 / double(indicator_embs.size(1) + n_indicators))));
    }
    template <class F>
    void visit(F&& f) {
        f(indicator_embs);
    }

    /// E[levels[b]] for each sample (stage 1; levels in 0..7); the gradient scatters into those rows.
    variable<T, Backend> lookup(tape<T, Backend>* tp, const std::vector<std::int64_t>& levels) const {
        for (std::int64_t l : levels) ALIGNGPT_CHECK(0 <= l && l < n_indicators, "align_indicator: level ", l, " outside 0..7");
        return ag::index_rows(tp, indicator_embs, levels);
    }
    /// w [B, 7] -> w E[0:7] + E[7]  (matmul first, then the row add, as the reference).
    variable<T, Backend> lin_comb(tape<T, Backend>* tp, const variable<T, Backend>& w) const {
        const auto g = global_row(tp);  // separate statements: one tape order on every compiler
        const auto l = local(tp, w);    // (docs/design.md, the deterministic contract, rule 5)
        return ag::add_row(tp, l, g);
    }
    /// w E[0:7] (AlignGPT_family lin_comb_local).
    variable<T, Backend> local(tape<T, Backend>* tp, const variable<T, Backend>& w) const {
        ALIGNGPT_CHECK(w.value().dim() == 2 && w.size(1) == n_gate_components, "align_indicator: gate weights ",
                       detail::shape_str(w.shape()), " are not [B, 7]");
        const auto rows = ag::slice(tp, indicator_embs, 0, 0, n_gate_components);  // [7, H]
        return ag::linear(tp, w, ag::transpose(tp, rows, 0, 1));                   // [B, 7] x [7, H]
    }
    /// E[7] as a row [H].
    variable<T, Backend> global_row(tape<T, Backend>* tp) const {
        return ag::reshape(tp, ag::slice(tp, indicator_embs, 0, n_indicators - 1, n_indicators), {indicator_embs.size(1)});
    }
    /// One vector per sample for a mode other than gated (w unused), repeated for Bn samples.
    variable<T, Backend> ungated(tape<T, Backend>* tp, align_mode mode, index_t Bn, std::int64_t level = n_indicators - 1) const {
        std::vector<std::int64_t> pick(size_t(Bn), mode == align_mode::fixed_level ? level : n_indicators - 1);
        switch (mode) {
            case align_mode::fixed_level:
            case align_mode::global_only: return lookup(tp, pick);
            case align_mode::mean: {
                const auto m = ag::mean(tp, ag::slice(tp, indicator_embs, 0, 0, n_gate_components), 0);  // [H]
                const auto zeros =
                    variable<T, Backend>::leaf(tensor<T, Backend>({Bn, indicator_embs.size(1)}, indicator_embs.backend()));
                const auto g = global_row(tp);
                return ag::add_row(tp, ag::add_row(tp, zeros, m), g);
            }
            default: fail("align_indicator: mode needs gate weights");
        }
    }
};

/// The gate's named intermediates (docs/model.md §12.3: gate.text_mean, gate.dots, gate.weights).
template <class T = float, class Backend = backend::cpu>
struct gate_output {
    variable<T, Backend> text_mean, dots, weights;  ///< [B, H], [B, P], [B, 7]
};

/// GatedWeightLayer: MLP(P -> 256 -> 7) on the image-text dot products, softmax over 7.
template <class T = float, class Backend = backend::cpu>
struct gated_weight_layer {
    nn::linear<T, Backend> fc1, fc2;  ///< "gated_weight_layer.mlp.0.*" [256, P], "gated_weight_layer.mlp.2.*" [7, 256]

    /// n_tokens: the vision tower's patch count (576 for CLIP-L/14-336), the width of the dots.
    static gated_weight_layer make(index_t n_tokens = n_image_tokens, const std::string& prefix = "gated_weight_layer",
                                   const Backend& be = Backend::instance()) {
        return gated_weight_layer{nn::linear<T, Backend>::make(prefix + ".mlp.0", n_tokens, 256, true, be),
                                  nn::linear<T, Backend>::make(prefix + ".mlp.2", 256, n_gate_components, true, be)};
    }
    void init(std::uint64_t seed) { fc1.init_default(seed), fc2.init_default(seed); }
    template <class F>
    void visit(F&& f) {
        fc1.visit(f), fc2.visit(f);
    }

    /// image [B, P, H]; text [B, Tt, H] without BOS; text_mask [B*Tt] (1 = real token).
    gate_output<T, Backend> operator()(tape<T, Backend>* tp, const variable<T, Backend>& image, const variable<T, Backend>& text,
                                       const std::vector<std::uint8_t>& text_mask) const {
        const index_t n_tokens = fc1.weight.size(1);
        ALIGNGPT_CHECK(image.value().dim() == 3 && image.size(1) == n_tokens, "gate: image tokens ",
                       detail::shape_str(image.shape()), " are not [B, ", n_tokens, ", H] (one image per sample)");
        ALIGNGPT_CHECK(text.value().dim() == 3 && text.size(0) == image.size(0) && text.size(2) == image.size(2),
                       "gate: text embeddings ", detail::shape_str(text.shape()), " do not match image tokens ",
                       detail::shape_str(image.shape()));
        gate_output<T, Backend> g;
        g.text_mean = ag::masked_mean(tp, text, text_mask, T(1e-8));
        g.dots = ag::batched_matvec(tp, image, g.text_mean);
        g.weights = ag::softmax(tp, fc2(tp, ag::gelu(tp, fc1(tp, g.dots))));
        return g;
    }
};

}  // namespace aligngpt::models
