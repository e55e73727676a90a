#pragma once
// LLaMA / Vicuna v1.5 decoder (Touvron et al. 2023) as transformers 4.31 LlamaForCausalLM computes
// it (docs/model.md §8, decoding §10). AlignGPT feeds it input embeddings (image rows and the indicator
// spliced in), so forward() starts from embeddings [B, T, H], not from ids.
//
//   for each layer l:                                       X [B, T, H]
//     A = RMSNorm_in(X)
//     q = A Wq^T [B,T,NH*HS]   k = A Wk^T, v = A Wv^T [B,T,NKV*HS]    (no biases anywhere)
//     q, k = RoPE(q, pos), RoPE(k, pos)                     rotate_half convention (ops/rope.h)
//     k, v = concat(cache.k[l], k), concat(cache.v[l], v)   when decoding; the cache keeps post-RoPE k
//     X = X + attention(q, k, v; causal, key mask, GQA) Wo^T
//     M = RMSNorm_post(X);  X = X + (silu(M Wg^T) * (M Wu^T)) Wd^T
//   logits = RMSNorm_final(X) W_lm^T  [B, T, V]             W_lm = embed_tokens when tied
//
// Masks: key_mask [B, past+T] (1 = real token, 0 = right padding); queries see keys j <= past + t.
// Embedding: padding_idx = pad_token_id, so that row never receives a gradient (docs/model.md §8.3).
// Greedy decoding (docs/model.md §10): argmax of the last position's logits (first index on ties), stop at
// an eos id or after max_new_tokens; position of a decoded token = number of cached keys.
// Bits: every kernel is per row (GEMM per output, attention per query row, norms per row), so a
// decode step equals the same row of a full forward, and batch N equals N runs of batch 1, exactly.
//
//   auto cfg = models::llama_config::load("vicuna-7b/config.json");
//   models::llama_model<float> llm(cfg);                      // zero weights; load by HF key
//   auto out = llm.forward(&tp, embeds, positions, key_mask);  // out.logits [B, T, V]
//   auto ids = llm.generate(prompt_ids, {32});                 // greedy, KV cache (generate/greedy.h)
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "aligngpt/generate/greedy.h"
#include "aligngpt/generate/sampling.h"
#include "aligngpt/io/json.h"
#include "aligngpt/nn/module.h"
#include "aligngpt/ops/attention.h"
#include "aligngpt/ops/cross_entropy.h"
#include "aligngpt/ops/elementwise.h"
#include "aligngpt/ops/rope.h"
#include "aligngpt/ops/shape.h"
#include "aligngpt/trace.h"

namespace aligngpt::models {

using autograd::tape;
using autograd::variable;

/// The fields of a Hugging Face LLaMA config.json that the decoder reads (docs/model.md §8.1, §11.1).
struct llama_config {
    index_t hidden_size = 4096, intermediate_size = 11008, num_hidden_layers = 32;
    index_t num_attention_heads = 32, num_key_value_heads = 32;  ///< kv heads default to heads
    index_t max_position_embeddings = 4096, vocab_size = 32000;
    double rms_norm_eps = 1e-6;      ///< 4.31 LlamaConfig default
    double rope_theta = 10000;       ///< absent in 4.31 configs
    ops::rope_scaling rope_scaling;  ///< null | linear | llama3
    bool tie_word_embeddings = false;
    std::int64_t bos_token_id = 1, pad_token_id = 0;  ///< pad -1 = null
    std::vector<std::int64_t> eos_token_ids{2};       ///< int or list in config.json

    index_t head_dim() const { return hidden_size / num_attention_heads; }

    /// Parses and validates (before anything is allocated); errors name `source` and the field
    /// (io/json.h). A null value reads as absent, except where noted.
    static llama_config from_json(const nlohmann::json& j, const std::string& source = "config.json") {
        const io::json_reader r(j, source);
        llama_config c;
        c.hidden_size = r.integer("hidden_size", std::nullopt, 1, 1 << 16);
        c.intermediate_size = r.integer("intermediate_size", std::nullopt, 1, 1 << 18);
        c.num_hidden_layers = r.integer("num_hidden_layers", std::nullopt, 1, 1024);
        c.num_attention_heads = r.integer("num_attention_heads", std::nullopt, 1, 1024);
        c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads, 1, c.num_attention_heads);
        c.vocab_size = r.integer("vocab_size", std::nullopt, 1, 1 << 24);
        c.max_position_embeddings = r.integer("max_position_embeddings", 2048, 1, index_t(1) << 24);
        // Bounded so that the float conversions downstream (T(eps), float(theta)) stay defined.
        c.rms_norm_eps = r.number("rms_norm_eps", 1e-6, 0, 1, /*lo_open=*/true);
        c.rope_theta = r.number("rope_theta", 10000.0, 0, 1e12, /*lo_open=*/true);
        if (c.hidden_size % c.num_attention_heads != 0)
            r.fail("num_attention_heads", "must divide hidden_size = ", c.hidden_size, ", got ", c.num_attention_heads);
        if (c.head_dim() % 2 != 0)
            r.fail("hidden_size", "must give an even head size (RoPE), got ", c.hidden_size, " / ", c.num_attention_heads,
                   " heads = ", c.head_dim());
        if (c.num_attention_heads % c.num_key_value_heads != 0)
            r.fail("num_key_value_heads", "must divide num_attention_heads = ", c.num_attention_heads, ", got ",
                   c.num_key_value_heads);
        r.one_of("hidden_act", "silu", {"silu"});
        if (r.has("rope_scaling")) {
            const io::json_reader rs = r.object("rope_scaling").nulls(io::json_nulls::refused);
            const char* tk = rs.json().contains("rope_type") ? "rope_type" : "type";
            const std::string type = rs.string(tk, std::nullopt);
            if (type == "dynamic") rs.must_be(tk, "a supported type (\"dynamic\" is not)");
            const auto num = [&](const char* f, double def, double bound) { return rs.number(f, def, -bound, bound); };
            // Range-checked as doubles before any conversion (to float in the RoPE table, to index_t here).
            const double factor = num("factor", 1, 1e6), low = num("low_freq_factor", 1, 1e6),
                         high = num("high_freq_factor", 4, 1e6),
                         original = num("original_max_position_embeddings", 8192, 1 << 24);
            try {
                c.rope_scaling = ops::rope_scaling::from_name(type, factor, low, high, index_t(original));
            } catch (const error& e) { r.fail("rope_scaling", "must be a supported scaling: ", e.what()); }
        }
        c.tie_word_embeddings = r.nulls(io::json_nulls::refused).boolean("tie_word_embeddings", false);
        const index_t V = c.vocab_size;
        c.bos_token_id = r.integer("bos_token_id", 1, 0, V - 1);
        c.pad_token_id = r.integer("pad_token_id", -1, 0, V - 1);  // null/absent -> -1 (no padding row)
        if (const nlohmann::json* e = r.get("eos_token_id"); e && e->is_array()) {
            c.eos_token_ids.clear();
            for (std::size_t i = 0; i < e->size(); i++) {
                const std::optional<std::int64_t> x = io::detail::json_int64((*e)[i]);
                if (!x || *x < 0 || *x >= V)
                    r.fail("eos_token_id", "must be an id or a list of ids in [0, ", V - 1, "], got ", io::detail::json_text(*e));
                c.eos_token_ids.push_back(*x);
            }
        } else {
            c.eos_token_ids = {r.integer("eos_token_id", 2, 0, V - 1)};
        }
        return c;
    }

    /// Reads and parses a config.json file.
    static llama_config load(const std::string& path) { return from_json(io::read_json_file(path), path); }
};

/// Per layer post-RoPE keys and values, in storage allocated for the whole context: [B, capacity,
/// NKV*HS], rows 0..length-1 filled. A decode step writes its row in place and attention reads the
/// prefix (ops/attention.h, n_keys), so a token costs no allocation and no copy of the cache.
/// reserve(n) before the first forward sizes the storage for n positions (generate: the prompt plus
/// the new tokens); past it the storage doubles, copying once.
template <class T = float, class Backend = backend::cpu>
struct kv_cache {
    std::vector<tensor<T, Backend>> k, v;
    index_t len = 0;       ///< positions filled
    index_t reserved = 0;  ///< positions to allocate at the first forward

    index_t length() const { return len; }
    index_t capacity() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(1); }
    void reserve(index_t n) { reserved = std::max(reserved, n); }
    void clear() { k.clear(), v.clear(), len = 0; }

    /// Storage for at least n positions of batch B, keeping rows 0..len-1.
    void ensure(index_t n, index_t B, index_t width, std::size_t layers, const Backend& be) {
        if (k.size() == layers && capacity() >= n) return;
        const index_t cap = std::max({n, reserved, 2 * capacity()});
        auto grow = [&](tensor<T, Backend>& old) {
            tensor<T, Backend> t({B, cap, width}, be);
            for (index_t b = 0; old.defined() && b < B; b++)
                be.copy(t.data() + b * cap * width, old.data() + b * old.size(1) * width, len * width);
            old = std::move(t);
        };
        k.resize(layers), v.resize(layers);
        for (std::size_t l = 0; l < layers; l++) grow(k[l]), grow(v[l]);
    }
    /// Writes rows [len, len + T) of layer l from x [B, T, width].
    void put(std::size_t l, const tensor<T, Backend>& kx, const tensor<T, Backend>& vx) {
        const index_t B = kx.size(0), Tn = kx.size(1), width = kx.size(2), cap = capacity();
        const Backend& be = kx.backend();
        for (index_t b = 0; b < B; b++) {
            be.copy(k[l].data() + (b * cap + len) * width, kx.data() + b * Tn * width, Tn * width);
            be.copy(v[l].data() + (b * cap + len) * width, vx.data() + b * Tn * width, Tn * width);
        }
    }
    /// Rows 0..len-1 of layer l's keys or values as a tensor [B, len, width] (the recorded path).
    tensor<T, Backend> prefix(const tensor<T, Backend>& s) const {
        const index_t B = s.size(0), cap = s.size(1), width = s.size(2);
        tensor<T, Backend> t({B, len, width}, s.backend());
        for (index_t b = 0; b < B; b++) s.backend().copy(t.data() + b * len * width, s.data() + b * cap * width, len * width);
        return t;
    }
};

template <class T = float, class Backend = backend::cpu>
struct llama_layer {
    nn::rms_norm<T, Backend> input_layernorm, post_attention_layernorm;
    nn::linear<T, Backend> q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;

    static llama_layer make(const llama_config& c, index_t i, const Backend& be = Backend::instance()) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        const index_t H = c.hidden_size, I = c.intermediate_size, KV = c.num_key_value_heads * c.head_dim();
        const T eps = T(c.rms_norm_eps);
        return llama_layer{nn::rms_norm<T, Backend>::make(p + "input_layernorm", H, eps, be),
                           nn::rms_norm<T, Backend>::make(p + "post_attention_layernorm", H, eps, be),
                           nn::linear<T, Backend>::make(p + "self_attn.q_proj", H, H, false, be),
                           nn::linear<T, Backend>::make(p + "self_attn.k_proj", H, KV, false, be),
                           nn::linear<T, Backend>::make(p + "self_attn.v_proj", H, KV, false, be),
                           nn::linear<T, Backend>::make(p + "self_attn.o_proj", H, H, false, be),
                           nn::linear<T, Backend>::make(p + "mlp.gate_proj", H, I, false, be),
                           nn::linear<T, Backend>::make(p + "mlp.up_proj", H, I, false, be),
                           nn::linear<T, Backend>::make(p + "mlp.down_proj", I, H, false, be)};
    }
    template <class F>
    void visit(F&& f) {
        input_layernorm.visit(f), q_proj.visit(f), k_proj.visit(f), v_proj.visit(f), o_proj.visit(f);
        post_attention_layernorm.visit(f), gate_proj.visit(f), up_proj.visit(f), down_proj.visit(f);
    }

    /// One decoder layer on x [B, T, H]; with a cache, attends to its first att.past positions and
    /// writes this step's k, v after them (slot l). Without a tape the attention reads the cache's
    /// storage in place; with one, the cached prefix is a constant input of a recorded concat.
    variable<T, Backend> operator()(tape<T, Backend>* tp, const variable<T, Backend>& x, const std::vector<std::int64_t>& pos,
                                    const ops::rope_table& rope, ops::attention_options att,
                                    kv_cache<T, Backend>* cache = nullptr, std::size_t l = 0) const {
        const auto h = input_layernorm(tp, x);
        const auto q = ag::rope(tp, q_proj(tp, h), pos, rope);
        auto k = ag::rope(tp, k_proj(tp, h), pos, rope);
        auto v = v_proj(tp, h);
        if (cache) {
            cache->put(l, k.value(), v.value());
            if (tp && cache->len > 0) {
                k = ag::concat(tp, {variable<T, Backend>::leaf(cache->prefix(cache->k[l])), k}, 1);
                v = ag::concat(tp, {variable<T, Backend>::leaf(cache->prefix(cache->v[l])), v}, 1);
            }
            if (!tp) {
                att.n_keys = cache->len + x.size(1);
                k = variable<T, Backend>::leaf(cache->k[l]);
                v = variable<T, Backend>::leaf(cache->v[l]);
            }
        }
        const auto y = ag::add(tp, x, o_proj(tp, ag::attention(tp, q, k, v, att)));
        const auto m = post_attention_layernorm(tp, y);
        const auto g = gate_proj(tp, m);  // separate statements: a fixed tape order on every compiler
        const auto u = up_proj(tp, m);
        return ag::add(tp, y, down_proj(tp, ag::swiglu(tp, g, u)));
    }
};

template <class T = float, class Backend = backend::cpu>
struct llama_output {
    variable<T, Backend> logits;  ///< [B, T, V]
};

template <class T = float, class Backend = backend::cpu>
class llama_model {
public:
    llama_config config;
    nn::embedding<T, Backend> embed_tokens;       ///< "model.embed_tokens.weight" [V, H], padding_idx = pad
    std::vector<llama_layer<T, Backend>> layers;  ///< "model.layers.<i>.*"
    nn::rms_norm<T, Backend> norm;                ///< "model.norm.weight"
    nn::linear<T, Backend> lm_head;               ///< "lm_head.weight" [V, H], no bias; the embedding's node when tied
    ops::rope_table rope;
    /// Activation checkpointing (training): each decoder layer's intermediates are dropped after its
    /// forward and recomputed in backward (autograd::checkpoint; same bits). Off the tape it does nothing.
    bool checkpoint_layers = false;

    explicit llama_model(const llama_config& c, const Backend& be = Backend::instance())
        : config(c),
          embed_tokens(nn::embedding<T, Backend>::make("model.embed_tokens", c.vocab_size, c.hidden_size, c.pad_token_id, be)),
          norm(nn::rms_norm<T, Backend>::make("model.norm", c.hidden_size, T(c.rms_norm_eps), be)),
          rope(int(c.head_dim()), c.rope_theta, c.rope_scaling) {
        for (index_t i = 0; i < c.num_hidden_layers; i++) layers.push_back(llama_layer<T, Backend>::make(c, i, be));
        // a linear, so that a bf16/f16 load packs it like the decoder's linears (no f32 copy)
        lm_head.weight = c.tie_word_embeddings ? embed_tokens.weight
                                               : nn::parameter<T, Backend>("lm_head.weight", {c.vocab_size, c.hidden_size}, be);
    }

    /// The backend the model was built on (its parameters' backend).
    const Backend& backend() const { return embed_tokens.weight.backend(); }

    /// Every parameter once, in checkpoint order (a tied lm_head is the embedding and not repeated).
    template <class F>
    void visit(F&& f) {
        embed_tokens.visit(f);
        for (auto& l : layers) l.visit(f);
        norm.visit(f);
        if (!config.tie_word_embeddings) lm_head.visit(f);
    }

    /// Like HF's _init_weights with the counter RNG: U(+-0.02 sqrt 3) (std 0.02) for matrices, the
    /// padding row zeroed, norms one. Stream = fnv1a64(HF key).
    void init(std::uint64_t seed, float std_dev = 0.02f) {
        visit([&](variable<T, Backend>& p) {
            if (p.value().dim() == 1)
                p.value().fill(T(1));
            else
                nn::init_uniform(p, seed, std_dev * std::sqrt(3.0f));
        });
        if (config.pad_token_id >= 0) {
            const index_t H = config.hidden_size;
            backend().fill(embed_tokens.weight.value().data() + config.pad_token_id * H, H, T(0));
        }
    }

    /// Token embeddings [1, n, H] for ids (one sample) or [n, H] flattened; gradient skips the pad row.
    variable<T, Backend> embed(tape<T, Backend>* tp, const std::vector<std::int64_t>& ids) const { return embed_tokens(tp, ids); }

    /// Decoder on input embeddings x [B, T, H] at positions [B*T]; key_mask [B*(past+T)] (empty: all
    /// keys valid). With a cache, x holds the new tokens only and the cache grows by T.
    llama_output<T, Backend> forward(tape<T, Backend>* tp, const variable<T, Backend>& x,
                                     const std::vector<std::int64_t>& positions, const std::vector<std::uint8_t>& key_mask = {},
                                     kv_cache<T, Backend>* cache = nullptr, trace_sink<T, Backend>* trace = nullptr) const {
        ALIGNGPT_CHECK(x.value().dim() == 3 && x.size(2) == config.hidden_size, "llama: input embeddings ",
                       detail::shape_str(x.shape()), " are not [B, T, ", config.hidden_size, "]");
        const index_t Bn = x.size(0), Tn = x.size(1), past = cache ? cache->length() : 0;
        ALIGNGPT_CHECK(index_t(positions.size()) == Bn * Tn, "llama: ", positions.size(), " positions for [B, T] = [", Bn, ", ",
                       Tn, "]");
        for (std::int64_t p : positions) ALIGNGPT_CHECK(p >= 0, "llama: negative position ", p);
        ALIGNGPT_CHECK(key_mask.empty() || index_t(key_mask.size()) == Bn * (past + Tn), "llama: key mask has ", key_mask.size(),
                       " entries for [B, past+T] = [", Bn, ", ", past + Tn, "]");
        ALIGNGPT_CHECK(!cache || past == 0 || cache->k[0].size(0) == Bn, "llama: cache batch ", (past ? cache->k[0].size(0) : 0),
                       " != input batch ", Bn);
        if (cache) cache->ensure(past + Tn, Bn, config.num_key_value_heads * config.head_dim(), layers.size(), backend());
        ops::attention_options att;
        att.n_head = int(config.num_attention_heads);
        att.n_kv_head = int(config.num_key_value_heads);
        att.causal = true;
        att.past = past;
        att.key_mask = key_mask;

        llama_output<T, Backend> out;
        variable<T, Backend> h = x;
        for (size_t l = 0; l < layers.size(); l++) {
            if (checkpoint_layers && tp && tp->recording() && !cache) {
                // the closure runs again in backward: it owns copies of what the caller may free by then
                const llama_layer<T, Backend>* layer = &layers[l];
                h = autograd::checkpoint(
                    tp,
                    [layer, pos = positions, this, att, l](tape<T, Backend>* t, const variable<T, Backend>& in) {
                        return (*layer)(t, in, pos, rope, att, nullptr, l);
                    },
                    h);
            } else {
                h = layers[l](tp, h, positions, rope, att, cache, l);
            }
            if (trace) trace->put("llm.layers." + std::to_string(l) + ".out", h.value());
        }
        if (cache) cache->len += Tn;
        out.logits = lm_head(tp, norm(tp, h));
        if (trace) trace->put("logits", out.logits.value());
        return out;
    }

    /// Greedy continuation of one prompt given as embeddings [1, T0, H] (positions 0..T0-1): the
    /// prefill fills the cache, then each new token is embedded and decoded at position = cache length.
    std::vector<std::int64_t> generate_from_embeds(const variable<T, Backend>& prompt, generate::options opt) const {
        ALIGNGPT_CHECK(prompt.value().dim() == 3 && prompt.size(0) == 1, "llama: generate takes one prompt [1, T, H], got ",
                       detail::shape_str(prompt.shape()));
        if (opt.eos.empty()) opt.eos = config.eos_token_ids;
        kv_cache<T, Backend> cache;
        cache.reserve(prompt.size(1) + opt.max_new_tokens);
        std::vector<std::int64_t> pos(size_t(prompt.size(1)));
        for (size_t t = 0; t < pos.size(); t++) pos[t] = std::int64_t(t);
        return generate::greedy(
            forward(nullptr, prompt, pos, {}, &cache).logits, [&](std::int64_t token) { return decode_step(token, cache); }, opt);
    }

    /// Sampled continuation of prompt ids (generate/sampling.h; temperature 0 is greedy):
    /// on_token(token, generated) streams each token and returns false to stop after it.
    template <class OnToken>
    std::vector<std::int64_t> generate_sampled(const std::vector<std::int64_t>& prompt, generate::options opt,
                                               const generate::sampling& s, OnToken&& on_token) const {
        ALIGNGPT_CHECK(!prompt.empty(), "llama: generate_sampled needs a prompt of at least one token");
        if (opt.eos.empty()) opt.eos = config.eos_token_ids;
        const auto e = ag::reshape<T, Backend>(nullptr, embed(nullptr, prompt), {1, index_t(prompt.size()), config.hidden_size});
        kv_cache<T, Backend> cache;
        cache.reserve(index_t(prompt.size()) + opt.max_new_tokens);
        std::vector<std::int64_t> pos(prompt.size());
        for (size_t t = 0; t < pos.size(); t++) pos[t] = std::int64_t(t);
        return generate::sample(
            forward(nullptr, e, pos, {}, &cache).logits, [&](std::int64_t token) { return decode_step(token, cache); }, opt, s,
            prompt, std::forward<OnToken>(on_token));
    }

    /// Greedy continuation of prompt ids (HF generate with do_sample=False, num_beams=1).
    std::vector<std::int64_t> generate(const std::vector<std::int64_t>& prompt, generate::options opt) const {
        const auto e = ag::reshape<T, Backend>(nullptr, embed(nullptr, prompt), {1, index_t(prompt.size()), config.hidden_size});
        return generate_from_embeds(e, std::move(opt));
    }

    /// One decoded token at position = cache length: its logits [1, 1, V]; the cache grows by one.
    variable<T, Backend> decode_step(std::int64_t token, kv_cache<T, Backend>& cache) const {
        const auto e = ag::reshape<T, Backend>(nullptr, embed(nullptr, {token}), {1, 1, config.hidden_size});
        return forward(nullptr, e, {std::int64_t(cache.length())}, {}, &cache).logits;
    }
};

/// Next-token targets for logits [B, S, V] from labels [B*S] (docs/model.md §9.1): target[b,t] = labels[b,t+1],
/// the last position of every row ignored. The mean of ag::cross_entropy over them is HF's loss.
inline std::vector<std::int64_t> shifted_targets(const std::vector<std::int64_t>& labels, index_t Bn, index_t S,
                                                 std::int64_t ignore_index = -100) {
    ALIGNGPT_CHECK(index_t(labels.size()) == Bn * S, "shifted_targets: ", labels.size(), " labels for [B, S] = [", Bn, ", ", S,
                   "]");
    std::vector<std::int64_t> t(labels.size(), ignore_index);
    for (index_t b = 0; b < Bn; b++)
        for (index_t s = 0; s + 1 < S; s++) t[size_t(b * S + s)] = labels[size_t(b * S + s + 1)];
    return t;
}

}  // namespace aligngpt::models
