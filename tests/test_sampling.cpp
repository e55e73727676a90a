// generate/sampling.h: the logits processors against transformers 4.31's own classes
// (tests/tools/golden/sampling.py, golden_generate_sampling), the draw, the decode loop's
// determinism across thread counts, and the reference's KeywordsStoppingCriteria.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "aligngpt/generate/sampling.h"
#include "aligngpt/io/safetensors.h"
#include "aligngpt/models/llama.h"
#include "aligngpt/pretrained.h"
#include "support/golden.h"
#if defined(ALIGNGPT_TEST_HAVE_TOKENIZER)
#include "aligngpt/tokenizer/llama.h"
#endif

namespace test_sampling {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;

namespace {

std::vector<double> softmax_double(const std::vector<float>& s) {
    const float mx = *std::max_element(s.begin(), s.end());
    std::vector<double> p(s.size());
    double sum = 0;
    for (size_t i = 0; i < s.size(); i++) sum += p[i] = std::isinf(s[i]) ? 0.0 : std::exp(double(s[i]) - mx);
    for (double& x : p) x /= sum;
    return p;
}

}  // namespace

TEST_CASE("sampling: repetition penalty, temperature, top-k and top-p equal transformers 4.31's processors") {
    // Tolerance: none for the scores. Steps 1-3 are the same float32 operations as PyTorch's, and the
    // top-p cut of these logits is far from its threshold, so the kept set and every score match
    // bit for bit (-inf where a token is removed). The probabilities (softmax in double here, float
    // in PyTorch) are checked to 1e-6 absolute: a few float ulps of values <= 1.
    const auto fx = golden::load("generate_sampling");
    const auto logits = fx.get("logits");
    const auto ctx_f = fx.get("context");
    const std::vector<std::int64_t> ctx(ctx_f.begin(), ctx_f.end());
    const auto settings = fx.get<double>("settings");
    const std::size_t n = settings.size() / 4;
    REQUIRE(n >= 10);
    for (std::size_t i = 0; i < n; i++) {
        generate::sampling s;
        s.repetition_penalty = settings[4 * i], s.temperature = settings[4 * i + 1];
        s.top_k = index_t(settings[4 * i + 2]), s.top_p = settings[4 * i + 3];
        CAPTURE(i);
        const auto got = generate::process(logits, ctx, s);
        const auto want = fx.get("case" + std::to_string(i) + ".scores");
        CHECK(got == want);
        CHECK(golden::max_abs_diff(softmax_double(got), fx.get("case" + std::to_string(i) + ".probs")) <= 1e-6);
    }
}

TEST_CASE("sampling: the draw follows softmax(scores): evenly spaced u give each token its probability's share") {
    // Inverse-CDF sampling: with u = (j + 0.5) / N the count of token i is N p_i rounded either
    // way, so |count / N - p_i| <= 1 / N exactly (plus double rounding), and -inf tokens never come.
    const auto fx = golden::load("generate_sampling");
    const auto scores = fx.get("case9.scores");  // penalty, temperature, top-k and top-p together
    const auto p = softmax_double(scores);
    const int N = 20000;
    std::vector<int> count(scores.size(), 0);
    for (int j = 0; j < N; j++) count[size_t(generate::draw(scores, (j + 0.5) / N))]++;
    for (size_t i = 0; i < scores.size(); i++) {
        CAPTURE(i);
        CHECK(std::abs(count[i] / double(N) - p[i]) <= 1.0 / N + 1e-12);
        if (std::isinf(scores[i])) CHECK(count[i] == 0);
    }
    CHECK(generate::draw(scores, 0.0) == generate::draw(scores, 0x1p-53));  // u = 0 is a valid draw
}

TEST_CASE("sampling: bad settings and logits are refused") {
    generate::sampling s;
    s.temperature = -1;
    CHECK_THROWS_AS(s.check(), aligngpt::error);
    s = {}, s.top_p = 1.5;
    CHECK_THROWS_AS(s.check(), aligngpt::error);
    s = {}, s.repetition_penalty = 0;
    CHECK_THROWS_AS(s.check(), aligngpt::error);
    s = {}, s.top_k = -1;
    CHECK_THROWS_AS(s.check(), aligngpt::error);
    const std::vector<float> nan_row{0.f, std::nanf("")};
    CHECK_THROWS_AS(generate::next_token(nan_row, {}, {}, 0), aligngpt::error);
    const std::vector<float> all_removed{generate::filter_value, generate::filter_value};
    CHECK_THROWS_AS(generate::draw(all_removed, 0.5), aligngpt::error);
}

TEST_CASE("repro: sampled decoding of the tiny LLaMA gives the same tokens on 1 and 2 threads; temperature 0 is greedy") {
    const std::string d = std::string(ALIGNGPT_GOLDEN_DIR) + "/llama_tiny";
    models::llama_model<float> m(models::llama_config::load(d + "/config.json"));
    const auto f = io::safetensors_file::open(d + "/model.safetensors");
    m.visit([&](autograd::variable<float>& p) { p.value() = f.tensor_as<float>(p.name()); });
    const auto fx = golden::load("llama_tiny");
    const auto prompt = fx.get<std::int64_t>("prompt1");
    generate::sampling s;
    s.temperature = 1.5, s.top_k = 0, s.top_p = 0.98, s.repetition_penalty = 1.1, s.seed = 1234;
    const int before = max_threads();
    std::vector<std::vector<std::int64_t>> runs;
    std::vector<std::int64_t> streamed;
    for (int threads : {1, 2, 1}) {
        set_threads(threads);
        streamed.clear();
        runs.push_back(m.generate_sampled(prompt, {24, {-1}}, s, [&](std::int64_t t, std::span<const std::int64_t>) {
            streamed.push_back(t);
            return true;
        }));
    }
    set_threads(before);
    CHECK(runs[0].size() == 24);
    CHECK(runs[0] == runs[1]);
    CHECK(runs[0] == runs[2]);
    CHECK(streamed == runs[2]);
    s.seed = 99;
    CHECK(m.generate_sampled(prompt, {24, {-1}}, s, [](auto, auto) { return true; }) != runs[0]);
    // temperature 0 without penalty: generate()'s greedy tokens; a callback returning false stops.
    generate::sampling g;
    g.temperature = 0;
    CHECK(m.generate_sampled(prompt, {16}, g, [](auto, auto) { return true; }) == m.generate(prompt, {16}));
    CHECK(m.generate_sampled(prompt, {16}, g, [](auto, auto gen) { return gen.size() < 3; }).size() == 3);
}

TEST_CASE(
    "repro: AlignGPT generate_sampled (tiny model directory): same tokens on 1 and 2 threads; temperature 0 is generate()") {
    const std::string dirs = std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs";
    pretrained::load_options o;
    o.vision_tower = dirs + "/clip_vision";
    o.quiet = true;
    auto m = pretrained::load_aligngpt(dirs + "/aligngpt_st", o);
    const auto pixels = golden::load("model_dirs/pixels").tensor("pixel_values");
    const auto feats = m.vision->features(nullptr, autograd::variable<float>::leaf(pixels));
    const models::sample prompt{golden::load("model_dirs/trace_ref").get<std::int64_t>("input_ids")};
    generate::sampling s;
    s.temperature = 1.3, s.top_k = 30, s.top_p = 0.97, s.repetition_penalty = 1.2, s.seed = 42;
    const auto keep_going = [](auto, auto) { return true; };
    const int before = max_threads();
    set_threads(1);
    const auto one = m.model->generate_sampled(prompt, feats, {20, {-1}}, s, keep_going);
    set_threads(2);
    const auto two = m.model->generate_sampled(prompt, feats, {20, {-1}}, s, keep_going);
    set_threads(before);
    CHECK(one.size() == 20);
    CHECK(one == two);
    generate::sampling g;
    g.temperature = 0;
    CHECK(m.model->generate_sampled(prompt, feats, {12}, g, keep_going) == m.model->generate(prompt, feats, {12}));
}

#if defined(ALIGNGPT_TEST_HAVE_TOKENIZER)
TEST_CASE("sampling: keywords_stop stops on the keyword's ids or its text, as KeywordsStoppingCriteria") {
    const auto tok = tokenizer::llama_tokenizer::from_directory(std::string(ALIGNGPT_GOLDEN_DIR) + "/tokenizer");
    const std::vector<std::int64_t> prompt = tok.encode("USER: hi ASSISTANT:");
    const generate::keywords_stop<tokenizer::llama_tokenizer> eos_stop(tok, {"</s>"}, prompt);
    auto gen = tok.encode("Hello", false);
    CHECK(!eos_stop(gen));
    gen.push_back(tok.eos_id());  // tokenizer("</s>") = [BOS, EOS]: the keyword ids are [EOS]
    CHECK(eos_stop(gen));
    const generate::keywords_stop<tokenizer::llama_tokenizer> hash_stop(tok, {"###"}, prompt);
    auto text = tok.encode("A cat.###", false);
    CHECK(hash_stop(text));  // the decoded tail holds "###"
    CHECK(!hash_stop(tok.encode("A cat.", false)));
}
#endif

}  // namespace test_sampling
