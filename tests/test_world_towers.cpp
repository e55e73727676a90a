// The tiny towers of the world (world/tokenizers.h, world/towers.h), on a world of a few images so
// that every test runs in seconds. No reference implementation exists for a pre-training on this
// data, so the tests check what each piece promises:
//   * tokenizers: the SentencePiece model loads through tokenizer/llama.h and round-trips the world's
//     text exactly (decode(encode(x)) == x, no <unk>, whole words as single pieces); the CLIP BPE loads
//     through tokenizer/clip.h, every world word is one token, EOT is the largest id;
//   * CLIP: on a batch that is the whole train set, the contrastive loss after a few steps is below
//     the first step's (the same pairs each step, so the loss is comparable); the directory loads in
//     train::clip_scorer (levels.h) and its cosines equal the trained model's to float round-off;
//   * LLaMA: the loss falls, and train::trainer runs one stage-1 step from the directory with the
//     trained CLIP as vision tower;
//   * determinism: 1 and 2 threads write the same bytes (model.safetensors, metrics are timed so
//     only their losses are compared).
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "aligngpt/autograd/grad_check.h"
#include "aligngpt/io/file.h"
#include "aligngpt/train/levels.h"
#include "aligngpt/train/plot.h"
#include "aligngpt/train/trainer.h"
#include "aligngpt/world/towers.h"

#include "support/scratch_dir.h"

namespace test_world_towers {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

namespace fs = std::filesystem;
using namespace aligngpt;

std::string tmp(const std::string& name) { return support::scratch_dir() + "/towers_" + name; }

/// A world of 8 train and 4 held-out images (generated once per process, in a directory of its own:
/// CTest runs each test case as a process, two at a time).
const std::string& tiny_world() {
    static const std::string dir = [] {
        const std::string d = tmp("world_" + std::to_string(::getpid()));
        fs::remove_all(d);
        world::options o = world::options::quick(11);
        o.n_train = 8, o.n_eval = 4, o.n_text = 6;
        world::generate(o, d);
        return d;
    }();
    return dir;
}

world::clip_pretrain_options tiny_clip(std::int64_t steps) {
    world::clip_pretrain_options o = world::clip_pretrain_options::quick(3);
    o.width = 16, o.heads = 2, o.vision_layers = 1, o.text_layers = 1, o.projection_dim = 16;
    o.sched = {steps, 8, 1e-2, 0.0, 0.0, 1.0};
    o.n_eval = 4;
    o.log = nullptr;
    return o;
}

world::llm_pretrain_options tiny_llm(std::int64_t steps) {
    world::llm_pretrain_options o = world::llm_pretrain_options::quick(3);
    o.hidden = 32, o.heads = 2, o.layers = 1, o.intermediate = 64, o.vocab_size = 400, o.max_length = 128;
    o.sched = {steps, 4, 1e-2, 0.0, 0.0, 1.0};
    o.log = nullptr;
    return o;
}

std::string bytes(const std::string& path) { return io::read_text_file(path, std::uint64_t(1) << 30); }

}  // namespace

TEST_CASE("world towers: exp_scale (CLIP's learnable temperature) backward matches finite differences (double, tol 1e-8)") {
    using vd = autograd::variable<double>;
    // grad_check's measure: max |analytic - numeric| / max(1, |numeric|); h = 1e-6 leaves ~1e-10 round-off
    tensor<double> xv({3, 4}), tv({1});
    for (index_t i = 0; i < xv.numel(); i++) xv.data()[i] = double(rng::uniform(5, 1, std::uint64_t(i), 1.f));
    tv.data()[0] = 0.7;
    const vd x = vd::leaf(xv, true), t = vd::leaf(tv, true);
    autograd::op_under_test<double> f = [](autograd::tape<double>* tp, const std::vector<vd>& v) {
        return world::tower_detail::exp_scale(tp, v[0], v[1]);
    };
    CHECK(autograd::grad_check(f, {x, t}) <= 1e-8);
}

TEST_CASE("world towers: the LLaMA tokenizer learns the world's words and round-trips its text") {
    const std::string dir = tmp("llama_tok");
    fs::remove_all(dir);
    const auto lines = world::tokenizer_corpus(tiny_world());
    REQUIRE(lines.size() > 20);
    world::train_llama_tokenizer(lines, dir, {.vocab_size = 400});
    const auto tok = tokenizer::llama_tokenizer::from_directory(dir);
    CHECK(tok.vocab_size() <= 400);
    CHECK(tok.vocab_size() > 259);  // specials + 256 bytes + learned pieces
    // the trainer's first three ids are LLaMA's specials
    const auto ids = tok.encode("a red circle");
    REQUIRE(!ids.empty());
    CHECK(ids[0] == 1);
    for (const std::string& l : lines) {
        const auto e = tok.encode(l, false);
        for (std::int64_t id : e) CHECK_MESSAGE(id != 0, "<unk> in \"", l, "\"");
        // a special token's text decodes with LlamaTokenizer's spacing rules, not as written
        if (l.find("</s>") == std::string::npos) CHECK_MESSAGE(tok.decode(e) == l, l);
    }
    // the pieces are learned merges, not bytes: a caption takes far fewer tokens than bytes
    const std::string cap = world::caption_texts(tiny_world()).at(0);
    CHECK(tok.encode(cap, false).size() <= cap.size() / 2);
    // the system prompt and role tags are in the corpus
    CHECK(lines.back().find("ASSISTANT") != std::string::npos);
    // deterministic: the same text gives the same model bytes
    const std::string again = tmp("llama_tok2");
    world::train_llama_tokenizer(lines, again, {.vocab_size = 400});
    CHECK(bytes(dir + "/tokenizer.model") == bytes(again + "/tokenizer.model"));
    const auto cfg = io::read_json_file(dir + "/tokenizer_config.json");
    CHECK(cfg["legacy"] == false);
    CHECK(cfg["tokenizer_class"] == "LlamaTokenizer");
}

TEST_CASE("world towers: the CLIP BPE makes every world word one token, EOT the largest id") {
    const std::string dir = tmp("clip_tok");
    fs::remove_all(dir);
    const auto caps = world::caption_texts(tiny_world());
    const auto bpe = world::learn_clip_bpe(caps, 1000);
    CHECK(bpe.merges.size() < 1000);  // the words run out of pairs first
    CHECK(bpe.vocab.size() == 512 + bpe.merges.size() + 2);
    world::write_clip_tokenizer(bpe, dir);
    const auto tok = tokenizer::clip_tokenizer::from_directory(dir);
    CHECK(tok.merge_count() == bpe.merges.size());
    CHECK(tok.eos_id == tok.max_id);
    CHECK(tok.bos_id == tok.max_id - 1);
    for (const std::string& c : caps) {
        const auto ids = tok.encode(c);
        std::size_t pieces = 0;  // words and punctuation marks
        for (const auto& w : tokenizer::clip_detail::basic_words(tokenizer::clip_detail::decode_utf8(c)))
            pieces += tokenizer::clip_detail::split_pieces(w).size();
        CHECK_MESSAGE(ids.size() == pieces + 2, c);
        for (std::size_t k = 1; k + 1 < ids.size(); k++) CHECK(ids[k] < tok.bos_id);  // no unknown (= EOT) inside
    }
    // fewer merges: words split into more tokens, still known
    const auto small = world::learn_clip_bpe(caps, 10);
    CHECK(small.merges.size() == 10);
    CHECK(small.merges.front() == bpe.merges.front());  // the same first choice: the learner is deterministic
}

TEST_CASE("world towers: a few CLIP steps lower the contrastive loss; the directory loads in clip_scorer") {
    const std::string dir = tmp("clip");
    fs::remove_all(dir);
    const auto r = world::pretrain_clip(tiny_world(), dir, tiny_clip(8));
    REQUIRE(r.steps.size() == 8);
    // batch = the whole train set: the same 8 pairs every step, so the losses compare
    CHECK(std::isfinite(r.steps.front().loss));
    CHECK(r.steps.back().loss < r.steps.front().loss - 0.3);
    CHECK(r.n_eval == 4);
    for (const char* f :
         {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt", "metrics.jsonl"})
        CHECK_MESSAGE(fs::exists(dir + "/" + f), f);
    const auto cfg = models::clip_config::from_file(dir + "/config.json");
    CHECK(cfg.vision.num_patches() == 64);  // quick(): 48 px in 6-px patches
    CHECK(cfg.text.vocab_size == r.vocab_size);
    const auto scorer = train::clip_scorer<>::load(dir);
    CHECK(scorer.pre.crop_height == 48);
    // the loaded model scores an exact caption of a held-out image above the other held-out captions
    // on average is not promised after 8 steps; what is promised is that loading keeps the weights:
    // logit_scale is trained and clamped to [0, ln 100]
    const float t = scorer.model.logit_scale.value().to_vector()[0];
    CHECK(t != doctest::Approx(2.6592f));
    CHECK(t >= 0.0f);
    CHECK(t <= std::log(100.0f) + 1e-6f);
    const auto scenes = world::read_scenes(tiny_world() + "/world.json");
    std::vector<tensor<float>> px;
    std::vector<std::string> caps;
    for (int i = 0; i < 2; i++) {
        const std::string path = tiny_world() + "/images/" + world::image_name(i);
        px.push_back(io::clip_preprocess(io::load_image(path), scorer.pre, path));
        caps.push_back(world::caption_text(world::describe_exact(scenes[std::size_t(i)])));
    }
    for (double c : scorer.cosines(px, caps)) CHECK(std::abs(c) <= 1.0 + 1e-5);
    // the 8 pairs it was trained on: each image is closer to its own caption than to the others on
    // average (a margin, not an exact value: the numbers are the model's own)
    std::vector<std::int64_t> idx;
    std::vector<std::vector<std::int64_t>> ids;
    for (int i = 0; i < 8; i++)
        idx.push_back(i), ids.push_back(scorer.tok.encode(world::caption_text(world::describe_exact(scenes[std::size_t(i)]))));
    const auto [cid, mask] = world::tower_detail::caption_batch(ids, scorer.tok.eos_id);
    const auto cos =
        scorer.model
            .cosine(nullptr,
                    scorer.model.image_embeds(nullptr, autograd::variable<float>::leaf(
                                                           world::tower_detail::load_pixels(tiny_world(), idx, scorer.pre))),
                    scorer.model.text_embeds(nullptr, cid, mask))
            .value()
            .to_vector();
    double pos = 0, neg = 0;
    for (int a = 0; a < 8; a++)
        for (int b = 0; b < 8; b++) (a == b ? pos : neg) += cos[std::size_t(a * 8 + b)];
    CHECK(pos / 8 > neg / 56 + 0.05);
    // plot-ready metrics: one line a step with trainer.h's fields
    const auto m = train::plot_metrics(dir);
    CHECK(m.steps == 8);
}

TEST_CASE("world towers: the LLaMA loss falls and train::trainer runs stage 1 from the directory") {
    const std::string clip_dir = tmp("clip_for_llm"), llm_dir = tmp("llm"), out = tmp("stage1");
    fs::remove_all(clip_dir), fs::remove_all(llm_dir), fs::remove_all(out);
    world::pretrain_clip(tiny_world(), clip_dir, tiny_clip(1));
    const auto r = world::pretrain_llm(tiny_world(), llm_dir, tiny_llm(10));
    REQUIRE(r.steps.size() == 10);
    // starts near ln V (uniform guesses), ends well below
    CHECK(r.steps.front().loss == doctest::Approx(std::log(double(r.vocab_size))).epsilon(0.1));
    CHECK(r.steps.back().loss < r.steps.front().loss - 1.0);
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json", "metrics.jsonl"})
        CHECK_MESSAGE(fs::exists(llm_dir + "/" + f), f);

    // stage 1 needs levels: the tiny CLIP scores the captions, as `aligngpt levels` does
    const std::string data = tmp("captions_levels.json");
    const auto ds = train::read_dataset(tiny_world() + "/captions.json");
    const auto lv = train::compute_levels(train::clip_scorer<>::load(clip_dir), train::dataset_pairs(ds, "captions.json"),
                                          tiny_world() + "/images", {.n_levels = 8, .batch_size = 8, .progress = nullptr});
    train::write_levels_json(ds, lv, data);

    train::options o;
    o.stage = models::stage::pretrain;
    o.model_dir = llm_dir, o.vision_tower = clip_dir;
    o.data_path = data, o.image_folder = tiny_world() + "/images";
    o.output_dir = out;
    o.per_device_train_batch_size = 2, o.gradient_accumulation_steps = 1, o.max_steps = 1, o.save_steps = 0;
    o.quiet = true;
    const auto run = train::trainer(o).run();
    CHECK(run.steps_done == 1);
    REQUIRE(run.steps.size() == 1);
    CHECK(std::isfinite(run.steps[0].loss));
}

TEST_CASE("world towers: the same bits on 1 and 2 threads") {
    std::string clip_bytes[2], llm_bytes[2];
    std::vector<double> clip_loss[2], llm_loss[2];
    for (int k = 0; k < 2; k++) {
        set_threads(k + 1);
        const std::string c = tmp("det_clip" + std::to_string(k)), l = tmp("det_llm" + std::to_string(k));
        fs::remove_all(c), fs::remove_all(l);
        for (const auto& s : world::pretrain_clip(tiny_world(), c, tiny_clip(3)).steps) clip_loss[k].push_back(s.loss);
        for (const auto& s : world::pretrain_llm(tiny_world(), l, tiny_llm(3)).steps) llm_loss[k].push_back(s.loss);
        clip_bytes[k] = bytes(c + "/model.safetensors") + bytes(c + "/vocab.json") + bytes(c + "/merges.txt");
        llm_bytes[k] = bytes(l + "/model.safetensors") + bytes(l + "/tokenizer.model");
    }
    set_threads(0);
    CHECK(clip_loss[0] == clip_loss[1]);
    CHECK(llm_loss[0] == llm_loss[1]);
    CHECK(clip_bytes[0] == clip_bytes[1]);
    CHECK(llm_bytes[0] == llm_bytes[1]);
}

}  // namespace test_world_towers
