#pragma once
// The tiny towers of the AlignGPT world (issue #11, step 1): stand-ins for the published CLIP and
// Vicuna, pre-trained on the world itself before AlignGPT's two stages.
//
//   pretrain_clip  contrastive pre-training of a tiny CLIPModel (Radford et al. 2021, Fig. 3) on the
//                  world's train images paired with their EXACT captions (made from world.json's
//                  scenes, whatever kind captions.json drew): in-batch negatives,
//                    logits = exp(t) * img_emb txt_embᵀ   [B, B]   (t = logit_scale, learnable,
//                                                                    init ln(1/0.07), clamped to ln 100
//                                                                    after each step as CLIP does)
//                    loss   = (CE(logits, rows) + CE(logitsᵀ, rows)) / 2,
//                  AdamW with a warmup + cosine schedule and gradient clipping. Images go through
//                  the CLIP preprocessing the levels use (io::clip_preprocess, square). Its BPE
//                  (world/tokenizers.h) is learned from captions.json first. Held-out scenes
//                  measure image->text and text->image retrieval accuracy (chance: 1 / n_eval) and
//                  the mean cosine of matching and of non-matching pairs.
//                  OUT: config.json (CLIPConfig with text_config / vision_config), model.safetensors
//                  (HF keys), preprocessor_config.json, vocab.json, merges.txt, metrics.jsonl.
//   pretrain_llm   causal-LM pre-training of a tiny LlamaForCausalLM on the world's text: every
//                  caption of captions.json as a document (<s> caption </s>), and every record of
//                  instruct.json rendered with the vicuna_v1 template ("<image>" removed), so the
//                  model knows the chat format and the facts. Loss on every non-padding token. Its
//                  SentencePiece tokenizer (world/tokenizers.h) is trained first.
//                  OUT: config.json, model.safetensors, tokenizer.model, tokenizer_config.json,
//                  metrics.jsonl: the plain LLaMA directory train::trainer's stage 1 starts from.
//
// metrics.jsonl has trainer.h's fields (step, loss, lr, grad_norm, tokens, seconds), so `aligngpt plot`
// draws it. Every random draw is rng-keyed by (seed, name or epoch); all kernels reduce per row in a
// fixed order: the same seed gives the same bits on any thread count.
//
//   auto c = world::pretrain_clip("out/world", "out/clip", world::clip_pretrain_options::quick(7));
//   auto l = world::pretrain_llm("out/world", "out/llm", world::llm_pretrain_options::quick(7));
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/io/image.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/safetensors.h"
#include "aligngpt/models/clip.h"
#include "aligngpt/models/llama.h"
#include "aligngpt/ops/cross_entropy.h"
#include "aligngpt/tokenizer/clip.h"
#include "aligngpt/tokenizer/llama.h"
#include "aligngpt/train/data.h"
#include "aligngpt/train/optim.h"
#include "aligngpt/world/captions.h"
#include "aligngpt/world/tokenizers.h"
#include "aligngpt/world/world.h"

namespace aligngpt::world {

// ---- what both pre-trainings share ------------------------------------------------------------

/// The schedule and optimizer of a pre-training run.
struct tower_schedule {
    std::int64_t steps = 100;
    index_t batch = 32;
    double lr = 1e-3, warmup_ratio = 0.1, weight_decay = 0.0, max_grad_norm = 1.0;
};

/// One optimizer step's record (a metrics.jsonl line).
struct tower_step {
    std::int64_t step = 0;
    double loss = 0, lr = 0, grad_norm = 0;
    double tokens = 0;   ///< target tokens (LLaMA) or image-caption pairs (CLIP) of the step
    double seconds = 0;  ///< since the run started
};

namespace tower_detail {

using var = autograd::variable<float>;
using clock = std::chrono::steady_clock;

inline double since(clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); }

/// y = exp(t) * x for a learnable 0-d t (CLIP's logit_scale). dx = exp(t) dy; dt = sum(dy * y),
/// summed in double in index order (the same bits on any thread count). Gradient-checked in double
/// (tests/test_world_towers.cpp).
template <class T>
autograd::variable<T> exp_scale(autograd::tape<T>* tp, const autograd::variable<T>& x, const autograd::variable<T>& t) {
    ALIGNGPT_CHECK(t.value().numel() == 1, "exp_scale: the scale must have one element");
    const T e = ops::exp_of(t.value().to_vector()[0]);
    const index_t n = x.value().numel();
    tensor<T> y(x.shape());
    const T* xp = x.value().data();
    for (index_t i = 0; i < n; i++) y.data()[i] = e * xp[i];
    return autograd::tape<T>::record(tp, "exp_scale", y, {x, t}, [x, t, e, n](autograd::node<T>& out) {
        const T* dy = out.grad.data();
        if (x.requires_grad()) {
            T* dx = x.get()->grad_buffer().data();
            for (index_t i = 0; i < n; i++) dx[i] += e * dy[i];
        }
        if (t.requires_grad()) {
            double s = 0;
            for (index_t i = 0; i < n; i++) s += double(dy[i]) * double(out.value.data()[i]);
            t.get()->grad_buffer().data()[0] += T(s);
        }
    });
}

/// The trainable parameters of a module in visit order.
template <class M>
std::vector<var> trainable(M& m) {
    std::vector<var> ps;
    m.visit([&](var& p) {
        if (p.requires_grad()) ps.push_back(p);
    });
    return ps;
}

/// Clip, check, update, clear: returns the gradient norm before clipping. `what` names the run.
inline double optimizer_step(std::vector<var>& params, train::adamw& opt, double lr, double max_grad_norm, double loss,
                             std::int64_t step, const char* what) {
    std::vector<tensor<float>> grads;
    for (var& p : params) grads.push_back(p.grad());
    ALIGNGPT_CHECK(train::all_finite(grads, loss), what, ": step ", step, ": the loss or a gradient is not finite (loss ", loss,
                   "); lower the learning rate");
    const double norm = max_grad_norm > 0 ? train::clip_grad_norm(grads, max_grad_norm) : train::grad_norm(grads);
    opt.step(lr);
    for (var& p : params) p.zero_grad();
    return norm;
}

/// metrics.jsonl, started empty; one line a step, in trainer.h's fields.
class metrics_file {
public:
    explicit metrics_file(std::string path) : path_(std::move(path)) { tok_detail::write_text(path_, ""); }
    void append(const tower_step& r) {
        const nlohmann::json j = {{"step", r.step},           {"loss", r.loss},     {"lr", r.lr},
                                  {"grad_norm", r.grad_norm}, {"tokens", r.tokens}, {"seconds", r.seconds}};
        std::ofstream f(path_, std::ios::app);
        f << j.dump() << "\n";
        f.flush();
        ALIGNGPT_CHECK(bool(f), path_, ": cannot append a metrics line");
    }

private:
    std::string path_;
};

/// "[clip] step 10/60 loss 2.31 lr 9.1e-04 grad_norm 1.2 (4.1 s)" every `every` steps and at the end.
inline void progress(std::ostream* log, const char* what, const tower_step& r, std::int64_t total) {
    if (!log) return;
    char b[200];
    std::snprintf(b, sizeof b, "[%s] step %lld/%lld loss %.4f lr %.2e grad_norm %.3f (%.1f s)\n", what, (long long)r.step,
                  (long long)total, r.loss, r.lr, r.grad_norm, r.seconds);
    *log << b << std::flush;
}

/// Every parameter of a module into path as safetensors (f32, HF keys).
template <class M>
void save_safetensors(M& m, const std::string& path) {
    io::safetensors_writer w;
    w.set_metadata("format", "pt");
    m.visit([&](var& p) { w.add(p.name(), p.value()); });
    w.write(path);
}

inline std::int64_t world_n_train(const std::string& world_dir) {
    const std::string path = world_dir + "/world.json";
    io::json_parse_options po;
    po.max_bytes = std::uint64_t(4) << 30;
    const nlohmann::json j = io::read_json_file(path, po);
    return io::json_reader(j, path).object("options").integer("n_train", std::nullopt, 2, 10'000'000);
}

}  // namespace tower_detail

// ---- CLIP -------------------------------------------------------------------------------------

/// quick(): 48 px in 6-px patches, 64 image tokens (the gate's width follows the patch count; 576 as
/// in CLIP-L/14-336 made the tower's attention dominate the 10-minute pipeline), width 32. full():
/// 4-px patches (144 tokens), width 64.
struct clip_pretrain_options {
    std::uint64_t seed = 1;
    index_t width = 32, heads = 2, vision_layers = 2, text_layers = 2, projection_dim = 64, patch_size = 6;
    index_t max_positions = 77;  ///< text positions (captions are cut to this many tokens)
    int bpe_merges = 1000;       ///< at most; the world's words run out of pairs first
    tower_schedule sched{60, 32, 2e-3, 0.1, 0.05, 1.0};
    index_t n_eval = 200;  ///< held-out scenes for the retrieval check (0: none)
    std::int64_t log_every = 10;
    std::ostream* log = &std::cerr;  ///< nullptr: quiet

    static clip_pretrain_options quick(std::uint64_t seed = 1) {
        clip_pretrain_options o;
        o.seed = seed;
        return o;
    }
};

struct clip_pretrain_result {
    std::vector<tower_step> steps;
    double seconds = 0;
    index_t vocab_size = 0, n_eval = 0;
    double i2t_accuracy = 0, t2i_accuracy = 0;        ///< held-out retrieval, top 1 (chance 1 / n_eval)
    double positive_cosine = 0, negative_cosine = 0;  ///< mean over matching / non-matching held-out pairs
};

namespace tower_detail {

inline models::clip_config clip_config_for(const clip_pretrain_options& o, index_t image_size, index_t vocab) {
    models::clip_config c;
    c.projection_dim = o.projection_dim;
    c.logit_scale_init_value = 2.6592;  // ln(1 / 0.07)
    auto& v = c.vision;
    v.hidden_size = o.width, v.intermediate_size = 4 * o.width, v.num_hidden_layers = o.vision_layers;
    v.num_attention_heads = o.heads, v.image_size = image_size, v.patch_size = o.patch_size, v.projection_dim = o.projection_dim;
    auto& t = c.text;
    t.vocab_size = vocab, t.hidden_size = o.width, t.intermediate_size = 4 * o.width, t.num_hidden_layers = o.text_layers;
    t.num_attention_heads = o.heads, t.max_position_embeddings = o.max_positions, t.projection_dim = o.projection_dim;
    t.bos_token_id = vocab - 2, t.eos_token_id = vocab - 1, t.pad_token_id = 1;
    return c;
}

/// transformers' CLIPPreTrainedModel._init_weights (initializer_factor 1) with the counter RNG:
/// uniform of the same standard deviation, stream = fnv1a64(HF key); biases zero, norms one.
inline void init_clip(models::clip_model<float>& m, std::uint64_t seed) {
    const auto& c = m.cfg;
    const auto u = [&](var& p, double std_dev) { nn::init_uniform(p, seed, float(std_dev * std::sqrt(3.0))); };
    const auto encoder = [&](auto& layers, double D) {
        const double L = double(layers.size()), in_std = std::pow(D, -0.5) * std::pow(2 * L, -0.5);
        for (auto& l : layers) {
            u(l.q_proj.weight, in_std), u(l.k_proj.weight, in_std), u(l.v_proj.weight, in_std);
            u(l.out_proj.weight, std::pow(D, -0.5));
            u(l.fc1.weight, std::pow(2 * D, -0.5)), u(l.fc2.weight, in_std);
        }
    };
    u(m.text.token_embedding.weight, 0.02), u(m.text.position_embedding.weight, 0.02);
    encoder(m.text.layers, double(c.text.hidden_size));
    u(m.vision.class_embedding, std::pow(double(c.vision.hidden_size), -0.5));
    u(m.vision.patch_embedding, 0.02), u(m.vision.position_embedding.weight, 0.02);
    encoder(m.vision.layers, double(c.vision.hidden_size));
    u(m.visual_projection.weight, std::pow(double(c.vision.hidden_size), -0.5));
    u(m.text_projection.weight, std::pow(double(c.text.hidden_size), -0.5));
}

inline nlohmann::ordered_json clip_config_json(const models::clip_config& c) {
    using oj = nlohmann::ordered_json;
    const auto& v = c.vision;
    const auto& t = c.text;
    oj vj, tj, j;
    tj["model_type"] = "clip_text_model", tj["vocab_size"] = t.vocab_size, tj["hidden_size"] = t.hidden_size;
    tj["intermediate_size"] = t.intermediate_size, tj["num_hidden_layers"] = t.num_hidden_layers;
    tj["num_attention_heads"] = t.num_attention_heads, tj["max_position_embeddings"] = t.max_position_embeddings;
    tj["projection_dim"] = t.projection_dim, tj["hidden_act"] = t.hidden_act, tj["layer_norm_eps"] = t.layer_norm_eps;
    tj["initializer_range"] = 0.02, tj["initializer_factor"] = 1.0, tj["attention_dropout"] = 0.0, tj["dropout"] = 0.0;
    tj["pad_token_id"] = t.pad_token_id, tj["bos_token_id"] = t.bos_token_id, tj["eos_token_id"] = t.eos_token_id;
    vj["model_type"] = "clip_vision_model", vj["hidden_size"] = v.hidden_size, vj["intermediate_size"] = v.intermediate_size;
    vj["num_hidden_layers"] = v.num_hidden_layers, vj["num_attention_heads"] = v.num_attention_heads;
    vj["num_channels"] = v.num_channels, vj["image_size"] = v.image_size, vj["patch_size"] = v.patch_size;
    vj["projection_dim"] = v.projection_dim, vj["hidden_act"] = v.hidden_act, vj["layer_norm_eps"] = v.layer_norm_eps;
    vj["initializer_range"] = 0.02, vj["initializer_factor"] = 1.0, vj["attention_dropout"] = 0.0, vj["dropout"] = 0.0;
    j["architectures"] = {"CLIPModel"}, j["model_type"] = "clip", j["projection_dim"] = c.projection_dim;
    j["logit_scale_init_value"] = c.logit_scale_init_value, j["initializer_factor"] = 1.0;
    j["torch_dtype"] = "float32", j["transformers_version"] = "4.31.0";
    j["text_config"] = tj, j["vision_config"] = vj;
    return j;
}

inline nlohmann::ordered_json preprocessor_json(index_t size) {
    nlohmann::ordered_json j;
    const io::clip_image_processor_config d;
    j["crop_size"] = {{"height", size}, {"width", size}}, j["do_center_crop"] = true, j["do_convert_rgb"] = true;
    j["do_normalize"] = true, j["do_rescale"] = true, j["do_resize"] = true;
    j["feature_extractor_type"] = "CLIPFeatureExtractor", j["image_processor_type"] = "CLIPImageProcessor";
    j["image_mean"] = d.image_mean, j["image_std"] = d.image_std, j["resample"] = 3;
    j["rescale_factor"] = d.rescale_factor, j["size"] = {{"shortest_edge", size}};
    return j;
}

/// Pixels [n, 3, S, S] of scenes idx (images/NNNNNNN.png), decoded and preprocessed in parallel.
inline tensor<float> load_pixels(const std::string& world_dir, const std::vector<std::int64_t>& idx,
                                 const io::clip_image_processor_config& pre) {
    const index_t n = index_t(idx.size()), S = pre.crop_height, HW = 3 * S * S;
    tensor<float> px({n, 3, S, S});
    std::vector<std::string> errors(idx.size());
    ops::parallel_for(n, [&](index_t i) {  // errors cannot leave the region
        const std::string path = world_dir + "/images/" + image_name(idx[std::size_t(i)]);
        try {
            const tensor<float> p = io::clip_preprocess(io::load_image(path), pre, path);
            ALIGNGPT_CHECK(p.numel() == HW, path, ": preprocessed to ", p.numel(), " values, expected ", HW);
            std::copy_n(p.data(), HW, px.data() + i * HW);
        } catch (const std::exception& e) { errors[std::size_t(i)] = e.what(); }
    });
    for (const auto& e : errors) ALIGNGPT_CHECK(e.empty(), e);
    return px;
}

/// Caption ids padded with EOT to the longest, and the key mask (as train::clip_scorer pads).
inline std::pair<tensor<std::int64_t>, std::vector<std::uint8_t>> caption_batch(const std::vector<std::vector<std::int64_t>>& ids,
                                                                                std::int64_t eot) {
    std::size_t T = 1;
    for (const auto& v : ids) T = std::max(T, v.size());
    std::vector<std::int64_t> flat(ids.size() * T, eot);
    std::vector<std::uint8_t> mask(flat.size(), 0);
    for (std::size_t b = 0; b < ids.size(); b++)
        for (std::size_t t = 0; t < ids[b].size(); t++) flat[b * T + t] = ids[b][t], mask[b * T + t] = 1;
    return {tensor<std::int64_t>::from(flat, {index_t(ids.size()), index_t(T)}), mask};
}

}  // namespace tower_detail

/// Pre-trains the tiny CLIP on world_dir (world::generate's output) and writes a CLIPModel directory
/// to out_dir (see the header).
inline clip_pretrain_result pretrain_clip(const std::string& world_dir, const std::string& out_dir,
                                          const clip_pretrain_options& o = {}) {
    using namespace tower_detail;
    const auto t0 = clock::now();
    const tower_schedule& sc = o.sched;
    ALIGNGPT_CHECK(sc.steps >= 1 && sc.batch >= 2, "pretrain_clip: steps must be >= 1 and batch >= 2, got ", sc.steps, " and ",
                   sc.batch);
    ALIGNGPT_CHECK(o.n_eval >= 0, "pretrain_clip: n_eval must be >= 0");
    std::filesystem::create_directories(out_dir);

    // tokenizer, from every caption the world wrote
    write_clip_tokenizer(learn_clip_bpe(caption_texts(world_dir), o.bpe_merges), out_dir, int(o.max_positions));
    const auto tok = tokenizer::clip_tokenizer::from_directory(out_dir);

    const std::vector<scene> scenes = read_scenes(world_dir + "/world.json");
    const std::int64_t n_train = world_n_train(world_dir);
    ALIGNGPT_CHECK(n_train <= std::int64_t(scenes.size()) && n_train >= sc.batch, world_dir, "/world.json: ", n_train,
                   " train scenes of ", scenes.size(), " (the batch is ", sc.batch, ")");
    const index_t S = scenes.front().image_size;
    std::vector<std::vector<std::int64_t>> ids(scenes.size());
    for (std::size_t i = 0; i < scenes.size(); i++)
        ids[i] = tok.encode(caption_text(describe_exact(scenes[i])), std::size_t(o.max_positions));

    const models::clip_config cfg = clip_config_for(o, S, index_t(tok.max_id) + 1);
    auto model = models::clip_model<float>::make(cfg);
    init_clip(model, o.seed);
    nn::set_trainable(model, true);
    std::vector<var> params = trainable(model);
    train::adamw_options ao;
    ao.weight_decay = sc.weight_decay;
    ao.beta2 = 0.98;  // CLIP's (sec. 2.5)
    train::adamw opt(params, ao);
    io::clip_image_processor_config pre = io::clip_image_processor_config::from_json(preprocessor_json(S));
    pre.aspect = io::aspect_mode::square;

    clip_pretrain_result r;
    r.vocab_size = cfg.text.vocab_size;
    metrics_file metrics(out_dir + "/metrics.jsonl");
    const std::int64_t per_epoch = n_train / sc.batch;  // drop_last: every batch has B negatives
    const std::int64_t warmup = train::warmup_steps(sc.steps, sc.warmup_ratio);
    const float max_scale = std::log(100.0f);
    std::vector<std::int64_t> rows(std::size_t(sc.batch));
    for (index_t b = 0; b < sc.batch; b++) rows[std::size_t(b)] = b;
    std::vector<std::size_t> order;
    for (std::int64_t step = 1; step <= sc.steps; step++) {
        const std::int64_t e = (step - 1) / per_epoch, k = (step - 1) % per_epoch;
        if (k == 0) order = train::epoch_order(std::size_t(n_train), o.seed, std::uint64_t(e));
        std::vector<std::int64_t> idx;
        std::vector<std::vector<std::int64_t>> caps;
        for (index_t b = 0; b < sc.batch; b++) {
            idx.push_back(std::int64_t(order[std::size_t(k * sc.batch + b)]));
            caps.push_back(ids[std::size_t(idx.back())]);
        }
        const auto [cid, mask] = caption_batch(caps, tok.eos_id);
        autograd::tape<float> tp;
        const var px = var::leaf(load_pixels(world_dir, idx, pre));
        const var img = model.image_embeds(&tp, px);
        const var txt = model.text_embeds(&tp, cid, mask);
        const var per_image = exp_scale(&tp, ag::linear(&tp, img, txt), model.logit_scale);  // [B, B]
        const var per_text = exp_scale(&tp, ag::linear(&tp, txt, img), model.logit_scale);   // its transpose
        const var li = ag::cross_entropy(&tp, per_image, rows);
        const var lt = ag::cross_entropy(&tp, per_text, rows);
        const var loss = ag::scale(&tp, ag::add(&tp, li, lt), 0.5f);
        tp.backward(loss);
        tower_step rec;
        rec.step = step;
        rec.loss = loss.value().to_vector()[0];
        rec.lr = train::lr_at(train::schedule::cosine, sc.lr, step - 1, sc.steps, warmup);
        rec.grad_norm = optimizer_step(params, opt, rec.lr, sc.max_grad_norm, rec.loss, step, "pretrain_clip");
        float& t = model.logit_scale.value().data()[0];
        t = std::clamp(t, 0.0f, max_scale);
        rec.tokens = double(sc.batch);
        rec.seconds = since(t0);
        metrics.append(rec);
        r.steps.push_back(rec);
        if (step % std::max<std::int64_t>(1, o.log_every) == 0 || step == sc.steps) progress(o.log, "clip", rec, sc.steps);
    }

    // held-out retrieval
    const std::int64_t n_eval = std::min<std::int64_t>(o.n_eval, std::int64_t(scenes.size()) - n_train);
    if (n_eval >= 1) {
        std::vector<std::int64_t> idx;
        std::vector<std::vector<std::int64_t>> caps;
        for (std::int64_t i = 0; i < n_eval; i++) idx.push_back(n_train + i), caps.push_back(ids[std::size_t(n_train + i)]);
        const auto [cid, mask] = caption_batch(caps, tok.eos_id);
        const std::vector<float> cos =
            model
                .cosine(nullptr, model.image_embeds(nullptr, var::leaf(load_pixels(world_dir, idx, pre))),
                        model.text_embeds(nullptr, cid, mask))
                .value()
                .to_vector();
        const auto N = std::size_t(n_eval);
        std::size_t i2t = 0, t2i = 0;
        double pos = 0, neg = 0;
        for (std::size_t a = 0; a < N; a++) {
            std::size_t bi = 0, bt = 0;
            for (std::size_t b = 0; b < N; b++) {
                if (cos[a * N + b] > cos[a * N + bi]) bi = b;
                if (cos[b * N + a] > cos[bt * N + a]) bt = b;
                (a == b ? pos : neg) += cos[a * N + b];
            }
            i2t += bi == a, t2i += bt == a;
        }
        r.n_eval = index_t(N);
        r.i2t_accuracy = double(i2t) / double(N), r.t2i_accuracy = double(t2i) / double(N);
        r.positive_cosine = pos / double(N), r.negative_cosine = N > 1 ? neg / double(N * (N - 1)) : 0.0;
        if (o.log) {
            char b[240];
            std::snprintf(b, sizeof b,
                          "[clip] held out %zu scenes: retrieval image->text %.3f, text->image %.3f (chance %.3f); "
                          "mean cosine matching %.3f, other %.3f\n",
                          N, r.i2t_accuracy, r.t2i_accuracy, 1.0 / double(N), r.positive_cosine, r.negative_cosine);
            *o.log << b << std::flush;
        }
    }

    tok_detail::write_json(out_dir + "/config.json", clip_config_json(cfg));
    tok_detail::write_json(out_dir + "/preprocessor_config.json", preprocessor_json(S));
    save_safetensors(model, out_dir + "/model.safetensors");
    r.seconds = since(t0);
    return r;
}

// ---- LLaMA ------------------------------------------------------------------------------------

struct llm_pretrain_options {
    std::uint64_t seed = 1;
    index_t hidden = 128, layers = 2, heads = 4, intermediate = 344;
    int vocab_size = 700;      ///< the SentencePiece model's, at most (the world may give fewer pieces)
    index_t max_length = 192;  ///< tokens per document (longer ones are cut)
    tower_schedule sched{150, 16, 3e-3, 0.05, 0.0, 1.0};  ///< quick: the loss is flat after ~100 steps
    std::int64_t log_every = 25;
    std::ostream* log = &std::cerr;

    static llm_pretrain_options quick(std::uint64_t seed = 1) {
        llm_pretrain_options o;
        o.seed = seed;
        return o;
    }
};

struct llm_pretrain_result {
    std::vector<tower_step> steps;
    double seconds = 0;
    index_t vocab_size = 0;
    std::size_t documents = 0;
};

namespace tower_detail {

/// The documents of the LM: captions, then instruct.json's records as vicuna_v1 chats.
inline std::vector<std::vector<std::int64_t>> lm_documents(const std::string& world_dir, const tokenizer::llama_tokenizer& tok,
                                                           index_t max_length) {
    std::vector<std::vector<std::int64_t>> docs;
    const auto add = [&](std::vector<std::int64_t> ids) {
        if (index_t(ids.size()) > max_length) ids.resize(std::size_t(max_length));
        if (ids.size() >= 2) docs.push_back(std::move(ids));
    };
    for (const std::string& c : caption_texts(world_dir)) add(tok.encode(c + "</s>"));
    for (const instruct_record& rec : read_instruct(world_dir + "/instruct.json")) {
        conversation::conversation c = conversation::make("vicuna_v1");
        for (std::size_t t = 0; t < rec.turns.size(); t++) {
            std::string v = rec.turns[t];
            for (std::size_t p; (p = v.find("<image>\n")) != std::string::npos;) v.erase(p, 8);
            c.append(c.roles[t % 2], v);
        }
        add(tok.encode(c.prompt()));
    }
    return docs;
}

inline nlohmann::ordered_json llama_config_json(const models::llama_config& c) {
    nlohmann::ordered_json j;
    j["architectures"] = {"LlamaForCausalLM"}, j["bos_token_id"] = c.bos_token_id, j["eos_token_id"] = c.eos_token_ids.at(0);
    j["hidden_act"] = "silu", j["hidden_size"] = c.hidden_size, j["initializer_range"] = 0.02;
    j["intermediate_size"] = c.intermediate_size, j["max_position_embeddings"] = c.max_position_embeddings;
    j["model_type"] = "llama", j["num_attention_heads"] = c.num_attention_heads, j["num_hidden_layers"] = c.num_hidden_layers;
    j["num_key_value_heads"] = c.num_key_value_heads, j["pad_token_id"] = c.pad_token_id, j["pretraining_tp"] = 1;
    j["rms_norm_eps"] = c.rms_norm_eps, j["tie_word_embeddings"] = c.tie_word_embeddings, j["torch_dtype"] = "float32";
    j["transformers_version"] = "4.31.0", j["use_cache"] = true, j["vocab_size"] = c.vocab_size;
    return j;
}

}  // namespace tower_detail

/// Pre-trains the tiny LLaMA on world_dir's text and writes a LlamaForCausalLM directory to out_dir.
inline llm_pretrain_result pretrain_llm(const std::string& world_dir, const std::string& out_dir,
                                        const llm_pretrain_options& o = {}) {
    using namespace tower_detail;
    const auto t0 = clock::now();
    const tower_schedule& sc = o.sched;
    ALIGNGPT_CHECK(sc.steps >= 1 && sc.batch >= 1, "pretrain_llm: steps and batch must be >= 1, got ", sc.steps, " and ",
                   sc.batch);
    ALIGNGPT_CHECK(o.max_length >= 2 && o.max_length <= 4096, "pretrain_llm: max_length must be in [2, 4096], got ",
                   o.max_length);
    train_llama_tokenizer(tokenizer_corpus(world_dir), out_dir, {.vocab_size = o.vocab_size});
    const auto tok = tokenizer::llama_tokenizer::from_directory(out_dir);
    const std::vector<std::vector<std::int64_t>> docs = lm_documents(world_dir, tok, o.max_length);
    ALIGNGPT_CHECK(std::int64_t(docs.size()) >= sc.batch, world_dir, ": ", docs.size(), " documents for a batch of ", sc.batch);

    models::llama_config cfg;
    cfg.hidden_size = o.hidden, cfg.intermediate_size = o.intermediate, cfg.num_hidden_layers = o.layers;
    cfg.num_attention_heads = cfg.num_key_value_heads = o.heads, cfg.vocab_size = tok.vocab_size();
    cfg.max_position_embeddings = 2048, cfg.rms_norm_eps = 1e-5, cfg.bos_token_id = 1, cfg.pad_token_id = 0;
    cfg.eos_token_ids = {2};
    // the checks of a config.json read back (head size even, heads divide the width)
    cfg = models::llama_config::from_json(nlohmann::json::parse(llama_config_json(cfg).dump()), "pretrain_llm");
    models::llama_model<float> model(cfg);
    model.init(o.seed);
    nn::set_trainable(model, true);
    std::vector<var> params = trainable(model);
    train::adamw_options ao;
    ao.weight_decay = sc.weight_decay;
    train::adamw opt(params, ao);

    llm_pretrain_result r;
    r.vocab_size = cfg.vocab_size, r.documents = docs.size();
    metrics_file metrics(out_dir + "/metrics.jsonl");
    const std::int64_t per_epoch = std::int64_t(docs.size()) / sc.batch;
    const std::int64_t warmup = train::warmup_steps(sc.steps, sc.warmup_ratio);
    const index_t H = cfg.hidden_size, V = cfg.vocab_size;
    std::vector<std::size_t> order;
    for (std::int64_t step = 1; step <= sc.steps; step++) {
        const std::int64_t e = (step - 1) / per_epoch, k = (step - 1) % per_epoch;
        if (k == 0) order = train::epoch_order(docs.size(), o.seed, std::uint64_t(e));
        std::size_t T = 0;
        for (index_t b = 0; b < sc.batch; b++) T = std::max(T, docs[order[std::size_t(k * sc.batch + b)]].size());
        const std::size_t B = std::size_t(sc.batch);
        std::vector<std::int64_t> flat(B * T, cfg.pad_token_id), labels(B * T, -100), pos(B * T);
        std::vector<std::uint8_t> mask(B * T, 0);
        double tokens = 0;
        for (std::size_t b = 0; b < B; b++) {
            const auto& d = docs[order[std::size_t(k) * B + b]];
            for (std::size_t t = 0; t < T; t++) pos[b * T + t] = std::int64_t(t);
            for (std::size_t t = 0; t < d.size(); t++) flat[b * T + t] = labels[b * T + t] = d[t], mask[b * T + t] = 1;
            tokens += double(d.size() - 1);
        }
        autograd::tape<float> tp;
        const var x = ag::reshape(&tp, model.embed(&tp, flat), {index_t(B), index_t(T), H});
        const var logits = model.forward(&tp, x, pos, mask).logits;
        const var loss = ag::cross_entropy(&tp, ag::reshape(&tp, logits, {index_t(B * T), V}),
                                           models::shifted_targets(labels, index_t(B), index_t(T)));
        tp.backward(loss);
        tower_step rec;
        rec.step = step;
        rec.loss = loss.value().to_vector()[0];
        rec.lr = train::lr_at(train::schedule::cosine, sc.lr, step - 1, sc.steps, warmup);
        rec.grad_norm = optimizer_step(params, opt, rec.lr, sc.max_grad_norm, rec.loss, step, "pretrain_llm");
        rec.tokens = tokens;
        rec.seconds = since(t0);
        metrics.append(rec);
        r.steps.push_back(rec);
        if (step % std::max<std::int64_t>(1, o.log_every) == 0 || step == sc.steps) progress(o.log, "llm", rec, sc.steps);
    }
    tok_detail::write_json(out_dir + "/config.json", llama_config_json(cfg));
    nlohmann::ordered_json gen;
    gen["bos_token_id"] = cfg.bos_token_id, gen["eos_token_id"] = cfg.eos_token_ids.at(0), gen["pad_token_id"] = cfg.pad_token_id;
    gen["transformers_version"] = "4.31.0";
    tok_detail::write_json(out_dir + "/generation_config.json", gen);
    save_safetensors(model, out_dir + "/model.safetensors");
    r.seconds = since(t0);
    return r;
}

}  // namespace aligngpt::world
