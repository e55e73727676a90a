// CLIP towers, CLIPModel similarity, alignment levels and the projector against transformers 4.31.
// Fixtures: tests/golden/clip_*  (recipe: tests/tools/golden/models_clip.py, run by
// `/usr/bin/python3 tests/tools/make_golden.py clip_vision_tiny clip_vision_3l clip_model_tiny
//  clip_layer_full clip_projector`).
//
// Tolerances. The reference is transformers in fp32 on CPU (MKL/oneDNN GEMMs, blocked sums); we sum
// every dot product in index order with one fma per term. Both are correctly-rounded fp32 kernels
// with different summation orders, so they agree to a few ulps per op; we ask for
// torch.testing.assert_close's fp32 defaults (rtol 1.3e-6, atol 1e-5) wherever that holds and say
// why where it does not.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "aligngpt/autograd/grad_check.h"
#include "aligngpt/models/clip.h"
#include "aligngpt/models/projector.h"
#include "support/golden.h"
#include "support/scratch_dir.h"

namespace test_clip {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using models::clip_model;
using models::clip_vision_model;

namespace {

using var = autograd::variable<float>;
constexpr double k_rtol = 1.3e-6, k_atol = 1e-5;  // torch.testing.assert_close, float32

/// Minimal strict loader (until the general one lands): every parameter must be in the file with
/// the same shape; tensors of the file that the module does not have are ignored.
template <class M>
void load_params(M& m, const io::safetensors_file& f) {
    m.visit([&](var& p) {
        const auto* info = f.find(p.name());
        REQUIRE_MESSAGE(info != nullptr, f.path() << " has no tensor " << p.name());
        REQUIRE_MESSAGE(info->shape == p.shape(), p.name() << ": file shape " << aligngpt::detail::shape_str(info->shape)
                                                           << " != model shape " << aligngpt::detail::shape_str(p.shape()));
        p.value() = f.tensor_as<float>(p.name());
    });
}

std::string golden_dir(const std::string& name) { return std::string(ALIGNGPT_GOLDEN_DIR) + "/" + name; }

template <class M>
M load_model(const std::string& name, M m) {
    load_params(m, io::safetensors_file::open(golden_dir(name) + "/model.safetensors"));
    return m;
}

/// close_ratio <= 1 means within assert_close(rtol, atol); also reports the max |diff|.
void check_close(const std::string& what, const var& got, const golden::fixture& fx, const std::string& key, double rt = k_rtol,
                 double at = k_atol) {
    INFO(what);
    REQUIRE(got.shape() == fx.shape(key));
    const auto a = got.value().to_vector();
    const auto b = fx.get<float>(key);
    const double ratio = golden::close_ratio(a, b, rt, at);
    MESSAGE(what << ": max |diff| " << golden::max_abs_diff(a, b) << ", close_ratio " << ratio);
    CHECK(ratio <= 1.0);
}

void write_file(const std::string& path, const std::string& text) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path) << text;
}

models::clip_vision_model<float> tiny_vision(const std::string& name) {
    const auto cfg = models::clip_vision_config::from_file(golden_dir(name) + "/config.json");
    return load_model(name, clip_vision_model<float>::make(cfg));
}

}  // namespace

TEST_CASE("clip config: transformers defaults, CLIPConfig sections, errors name the file and the field") {
    const std::string dir = support::scratch_dir() + "/clip_config/";
    write_file(dir + "empty_vision.json", R"({"model_type": "clip_vision_model"})");
    const auto d = models::clip_vision_config::from_file(dir + "empty_vision.json");
    CHECK(d.hidden_size == 768);
    CHECK(d.num_hidden_layers == 12);
    CHECK(d.patch_size == 32);
    CHECK(d.image_size == 224);
    CHECK(d.num_positions() == 50);
    CHECK(d.hidden_act == "quick_gelu");

    // openai/clip-vit-large-patch14-336 (vision part), as a CLIPConfig
    write_file(dir + "vitl336.json", R"({"model_type": "clip", "projection_dim": 768,
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
        "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                          "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14}})");
    const auto c = models::clip_config::from_file(dir + "vitl336.json");
    CHECK(c.vision.num_patches() == 576);
    CHECK(c.vision.head_dim() == 64);
    CHECK(c.projection_dim == 768);
    CHECK(c.text.vocab_size == 49408);
    CHECK(c.text.max_position_embeddings == 77);
    CHECK(models::clip_vision_config::from_file(dir + "vitl336.json").num_hidden_layers == 24);
    CHECK(models::clip_text_config::from_file(dir + "vitl336.json").hidden_size == 768);

    const auto err = [&](const std::string& file, const std::string& json) -> std::string {
        write_file(dir + file, json);
        try {
            models::clip_config::from_file(dir + file);
        } catch (const aligngpt::error& e) { return e.what(); }
        return "no error";
    };
    std::string m = err("heads.json", R"({"vision_config": {"hidden_size": 30, "num_attention_heads": 4}})");
    CHECK_MESSAGE(m.find("heads.json: field 'vision_config.hidden_size' must be a multiple of num_attention_heads = 4, got 30") !=
                      std::string::npos,
                  m);
    m = err("patch.json", R"({"vision_config": {"image_size": 30, "patch_size": 14}})");
    CHECK_MESSAGE(
        m.find("patch.json: field 'vision_config.image_size' must be a multiple of patch_size = 14, got 30") != std::string::npos,
        m);
    m = err("neg.json", R"({"text_config": {"num_hidden_layers": -1}})");
    CHECK_MESSAGE(
        m.find("neg.json: field 'text_config.num_hidden_layers' must be an integer in [1, 1024], got -1") != std::string::npos,
        m);
    m = err("type.json", R"({"text_config": {"hidden_size": "big"}})");
    CHECK_MESSAGE(
        m.find("type.json: field 'text_config.hidden_size' must be an integer in [1, 65536], got \"big\"") != std::string::npos,
        m);
    m = err("huge.json", R"({"vision_config": {"hidden_size": 1099511627776}})");
    CHECK_MESSAGE(m.find("huge.json: field 'vision_config.hidden_size' must be an integer in [1, 65536], got 1099511627776") !=
                      std::string::npos,
                  m);
    m = err("act.json", R"({"vision_config": {"hidden_act": "relu"}})");
    CHECK_MESSAGE(m.find("act.json: field 'vision_config.hidden_act' must be \"quick_gelu\" or \"gelu\", got \"relu\"") !=
                      std::string::npos,
                  m);
    m = err("llama.json", R"({"model_type": "llama", "hidden_size": 4096})");
    CHECK_MESSAGE(
        m.find("llama.json: field 'model_type' must be \"clip\" (a CLIPModel config), got \"llama\"") != std::string::npos, m);
    m = err("bad.json", "{not json");
    CHECK_MESSAGE(m.find("bad.json: invalid JSON") != std::string::npos, m);
}

TEST_CASE("clip_vision_model matches CLIPVisionModel (golden/clip_vision_tiny: 2 layers, D 32, 4 heads, batch 2)") {
    const auto fx = golden::load("clip_vision_tiny");
    const auto vit = tiny_vision("clip_vision_tiny");
    const var px = var::leaf(fx.tensor("pixels"));
    const auto hs = vit.forward(nullptr, px);
    REQUIRE(hs.size() == 3);
    for (size_t i = 0; i < hs.size(); i++)
        check_close("hidden_states." + std::to_string(i), hs[i], fx, "hidden_states." + std::to_string(i));
    check_close("pooled", vit.pooled(nullptr, hs), fx, "pooled");
    check_close("features.patch", vit.select_features(nullptr, hs, -2, "patch"), fx, "features.patch");
    check_close("features.cls_patch", vit.select_features(nullptr, hs, -2, "cls_patch"), fx, "features.cls_patch");
    CHECK(vit.select_features(nullptr, hs, -2).shape() == shape_t{2, 4, 32});
    CHECK_THROWS_WITH_AS(vit.select_features(nullptr, hs, -2, "cls"), doctest::Contains("\"cls\" is not supported"),
                         aligngpt::error);
    CHECK_THROWS_AS(vit.forward(nullptr, px, 3), aligngpt::error);

    SUBCASE("a batch of 2 images gives the same bits as two batch-1 runs") {
        for (index_t b = 0; b < 2; b++) {
            const var one = var::leaf(fx.tensor("pixels").slice(0, b, b + 1).contiguous());
            const auto hs1 = vit.forward(nullptr, one);
            for (size_t i = 0; i < hs.size(); i++) {
                const auto full = hs[i].value().slice(0, b, b + 1).to_vector();
                CHECK(golden::fnv1a(full) == golden::fnv1a(hs1[i].value().to_vector()));
            }
        }
    }
}

TEST_CASE("clip_vision_model up_to_layer runs only the layers it needs (golden/clip_vision_3l)") {
    const auto fx = golden::load("clip_vision_3l");
    auto vit = tiny_vision("clip_vision_3l");
    // Poison the last layer: if forward(up_to = -2) ran it, nothing would change in hs[0..2]
    // (it is never returned), so count its work on a tape instead, and check the NaNs never reach us.
    vit.layers.back().visit([](var& p) { p.value().fill(std::numeric_limits<float>::quiet_NaN()); });
    nn::set_trainable(vit, true);
    autograd::tape<float> tp;
    const auto hs = vit.forward(&tp, var::leaf(fx.tensor("pixels")), -2);
    REQUIRE(hs.size() == 3);  // indices 0 .. L-1 = 2
    for (size_t i = 0; i < hs.size(); i++)
        check_close("hidden_states." + std::to_string(i), hs[i], fx, "hidden_states." + std::to_string(i));
    std::ostringstream ops;
    tp.print(ops);
    size_t n_att = 0;
    for (size_t p = ops.str().find("attention("); p != std::string::npos; p = ops.str().find("attention(", p + 1)) n_att++;
    CHECK(n_att == 2);
    check_close("features.patch", vit.features(nullptr, var::leaf(fx.tensor("pixels")), -2, "patch"), fx, "features.patch");
    CHECK(vit.forward(nullptr, var::leaf(fx.tensor("pixels")), 0).size() == 1);
}

TEST_CASE("clip_model matches CLIPModel: towers, projections, cosine, logits_per_image (golden/clip_model_tiny)") {
    const auto fx = golden::load("clip_model_tiny");
    const auto cfg = models::clip_config::from_file(golden_dir("clip_model_tiny") + "/config.json");
    CHECK(cfg.projection_dim == 24);
    CHECK(cfg.text.hidden_size == 40);
    CHECK(cfg.vision.hidden_size == 32);
    const auto clip = load_model("clip_model_tiny", clip_model<float>::make(cfg));

    const var px = var::leaf(fx.tensor("pixels"));
    const auto ids = fx.file.tensor_as<std::int64_t>("input_ids");
    std::vector<std::uint8_t> mask;
    for (auto v : fx.get<std::int64_t>("attention_mask")) mask.push_back(std::uint8_t(v));

    // The same vision module, alone, loads from the CLIPModel file (prefix "vision_model."); inside
    // the AlignGPT checkpoint the prefix is "vision_tower.vision_tower.vision_model.".
    const auto alone = load_model("clip_model_tiny", clip_vision_model<float>::make(cfg.vision, "vision_model."));
    CHECK(golden::fnv1a(alone.forward(nullptr, px).back().value().to_vector()) ==
          golden::fnv1a(clip.vision.forward(nullptr, px).back().value().to_vector()));
    CHECK(clip_vision_model<float>::make(cfg.vision, "vision_tower.vision_tower.vision_model.").pre_layrnorm.weight.name() ==
          "vision_tower.vision_tower.vision_model.pre_layrnorm.weight");

    const auto vhs = clip.vision.forward(nullptr, px);
    for (size_t i = 0; i < vhs.size(); i++)
        check_close("vision.hidden_states." + std::to_string(i), vhs[i], fx, "vision.hidden_states." + std::to_string(i));
    check_close("vision.pooled", clip.vision.pooled(nullptr, vhs), fx, "vision.pooled");

    const auto t = clip.text.forward(nullptr, ids, mask);
    CHECK(t.eot == std::vector<std::int64_t>{9, 5, 2, 7});  // the first <|endoftext|> of each row
    for (size_t i = 0; i < t.hidden_states.size(); i++)
        check_close("text.hidden_states." + std::to_string(i), t.hidden_states[i], fx, "text.hidden_states." + std::to_string(i));
    check_close("text.last_hidden_state", t.last_hidden_state, fx, "text.last_hidden_state");
    check_close("text.pooled", t.pooled, fx, "text.pooled");

    const var img = clip.image_embeds(nullptr, px), txt = clip.text_embeds(nullptr, ids, mask);
    check_close("image_embeds", img, fx, "image_embeds");
    check_close("text_embeds", txt, fx, "text_embeds");
    const var cos = clip.cosine(nullptr, img, txt);
    check_close("cosine", cos, fx, "cosine");
    // logits = 14.28 * cos: the same relative error, so the absolute bound scales with exp(logit_scale)
    check_close("logits_per_image", clip.logits_per_image(nullptr, cos), fx, "logits_per_image", k_rtol, k_atol * 14.28);

    // The padded positions never influence the pooled output: re-running caption 2 alone,
    // unpadded (3 tokens), gives the same text embedding to tolerance.
    const auto one = tensor<std::int64_t>::from({97, 20, 98}, {1, 3});
    const auto e1 = clip.text_embeds(nullptr, one).value().to_vector();
    const auto e4 = txt.value().slice(0, 2, 3).to_vector();
    CHECK(golden::max_abs_diff(e1, e4) <= 1e-6);
}

TEST_CASE("CLIP backward matches finite differences (double): l2_normalize, vision tower, text tower") {
    using dvar = autograd::variable<double>;
    // Thousands of tiny forwards: OpenMP regions would cost more than they save (and much more on
    // a loaded machine), and results do not depend on the thread count anyway.
    struct one_thread {
        int before = aligngpt::max_threads();
        one_thread() { aligngpt::set_threads(1); }
        ~one_thread() { aligngpt::set_threads(before); }
    } guard;
    const auto filled = [](const std::string& name, shape_t s, float a, bool grad) {
        tensor<double> t(s);
        rng::fill_uniform(t.data(), t.numel(), 5, rng::fnv1a64(name), a);
        return dvar::leaf(t, grad, name);
    };
    const auto fill_model = [](auto& m) {
        m.visit([](dvar& p) {
            const bool ln = p.name().find("norm") != std::string::npos;
            rng::fill_uniform(p.value().data(), p.value().numel(), 5, rng::fnv1a64(p.name()), ln ? 0.2f : 0.4f);
            if (ln && p.name().ends_with(".weight"))
                for (index_t i = 0; i < p.value().numel(); i++) p.value().data()[i] += 1.0;
        });
    };
    // l2_normalize: an op of this file
    const autograd::op_under_test<double> norm = [](auto* tp, const auto& xs) { return ag::l2_normalize(tp, xs[0]); };
    const double e_norm = autograd::grad_check<double>(norm, {filled("x", {3, 7}, 1.f, true)});

    // vision tower: pixels and three kinds of parameter (class token, positions, a layer weight)
    models::clip_vision_config vc;
    vc.hidden_size = 8, vc.intermediate_size = 12, vc.num_hidden_layers = 2, vc.num_attention_heads = 2;
    vc.image_size = 4, vc.patch_size = 2;
    auto vit = models::clip_vision_model<double>::make(vc);
    fill_model(vit);
    for (dvar* p : {&vit.class_embedding, &vit.position_embedding.weight, &vit.layers[0].q_proj.weight})
        p->set_requires_grad(true);
    const dvar px = filled("px", {2, 3, 4, 4}, 1.f, true);
    const autograd::op_under_test<double> vis = [&](auto* tp, const auto& xs) { return vit.pooled(tp, vit.forward(tp, xs[0])); };
    const double e_vis =
        autograd::grad_check<double>(vis, {px, vit.class_embedding, vit.position_embedding.weight, vit.layers[0].q_proj.weight});

    // text tower: causal + padding mask, EOT pooling; gradients reach token and position embeddings
    models::clip_text_config tc;
    tc.vocab_size = 11, tc.hidden_size = 8, tc.intermediate_size = 12, tc.num_hidden_layers = 1;
    tc.num_attention_heads = 2, tc.max_position_embeddings = 6;
    auto txt = models::clip_text_model<double>::make(tc);
    fill_model(txt);
    txt.token_embedding.weight.set_requires_grad(true);
    txt.position_embedding.weight.set_requires_grad(true);
    const auto ids = tensor<std::int64_t>::from({9, 3, 4, 10, 10, 9, 2, 10, 10, 10}, {2, 5});
    const std::vector<std::uint8_t> mask{1, 1, 1, 1, 0, 1, 1, 1, 0, 0};
    const autograd::op_under_test<double> text = [&](auto* tp, const auto&) { return txt.forward(tp, ids, mask).pooled; };
    const double e_txt = autograd::grad_check<double>(text, {txt.token_embedding.weight, txt.position_embedding.weight});
    MESSAGE("grad_check max rel err: l2_normalize " << e_norm << ", vision " << e_vis << ", text " << e_txt);
    // central differences with h = 1e-6 in double: truncation and rounding both ~1e-10
    CHECK(e_norm <= 1e-7);
    CHECK(e_vis <= 1e-7);
    CHECK(e_txt <= 1e-7);
}

TEST_CASE("alignment_levels: equal-frequency buckets over the ascending rank, stable ties [inferred: docs/model.md]") {
    // 16 pairs, 8 levels: two per level; ties (0.5 x 4) keep original index order.
    const std::vector<float> s{0.9f, 0.1f,  0.5f, 0.5f, 0.3f,  0.5f, 0.2f,  0.8f,
                               0.5f, 0.05f, 0.7f, 0.6f, 0.95f, 0.4f, 0.25f, 0.35f};
    // ascending order: 9(.05) 1(.1) 6(.2) 14(.25) 4(.3) 15(.35) 13(.4) 2 3 5 8 (.5) 11(.6) 10(.7) 7(.8) 0(.9) 12(.95)
    const std::vector<int> want{7, 0, 3, 4, 2, 4, 1, 6, 5, 0, 6, 5, 7, 3, 1, 2};
    CHECK(models::alignment_levels(s, 8) == want);
    // 10 pairs, 8 levels: floor(rank * 8 / 10) = 0 0 1 2 3 4 4 5 6 7
    std::vector<double> r(10);
    for (int i = 0; i < 10; i++) r[size_t(i)] = -i;  // descending: index 9 has rank 0
    CHECK(models::alignment_levels(r, 8) == std::vector<int>{7, 6, 5, 4, 4, 3, 2, 1, 0, 0});
    CHECK(models::alignment_levels(std::vector<float>{}, 8).empty());
    CHECK_THROWS_AS(models::alignment_levels(std::vector<float>{0.f, NAN}, 8), aligngpt::error);
    CHECK_THROWS_AS(models::alignment_levels(std::vector<float>{0.f}, 0), aligngpt::error);
}

// [slow]: 14.5 GFLOP. 3.5 s on one core with -march=native (AVX-512 GEMM); the default generic x86-64
// build has no FMA instruction, so gemm.h's scalar path calls libm fma() per term (~60 s).
TEST_CASE("one full-width CLIP ViT-L/14-336 layer (1024, 16 heads, 577 tokens) matches CLIPEncoderLayer [slow]") {
    // Weights and input filled by name on both sides (nn::linear::init_default(0) == hashfill(key,
    // 1/sqrt(in)); LayerNorm weight 1 + hashfill(key, 0.2), bias hashfill(key, 0.1)); the fixture
    // holds every 4th output row and row 576 (golden/clip_layer_full, 594 KB).
    const auto fx = golden::load("clip_layer_full");
    auto layer = models::clip_encoder_layer<float>::make("vision_model.encoder.layers.0.", 1024, 4096, 16);
    for (auto* l : {&layer.k_proj, &layer.v_proj, &layer.q_proj, &layer.out_proj, &layer.fc1, &layer.fc2}) l->init_default(0);
    for (auto* ln : {&layer.layer_norm1, &layer.layer_norm2}) {
        ln->weight.value() = golden::hashfill(ln->weight.name(), {1024}, 0.2f);
        for (index_t i = 0; i < 1024; i++) ln->weight.value().data()[i] += 1.0f;
        ln->bias.value() = golden::hashfill(ln->bias.name(), {1024}, 0.1f);
    }
    const var x = var::leaf(golden::hashfill("clip_layer_full.input", {1, 577, 1024}, 1.0f));
    const var y = layer(nullptr, x, {});
    const auto rows = fx.get<std::int64_t>("rows");
    const auto want = fx.get<float>("output_rows");
    std::vector<float> got;
    for (auto r : rows)
        for (index_t c = 0; c < 1024; c++) got.push_back(y.value().data()[r * 1024 + c]);
    const double ratio = golden::close_ratio(got, want, k_rtol, k_atol);
    MESSAGE("full-width layer: max |diff| " << golden::max_abs_diff(got, want) << ", close_ratio " << ratio);
    CHECK(ratio <= 1.0);
}

TEST_CASE("projector: linear / mlp2x_gelu / mlp3x_gelu / identity match AlignGPT's mm_projector_builder") {
    const auto fx = golden::load("clip_projector");
    const var x = var::leaf(fx.tensor("input"));
    for (const std::string type : {"linear", "mlp2x_gelu", "mlp3x_gelu", "identity"}) {
        INFO(type);
        const index_t H = type == "identity" ? 16 : 24;
        auto p = models::projector<float>::make(type, 16, H);
        p.visit([&](var& w) { w.value() = fx.tensor(type + "." + w.name()); });
        check_close(type + ".output", p(nullptr, x), fx, type + ".output");
    }
    auto p = models::projector<float>::make("mlp2x_gelu", 1024, 4096);
    std::vector<std::string> names;
    p.visit([&](var& w) { names.push_back(w.name() + aligngpt::detail::shape_str(w.shape())); });
    CHECK(names == std::vector<std::string>{"mm_projector.0.weight[4096,1024]", "mm_projector.0.bias[4096]",
                                            "mm_projector.2.weight[4096,4096]", "mm_projector.2.bias[4096]"});
    p.init_default(3);  // U(-1/sqrt(in), 1/sqrt(in)), reproducible by name
    float lo = 1, hi = -1;
    for (index_t i = 0; i < p.linears[1].weight.value().numel(); i++) {
        lo = std::min(lo, p.linears[1].weight.value().data()[i]);
        hi = std::max(hi, p.linears[1].weight.value().data()[i]);
    }
    CHECK(lo >= -1.0f / 64);
    CHECK(hi < 1.0f / 64);
    CHECK(hi - lo > 1.9f / 64);
    CHECK(p.linears[0].bias.value().data()[5] == rng::uniform(3, rng::fnv1a64("mm_projector.0.bias"), 5, 1.0f / 32));
    CHECK_THROWS_WITH_AS(models::projector<float>::make("mlp2x_relu", 16, 24),
                         doctest::Contains("unknown mm_projector_type \"mlp2x_relu\""), aligngpt::error);
    CHECK_THROWS_AS(models::projector<float>::make("mlp0x_gelu", 16, 24), aligngpt::error);
    CHECK_THROWS_AS(models::projector<float>::make("identity", 16, 24), aligngpt::error);
}

TEST_CASE("repro: CLIP vision tower, CLIPModel logits and projector give the same bits at 1 and 3 threads") {
    const auto fxv = golden::load("clip_vision_tiny");
    const auto fxm = golden::load("clip_model_tiny");
    const auto vit = tiny_vision("clip_vision_tiny");
    const auto clip =
        load_model("clip_model_tiny",
                   clip_model<float>::make(models::clip_config::from_file(golden_dir("clip_model_tiny") + "/config.json")));
    auto proj = models::projector<float>::make("mlp2x_gelu", 32, 48);
    proj.init_default(11);
    std::vector<std::uint8_t> mask;
    for (auto v : fxm.get<std::int64_t>("attention_mask")) mask.push_back(std::uint8_t(v));
    const auto ids = fxm.file.tensor_as<std::int64_t>("input_ids");

    struct bits {
        std::vector<float> features, embeds, logits;
    };
    const auto run = [&](int threads) {
        aligngpt::set_threads(threads);
        bits b;
        const auto f = vit.features(nullptr, var::leaf(fxv.tensor("pixels")), -2, "patch");
        b.embeds = proj(nullptr, f).value().to_vector();
        b.features = f.value().to_vector();
        const var cos = clip.cosine(nullptr, clip.image_embeds(nullptr, var::leaf(fxm.tensor("pixels"))),
                                    clip.text_embeds(nullptr, ids, mask));
        b.logits = clip.logits_per_image(nullptr, cos).value().to_vector();
        return b;
    };
    const int before = aligngpt::max_threads();
    const bits one = run(1), three = run(3);
    aligngpt::set_threads(before);
    CHECK(golden::fnv1a(one.features) == golden::fnv1a(three.features));
    CHECK(golden::fnv1a(one.embeds) == golden::fnv1a(three.embeds));
    CHECK(golden::fnv1a(one.logits) == golden::fnv1a(three.logits));
    CHECK(golden::lock_matches("clip.vision_tiny.features", one.features));
    CHECK(golden::lock_matches("clip.projector_mlp2x.embeds", one.embeds));
    CHECK(golden::lock_matches("clip.model_tiny.logits_per_image", one.logits));
}

}  // namespace test_clip
