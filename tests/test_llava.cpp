// The LLaVA-1.5 baseline (models/aligngpt.h with alignment_module false, align_mode::none): the paper's
// comparison model. Parity against the official LLaVA v1.1.3 LlavaLlamaForCausalLM (fixtures:
// tests/golden/llava, made by tests/tools/golden/llava.py), and both training stages through train::trainer.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "aligngpt/models/aligngpt.h"
#include "aligngpt/pretrained.h"
#include "aligngpt/train/trainer.h"
#include "support/golden.h"
#include "support/process.h"
#include "support/scratch_dir.h"

namespace test_llava {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

using namespace aligngpt;
namespace fs = std::filesystem;
using var = autograd::variable<float>;

const std::string llava_dir = std::string(ALIGNGPT_GOLDEN_DIR) + "/llava/model";

pretrained::load_options quiet() {
    pretrained::load_options o;
    o.quiet = true;
    return o;
}

}  // namespace

TEST_CASE("llava: prepare_batch without the indicator is c0 | IMAGE x P | c1, cut at max_length") {
    const std::vector<models::sample> s{{{1, 5, -200, 7, 8}, {-100, -100, -100, 7, 8}}, {{1, -200, 9}, {-100, -100, 9}}};
    const auto p = models::prepare_batch(s, 0, 4, /*indicator=*/false);
    CHECK(p.S == 4 + 4);  // 4 text rows + 4 image rows, no indicator
    CHECK(p.Tt == 0);
    CHECK(p.gate_rows.empty());
    REQUIRE(p.segments[0].size() == 3);
    CHECK(p.segments[0][0].kind == models::segment::text);
    CHECK(p.segments[0][0].length == 2);  // BOS and 5 together: nothing goes between them
    CHECK(p.segments[0][1].kind == models::segment::image);
    CHECK(p.segments[0][2].kind == models::segment::text);
    // row 2 is the first image row, labels IGNORE; the second sample is right-padded with the zero row
    CHECK(p.rows[2] == p.image_row(0));
    CHECK(p.labels[2] == models::ignore_index);
    CHECK(p.labels[6] == 7);
    CHECK(p.zero_row() == p.n_text + 2 * 4);
    CHECK(p.mask[size_t(p.S + 6)] == 0);
    CHECK(p.rows[size_t(p.S + 6)] == p.zero_row());
    // LLaVA cuts the spliced sequence at max_length itself (AlignGPT at max_length - 1, then the indicator)
    const auto cut = models::prepare_batch(s, 6, 4, false);
    CHECK(cut.S == 6);
    const auto with = models::prepare_batch(s, 6, 4, true);
    CHECK(with.S == 6);
    CHECK(with.rows[1] == with.indicator_row(0));
}

TEST_CASE("llava: the official LLaVA v1.1.3 LlavaLlamaForCausalLM's loss, logits and gradients (model_type llava directory)") {
    const auto fx = golden::load("llava/io");
    auto m = pretrained::load_aligngpt<float>(llava_dir, quiet());
    REQUIRE(m.model);
    auto& model = *m.model;
    CHECK_FALSE(model.config.alignment_module);
    int align_params = 0;
    model.visit(
        [&](var& p) { align_params += p.name().starts_with("align_indicators") || p.name().starts_with("gated_weight_layer"); });
    CHECK(align_params == 0);

    model.set_trainable_for(models::stage::finetune);
    const std::vector<models::sample> samples{{fx.get<std::int64_t>("ids0"), fx.get<std::int64_t>("labels0")},
                                              {fx.get<std::int64_t>("ids1"), fx.get<std::int64_t>("labels1")}};
    autograd::tape<float> tp;
    const auto pixels = var::leaf(fx.tensor("pixels"));
    const auto out = model.forward_pixels(&tp, samples, *m.vision, pixels, models::stage::finetune);
    CHECK_FALSE(out.gate.weights.defined());
    // fp32 parity with torch: the same operations in other summation orders; the tolerances are
    // torch.testing.assert_close's fp32 defaults (rtol 1.3e-6, atol 1e-5), the measured worst printed.
    const double ref_loss = fx.get("loss")[0], loss = out.loss.value().data()[0];
    MESSAGE("loss " << loss << " vs " << ref_loss);
    CHECK(std::abs(loss - ref_loss) <= 1e-5 + 1.3e-6 * std::abs(ref_loss));
    const index_t S = out.batch.S, V = out.logits.size(2);
    for (int b = 0; b < 2; b++) {
        CAPTURE(b);
        const auto ref = fx.get("logits" + std::to_string(b));
        const index_t n = index_t(ref.size()) / V;
        REQUIRE(n <= S);
        const std::vector<float> ours(out.logits.value().data() + index_t(b) * S * V,
                                      out.logits.value().data() + (index_t(b) * S + n) * V);
        const double r = golden::close_ratio(ours, ref, 1.3e-6, 1e-5);
        MESSAGE("logits" << b << ": close_ratio " << r);
        CHECK(r <= 1.0);
    }
    tp.backward(out.loss);
    int n = 0;
    model.visit([&](var& p) {
        std::string key = "grad." + p.name();
        if (!fx.has(key)) key = "grad.model." + p.name();  // the projector's HF key carries "model."
        if (!fx.has(key)) return;
        n++;
        REQUIRE_MESSAGE(p.grad().defined(), "no gradient reached " << p.name());
        const double r = golden::close_ratio(p.grad().to_vector(), fx.get(key), 1.3e-6, 1e-5);
        MESSAGE(key << ": close_ratio " << r);
        CHECK(r <= 1.0);
    });
    CHECK(n == 4);
}

TEST_CASE("llava: an AlignGPT model with align_mode::none leaves the indicator out (the same sequence as LLaVA)") {
    const auto fx = golden::load("llava/io");
    auto a = pretrained::load_aligngpt<float>(std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs/aligngpt_st", [] {
        auto o = quiet();
        o.vision_tower = std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs/clip_vision";
        return o;
    }());
    REQUIRE(a.model);
    CHECK(a.model->config.alignment_module);
    const std::vector<models::sample> s{{{1, 5, -200, 7, 8}}};
    const auto pixels = var::leaf(fx.tensor("pixels").slice(0, 0, 1));
    const auto gated = a.model->forward_pixels(nullptr, s, *a.vision, pixels, models::stage::inference);
    const auto none =
        a.model->forward_pixels(nullptr, s, *a.vision, pixels, models::stage::inference, {models::align_mode::none});
    CHECK(gated.batch.S == none.batch.S + 1);
    CHECK(gated.gate.weights.defined());
    CHECK_FALSE(none.gate.weights.defined());
    CHECK_FALSE(none.indicator.defined());
}

#if defined(ALIGNGPT_TEST_HAVE_TOKENIZER) && defined(ALIGNGPT_TEST_HAVE_STB)
TEST_CASE("llava: both stages train with --align-mode none; the outputs are LLaVA's and load as a LLaVA model") {
    const std::string gdir = std::string(ALIGNGPT_GOLDEN_DIR) + "/train";
    const std::string root = support::scratch_dir() + "/llava_train";
    fs::remove_all(root);
    const auto opts = [&](bool s1) {
        train::options o;
        o.stage = s1 ? models::stage::pretrain : models::stage::finetune;
        o.model_dir = gdir + "/vicuna";
        o.vision_tower = std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs/clip_vision";
        o.data_path = gdir + (s1 ? "/stage1.json" : "/stage2.json");
        o.image_folder = std::string(ALIGNGPT_GOLDEN_DIR) + "/images";
        o.output_dir = root + (s1 ? "/stage1" : "/stage2");
        o.per_device_train_batch_size = 2, o.gradient_accumulation_steps = 1, o.max_steps = 2;
        o.model_max_length = s1 ? 590 : 2048;
        o.save_steps = 0, o.quiet = true;
        o.align = {models::align_mode::none};
        if (!s1) o.pretrain_mm_mlp_align = root + "/stage1/mm_projector.bin";
        return o;
    };
    // stage 1 needs no level: drop "similarity" from every record
    auto s1 = opts(true);
    {
        auto data = io::read_json_file(s1.data_path, {.max_bytes = 1 << 20});
        for (auto& r : data) r.erase("similarity");
        fs::create_directories(root);
        s1.data_path = root + "/stage1_no_levels.json";
        std::ofstream(s1.data_path) << data.dump();
    }
    train::trainer t1(s1);
    const auto r1 = t1.run();
    CHECK(r1.steps.size() == 2);
    std::vector<std::string> names;
    t1.model().visit([&](var& p) {
        if (p.requires_grad()) names.push_back(p.name());
    });
    for (const auto& n : names) CHECK_MESSAGE(n.find("mm_projector") != std::string::npos, n);  // the projector only
    CHECK(fs::exists(root + "/stage1/mm_projector.bin"));
    CHECK_FALSE(fs::exists(root + "/stage1/mm_projector_align.bin"));

    train::trainer t2(opts(false));
    const auto r2 = t2.run();
    CHECK(r2.steps.size() == 2);
    const auto cfg = io::read_json_file(root + "/stage2/config.json");
    CHECK(cfg.at("model_type") == "llava");
    CHECK(cfg.at("architectures")[0] == "LlavaLlamaForCausalLM");
    auto o = quiet();
    o.vision_tower = std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs/clip_vision";
    auto m = pretrained::load_aligngpt<float>(root + "/stage2", o);
    CHECK_FALSE(m.model->config.alignment_module);

    // an AlignGPT model cannot continue as LLaVA, and the other way round: a clear error
    auto wrong = opts(false);
    wrong.model_dir = root + "/stage2";
    wrong.align = {};
    wrong.pretrain_mm_mlp_align.clear();
    wrong.output_dir = root + "/wrong";
    CHECK_THROWS_WITH_AS(train::trainer(wrong).run(), doctest::Contains("a LLaVA model (no alignment module)"), aligngpt::error);
}
#endif

}  // namespace test_llava
