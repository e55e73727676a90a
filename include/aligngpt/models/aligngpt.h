#pragma once
// AlignGPT (Zhao et al. 2024, arXiv 2405.14129): image features -> projector -> splice into the
// token embeddings, one alignment-indicator vector after BOS -> LLaMA.
// docs/model.md §7 (assembly), §9 (stages, loss), §10 (decoding); reference AlignGPT src/model/aligngpt.py.
//
// Per image sample (ids hold exactly one -200 placeholder), k = len(c0) with c0 starting at BOS:
//   pos:    0     1          2 .. k          k+1 .. k+P       k+P+1 ..
//           BOS   INDICATOR  c0[1:]          IMAGE x P        c1 (rest of the text)
//   labels  l0    IGNORE     c0 labels[1:]   IGNORE x P       c1 labels
// P = the vision tower's patch count (576 for CLIP-L/14-336; aligngpt_config::n_image_tokens).
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
// LLaVA-1.5 (Liu et al. 2023; the paper's baseline): the same model without the alignment module
// (aligngpt_config::alignment_module false, config.json model_type "llava"): no indicator row, no gate,
// no level embeddings. A sample is c0 | IMAGE x P | c1, cut to tokenizer_model_max_length (LLaVA's
// prepare_inputs_labels_for_multimodal from v1.2; v1.1.3, which trained LLaVA-1.5, cuts nothing here
// and its dataset already cut the text). align_mode::none drops the indicator of an AlignGPT model too.
//
// The vision tower is outside: forward takes CLIP features [B_img, P, Dv] (hidden_states[-2]
// without CLS), so precomputed features work; forward_pixels runs a clip_vision_model first.
//
//   models::aligngpt_model<float> m(models::aligngpt_config::load("aligngpt-7b/config.json"));
//   auto out = m.forward(&tp, {{ids, labels}}, features, models::stage::finetune);
//   tp.backward(out.loss);
//   auto reply = m.generate({prompt_ids}, features, {128});             // generate/greedy.h
//   auto fixed = m.forward(nullptr, {{ids}}, features, models::stage::inference,
//                          {models::align_mode::fixed_level, 3});     // the indicator of level 3
#include <string>
#include <utility>
#include <vector>

#include "aligngpt/io/json.h"
#include "aligngpt/models/align.h"
#include "aligngpt/models/llama.h"
#include "aligngpt/models/projector.h"
#include "aligngpt/trace.h"

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
    /// false: LLaVA-1.5, no level embeddings and no gate (model_type "llava" in config.json).
    bool alignment_module = true;

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
    std::int64_t level = -1;             ///< alignment level 0..7 (stage 1 only)
};

/// A run of consecutive rows of the embedding table (below): one piece of a spliced sequence.
struct segment {
    enum kind_t { text, indicator, image } kind;
    index_t first = 0, length = 0;  ///< table rows [first, first + length)
};

/// Index bookkeeping of docs/model.md §7. Every LLM input row is a row of one table:
///   [ text embeddings (n_text) | image tokens (B_img * P) | indicators (B_img) | a zero row ]
/// Each sample is a list of segments in the paper's order, and the batch is one gather of table
/// rows (`rows`), padded with the zero row.
struct prepared_batch {
    index_t B = 0, S = 0, n_text = 0, Tt = 0;           ///< Tt: gate text length (max text length - 1)
    index_t n_tokens = 576;                             ///< P: image tokens per image (the tower's patch count)
    bool indicator = true;                              ///< false: no indicator row (LLaVA-1.5, align_mode::none)
    std::vector<std::int64_t> text_ids;                 ///< ids of the table's text rows
    std::vector<std::int64_t> text_labels;              ///< their labels (indicator and image rows: IGNORE)
    std::vector<index_t> image_rows;                    ///< batch row of the k-th image sample
    std::vector<std::vector<segment>> segments;         ///< per sample, before truncation and padding
    std::vector<std::int64_t> rows, positions, labels;  ///< [B*S]
    std::vector<std::uint8_t> mask;                     ///< [B*S]
    std::vector<std::int64_t> gate_rows;                ///< [B_img*Tt] table rows of T[:,1:] (zero row = pad)
    std::vector<std::uint8_t> gate_mask;                ///< [B_img*Tt]
    bool has_labels = false;
    index_t n_image() const { return index_t(image_rows.size()); }
    index_t image_row(index_t k) const { return n_text + k * n_tokens; }
    index_t indicator_row(index_t k) const { return n_text + n_image() * n_tokens + k; }
    index_t zero_row() const { return n_text + n_image() * (n_tokens + (indicator ? 1 : 0)); }
};

/// Builds the assembly plan for a batch (pure bookkeeping, no tensors); errors name the sample.
/// indicator false: LLaVA-1.5's sequence (no indicator row, no gate rows, cut to max_length).
inline prepared_batch prepare_batch(const std::vector<sample>& samples, index_t max_length, index_t n_tokens = 576,
                                    bool indicator = true) {
    prepared_batch p;
    p.n_tokens = n_tokens;
    p.indicator = indicator;
    p.B = index_t(samples.size());
    ALIGNGPT_CHECK(p.B > 0, "aligngpt: empty batch");
    ALIGNGPT_CHECK(n_tokens > 0, "aligngpt: ", n_tokens, " image tokens per image");
    for (const auto& s : samples) p.has_labels = p.has_labels || !s.labels.empty();
    // Pass 1: check each sample, give its text tokens table rows, split it at the placeholder.
    struct split {
        std::vector<std::int64_t> before, after;
        bool image = false;
    };  // table rows
    std::vector<split> parts(size_t(p.B));
    for (index_t b = 0; b < p.B; b++) {
        const sample& s = samples[size_t(b)];
        ALIGNGPT_CHECK(!s.ids.empty(), "aligngpt: sample ", b, " has no ids");
        ALIGNGPT_CHECK(s.labels.empty() || s.labels.size() == s.ids.size(), "aligngpt: sample ", b, " has ", s.labels.size(),
                       " labels for ", s.ids.size(), " ids");
        ALIGNGPT_CHECK(p.has_labels == !s.labels.empty(), "aligngpt: sample ", b, ": labels given for some samples only");
        const auto n_ph = std::count(s.ids.begin(), s.ids.end(), image_token_index);
        ALIGNGPT_CHECK(n_ph <= 1, "aligngpt: sample ", b, " has ", n_ph, " image placeholders (-200); the gate ",
                       "takes exactly one image of ", n_tokens, " tokens per sample");
        split& q = parts[size_t(b)];
        q.image = n_ph == 1;
        if (q.image) p.image_rows.push_back(b);
        bool seen = false;
        for (size_t t = 0; t < s.ids.size(); t++) {
            if (s.ids[t] == image_token_index) {
                seen = true;
                continue;
            }
            (seen ? q.after : q.before).push_back(index_t(p.text_ids.size()));
            p.text_ids.push_back(s.ids[t]);
            p.text_labels.push_back(s.labels.empty() ? ignore_index : s.labels[t]);
        }
    }
    p.n_text = index_t(p.text_ids.size());
    // A sample's text rows before (and after) the placeholder are consecutive table rows.
    const auto text_segment = [](const std::vector<std::int64_t>& r) { return segment{segment::text, r[0], index_t(r.size())}; };
    // Pass 2: the segments, in the paper's order. An image sample is
    //   BOS | INDICATOR | c0[1:] | IMAGE x P | c1        (c0 = the text before the image, from BOS)
    // i.e. the text and image rows with the indicator after the first row (BOS).
    index_t k = 0;
    for (const split& q : parts) {
        std::vector<segment> seg;
        if (!q.before.empty()) seg.push_back(text_segment(q.before));
        if (q.image) seg.push_back({segment::image, p.image_row(k), n_tokens});
        if (!q.after.empty()) seg.push_back(text_segment(q.after));
        if (q.image && indicator) {
            segment rest = seg.front();  // split the first segment after its first row
            seg.front().length = 1, rest.first += 1, rest.length -= 1;
            seg.insert(seg.begin() + 1, segment{segment::indicator, p.indicator_row(k), 1});
            if (rest.length > 0) seg.insert(seg.begin() + 2, rest);
        }
        if (q.image) k++;
        p.segments.push_back(std::move(seg));
    }
    // Lengths: an image sample without its indicator is cut to max_length - 1 (LLaVA: max_length);
    // text-only samples next to image samples are cut to the same S; everything is right-padded to S.
    const index_t cut = max_length > 0 ? max_length - (indicator ? 1 : 0) : 0;  // 0: no cut
    const auto length_without_indicator = [](const std::vector<segment>& seg) {
        index_t n = 0;
        for (const segment& g : seg) n += g.kind == segment::indicator ? 0 : g.length;
        return n;
    };
    index_t max_len = 0, max_text = 0, max_pure = 0;
    for (index_t b = 0; b < p.B; b++) {
        const index_t n = length_without_indicator(p.segments[size_t(b)]);
        if (parts[size_t(b)].image) {
            max_len = std::max(max_len, cut > 0 ? std::min(n, cut) : n);
            max_text = std::max(max_text, index_t(parts[size_t(b)].before.size() + parts[size_t(b)].after.size()));
        } else {
            max_pure = std::max(max_pure, n);
        }
    }
    p.S = p.n_image() > 0 ? max_len + (indicator ? 1 : 0) : max_pure;
    p.Tt = p.n_image() > 0 && indicator ? max_text - 1 : 0;
    const std::int64_t zero = p.zero_row();
    p.rows.assign(size_t(p.B * p.S), zero), p.positions.assign(size_t(p.B * p.S), 0);
    p.labels.assign(size_t(p.B * p.S), ignore_index), p.mask.assign(size_t(p.B * p.S), 0);
    for (index_t b = 0; b < p.B; b++) {
        const bool image = parts[size_t(b)].image;
        index_t budget = image ? (cut > 0 ? cut : p.S) : p.S;  // rows other than the indicator
        index_t t = 0;
        for (const segment& g : p.segments[size_t(b)]) {
            for (index_t i = 0; i < g.length; i++) {
                if (g.kind != segment::indicator) {
                    if (budget == 0) break;
                    budget--;
                }
                const size_t o = size_t(b * p.S + t);
                p.rows[o] = g.first + i;
                p.labels[o] = g.kind == segment::text ? p.text_labels[size_t(g.first + i)] : ignore_index;
                p.positions[o] = t, p.mask[o] = 1;
                t++;
            }
        }
        if (image && indicator) {  // the gate's text: all text rows without BOS (not truncated), zero-padded to Tt
            std::vector<std::int64_t> text = parts[size_t(b)].before;
            text.insert(text.end(), parts[size_t(b)].after.begin(), parts[size_t(b)].after.end());
            for (index_t i = 0; i < p.Tt; i++) {
                const bool real = i + 1 < index_t(text.size());
                p.gate_rows.push_back(real ? text[size_t(i + 1)] : zero);
                p.gate_mask.push_back(real ? 1 : 0);
            }
        }
    }
    return p;
}

template <class T = float, class Backend = backend::cpu>
struct aligngpt_output {
    prepared_batch batch;
    variable<T, Backend> logits, loss;  ///< [B, S, V]; loss 0-d (undefined without labels)
    variable<T, Backend> inputs_embeds, indicator;
    gate_output<T, Backend> gate;  ///< undefined unless the gate ran
};

template <class T = float, class Backend = backend::cpu>
class aligngpt_model {
public:
    aligngpt_config config;
    llama_model<T, Backend> llm;
    projector<T, Backend> mm_projector;            ///< "mm_projector.*"
    align_indicator<T, Backend> align_indicators;  ///< "align_indicators.indicator_embs" (empty: LLaVA)
    gated_weight_layer<T, Backend> gated_weight;   ///< "gated_weight_layer.mlp.*" (empty: LLaVA)

    explicit aligngpt_model(const aligngpt_config& c, const Backend& be = Backend::instance())
        : config(c),
          llm(c.llm, be),
          mm_projector(
              projector<T, Backend>::make(c.mm_projector_type, c.mm_hidden_size, c.llm.hidden_size, "mm_projector", be)) {
        if (!c.alignment_module) return;
        align_indicators = align_indicator<T, Backend>::make(c.llm.hidden_size, "align_indicators", be);
        gated_weight = gated_weight_layer<T, Backend>::make(c.n_image_tokens, "gated_weight_layer", be);
    }

    template <class F>
    void visit(F&& f) {
        llm.visit(f), mm_projector.visit(f);
        if (config.alignment_module) align_indicators.visit(f), gated_weight.visit(f);
    }
    /// Whether this forward pass puts an indicator row in: the module exists and `al` wants one.
    bool uses_indicator(alignment al) const { return config.alignment_module && al.mode != align_mode::none; }
    /// The backend the model was built on (its parameters' backend).
    const Backend& backend() const { return llm.backend(); }

    /// One forward pass. image_features [B_img, P, Dv] for the samples with a placeholder, in batch
    /// order (undefined when there are none). `al` says how finetune and inference form the
    /// indicator; `trace` (optional) receives the named intermediates; `cache` (optional) is filled
    /// for decoding.
    aligngpt_output<T, Backend> forward(tape<T, Backend>* tp, const std::vector<sample>& samples,
                                        const variable<T, Backend>& image_features, stage st, alignment al = {},
                                        trace_sink<T, Backend>* trace = nullptr, kv_cache<T, Backend>* cache = nullptr) const {
        aligngpt_output<T, Backend> out;
        out.batch = prepare_batch(samples, config.tokenizer_model_max_length, config.n_image_tokens, uses_indicator(al));
        const prepared_batch& p = out.batch;
        const index_t H = config.llm.hidden_size, Bi = p.n_image();
        const auto put = [&](const char* name, const variable<T, Backend>& v) {
            if (trace && v.defined()) trace->put(name, v.value());
        };
        std::vector<variable<T, Backend>> table{llm.embed(tp, p.text_ids)};  // [n_text, H]
        if (Bi > 0) {
            ALIGNGPT_CHECK(image_features.defined() && image_features.value().dim() == 3 && image_features.size(0) == Bi &&
                               image_features.size(1) == config.n_image_tokens && image_features.size(2) == config.mm_hidden_size,
                           "aligngpt: image features ",
                           (image_features.defined() ? detail::shape_str(image_features.shape()) : "none"), " for ", Bi,
                           " image samples; expected [", Bi, ", ", config.n_image_tokens, ", ", config.mm_hidden_size, "]");
            const auto img = mm_projector(tp, image_features);  // [B_img, P, H]
            put("projector.out", img);
            if (st == stage::pretrain) ALIGNGPT_CHECK(Bi == p.B, "aligngpt: stage pretrain needs an image in every sample");
            if (!p.indicator) {
                // LLaVA-1.5: the image tokens go in as they are
            } else if (st == stage::pretrain) {
                std::vector<std::int64_t> levels;
                for (index_t b : p.image_rows) levels.push_back(samples[size_t(b)].level);
                out.indicator = align_indicators.lookup(tp, levels);
            } else if (al.mode == align_mode::gated || al.mode == align_mode::local_only) {
                const auto text = ag::reshape(
                    tp, ag::index_rows(tp, ag::concat(tp, {table[0], zero_row(H)}, 0), remap_zero(p.gate_rows, p.n_text)),
                    {Bi, p.Tt, H});
                out.gate = gated_weight(tp, img, text, p.gate_mask);
                out.indicator = al.mode == align_mode::gated ? align_indicators.lin_comb(tp, out.gate.weights)
                                                             : align_indicators.local(tp, out.gate.weights);
            } else {
                out.indicator = align_indicators.ungated(tp, al.mode, Bi, al.level);
            }
            put("gate.text_mean", out.gate.text_mean), put("gate.dots", out.gate.dots), put("gate.weights", out.gate.weights);
            put("align.indicator", out.indicator);
            table.push_back(ag::reshape(tp, img, {Bi * config.n_image_tokens, H}));
            if (p.indicator) table.push_back(out.indicator);
        }
        table.push_back(zero_row(H));
        out.inputs_embeds = ag::reshape(tp, ag::index_rows(tp, ag::concat(tp, table, 0), p.rows), {p.B, p.S, H});
        put("inputs_embeds", out.inputs_embeds);
        out.logits = llm.forward(tp, out.inputs_embeds, p.positions, p.mask, cache, trace).logits;
        if (p.has_labels) out.loss = ag::cross_entropy(tp, out.logits, shifted_targets(p.labels, p.B, p.S), ignore_index);
        return out;
    }

    /// forward() on pixels through a frozen vision tower, e.g. clip_vision_model (docs/model.md §3.2: no_grad,
    /// hidden_states[-2] without CLS): any type with features(tape*, pixels, trace) -> [B_img, P, Dv].
    template <class Tower>
    aligngpt_output<T, Backend> forward_pixels(tape<T, Backend>* tp, const std::vector<sample>& samples, const Tower& tower,
                                               const variable<T, Backend>& pixels, stage st, alignment al = {},
                                               trace_sink<T, Backend>* trace = nullptr) const {
        variable<T, Backend> f;
        if (pixels.defined()) {
            autograd::no_grad<T, Backend> frozen(tp);
            f = tower.features(nullptr, pixels, trace);
        }
        return forward(tp, samples, f, st, al, trace);
    }

    /// The trainable set of each stage (docs/model.md §9.2, §9.3): pretrain = projector + indicators; finetune =
    /// LLM + projector + gate (indicators frozen); inference = nothing. LLaVA-1.5: the same without the module.
    void set_trainable_for(stage st) {
        nn::set_trainable(*this, false);
        if (st == stage::inference) return;
        nn::set_trainable(mm_projector, true);
        if (st == stage::pretrain) {
            if (config.alignment_module) nn::set_trainable(align_indicators, true);
            return;
        }
        nn::set_trainable(llm, true);
        if (config.alignment_module) nn::set_trainable(gated_weight, true);
    }

    /// Greedy decoding of one prompt (stage inference): the gate and indicator run at prefill only,
    /// then the decode loop of generate/greedy.h feeds one token at a time through the LLM.
    std::vector<std::int64_t> generate(const sample& prompt, const variable<T, Backend>& image_features, generate::options opt,
                                       alignment al = {}) const {
        if (opt.eos.empty()) opt.eos = config.llm.eos_token_ids;
        kv_cache<T, Backend> cache;
        const auto logits = prefill(prompt, image_features, opt, al, cache);
        return generate::greedy(
            logits, [&](std::int64_t token) { return llm.decode_step(token, cache); }, opt);
    }

    /// generate() with sampling (generate/sampling.h; temperature 0 is greedy) and streaming:
    /// on_token(token, generated) returns false to stop after that token (a stop string). The
    /// repetition penalty's context is the prompt's ids without the image placeholder.
    template <class OnToken>
    std::vector<std::int64_t> generate_sampled(const sample& prompt, const variable<T, Backend>& image_features,
                                               generate::options opt, const generate::sampling& s, OnToken&& on_token,
                                               alignment al = {}) const {
        if (opt.eos.empty()) opt.eos = config.llm.eos_token_ids;
        kv_cache<T, Backend> cache;
        const auto logits = prefill(prompt, image_features, opt, al, cache);
        return generate::sample(
            logits, [&](std::int64_t token) { return llm.decode_step(token, cache); }, opt, s, prompt.ids,
            std::forward<OnToken>(on_token));
    }

private:
    /// The prompt's logits (stage inference), its keys and values in `cache`, which is sized for the
    /// prompt, the image tokens, the indicator and the new tokens.
    variable<T, Backend> prefill(const sample& prompt, const variable<T, Backend>& image_features, const generate::options& opt,
                                 alignment al, kv_cache<T, Backend>& cache) const {
        cache.reserve(index_t(prompt.ids.size()) + config.n_image_tokens + 1 + opt.max_new_tokens);
        return forward(nullptr, {sample{prompt.ids, {}, prompt.level}}, image_features, stage::inference, al, nullptr, &cache)
            .logits;
    }
    variable<T, Backend> zero_row(index_t H) const { return variable<T, Backend>::leaf(tensor<T, Backend>({1, H}, backend())); }
    /// gate rows point at the full table's zero row; in the text-only table that row is n_text.
    static std::vector<std::int64_t> remap_zero(std::vector<std::int64_t> rows, index_t n_text) {
        for (auto& r : rows) r = std::min<std::int64_t>(r, n_text);
        return rows;
    }
};

}  // namespace aligngpt::models
