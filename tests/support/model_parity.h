#pragma once
// Whole-model parity on another backend: the tiny CLIP, LLaMA and AlignGPT built on `Backend` run
// forward, backward and greedy decoding and must give backend::cpu's bits exactly (outputs, losses,
// every parameter's gradient, generated ids), a 16-bit packed linear gives the CPU's bits, and a model directory of tests/golden/model_dirs
// loaded onto `Backend` traces the CPU's intermediates. Shared by tests/test_backend.cpp
// (test::opaque) and tests/cuda/test_cuda_backend.cpp (backend::cuda); each checks its own transfer
// counts, which these functions return. Tolerance: none, bit equality.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "aligngpt/io/safetensors.h"
#include "aligngpt/models/aligngpt.h"
#include "aligngpt/models/clip.h"
#include "aligngpt/pretrained.h"
#include "aligngpt/trace.h"
#include "support/bit_compare.h"

namespace aligngpt::test::parity {

/// Host transfers and launches seen by a backend since its last reset.
struct counts {
    index_t to_host = 0, from_host = 0, launches = 0;
};

/// Same seeded weights on any backend: every parameter U(-0.1, 0.1) by its name.
template <class M>
void init_all(M& m, std::uint64_t seed) {
    m.visit([&](auto& p) { nn::init_uniform(p, seed, 0.1f); });
}

/// Every parameter's gradient, by name, in visit order (an absent gradient is empty).
template <class M>
std::vector<std::pair<std::string, std::vector<float>>> grads(M& m) {
    std::vector<std::pair<std::string, std::vector<float>>> g;
    m.visit([&](auto& p) { g.emplace_back(p.name(), p.grad().defined() ? p.grad().to_vector() : std::vector<float>{}); });
    return g;
}

template <class A, class B>
void check_same_grads(const A& ga, const B& gb) {
    REQUIRE(ga.size() == gb.size());
    for (size_t i = 0; i < ga.size(); i++) {
        INFO(ga[i].first);
        CHECK(ga[i].first == gb[i].first);
        CHECK(same_bits(ga[i].second, gb[i].second));
    }
}

inline models::clip_config tiny_clip() {
    models::clip_config c;
    c.vision.image_size = 28, c.vision.patch_size = 14, c.vision.hidden_size = 16, c.vision.intermediate_size = 32;
    c.vision.num_hidden_layers = 2, c.vision.num_attention_heads = 2;
    c.text.vocab_size = 50, c.text.hidden_size = 16, c.text.intermediate_size = 32, c.text.num_hidden_layers = 2;
    c.text.num_attention_heads = 2, c.text.max_position_embeddings = 8;
    c.projection_dim = 8;
    return c;
}

inline models::aligngpt_config tiny_aligngpt() {
    models::aligngpt_config c;
    c.mm_hidden_size = 16, c.mm_projector_type = "mlp2x_gelu", c.n_image_tokens = 4;
    c.llm.hidden_size = 32, c.llm.intermediate_size = 64, c.llm.num_hidden_layers = 2;
    c.llm.num_attention_heads = 4, c.llm.num_key_value_heads = 2, c.llm.vocab_size = 64;
    return c;
}

inline std::vector<float> pixel_values(index_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (index_t i = 0; i < n; i++) v[size_t(i)] = float(rng::uniform(5, 1, std::uint64_t(i), 1.f));
    return v;
}

struct clip_counts {
    counts forward, backward;  ///< backward: since the start of the forward
};

/// The tiny CLIP's logits_per_image and the gradients of their sum. `probe.reset()` and
/// `probe.now()` read the backend's counters.
template <class Backend, class Probe>
clip_counts clip(const Backend& dev, Probe probe) {
    const auto cfg = tiny_clip();
    auto ref = models::clip_model<float>::make(cfg);
    auto dut = models::clip_model<float, Backend>::make(cfg, dev);
    init_all(ref, 11), init_all(dut, 11);
    nn::set_trainable(ref, true), nn::set_trainable(dut, true);

    const auto px = pixel_values(2 * 3 * 28 * 28);
    const tensor<std::int64_t> ids = tensor<std::int64_t>::from({3, 7, 9, 49, 0, 4, 8, 6, 49, 2}, {2, 5});
    const std::vector<std::uint8_t> mask{1, 1, 1, 1, 0, 1, 1, 1, 1, 1};

    autograd::tape<float> tr;
    auto pr = autograd::variable<float>::leaf(tensor<float>::from(px, {2, 3, 28, 28}), true);
    auto lr = ref.logits_per_image(&tr, ref.cosine(&tr, ref.image_embeds(&tr, pr), ref.text_embeds(&tr, ids, mask)));
    tr.backward(ag::sum(&tr, lr));

    autograd::tape<float, Backend> td;
    auto pd = autograd::variable<float, Backend>::leaf(tensor<float, Backend>::from(px, {2, 3, 28, 28}, dev), true);
    clip_counts c;
    probe.reset();
    auto img = dut.image_embeds(&td, pd);
    auto txt = dut.text_embeds(&td, ids, mask);
    auto ld = dut.logits_per_image(&td, dut.cosine(&td, img, txt));
    c.forward = probe.now();
    td.backward(ag::sum(&td, ld));
    c.backward = probe.now();

    CHECK(same_bits(lr.value().to_vector(), ld.value().to_vector()));
    CHECK(same_bits(pr.grad().to_vector(), pd.grad().to_vector()));
    check_same_grads(grads(ref), grads(dut));
    return c;
}

struct llama_counts {
    counts forward, backward, generate;
    index_t generated = 0;
};

/// The tiny LLaMA: logits and loss of two sequences, all gradients, then greedy decoding.
template <class Backend, class Probe>
llama_counts llama(const Backend& dev, Probe probe) {
    auto cfg = tiny_aligngpt().llm;
    models::llama_model<float> ref(cfg);
    models::llama_model<float, Backend> dut(cfg, dev);
    ref.init(3), dut.init(3);
    nn::set_trainable(ref, true), nn::set_trainable(dut, true);

    const std::vector<std::int64_t> ids{1, 5, 9, 33, 2, 7, 1, 63, 12, 40};
    const std::vector<std::int64_t> pos{0, 1, 2, 3, 4, 0, 1, 2, 3, 4};
    const auto run = [&](const auto& m, auto& tp) {
        using V = std::remove_cvref_t<decltype(m.embed(nullptr, ids))>;
        const V x = ag::reshape(&tp, m.embed(&tp, ids), {2, 5, cfg.hidden_size});
        const V logits = m.forward(&tp, x, pos).logits;
        return std::pair{logits, ag::cross_entropy(&tp, logits, models::shifted_targets(ids, 2, 5))};
    };
    autograd::tape<float> tr;
    const auto r = run(ref, tr);
    tr.backward(r.second);

    llama_counts c;
    autograd::tape<float, Backend> td;
    probe.reset();
    const auto d = run(dut, td);
    c.forward = probe.now();
    td.backward(d.second);
    c.backward = probe.now();

    CHECK(same_bits(r.first.value().to_vector(), d.first.value().to_vector()));
    CHECK(same_bits(r.second.value().to_vector(), d.second.value().to_vector()));
    check_same_grads(grads(ref), grads(dut));

    probe.reset();
    const auto gd = dut.generate({1, 5, 9}, {6});
    c.generate = probe.now();
    c.generated = index_t(gd.size());
    CHECK(ref.generate({1, 5, 9}, {6}) == gd);
    return c;
}

struct aligngpt_counts {
    counts forward[2], backward[2], generate;  ///< [0] stage 1, [1] stage 2
    index_t generated = 0;
};

/// The tiny AlignGPT: stage 1 and stage 2 loss, logits, gate weights and gradients, then greedy
/// decoding of a question about an image.
template <class Backend, class Probe>
aligngpt_counts aligngpt(const Backend& dev, Probe probe) {
    const auto cfg = tiny_aligngpt();
    models::aligngpt_model<float> ref(cfg);
    models::aligngpt_model<float, Backend> dut(cfg, dev);
    init_all(ref, 21), init_all(dut, 21);
    const auto feats = pixel_values(2 * 4 * 16);
    const std::vector<models::sample> batch{
        {{1, models::image_token_index, 40, 41, 13}, {models::ignore_index, models::ignore_index, 40, 41, 13}, 5},
        {{1, 9, models::image_token_index, 42, 43, 44, 13}, {models::ignore_index, 9, models::ignore_index, 42, 43, 44, 13}, 2}};

    aligngpt_counts c;
    for (const auto st : {models::stage::pretrain, models::stage::finetune}) {
        INFO("stage " << (st == models::stage::pretrain ? "pretrain" : "finetune"));
        const int s = st == models::stage::pretrain ? 0 : 1;
        ref.set_trainable_for(st), dut.set_trainable_for(st);
        ref.visit([](auto& p) { p.zero_grad(); }), dut.visit([](auto& p) { p.zero_grad(); });

        autograd::tape<float> tr;
        auto fr = autograd::variable<float>::leaf(tensor<float>::from(feats, {2, 4, 16}));
        auto outr = ref.forward(&tr, batch, fr, st);
        tr.backward(outr.loss);

        autograd::tape<float, Backend> td;
        auto fd = autograd::variable<float, Backend>::leaf(tensor<float, Backend>::from(feats, {2, 4, 16}, dev));
        probe.reset();
        auto outd = dut.forward(&td, batch, fd, st);
        c.forward[s] = probe.now();
        td.backward(outd.loss);
        c.backward[s] = probe.now();

        CHECK(same_bits(outr.logits.value().to_vector(), outd.logits.value().to_vector()));
        CHECK(same_bits(outr.loss.value().to_vector(), outd.loss.value().to_vector()));
        if (st == models::stage::finetune)
            CHECK(same_bits(outr.gate.weights.value().to_vector(), outd.gate.weights.value().to_vector()));
        check_same_grads(grads(ref), grads(dut));
    }

    const models::sample q{{1, 20, 21, models::image_token_index, 22, 23}, {}, -1};
    const std::vector<float> one(feats.begin(), feats.begin() + 64);
    auto fr = autograd::variable<float>::leaf(tensor<float>::from(one, {1, 4, 16}));
    auto fd = autograd::variable<float, Backend>::leaf(tensor<float, Backend>::from(one, {1, 4, 16}, dev));
    probe.reset();
    const auto gd = dut.generate(q, fd, {5});
    c.generate = probe.now();
    c.generated = index_t(gd.size());
    CHECK(ref.generate(q, fr, {5}) == gd);
    return c;
}

/// A linear layer with 16-bit packed weights (S = bf16 or f16; N spans a partial panel), forward
/// and input gradient, at M = 1 (the CPU's GEMV path) and M = 3, each run twice on `dev`: outputs
/// and gradients have the CPU's bits. Returns the transfers of the first and of the second run.
template <class S, class Backend, class Probe>
std::pair<counts, counts> packed_linear(const Backend& dev, Probe probe) {
    const index_t K = 20, N = 40;
    std::vector<S> w16(size_t(N * K));
    for (size_t i = 0; i < w16.size(); i++) w16[i] = narrow<S>(float(rng::uniform(9, 2, i, 1.f)));
    const auto pw = std::make_shared<const ops::packed_weight<S>>(ops::packed_weight<S>::pack(w16.data(), N, K));
    auto ref = nn::linear<float>::make("p", K, N);
    auto dut = nn::linear<float, Backend>::make("p", K, N, true, dev);
    nn::init_uniform(ref.bias, 4, 0.5f), nn::init_uniform(dut.bias, 4, 0.5f);
    if constexpr (std::is_same_v<S, bf16>)
        ref.packed_bf16 = pw, dut.packed_bf16 = pw;
    else
        ref.packed_f16 = pw, dut.packed_f16 = pw;
    std::pair<counts, counts> c;
    for (int run = 0; run < 2; run++)
        for (const index_t M : {index_t(1), index_t(3)}) {
            INFO("run " << run << ", M " << M);
            const auto xs = pixel_values(M * K);
            autograd::tape<float> tr;
            auto xr = autograd::variable<float>::leaf(tensor<float>::from(xs, {M, K}), true);
            auto yr = ref(&tr, xr);
            tr.backward(ag::sum(&tr, yr));
            autograd::tape<float, Backend> td;
            auto xd = autograd::variable<float, Backend>::leaf(tensor<float, Backend>::from(xs, {M, K}, dev), true);
            probe.reset();
            auto yd = dut(&td, xd);
            td.backward(ag::sum(&td, yd));
            const counts now = probe.now();
            counts& acc = run == 0 ? c.first : c.second;
            acc.to_host += now.to_host, acc.from_host += now.from_host, acc.launches += now.launches;
            CHECK(same_bits(yr.value().to_vector(), yd.value().to_vector()));
            CHECK(same_bits(xr.grad().to_vector(), xd.grad().to_vector()));
        }
    return c;
}

/// The published-layout directory tests/golden/model_dirs/aligngpt_st (with its CLIP tower) loaded
/// by pretrained::load_aligngpt onto `dev` and onto the CPU, one prefill of the golden pixels each:
/// every traced intermediate (trace.h, what `aligngpt trace` writes) has the same name, shape and
/// bits. Returns the number of intermediates compared.
template <class Backend>
std::size_t model_dir_trace(const Backend& dev) {
    const std::string dirs = std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs";
    pretrained::load_options opt;
    opt.quiet = true;
    opt.vision_tower = dirs + "/clip_vision";
    const auto ref = pretrained::load_aligngpt<float>(dirs + "/aligngpt_st", opt);
    const auto dut = pretrained::load_aligngpt<float, Backend>(dirs + "/aligngpt_st", opt, dev);
    tensor<float> px = io::safetensors_file::open(dirs + "/pixels.safetensors").tensor_as<float>("pixel_values");
    px = px.reshape({1, 3, px.size(-2), px.size(-1)});
    const std::vector<std::int64_t> ids = {1, 5, 9, models::image_token_index, 7, 3, 11};
    trace_sink<float> sr;
    trace_sink<float, Backend> sd;
    ref.model->forward_pixels(nullptr, {models::sample{ids}}, *ref.vision, autograd::variable<float>::leaf(px),
                              models::stage::inference, {}, &sr);
    dut.model->forward_pixels(
        nullptr, {models::sample{ids}}, *dut.vision,
        autograd::variable<float, Backend>::leaf(tensor<float, Backend>::from(px.to_vector(), px.shape(), dev)),
        models::stage::inference, {}, &sd);
    REQUIRE(sr.entries.size() == sd.entries.size());
    for (std::size_t i = 0; i < sr.entries.size(); i++) {
        INFO(sr.entries[i].first);
        CHECK(sr.entries[i].first == sd.entries[i].first);
        CHECK(sr.entries[i].second.shape() == sd.entries[i].second.shape());
        CHECK(same_bits(sr.entries[i].second.to_vector(), sd.entries[i].second.to_vector()));
    }
    return sr.entries.size();
}

}  // namespace aligngpt::test::parity
