#pragma once
// AlignGPT (Zhao et al. 2024, arXiv 2405.14129): image features -> projector -> splice into the
// token embeddings, one alignment-indicator vector after BOS -> LLaMA. Spec 1.5 (assembly), 2.3
// (stages), 4.4 (loss), 1.7 (decoding); reference AlignGPT src/model/aligngpt.py.
//
// Per image sample (ids hold exactly one -200 placeholder), k = len(c0) with c0 starting at BOS:
//   pos:    0     1          2 .. k          k+1 .. k+576     k+577 ..
//           BOS   INDICATOR  c0[1:]          IMAGE x 576      c1 (rest of the text)
//   labels  l0    IGNORE     c0 labels[1:]   IGNORE x 576     c1 labels
// The spliced sequence (without the indicator) is cut to tokenizer_model_max_length - 1, rows are
// right-padded to S = max_len + 1 (mask 0, position 0, label IGNORE), positions are 0..len.
// Text-only samples get no indicator; next to image samples they are cut/padded to the same S.
// Rows keep the caller's order (the reference moves image rows first; the token-mean loss is the
// same either way).
//
// Indicator by stage: pretrain = E[level_b] (every sample needs an image and a level 0..7);
// finetune / inference = the gate mix lin_comb(gate(I, T[:,1:], m[:,1:])) over the whole text
// (align.h), or an ablation mode. Loss: mean cross-entropy of logits[b,t] against labels[b,t+1].
// Generation: the gate and the indicator run once, at prefill; decode steps feed token ids.
//
// The vision tower is outside: forward takes CLIP features [B_img, 576, Dv] (hidden_states[-2]
// without CLS), so precomputed features work; forward_pixels runs a clip_vision_model first.
//
//   models::aligngpt_model<float> m(models::aligngpt_config::load("aligngpt-7b/config.json"));
//   auto out = m.forward(&tp, {{ids, labels}}, features, models::stage::finetune);
//   tp.backward(out.loss);
//   auto reply = m.generate({prompt_ids}, features, 128);
#include <string>
#include <utility>
#include <vector>

#include "aligngpt/io/json.h"
#include "aligngpt/models/align.h"
#include "aligngpt/models/llama.h"
#include "aligngpt/models/projector.h"

namespace aligngpt::models {

inline constexpr std::int64_t ignore_index = -100;       ///< IGNORE_INDEX
inline constexpr std::int64_t image_token_index = -200;  ///< IMAGE_TOKEN_INDEX

enum class stage { pretrain, finetune, inference };

struct aligngpt_config {
    llama_config llm;
    index_t mm_hidden_size = 1024;
    std::string mm_projector_type = "mlp2x_gelu";
    index_t tokenizer_model_max_length = 2048;  ///< 0: no truncation (key absent or null)
    /// Image tokens per image = the vision tower's patches, (image_size / patch_size)^2: the gate's
    /// input width. Not a config.json field: the pretrained loader sets it from the tower.
    index_t n_image_tokens = 576;

    /// Parses and validates the LLaMA fields and the mm_* fields; errors name `source` and the field.
    static aligngpt_config from_json(const nlohmann::json& j, const std::string& source = "config.json") {
        aligngpt_config c;
        c.llm = llama_config::from_json(j, source);
        const io::json_reader r(j, source);
        c.mm_hidden_size = r.nulls(io::json_nulls::refused).integer("mm_hidden_size", std::nullopt, 1, 65536);
        // getattr(config, 'mm_projector_type', 'linear'); a null would fail in the reference too
        c.mm_projector_type = r.nulls(io::json_nulls::refused).string("mm_projector_type", "linear");
        c.tokenizer_model_max_length = r.integer("tokenizer_model_max_length", 0, 2, io::json_reader::no_limit);
        r.one_of("tokenizer_padding_side", "right", {"right"});
        return c;
    }
    static aligngpt_config load(const std::string& path) { return from_json(io::read_json_file(path), path); }
};

/// One training or prompt sample: ids with at most one -200, labels of the same length (or none).
struct sample {
    std::vector<std::int64_t> ids{};
    std::vector<std::int64_t> labels{};  ///< empty: no loss (inference)
    std::int64_t level = -1;           ///< alignment level 0..7 (stage 1 only)
};

/// Index bookkeeping of spec 1.5. Every LLM input row is a row of one table:
///   [ text embeddings (n_text) | image tokens (B_img * 576) | indicators (B_img) | a zero row ]
struct prepared_batch {
    index_t B = 0, S = 0, n_text = 0, Tt = 0;   ///< Tt: gate text length (max text length - 1)
    std::vector<std::int64_t> text_ids;         ///< ids of the table's text rows
    std::vector<index_t> image_rows;            ///< batch row of the k-th image sample
    std::vector<std::int64_t> rows, positions, labels;  ///< [B*S]
    std::vector<std::uint8_t> mask;                     ///< [B*S]
    std::vector<std::int64_t> gate_rows;        ///< [B_img*Tt] table rows of T[:,1:] (zero row = pad)
    std::vector<std::uint8_t> gate_mask;        ///< [B_img*Tt]
    bool has_labels = false;
    index_t n_image() const { return index_t(image_rows.size()); }
    index_t zero_row() const { return n_text + n_image() * (n_image_tokens + 1); }
};

/// Builds the assembly plan for a batch (pure bookkeeping, no tensors); errors name the sample.
inline prepared_batch prepare_batch(const std::vector<sample>& samples, index_t max_length) {
    prepared_batch p;
    p.B = index_t(samples.size());
    ALIGNGPT_CHECK(p.B > 0, "aligngpt: empty batch");
    struct seq { std::vector<std::int64_t> src, lab, text; bool image = false; };
    std::vector<seq> seqs(size_t(p.B));
    for (index_t b = 0; b < p.B; b++) p.has_labels = p.has_labels || !samples[size_t(b)].labels.empty();
    index_t n_img = 0;
    for (const auto& s : samples) n_img += std::count(s.ids.begin(), s.ids.end(), image_token_index) ? 1 : 0;
    for (index_t b = 0; b < p.B; b++) {
        const sample& s = samples[size_t(b)];
        ALIGNGPT_CHECK(!s.ids.empty(), "aligngpt: sample ", b, " has no ids");
        ALIGNGPT_CHECK(s.labels.empty() || s.labels.size() == s.ids.size(), "aligngpt: sample ", b, " has ",
                       s.labels.size(), " labels for ", s.ids.size(), " ids");
        ALIGNGPT_CHECK(p.has_labels == !s.labels.empty(), "aligngpt: sample ", b, ": labels given for some samples only");
        const auto n_ph = std::count(s.ids.begin(), s.ids.end(), image_token_index);
        ALIGNGPT_CHECK(n_ph <= 1, "aligngpt: sample ", b, " has ", n_ph, " image placeholders (-200); the gate ",
                       "takes exactly one image of 576 tokens per sample");
        seq& q = seqs[size_t(b)];
        q.image = n_ph == 1;
        for (size_t t = 0; t < s.ids.size(); t++) {
            const std::int64_t lab = s.labels.empty() ? ignore_index : s.labels[t];
            if (s.ids[t] == image_token_index) {
                const index_t k = index_t(p.image_rows.size());
                p.image_rows.push_back(b);
                for (index_t j = 0; j < n_image_tokens; j++) q.src.push_back(-1 - (k * n_image_tokens + j)), q.lab.push_back(ignore_index);
            } else {
                q.src.push_back(index_t(p.text_ids.size())), q.lab.push_back(lab), q.text.push_back(index_t(p.text_ids.size()));
                p.text_ids.push_back(s.ids[t]);
            }
        }
    }
    p.n_text = index_t(p.text_ids.size());
    const auto table_row = [&](std::int64_t src) { return src >= 0 ? src : p.n_text + (-1 - src); };
    // lengths: image rows truncated to max_length - 1, then one more slot for the indicator
    index_t max_len = 0, max_text = 0, max_pure = 0;
    for (auto& q : seqs) {
        if (q.image) {
            if (max_length > 0 && index_t(q.src.size()) > max_length - 1) q.src.resize(size_t(max_length - 1)), q.lab.resize(size_t(max_length - 1));
            max_len = std::max(max_len, index_t(q.src.size()));
            max_text = std::max(max_text, index_t(q.text.size()));
        } else {
            max_pure = std::max(max_pure, index_t(q.src.size()));
        }
    }
    p.S = n_img > 0 ? max_len + 1 : max_pure;
    p.Tt = n_img > 0 ? max_text - 1 : 0;
    const std::int64_t zero = p.zero_row();
    p.rows.assign(size_t(p.B * p.S), zero), p.positions.assign(size_t(p.B * p.S), 0);
    p.labels.assign(size_t(p.B * p.S), ignore_index), p.mask.assign(size_t(p.B * p.S), 0);
    index_t k = 0;
    for (index_t b = 0; b < p.B; b++) {
        const seq& q = seqs[size_t(b)];
        const size_t o = size_t(b * p.S);
        if (q.image) {  // [src0, indicator, src1 ...]
            const index_t len = index_t(q.src.size());
            for (index_t t = 0; t <= len; t++) {
                const bool ind = t == 1;
                const index_t i = t == 0 ? 0 : t - 1;
                p.rows[o + size_t(t)] = ind ? p.n_text + n_img * n_image_tokens + k : table_row(q.src[size_t(i)]);
                p.labels[o + size_t(t)] = ind ? ignore_index : q.lab[size_t(i)];
                p.positions[o + size_t(t)] = t, p.mask[o + size_t(t)] = 1;
            }
            for (index_t t = 0; t < p.Tt; t++) {  // T[:, 1:]: text rows without BOS, zero-padded
                const bool real = t + 1 < index_t(q.text.size());
                p.gate_rows.push_back(real ? q.text[size_t(t + 1)] : zero);
                p.gate_mask.push_back(real ? 1 : 0);
            }
            k++;
        } else {
            const index_t len = std::min(index_t(q.src.size()), p.S);
            for (index_t t = 0; t < len; t++) {
                p.rows[o + size_t(t)] = q.src[size_t(t)], p.labels[o + size_t(t)] = q.lab[size_t(t)];
                p.positions[o + size_t(t)] = t, p.mask[o + size_t(t)] = 1;
            }
        }
    }
    return p;
}

template <class T = float, class B = backend::cpu>
struct aligngpt_output {
    prepared_batch batch;
    variable<T, B> logits, loss;            ///< [B, S, V]; loss 0-d (undefined without labels)
    variable<T, B> inputs_embeds, indicator;
    gate_output<T, B> gate;                 ///< undefined unless the gate ran
    std::vector<variable<T, B>> layers;     ///< each decoder layer's output (with keep_trace)

    /// The named intermediates of spec 7, in order; undefined ones are skipped.
    std::vector<std::pair<std::string, tensor<T, B>>> trace() const {
        std::vector<std::pair<std::string, tensor<T, B>>> t;
        const auto put = [&](const std::string& n, const variable<T, B>& v) { if (v.defined()) t.emplace_back(n, v.value()); };
        put("gate.text_mean", gate.text_mean), put("gate.dots", gate.dots), put("gate.weights", gate.weights);
        put("align.indicator", indicator), put("inputs_embeds", inputs_embeds);
        for (size_t l = 0; l < layers.size(); l++) put("llm.layers." + std::to_string(l) + ".out", layers[l]);
        put("logits", logits);
        return t;
    }
};

template <class T = float, class B = backend::cpu>
class aligngpt_model {
public:
    aligngpt_config config;
    llama_model<T, B> llm;
    projector<T, B> mm_projector;                  ///< "mm_projector.*"
    align_indicator<T, B> align_indicators;        ///< "align_indicators.indicator_embs"
    gated_weight_layer<T, B> gated_weight;         ///< "gated_weight_layer.mlp.*"
    align_mode mode = align_mode::gated;           ///< finetune / inference indicator
    std::int64_t fixed_level = n_indicators - 1;   ///< for align_mode::fixed_level

    explicit aligngpt_model(const aligngpt_config& c)
        : config(c), llm(c.llm), mm_projector(projector<T, B>::make(c.mm_projector_type, c.mm_hidden_size, c.llm.hidden_size)),
          align_indicators(align_indicator<T, B>::make(c.llm.hidden_size)), gated_weight(gated_weight_layer<T, B>::make()) {}

    template <class F>
    void visit(F&& f) {
        llm.visit(f), mm_projector.visit(f), align_indicators.visit(f), gated_weight.visit(f);
    }

    /// One forward pass. image_features [B_img, 576, Dv] for the samples with a placeholder, in
    /// batch order (undefined when there are none). keep_trace keeps every layer's output.
    aligngpt_output<T, B> forward(tape<T, B>* tp, const std::vector<sample>& samples, const variable<T, B>& image_features,
                                  stage st, bool keep_trace = false, kv_cache<T, B>* cache = nullptr) const {
        aligngpt_output<T, B> out;
        out.batch = prepare_batch(samples, config.tokenizer_model_max_length);
        const prepared_batch& p = out.batch;
        const index_t H = config.llm.hidden_size, Bi = p.n_image();
        std::vector<variable<T, B>> table{llm.embed(tp, p.text_ids)};  // [n_text, H]
        if (Bi > 0) {
            ALIGNGPT_CHECK(image_features.defined() && image_features.value().dim() == 3 && image_features.size(0) == Bi &&
                               image_features.size(1) == n_image_tokens && image_features.size(2) == config.mm_hidden_size,
                           "aligngpt: image features ", (image_features.defined() ? aligngpt::detail::shape_str(image_features.shape()) : "none"),
                           " for ", Bi, " image samples; expected [", Bi, ", 576, ", config.mm_hidden_size, "]");
            const auto img = mm_projector(tp, image_features);  // [B_img, 576, H]
            if (st == stage::pretrain) {
                ALIGNGPT_CHECK(Bi == p.B, "aligngpt: stage pretrain needs an image in every sample");
                std::vector<std::int64_t> levels;
                for (index_t b : p.image_rows) levels.push_back(samples[size_t(b)].level);
                out.indicator = align_indicators.lookup(tp, levels);
            } else if (mode == align_mode::gated || mode == align_mode::local_only) {
                const auto text = ag::reshape(tp, ag::index_rows(tp, ag::concat(tp, {table[0], zero_row(H)}, 0),
                                                                 remap_zero(p.gate_rows, p.n_text)), {Bi, p.Tt, H});
                out.gate = gated_weight(tp, img, text, p.gate_mask);
                out.indicator = mode == align_mode::gated ? align_indicators.lin_comb(tp, out.gate.weights)
                                                          : align_indicators.local(tp, out.gate.weights);
            } else {
                out.indicator = align_indicators.ungated(tp, mode, Bi, fixed_level);
            }
            table.push_back(ag::reshape(tp, img, {Bi * n_image_tokens, H}));
            table.push_back(out.indicator);
        }
        table.push_back(zero_row(H));
        out.inputs_embeds = ag::reshape(tp, ag::index_rows(tp, ag::concat(tp, table, 0), p.rows), {p.B, p.S, H});
        auto r = llm.forward(tp, out.inputs_embeds, p.positions, p.mask, cache, keep_trace);
        out.logits = r.logits, out.layers = std::move(r.layers);
        if (p.has_labels) out.loss = ag::cross_entropy(tp, out.logits, shifted_targets(p.labels, p.B, p.S), ignore_index);
        return out;
    }

    /// forward() on pixels through a frozen vision tower, e.g. clip_vision_model (spec 1.2: no_grad,
    /// hidden_states[-2] without CLS): any type with features(tape*, pixels) -> [B_img, 576, Dv].
    template <class Tower>
    aligngpt_output<T, B> forward_pixels(tape<T, B>* tp, const std::vector<sample>& samples, const Tower& tower,
                                         const variable<T, B>& pixels, stage st, bool keep_trace = false) const {
        variable<T, B> f;
        if (pixels.defined()) {
            autograd::no_grad<T, B> frozen(tp);
            f = tower.features(nullptr, pixels);
        }
        return forward(tp, samples, f, st, keep_trace);
    }

    /// The trainable set of each stage (spec 4.2/4.3): pretrain = projector + indicators; finetune =
    /// LLM + projector + gate (indicators frozen); inference = nothing.
    void set_trainable_for(stage st) {
        nn::set_trainable(*this, false);
        if (st == stage::inference) return;
        nn::set_trainable(mm_projector, true);
        if (st == stage::pretrain) return nn::set_trainable(align_indicators, true);
        nn::set_trainable(llm, true), nn::set_trainable(gated_weight, true);
    }

    /// Greedy decoding of one prompt (stage inference): the gate and indicator run at prefill only.
    std::vector<std::int64_t> generate(const sample& prompt, const variable<T, B>& image_features, index_t max_new_tokens,
                                       std::vector<std::int64_t> eos = {}) const {
        if (eos.empty()) eos = config.llm.eos_token_ids;
        kv_cache<T, B> cache;
        auto logits = forward(nullptr, {sample{prompt.ids, {}, prompt.level}}, image_features, stage::inference, false, &cache).logits;
        std::vector<std::int64_t> out;
        while (index_t(out.size()) < max_new_tokens) {
            out.push_back(llama_model<T, B>::argmax_last(logits));
            if (std::find(eos.begin(), eos.end(), out.back()) != eos.end() || index_t(out.size()) == max_new_tokens) break;
            const auto e = ag::reshape<T, B>(nullptr, llm.embed(nullptr, {out.back()}), {1, 1, config.llm.hidden_size});
            logits = llm.forward(nullptr, e, {std::int64_t(cache.length())}, {}, &cache).logits;
        }
        return out;
    }

private:
    static variable<T, B> zero_row(index_t H) { return variable<T, B>::leaf(tensor<T, B>({1, H})); }
    /// gate rows point at the full table's zero row; in the text-only table that row is n_text.
    static std::vector<std::int64_t> remap_zero(std::vector<std::int64_t> rows, index_t n_text) {
        for (auto& r : rows) r = std::min<std::int64_t>(r, n_text);
        return rows;
    }
};

}  // namespace aligngpt::models
