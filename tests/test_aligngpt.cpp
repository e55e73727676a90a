// models/align.h and models/aligngpt.h against the torch reference forward of
// tests/tools/golden/models_aligngpt.py (AlignGPT's assembly + the real transformers 4.31
// LlamaForCausalLM, fp32). Weights are hashfill(<HF key>) on both sides; fill() mirrors build().
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "aligngpt/autograd/grad_check.h"
#include "aligngpt/models/aligngpt.h"
#include "support/golden.h"

namespace test_aligngpt {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using namespace aligngpt::models;
using var = autograd::variable<float>;

namespace {

constexpr index_t H = 64, DV = 32;

/// models_llama.fill_value for the LLM; 1/sqrt(in) for projector and gate; sqrt(6/(H+8)) indicators.
void fill(var& p) {
    const std::string& k = p.name();
    const bool norm = k.size() >= 11 && k.compare(k.size() - 11, 11, "norm.weight") == 0;
    const bool mm = k.rfind("mm_projector.", 0) == 0 || k.rfind("gated_weight_layer.", 0) == 0;
    double a = p.value().dim() == 2 ? 1.0 / std::pow(double(p.size(1)), 0.5) : 0;
    if (norm)
        a = 0.2;
    else if (k == "model.embed_tokens.weight")
        a = 1.0;
    else if (k == "lm_head.weight")
        a = 3.0 / std::pow(double(H), 0.5);
    else if (k == "align_indicators.indicator_embs")
        a = std::pow(6.0 / double(H + 8), 0.5);
    else if (mm && p.value().dim() == 1) {  // a bias: the bound of its weight
        static const std::map<std::string, double> fan_in{{"mm_projector.0.bias", DV},
                                                          {"mm_projector.2.bias", H},
                                                          {"gated_weight_layer.mlp.0.bias", 576},
                                                          {"gated_weight_layer.mlp.2.bias", 256}};
        a = 1.0 / std::pow(fan_in.at(k), 0.5);
    }
    rng::fill_uniform(p.value().data(), p.value().numel(), 0, rng::fnv1a64(k), float(a));
    if (norm)
        for (index_t i = 0; i < p.value().numel(); i++) p.value().data()[i] += 1.0f;
}

aligngpt_model<float> make_model(index_t max_length) {
    aligngpt_config c;
    c.llm = llama_config::load(std::string(ALIGNGPT_GOLDEN_DIR) + "/llama_tiny/config.json");
    c.llm.vocab_size = 64;
    c.mm_hidden_size = DV;
    c.tokenizer_model_max_length = max_length;
    aligngpt_model<float> m(c);
    m.visit([](var& p) { fill(p); });
    return m;
}

std::vector<sample> read_samples(const golden::fixture& fx) {
    std::vector<sample> s;
    for (int i = 0; fx.has("ids" + std::to_string(i)); i++) {
        const auto n = std::to_string(i);
        s.push_back({fx.get<std::int64_t>("ids" + n), fx.get<std::int64_t>("labels" + n),
                     fx.has("level" + n) ? fx.get<std::int64_t>("level" + n)[0] : -1});
    }
    return s;
}

var features(index_t n) { return var::leaf(golden::hashfill("aligngpt.features", {n, 576, DV}, 1.0f)); }

/// Rows `probe` of a [B, S, C] tensor (the fixture stores [B, S, C] tensors at those rows only).
std::vector<float> probe_rows(const tensor<float>& t, const std::vector<std::int64_t>& probe) {
    std::vector<float> out;
    const index_t S = t.size(1), C = t.size(2);
    for (index_t b = 0; b < t.size(0); b++)
        for (auto r : probe) out.insert(out.end(), t.data() + (b * S + r) * C, t.data() + (b * S + r + 1) * C);
    return out;
}

// fp32 parity with torch: different summation orders only (see test_llama.cpp). Every intermediate
// and the gradients must be within torch.testing.assert_close's fp32 defaults (ratio <= 1); the
// measured worst ratio is printed.
void check_against(const golden::fixture& fx, const aligngpt_output<float>& out, const trace_sink<float>& sink, double limit) {
    const auto probe = fx.get<std::int64_t>("probe");
    for (const auto& entry : sink.entries) {
        const std::string& name = entry.first;  // (no structured binding: doctest macros capture it)
        const tensor<float>& t = entry.second;
        if (name == "projector.out") continue;  // the fixtures record what follows the projector
        REQUIRE_MESSAGE(fx.has(name), "fixture lacks " << name);
        const bool rows = t.dim() == 3 && t.size(1) == out.batch.S;
        const auto ours = rows ? probe_rows(t, probe) : t.to_vector();
        const double r = golden::close_ratio(ours, fx.get(name), 1.3e-6, 1e-5);
        MESSAGE(name << ": close_ratio " << r << ", max abs diff " << golden::max_abs_diff(ours, fx.get(name)));
        CHECK(r <= limit);
    }
    const double dl = std::abs(double(out.loss.value().data()[0]) - double(fx.get("loss")[0]));
    MESSAGE("loss " << out.loss.value().data()[0] << " vs " << fx.get("loss")[0] << ", diff " << dl);
    CHECK(dl <= 1e-5 + 1.3e-6 * std::abs(fx.get("loss")[0]));
}

template <class M>
void check_grads(M& m, const golden::fixture& fx, double limit) {
    int n = 0;
    m.visit([&](var& p) {
        if (!fx.has("grad." + p.name())) return;
        n++;
        REQUIRE_MESSAGE(p.grad().defined(), "no gradient reached " << p.name());
        const double r = golden::close_ratio(p.grad().to_vector(), fx.get("grad." + p.name()), 1.3e-6, 1e-5);
        MESSAGE("grad " << p.name() << ": close_ratio " << r);
        CHECK(r <= limit);
    });
    CHECK(n > 0);
}

}  // namespace

TEST_CASE("aligngpt: prepare_batch follows docs/model.md (indicator after BOS, 576 image slots, shifts, padding)") {
    const std::vector<sample> s{{{1, 5, image_token_index, 7, 8}, {-100, 5, -100, 7, 8}},
                                {{1, 9, 10}, {-100, 9, 10}},
                                {{1, image_token_index, 11}, {-100, -100, 11}}};
    const auto p = prepare_batch(s, 0);
    CHECK(p.B == 3);
    CHECK(p.S == 4 + 576 + 1);  // longest image row (4 text + 576) + the indicator
    CHECK(p.n_text == 4 + 3 + 2);
    CHECK(p.image_rows == std::vector<index_t>{0, 2});
    const index_t S = p.S, ind0 = p.n_text + 2 * 576, img0 = p.n_text;
    // row 0: BOS, IND, 5, IMG x576, 7, 8
    CHECK(p.rows[0] == 0);
    CHECK(p.rows[1] == ind0);
    CHECK(p.rows[2] == 1);
    CHECK(p.rows[3] == img0);
    CHECK(p.rows[3 + 575] == img0 + 575);
    CHECK(p.rows[579] == 2);
    CHECK(p.rows[580] == 3);
    CHECK(p.labels[0] == -100);
    CHECK(p.labels[1] == -100);
    CHECK(p.labels[2] == 5);
    CHECK(p.labels[3] == -100);
    CHECK(p.labels[580] == 8);
    CHECK(p.positions[580] == 580);
    // row 1 (text-only): no indicator, positions 0..2, padded with the zero row
    CHECK(p.rows[size_t(S)] == 4);
    CHECK(p.rows[size_t(S + 2)] == 6);
    CHECK(p.rows[size_t(S + 3)] == p.zero_row());
    CHECK(p.mask[size_t(S + 2)] == 1);
    CHECK(p.mask[size_t(S + 3)] == 0);
    CHECK(p.labels[size_t(S + 1)] == 9);
    // row 2: BOS, IND(1), IMG(k=1) x576, 11, then padding
    CHECK(p.rows[size_t(2 * S + 1)] == ind0 + 1);
    CHECK(p.rows[size_t(2 * S + 2)] == img0 + 576);
    CHECK(p.rows[size_t(2 * S + 578)] == 8);
    CHECK(p.mask[size_t(2 * S + 578)] == 1);
    CHECK(p.mask[size_t(2 * S + 579)] == 0);
    // gate text T[:, 1:]: row 0 = {5, 7, 8}, row 2 = {11, pad, pad}
    CHECK(p.Tt == 3);
    CHECK(p.gate_rows == std::vector<std::int64_t>{1, 2, 3, 8, p.zero_row(), p.zero_row()});
    CHECK(p.gate_mask == std::vector<std::uint8_t>{1, 1, 1, 1, 0, 0});

    const auto t = prepare_batch(s, 300);  // image rows cut to 299 before the indicator
    CHECK(t.S == 300);
    CHECK(t.labels[299] == -100);  // an image slot survived the cut, the text after it did not

    // mixed batch: a text-only row longer than the image rows is cut to S = max_len + 1 (docs/model.md §7.4)
    std::vector<std::int64_t> long_text(700, 5);
    long_text[0] = 1;
    const auto mixed = prepare_batch({{{1, image_token_index}}, {long_text}}, 0);
    CHECK(mixed.S == 578);
    CHECK(mixed.mask[size_t(2 * mixed.S - 1)] == 1);
    CHECK(mixed.positions[size_t(2 * mixed.S - 1)] == 577);

    CHECK_THROWS_AS(prepare_batch({{{1, image_token_index, image_token_index}, {}}}, 0), error);
    CHECK_THROWS_AS(prepare_batch({{{1, 2, 3}, {1, 2}}}, 0), error);
}

TEST_CASE("aligngpt: prepare_batch's segments read as the paper's figure; the tower's patch count sets the image width") {
    // 4 image tokens per image (a 28 px tower of 14 px patches): text, indicator, text, image, text.
    const auto p = prepare_batch({{{1, 5, image_token_index, 7, 8}, {-100, 5, -100, 7, 8}}}, 0, 4);
    using K = segment::kind_t;
    const auto& seg = p.segments.at(0);
    REQUIRE(seg.size() == 5);
    const std::vector<K> kinds{seg[0].kind, seg[1].kind, seg[2].kind, seg[3].kind, seg[4].kind};
    CHECK(kinds == std::vector<K>{K::text, K::indicator, K::text, K::image, K::text});
    CHECK(seg[1].first == p.indicator_row(0));
    CHECK(seg[3].first == p.image_row(0));
    CHECK(seg[3].length == 4);
    CHECK(p.S == 9);  // BOS, indicator, 5, 4 image rows, 7, 8 = 9 rows
    CHECK(p.rows == std::vector<std::int64_t>{0, p.indicator_row(0), 1, 4, 5, 6, 7, 2, 3});
    CHECK(p.labels == std::vector<std::int64_t>{-100, -100, 5, -100, -100, -100, -100, 7, 8});
    // The placeholder first: the indicator still follows the first row (here an image row).
    const auto q = prepare_batch({{{image_token_index, 7}}}, 0, 4);
    CHECK(q.rows == std::vector<std::int64_t>{1, q.indicator_row(0), 2, 3, 4, 0});
    CHECK(q.segments.at(0).size() == 4);
}

TEST_CASE("aligngpt stage 1 (pretrain, plain template, levels 3 and 7, truncation at 590) matches the reference") {
    const auto fx = golden::load("aligngpt_stage1");
    auto m = make_model(590);
    m.set_trainable_for(stage::pretrain);
    autograd::tape<float> tp;
    trace_sink<float> sink;
    const auto out = m.forward(&tp, read_samples(fx), features(2), stage::pretrain, {}, &sink);
    check_against(fx, out, sink, 1.0);
    tp.backward(out.loss);
    check_grads(m, fx, 1.0);
    CHECK_FALSE(m.llm.embed_tokens.weight.grad().defined());  // the LLM is frozen in stage 1
}

TEST_CASE("aligngpt stage 2 (finetune, gate mix, v1 masks, image + text-only sample) matches the reference") {
    const auto fx = golden::load("aligngpt_stage2");
    auto m = make_model(2048);
    nn::set_trainable(m, true);
    autograd::tape<float> tp;
    trace_sink<float> sink;
    const auto out = m.forward(&tp, read_samples(fx), features(1), stage::finetune, {}, &sink);
    check_against(fx, out, sink, 1.0);
    tp.backward(out.loss);
    check_grads(m, fx, 1.0);
}

TEST_CASE("aligngpt inference: greedy generation with the KV cache (gate and indicator at prefill only)") {
    const auto fx = golden::load("aligngpt_stage2");
    const auto m = make_model(2048);
    for (int i = 0; i < 2; i++) {
        const auto prompt = fx.get<std::int64_t>("prompt" + std::to_string(i));
        const bool img = std::count(prompt.begin(), prompt.end(), image_token_index) > 0;
        const auto gen = m.generate({prompt}, img ? features(1) : var{}, {24});
        CHECK_MESSAGE(gen == fx.get<std::int64_t>("generated" + std::to_string(i)), "prompt " << i);
    }
    const auto pre = m.forward(nullptr, {{fx.get<std::int64_t>("prompt0")}}, features(1), stage::inference);
    CHECK(golden::close_ratio(pre.gate.weights.value().to_vector(), fx.get("infer.gate.weights"), 1.3e-6, 1e-5) <= 1);
}

TEST_CASE("align: indicator init, lookup, lin_comb and the ablation modes; text-only batches leave the gate untouched") {
    auto ind = align_indicator<float>::make(H);
    ind.init(0);
    const auto ref = golden::hashfill("align_indicators.indicator_embs", {8, H}, float(std::sqrt(6.0 / (H + 8))));
    CHECK(ind.indicator_embs.value().to_vector() == ref.to_vector());
    const float* E = ref.data();

    const auto w = var::leaf(tensor<float>::from({0.1f, 0.2f, 0.05f, 0.15f, 0.1f, 0.3f, 0.1f}, {1, 7}));
    const auto g = ind.lin_comb(nullptr, w).value();
    const auto l = ind.local(nullptr, w).value();
    const auto f = ind.ungated(nullptr, align_mode::fixed_level, 2, 4).value();
    const auto gl = ind.ungated(nullptr, align_mode::global_only, 1).value();
    const auto mn = ind.ungated(nullptr, align_mode::mean, 1).value();
    for (index_t h = 0; h < H; h++) {
        double acc = 0, mean = 0;
        for (int i = 0; i < 7; i++) acc += double(w.value().data()[i]) * E[i * H + h], mean += E[i * H + h];
        CHECK(l.data()[h] == doctest::Approx(acc).epsilon(1e-6));
        CHECK(g.data()[h] == l.data()[h] + E[7 * H + h]);
        CHECK(f.data()[h] == E[4 * H + h]);
        CHECK(f.data()[H + h] == E[4 * H + h]);
        CHECK(gl.data()[h] == E[7 * H + h]);
        CHECK(mn.data()[h] == doctest::Approx(mean / 7 + E[7 * H + h]).epsilon(1e-6));
    }

    auto m = make_model(2048);
    m.set_trainable_for(stage::finetune);
    CHECK_FALSE(m.align_indicators.indicator_embs.requires_grad());
    CHECK(m.gated_weight.fc2.bias.requires_grad());
    m.align_indicators.indicator_embs.set_requires_grad(true);  // even so, nothing reaches it
    autograd::tape<float> tp;
    const auto out = m.forward(&tp, {{{1, 5, 6, 7}, {-100, 5, 6, 7}}}, var{}, stage::finetune);
    tp.backward(out.loss);
    CHECK(m.llm.embed_tokens.weight.grad().defined());
    CHECK_FALSE(m.gated_weight.fc1.weight.grad().defined());
    CHECK_FALSE(m.align_indicators.indicator_embs.grad().defined());

    const alignment level2{align_mode::fixed_level, 2};  // the paper's fixed-level ablation at inference
    const auto fx = m.forward(nullptr, {{{1, image_token_index, 9}}}, features(1), stage::inference, level2);
    for (index_t h = 0; h < H; h++)
        CHECK(fx.inputs_embeds.value().data()[H + h] == m.align_indicators.indicator_embs.value().data()[2 * H + h]);

    struct fake_tower {  // stands in for clip_vision_model::features (frozen, run without recording)
        var features(autograd::tape<float>* tp, const var& pixels, trace_sink<float>*) const {
            CHECK(tp == nullptr);
            return ag::scale<float, backend::cpu>(tp, pixels, 1.0f);
        }
    };
    const auto fp = m.forward_pixels(nullptr, {{{1, image_token_index, 9}}}, fake_tower{}, features(1), stage::inference, level2);
    CHECK(fp.logits.value().to_vector() == fx.logits.value().to_vector());
}

TEST_CASE("align: gate ops, gate MLP and lin_comb backward match central differences (double)") {
    using dvar = autograd::variable<double>;
    const auto leaf = [](const std::string& name, shape_t shape, float a) {
        const auto f = golden::hashfill(name, shape, a);
        tensor<double> t(f.shape());
        for (index_t i = 0; i < f.numel(); i++) t.data()[i] = double(f.data()[i]);
        return dvar::leaf(t, true, name);
    };
    const std::vector<std::uint8_t> mask{1, 1, 0, 1, 0, 0};  // [2, 3]: 2 and 1 real text tokens
    const auto img = leaf("gc.img", {2, 576, 3}, 1.0f), text = leaf("gc.text", {2, 3, 3}, 1.0f);
    const autograd::op_under_test<double> dots = [&](autograd::tape<double>* tp, const std::vector<dvar>& x) {
        return ag::batched_matvec(tp, x[0], ag::masked_mean(tp, x[1], mask, 1e-8));
    };
    CHECK(autograd::grad_check(dots, {img, text}) <= 1e-7);

    auto gate = gated_weight_layer<double>::make();
    gate.visit([](dvar& p) { rng::fill_uniform(p.value().data(), p.value().numel(), 3, rng::fnv1a64(p.name()), 0.2f); });
    auto ind = align_indicator<double>::make(3);
    ind.init(4);
    const autograd::op_under_test<double> mix = [&](autograd::tape<double>* tp, const std::vector<dvar>& x) {
        return ind.lin_comb(tp, gate(tp, img, x[0], mask).weights);
    };
    CHECK(autograd::grad_check(mix, {text}) <= 1e-7);
    const autograd::op_under_test<double> mean = [&](autograd::tape<double>* tp, const std::vector<dvar>& x) {
        align_indicator<double> e{x[0]};
        const auto m = e.ungated(tp, align_mode::mean, 2);
        const auto l = e.lookup(tp, {3, 3});
        return ag::add(tp, m, l);
    };
    CHECK(autograd::grad_check(mean, {ind.indicator_embs}) <= 1e-7);
}

TEST_CASE("aligngpt_config: AlignGPT config.json fields, errors naming file and field") {
    nlohmann::json j = {{"hidden_size", 64},
                        {"intermediate_size", 96},
                        {"num_hidden_layers", 2},
                        {"num_attention_heads", 4},
                        {"vocab_size", 64},
                        {"mm_hidden_size", 32},
                        {"mm_projector_type", "mlp2x_gelu"},
                        {"tokenizer_model_max_length", 2048},
                        {"tokenizer_padding_side", "right"}};
    const auto c = aligngpt_config::from_json(j, "a.json");
    CHECK(c.mm_hidden_size == 32);
    CHECK(c.tokenizer_model_max_length == 2048);
    aligngpt_model<float> m(c);
    CHECK(nn::parameter_count(m.gated_weight) == 149511);  // docs/model.md §5.3
    auto bad = j;
    bad["tokenizer_padding_side"] = "left";
    CHECK_THROWS_WITH_AS(aligngpt_config::from_json(bad, "a.json"), doctest::Contains("tokenizer_padding_side"), error);
    bad = j, bad.erase("mm_hidden_size");
    CHECK_THROWS_WITH_AS(aligngpt_config::from_json(bad, "a.json"), doctest::Contains("a.json"), error);
}

TEST_CASE("repro: aligngpt stage-2 forward and backward give the same bits on 1 and 3 threads (bits.lock)") {
    const auto fx = golden::load("aligngpt_stage2");
    const auto run = [&](int threads) {
        set_threads(threads);
        auto m = make_model(2048);
        nn::set_trainable(m, true);
        autograd::tape<float> tp;
        const auto out = m.forward(&tp, {read_samples(fx)[0]}, features(1), stage::finetune);  // the image sample
        tp.backward(out.loss);
        std::vector<float> r = out.logits.value().to_vector();
        r.push_back(out.loss.value().data()[0]);
        for (const var* p : {&m.gated_weight.fc1.weight, &m.mm_projector.linears[0].weight, &m.llm.embed_tokens.weight})
            r.insert(r.end(), p->grad().data(), p->grad().data() + p->grad().numel());
        return std::make_pair(r, out.gate.weights.value().to_vector());
    };
    const int before = max_threads();
    const auto one = run(1), three = run(3);
    set_threads(before);
    CHECK(one.first == three.first);
    CHECK(one.second == three.second);
    CHECK(golden::lock_matches("aligngpt.stage2.logits_loss_grads", one.first));
    CHECK(golden::lock_matches("aligngpt.stage2.gate.weights", one.second));
}

}  // namespace test_aligngpt
