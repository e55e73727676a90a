#pragma once
// CLIP text tower (transformers 4.31 CLIPTextTransformer; Radford et al. 2021, sec. 2.4). Used to
// score image-caption pairs when alignment levels are (re)computed (docs/model.md §6.1):
// 12 layers of width 768 in openai/clip-vit-large-patch14(-336).
//
//   X0 = token_embedding[ids] + position_embedding[0..T-1]          [B, T, D]   hidden_states[0]
//   hidden_states[i+1] = encoder.layers[i](hidden_states[i])        causal + key padding mask
//   last   = final_layer_norm(hidden_states[L])                     [B, T, D]
//   pooled = last[b, argmax_t ids[b, t]]                            [B, D]  the EOT token
//
// Pooling takes the FIRST position of the largest id, as torch.argmax does and as transformers 4.31
// does for every config (it does not look at eos_token_id): <|endoftext|> = 49407 is the largest
// id in CLIP's vocabulary, and the OpenAI tokenizer pads with it, so the first one is the real EOT.
// The padding mask (HF attention_mask) hides padded keys; with right padding no query row is fully
// masked, so ag::attention's zero rows never occur.
//
// Parameter names: "<prefix>embeddings.token_embedding.weight" [V, D],
// "<prefix>embeddings.position_embedding.weight" [77, D], "<prefix>encoder.layers.{j}.*",
// "<prefix>final_layer_norm.*", prefix "text_model.".
//
//   auto txt = models::clip_text_model<float>::make(cfg.text);
//   auto out = txt.forward(nullptr, ids, mask);        // ids tensor<int64_t> [B, T], mask 0/1 [B*T] or {}
//   out.pooled;                                        // [B, D]
#include <string>
#include <vector>

#include "aligngpt/models/clip_config.h"
#include "aligngpt/models/clip_encoder.h"
#include "aligngpt/ops/shape.h"

namespace aligngpt::models {

template <class T = float, class Backend = backend::cpu>
struct clip_text_model {
    clip_text_config cfg;
    std::string prefix;
    nn::embedding<T, Backend> token_embedding;           ///< embeddings.token_embedding [V, D]
    nn::embedding<T, Backend> position_embedding;        ///< embeddings.position_embedding [max_pos, D]
    std::vector<clip_encoder_layer<T, Backend>> layers;  ///< encoder.layers.{j}
    nn::layer_norm<T, Backend> final_layer_norm;         ///< [D]

    struct output {
        std::vector<variable<T, Backend>> hidden_states;  ///< L+1 entries, [B, T, D]
        variable<T, Backend> last_hidden_state;           ///< final_layer_norm(hidden_states[L])
        variable<T, Backend> pooled;                      ///< [B, D], at the EOT token
        std::vector<std::int64_t> eot;                    ///< [B], the pooled position of each row
    };

    static clip_text_model make(const clip_text_config& cfg, const std::string& prefix = "text_model.",
                                const Backend& be = Backend::instance()) {
        cfg.validate(prefix + ": ");
        clip_text_model m;
        m.cfg = cfg;
        m.prefix = prefix;
        const index_t D = cfg.hidden_size;
        const T eps = T(cfg.layer_norm_eps);
        m.token_embedding = nn::embedding<T, Backend>::make(prefix + "embeddings.token_embedding", cfg.vocab_size, D, -1, be);
        m.position_embedding =
            nn::embedding<T, Backend>::make(prefix + "embeddings.position_embedding", cfg.max_position_embeddings, D, -1, be);
        for (index_t j = 0; j < cfg.num_hidden_layers; j++)
            m.layers.push_back(clip_encoder_layer<T, Backend>::make(prefix + "encoder.layers." + std::to_string(j) + ".", D,
                                                                    cfg.intermediate_size, int(cfg.num_attention_heads), eps,
                                                                    cfg.hidden_act, be));
        m.final_layer_norm = nn::layer_norm<T, Backend>::make(prefix + "final_layer_norm", D, eps, be);
        return m;
    }

    /// ids [B, T] on the host (T <= max_position_embeddings); attention_mask: empty, or B*T entries, 0 = padding.
    output forward(tape<T, Backend>* tp, const tensor<std::int64_t>& ids,
                   const std::vector<std::uint8_t>& attention_mask = {}) const {
        ALIGNGPT_CHECK(ids.dim() == 2 && ids.size(1) >= 1, prefix, "forward: input_ids ", detail::shape_str(ids.shape()),
                       " are not [B, T] with T >= 1");
        const index_t Bn = ids.size(0), Tn = ids.size(1), D = cfg.hidden_size;
        ALIGNGPT_CHECK(Tn <= cfg.max_position_embeddings, prefix, "forward: ", Tn,
                       " tokens exceed max_position_embeddings = ", cfg.max_position_embeddings);
        ALIGNGPT_CHECK(attention_mask.empty() || index_t(attention_mask.size()) == Bn * Tn, prefix,
                       "forward: attention_mask has ", attention_mask.size(), " entries for input_ids ",
                       detail::shape_str(ids.shape()));
        const tensor<std::int64_t> idc = ids.contiguous();

        output out;
        const variable<T, Backend> tok = ag::embedding(tp, token_embedding.weight, idc);  // [B, T, D]
        const variable<T, Backend> pos = ag::reshape(tp, ag::slice(tp, position_embedding.weight, 0, 0, Tn), {Tn * D});
        out.hidden_states.push_back(ag::reshape(tp, ag::add_row(tp, ag::reshape(tp, tok, {Bn, Tn * D}), pos), {Bn, Tn, D}));

        ops::attention_options mask;
        mask.causal = true;
        mask.key_mask = attention_mask;
        for (const auto& layer : layers) out.hidden_states.push_back(layer(tp, out.hidden_states.back(), mask));
        out.last_hidden_state = final_layer_norm(tp, out.hidden_states.back());

        std::vector<std::int64_t> rows(static_cast<size_t>(Bn));
        out.eot.resize(size_t(Bn));
        for (index_t b = 0; b < Bn; b++) {
            const std::int64_t* r = idc.data() + b * Tn;
            index_t best = 0;  // first maximum, as torch.argmax
            for (index_t t = 1; t < Tn; t++)
                if (r[t] > r[best]) best = t;
            out.eot[size_t(b)] = best;
            rows[size_t(b)] = b * Tn + best;
        }
        out.pooled = ag::index_rows(tp, ag::reshape(tp, out.last_hidden_state, {Bn * Tn, D}), rows);
        return out;
    }

    template <class F>
    void visit(F&& f) {
        token_embedding.visit(f);
        position_embedding.visit(f);
        for (auto& l : layers) l.visit(f);
        final_layer_norm.visit(f);
    }
};

}  // namespace aligngpt::models
