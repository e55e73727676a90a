// The backend policy, proved without a GPU: the tiny CLIP, LLaMA and AlignGPT run forward and
// backward on test::opaque (tests/support/opaque_backend.h), whose memory the host cannot read,
// and give the same bits as backend::cpu. Host transfers per forward are counted and bounded:
// model code that touched tensor memory directly would crash here, and one that copied to the host
// behind the backend's back would show in the counts. ctest label: backend.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "aligngpt/models/aligngpt.h"
#include "aligngpt/models/clip.h"
#include "support/opaque_backend.h"

namespace test_backend {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using test::opaque;

namespace {

/// Same seeded weights on any backend: every parameter U(-0.1, 0.1) by its name.
template <class M>
void init_all(M& m, std::uint64_t seed) {
    m.visit([&](auto& p) { nn::init_uniform(p, seed, 0.1f); });
}

template <class T, class B>
std::vector<T> host(const tensor<T, B>& t) {
    return t.to_vector();
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
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

models::clip_config tiny_clip() {
    models::clip_config c;
    c.vision.image_size = 28, c.vision.patch_size = 14, c.vision.hidden_size = 16, c.vision.intermediate_size = 32;
    c.vision.num_hidden_layers = 2, c.vision.num_attention_heads = 2;
    c.text.vocab_size = 50, c.text.hidden_size = 16, c.text.intermediate_size = 32, c.text.num_hidden_layers = 2;
    c.text.num_attention_heads = 2, c.text.max_position_embeddings = 8;
    c.projection_dim = 8;
    return c;
}

models::aligngpt_config tiny_aligngpt() {
    models::aligngpt_config c;
    c.mm_hidden_size = 16, c.mm_projector_type = "mlp2x_gelu", c.n_image_tokens = 4;
    c.llm.hidden_size = 32, c.llm.intermediate_size = 64, c.llm.num_hidden_layers = 2;
    c.llm.num_attention_heads = 4, c.llm.num_key_value_heads = 2, c.llm.vocab_size = 64;
    return c;
}

std::vector<float> pixel_values(index_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (index_t i = 0; i < n; i++) v[size_t(i)] = float(rng::uniform(5, 1, std::uint64_t(i), 1.f));
    return v;
}

}  // namespace

TEST_SUITE("backend") {
    TEST_CASE("backend: the opaque test backend hides its memory and counts transfers") {
        opaque dev;
        auto t = tensor<float, opaque>::from({1, 2, 3, 4, 5, 6}, {2, 3}, dev);
        CHECK(dev.is_handle(t.data()));
        CHECK(dev.from_host_calls == 1);
        t.fill(2.f);
        const auto c = t.transpose(0, 1).contiguous();  // a strided copy on the device
        CHECK(c.shape() == shape_t{3, 2});
        CHECK(c.to_vector() == std::vector<float>(6, 2.f));
        CHECK(dev.to_host_calls == 1);
        CHECK_THROWS_WITH(dev.to_host(t.data(), t.data(), 1), doctest::Contains("host target"));
    }

    TEST_CASE("backend: a 16-bit packed linear (forward and input gradient) gives backend::cpu's bits on the opaque backend") {
        opaque dev;
        const index_t M = 3, K = 20, N = 18;  // N spans a partial panel
        std::vector<bf16> w16(size_t(N * K));
        for (size_t i = 0; i < w16.size(); i++) w16[i] = bf16(float(rng::uniform(9, 2, i, 1.f)));
        const auto pw = std::make_shared<const ops::packed_weight<bf16>>(ops::packed_weight<bf16>::pack(w16.data(), N, K));
        auto ref = nn::linear<float>::make("p", K, N);
        auto dut = nn::linear<float, opaque>::make("p", K, N, true, dev);
        nn::init_uniform(ref.bias, 4, 0.5f), nn::init_uniform(dut.bias, 4, 0.5f);
        ref.packed_bf16 = pw, dut.packed_bf16 = pw;
        const auto xs = pixel_values(M * K);

        autograd::tape<float> tr;
        auto xr = autograd::variable<float>::leaf(tensor<float>::from(xs, {M, K}), true);
        auto yr = ref(&tr, xr);
        tr.backward(ag::sum(&tr, yr));
        autograd::tape<float, opaque> td;
        auto xd = autograd::variable<float, opaque>::leaf(tensor<float, opaque>::from(xs, {M, K}, dev), true);
        dev.reset_counts();
        auto yd = dut(&td, xd);
        td.backward(ag::sum(&td, yd));
        CHECK(dev.to_host_calls == 0);
        CHECK(dev.from_host_calls == 0);
        CHECK(same_bits(host(yr.value()), host(yd.value())));
        CHECK(same_bits(host(xr.grad()), host(xd.grad())));
    }

    TEST_CASE("backend: tiny CLIP forward and backward give backend::cpu's bits on the opaque backend") {
        const auto cfg = tiny_clip();
        opaque dev;
        auto ref = models::clip_model<float>::make(cfg);
        auto dut = models::clip_model<float, opaque>::make(cfg, dev);
        init_all(ref, 11), init_all(dut, 11);
        nn::set_trainable(ref, true), nn::set_trainable(dut, true);

        const auto px = pixel_values(2 * 3 * 28 * 28);
        const tensor<std::int64_t> ids = tensor<std::int64_t>::from({3, 7, 9, 49, 0, 4, 8, 6, 49, 2}, {2, 5});
        const std::vector<std::uint8_t> mask{1, 1, 1, 1, 0, 1, 1, 1, 1, 1};

        autograd::tape<float> tr;
        auto pr = autograd::variable<float>::leaf(tensor<float>::from(px, {2, 3, 28, 28}), true);
        auto lr = ref.logits_per_image(&tr, ref.cosine(&tr, ref.image_embeds(&tr, pr), ref.text_embeds(&tr, ids, mask)));
        tr.backward(ag::sum(&tr, lr));

        autograd::tape<float, opaque> td;
        auto pd = autograd::variable<float, opaque>::leaf(tensor<float, opaque>::from(px, {2, 3, 28, 28}, dev), true);
        dev.reset_counts();
        auto img = dut.image_embeds(&td, pd);
        auto txt = dut.text_embeds(&td, ids, mask);
        auto ld = dut.logits_per_image(&td, dut.cosine(&td, img, txt));
        // One transfer per forward: exp(logit_scale) is a host scalar of ag::scale.
        CHECK(dev.to_host_calls == 1);
        CHECK(dev.from_host_calls == 0);
        td.backward(ag::sum(&td, ld));
        CHECK(dev.to_host_calls == 1);  // backward reads nothing on the host
        CHECK(dev.from_host_calls == 0);
        CHECK(dev.launches > 0);

        CHECK(same_bits(host(lr.value()), host(ld.value())));
        CHECK(same_bits(host(pr.grad()), host(pd.grad())));
        check_same_grads(grads(ref), grads(dut));
    }

    TEST_CASE("backend: tiny LLaMA forward, backward and greedy decoding give backend::cpu's bits on the opaque backend") {
        auto cfg = tiny_aligngpt().llm;
        opaque dev;
        models::llama_model<float> ref(cfg);
        models::llama_model<float, opaque> dut(cfg, dev);
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
        auto [lr, loss_r] = run(ref, tr);
        tr.backward(loss_r);

        autograd::tape<float, opaque> td;
        dev.reset_counts();
        auto [ld, loss_d] = run(dut, td);
        CHECK(dev.to_host_calls == 0);  // a forward reads nothing back: ids and positions are host arguments
        CHECK(dev.from_host_calls == 0);
        td.backward(loss_d);
        CHECK(dev.to_host_calls == 0);
        CHECK(dev.from_host_calls == 0);

        CHECK(same_bits(host(lr.value()), host(ld.value())));
        CHECK(same_bits(host(loss_r.value()), host(loss_d.value())));
        check_same_grads(grads(ref), grads(dut));

        dev.reset_counts();
        const auto gr = ref.generate({1, 5, 9}, {6});
        const auto gd = dut.generate({1, 5, 9}, {6});
        CHECK(gr == gd);
        CHECK(dev.to_host_calls == index_t(gd.size()));  // one logits row per token, for the argmax
        CHECK(dev.from_host_calls == 0);
    }

    TEST_CASE("backend: tiny AlignGPT stage 1 and stage 2 give backend::cpu's bits on the opaque backend") {
        const auto cfg = tiny_aligngpt();
        opaque dev;
        models::aligngpt_model<float> ref(cfg);
        models::aligngpt_model<float, opaque> dut(cfg, dev);
        init_all(ref, 21), init_all(dut, 21);
        const auto feats = pixel_values(2 * 4 * 16);
        const std::vector<models::sample> batch{
            {{1, models::image_token_index, 40, 41, 13}, {models::ignore_index, models::ignore_index, 40, 41, 13}, 5},
            {{1, 9, models::image_token_index, 42, 43, 44, 13},
             {models::ignore_index, 9, models::ignore_index, 42, 43, 44, 13},
             2}};

        for (const auto st : {models::stage::pretrain, models::stage::finetune}) {
            INFO("stage " << (st == models::stage::pretrain ? "pretrain" : "finetune"));
            ref.set_trainable_for(st), dut.set_trainable_for(st);
            ref.visit([](auto& p) { p.zero_grad(); }), dut.visit([](auto& p) { p.zero_grad(); });

            autograd::tape<float> tr;
            auto fr = autograd::variable<float>::leaf(tensor<float>::from(feats, {2, 4, 16}));
            auto outr = ref.forward(&tr, batch, fr, st);
            tr.backward(outr.loss);

            autograd::tape<float, opaque> td;
            auto fd = autograd::variable<float, opaque>::leaf(tensor<float, opaque>::from(feats, {2, 4, 16}, dev));
            dev.reset_counts();
            auto outd = dut.forward(&td, batch, fd, st);
            CHECK(dev.to_host_calls == 0);
            CHECK(dev.from_host_calls == 0);
            td.backward(outd.loss);
            CHECK(dev.to_host_calls == 0);
            CHECK(dev.from_host_calls == 0);

            CHECK(same_bits(host(outr.logits.value()), host(outd.logits.value())));
            CHECK(same_bits(host(outr.loss.value()), host(outd.loss.value())));
            if (st == models::stage::finetune) CHECK(same_bits(host(outr.gate.weights.value()), host(outd.gate.weights.value())));
            check_same_grads(grads(ref), grads(dut));
        }

        const models::sample q{{1, 20, 21, models::image_token_index, 22, 23}, {}, -1};
        auto fr = autograd::variable<float>::leaf(
            tensor<float>::from(std::vector<float>(feats.begin(), feats.begin() + 64), {1, 4, 16}));
        auto fd = autograd::variable<float, opaque>::leaf(
            tensor<float, opaque>::from(std::vector<float>(feats.begin(), feats.begin() + 64), {1, 4, 16}, dev));
        dev.reset_counts();
        const auto gd = dut.generate(q, fd, {5});
        CHECK(ref.generate(q, fr, {5}) == gd);
        CHECK(dev.to_host_calls == index_t(gd.size()));
    }

}  // TEST_SUITE("backend")

}  // namespace test_backend
