// eval/answer.h and `aligngpt answer` on the tiny AlignGPT of model_dirs/ with the 64-piece
// tokenizer of run_tiny/: the answers equal the reference's greedy answers of run_tiny/expected.json
// (what `aligngpt run` prints); batched generation equals one-at-a-time generation token for token
// (greedy and seeded sampling, rows of different lengths, a row stopping early); the answers file is
// the same bit for bit for every batch size and thread count; a run killed mid-line resumes to the
// same file; bad question files are refused naming the file, the line and the field.
// Tolerance: none anywhere: tokens, text and file bytes are compared exactly (the kernels' bits do
// not depend on the batch row or the thread count, ops/attention.h and ops/gemm.h).
#if defined(ALIGNGPT_TEST_HAVE_TOKENIZER)
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "aligngpt/eval/answer.h"
#include "aligngpt/io/image.h"
#include "aligngpt/pretrained.h"
#include "support/process.h"
#include "support/scratch_dir.h"

namespace test_answer {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

using namespace aligngpt;
namespace fs = std::filesystem;

const std::string golden_dir = ALIGNGPT_GOLDEN_DIR;

struct tiny {
    pretrained::loaded_aligngpt<> m;
    tokenizer::llama_tokenizer tok;
};

const tiny& model() {
    static const tiny t = [] {
        pretrained::load_options opt;
        opt.quiet = true;
        opt.vision_tower = golden_dir + "/model_dirs/clip_vision";
        return tiny{pretrained::load_aligngpt(golden_dir + "/model_dirs/aligngpt_st", opt),
                    tokenizer::llama_tokenizer::from_directory(golden_dir + "/run_tiny")};
    }();
    return t;
}

/// The tower's preprocessing with the model's aspect mode (pad), as `aligngpt run` reads an image.
tensor<float> pixels(const std::string& path) {
    const auto& m = model().m;
    auto cfg = io::clip_image_processor_config::from_json_file(m.vision_dir + "/preprocessor_config.json");
    cfg.aspect = io::parse_aspect_mode(m.config.image_aspect_ratio);
    const index_t S = m.vision_config.image_size;
    return io::clip_preprocess(io::load_image(path), cfg, path).reshape({1, 3, S, S});
}

std::string tmp(const std::string& name) { return support::scratch_dir() + "/answer_" + std::to_string(::getpid()) + "_" + name; }

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

/// Questions on three images of different sizes (pad mode changes each differently), with the
/// run_tiny questions first; image paths relative to tests/golden.
std::string questions_jsonl() {
    return "{\"question_id\": 1, \"image\": \"model_dirs/image.png\", \"text\": \"what is in the image?\", \"category\": \"x\"}\n"
           "{\"question_id\": \"q2\", \"image\": \"model_dirs/image.png\", \"text\": \"describe the picture in detail.\"}\n"
           "\n"
           "{\"question_id\": 3, \"image\": \"images/photo_192x144.jpg\", \"text\": \"is there a dog? answer yes or no\"}\n"
           "{\"question_id\": 4, \"image\": \"images/portrait_201x640.png\", \"text\": \"color?\"}\n"
           "{\"question_id\": 3, \"image\": \"images/landscape_500x333.png\", \"text\": \"and here, a dog or a cat?\"}\n";
}

eval::answer_options options(index_t batch, bool resume = false) {
    eval::answer_options o;
    o.image_folder = golden_dir, o.model_id = "aligngpt_st", o.max_new_tokens = 4, o.batch_size = batch, o.resume = resume;
    return o;
}

eval::answer_summary answer(const std::string& q, const std::string& a, const eval::answer_options& o) {
    const auto& t = model();
    return eval::answer_questions(*t.m.model, *t.m.vision, t.tok, q, a, o, pixels);
}

std::vector<std::int64_t> prompt_ids(const std::string& text) {
    auto conv = conversation::make("vicuna_v1");
    conv.append(conv.roles[0], "<image>\n" + text);
    conv.append(conv.roles[1], std::nullopt);
    return tokenizer::tokenizer_image_token(model().tok, conv.prompt());
}

}  // namespace

TEST_CASE("answer: the answers are the reference's greedy answers; the file reads back with eval::read_answers") {
    const std::string q = tmp("q.jsonl"), a = tmp("a.jsonl");
    const std::string all = questions_jsonl();
    write_file(q, all.substr(0, all.find("\n\n") + 2));  // the two questions of run_tiny (and a blank line)
    auto o = options(2);
    o.max_new_tokens = 24;  // as run_tiny
    const auto s = answer(q, a, o);
    CHECK(s.questions == 2);
    CHECK(s.answered == 2);
    const auto g = io::read_json_file(golden_dir + "/run_tiny/expected.json");
    const auto answers = eval::read_answers(a);
    REQUIRE(answers.size() == 2);
    CHECK(answers[0].question_id == "1");
    CHECK(answers[1].question_id == "q2");
    CHECK(answers[0].text == g.at("cases").at(0).at("answer").get<std::string>());
    CHECK(answers[1].text == g.at("cases").at(1).at("answer").get<std::string>());
    // model_vqa_loader.py's fields and json.dumps layout; the prompt is the question text
    const std::string text = slurp(a);
    const std::string first = text.substr(0, text.find('\n') + 1);
    CHECK(first.rfind("{\"question_id\": 1, \"prompt\": \"what is in the image?\", \"text\": \"" +
                          g.at("cases").at(0).at("answer").get<std::string>() + "\", \"answer_id\": \"",
                      0) == 0);
    CHECK(first.ends_with("\", \"model_id\": \"aligngpt_st\", \"metadata\": {}}\n"));
    // the same question twice gives two different answer ids (MME repeats ids)
    CHECK(eval::answer_id(0, "3", 0) != eval::answer_id(0, "3", 1));
    CHECK(eval::answer_id(0, "3", 0).size() == 22);
    std::remove(q.c_str()), std::remove(a.c_str());
}

TEST_CASE("answer: batched generation equals one-at-a-time generation token for token") {
    const auto& t = model();
    const auto& m = *t.m.model;
    const std::vector<std::string> texts = {"what is in the image?", "a much longer question about what the picture shows?",
                                            "hi"};
    const std::vector<std::string> images = {"model_dirs/image.png", "images/photo_192x144.jpg", "images/portrait_201x640.png"};
    std::vector<std::vector<std::int64_t>> ids;
    std::vector<autograd::variable<float>> px;
    for (std::size_t i = 0; i < texts.size(); i++) {
        ids.push_back(prompt_ids(texts[i]));
        px.push_back(autograd::variable<float>::leaf(pixels(golden_dir + "/" + images[i])));
    }
    REQUIRE(ids[0].size() != ids[1].size());
    const auto feats = t.m.vision->features(nullptr, ag::concat<float, backend::cpu>(nullptr, px, 0));
    std::vector<autograd::variable<float>> alone_feats;
    for (const auto& p : px) alone_feats.push_back(t.m.vision->features(nullptr, p));
    for (const double temp : {0.0, 0.9}) {
        CAPTURE(temp);
        generate::sampling s{.temperature = temp, .top_k = 20, .top_p = 0.95, .repetition_penalty = 1.1, .seed = 7};
        // row 1 stops after 3 tokens (as a stop string would), the others run to max_new_tokens
        const auto stop = [](index_t b, std::span<const std::int64_t> g) { return b == 1 && g.size() == 3; };
        const auto batched = eval::generate_batch(m, ids, feats, {8, {}}, s, stop);
        REQUIRE(batched.size() == 3);
        CHECK(batched[1].size() == 3);
        for (std::size_t i = 0; i < ids.size(); i++) {
            CAPTURE(i);
            const auto alone =
                m.generate_sampled(models::sample{ids[i]}, alone_feats[i], {8, {}}, s,
                                   [&](std::int64_t, std::span<const std::int64_t> g) { return !stop(index_t(i), g); });
            CHECK(batched[i] == alone);
        }
    }
}

TEST_CASE("answer: the answers file is the same bit for bit for batch sizes 1, 2, 3 and on 1 and 2 threads") {
    const std::string q = tmp("qb.jsonl"), a1 = tmp("b1.jsonl"), a = tmp("bn.jsonl");
    write_file(q, questions_jsonl());
    const int threads = max_threads();
    set_threads(1);
    answer(q, a1, options(1));
    const std::string one = slurp(a1);
    CHECK(std::count(one.begin(), one.end(), '\n') == 5);
    answer(q, a, options(3));
    CHECK(slurp(a) == one);
    set_threads(2);
    answer(q, a, options(2));
    CHECK(slurp(a) == one);
    set_threads(threads);
    std::remove(q.c_str()), std::remove(a1.c_str()), std::remove(a.c_str());
}

TEST_CASE("answer --resume: a run killed mid-line continues to the same file") {
    const std::string q = tmp("qr.jsonl"), full = tmp("full.jsonl"), a = tmp("r.jsonl");
    write_file(q, questions_jsonl());
    std::remove(full.c_str());
    auto s = answer(q, full, options(2, true));  // --resume without an answers file: everything is answered
    CHECK(s.answered == 5);
    const std::string want = slurp(full);
    // killed in the middle of the third line: two answers kept, the torn line rewritten
    const std::size_t second = want.find('\n', want.find('\n') + 1) + 1;
    write_file(a, want.substr(0, second + 17));
    s = answer(q, a, options(2, true));
    CHECK(s.resumed == 2);
    CHECK(s.torn);
    CHECK(s.answered == 3);
    CHECK(slurp(a) == want);
    // nothing left to do: the file is unchanged
    s = answer(q, a, options(2, true));
    CHECK(s.resumed == 5);
    CHECK(s.answered == 0);
    CHECK(slurp(a) == want);
    // killed after the first answer of the repeated id 3: its second question is still asked
    const std::size_t fourth = want.find('\n', want.find('\n', second) + 1) + 1;
    write_file(a, want.substr(0, fourth));
    s = answer(q, a, options(1, true));
    CHECK(s.resumed == 4);
    CHECK(s.answered == 1);
    CHECK(slurp(a) == want);
    // a complete line that is not an answer, or one of another question file, is refused
    write_file(a, want.substr(0, second) + "{\"question_id\": 1, \"text\"\n");
    CHECK(support::message_of([&] { answer(q, a, options(1, true)); }).find(a + ":3:") != std::string::npos);
    write_file(a, "{\"question_id\": 99, \"text\": \"x\"}\n");
    CHECK(support::message_of([&] { answer(q, a, options(1, true)); }) ==
          a + ":1: question_id \"99\" is not in the question file (another run's answers file? refusing to resume)");
    write_file(a, want.substr(0, second) + want.substr(0, want.find('\n') + 1));
    CHECK(support::message_of([&] {
              answer(q, a, options(1, true));
          }).find("answered more often than the question file asks it") != std::string::npos);
    std::remove(q.c_str()), std::remove(full.c_str()), std::remove(a.c_str());
}

TEST_CASE("answer: bad question files are refused naming the file, the line and the field") {
    const std::string q = tmp("bad.jsonl"), a = tmp("bad_a.jsonl");
    const std::string ok = "{\"question_id\": 1, \"image\": \"model_dirs/image.png\", \"text\": \"hi\"}\n";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", q + ": no questions (the file is empty)"},
        {ok + "{\"question_id\": 2, \"image\": \"model_dirs/image.png\"\n", q + ":2:"},
        {ok + "[1, 2]\n", q + ":2: each line must be a JSON object"},
        {ok + "\n{\"image\": \"model_dirs/image.png\", \"text\": \"hi\"}\n", q + ":3"},
        {ok + "{\"question_id\": 2.5, \"image\": \"model_dirs/image.png\", \"text\": \"hi\"}\n", "question_id"},
        {ok + "{\"question_id\": 2, \"text\": \"hi\"}\n", "image"},
        {ok + "{\"question_id\": 2, \"image\": 7, \"text\": \"hi\"}\n", "image"},
        {ok + "{\"question_id\": 2, \"image\": \"model_dirs/image.png\"}\n", "text"},
        {ok + "{\"question_id\": 2, \"image\": \"nope.png\", \"text\": \"hi\"}\n", q + ":2: image \"nope.png\": no such file"},
        {ok + "{\"question_id\": 2, \"image\": \"model_dirs/image.png\", \"text\": \"<image> hi\"}\n",
         q + ":2: text: the prompt holds 2 image placeholders"},
    };
    for (const auto& c : cases) {
        const std::string& text = c.first;
        const std::string& expect = c.second;
        CAPTURE(text);
        write_file(q, text);
        const std::string msg = support::message_of([&] { answer(q, a, options(1)); });
        CAPTURE(msg);
        CHECK(msg.find(expect) != std::string::npos);
        if (text.find('\n') != text.rfind('\n')) CHECK(msg.find(q + ":") != std::string::npos);  // names the line
    }
    CHECK(support::message_of([&] { eval::read_questions(tmp("missing.jsonl")); }).find("missing.jsonl: cannot open") !=
          std::string::npos);
    // a line over the limit is refused without reading it whole
    write_file(q, std::string(eval::max_question_line_bytes + 10, ' '));
    CHECK(support::message_of([&] { eval::read_questions(q); }).find(q + ":1: line longer than") != std::string::npos);
    std::remove(q.c_str()), std::remove(a.c_str());
}

TEST_CASE("answer: lines as Python's json.dumps writes them; the reference's model name") {
    eval::question q;
    q.id = "a/b.png", q.text = "caf\xC3\xA9 \"x\"\n\x7F";
    CHECK(eval::answer_line(q, "\xE2\x82\xAC/ok\t", "ID", "m") ==
          "{\"question_id\": \"a/b.png\", \"prompt\": \"caf\\u00e9 \\\"x\\\"\\n\\u007f\", \"text\": \"\\u20ac/ok\\t\", "
          "\"answer_id\": \"ID\", \"model_id\": \"m\", \"metadata\": {}}\n");
    q.id = 12;
    CHECK(eval::answer_line(q, "", "", "").rfind("{\"question_id\": 12, ", 0) == 0);
    CHECK(eval::model_name_from_path("playground/model/aligngpt-7b/") == "aligngpt-7b");
    CHECK(eval::model_name_from_path("runs/aligngpt-7b/checkpoint-500") == "aligngpt-7b_checkpoint-500");
    CHECK(eval::model_name_from_path("model") == "model");
}

#if defined(ALIGNGPT_TOOL_PATH)
TEST_CASE("aligngpt answer: the CLI writes the library's file; bad flags exit 2 naming the flag") {
    const std::string q = tmp("cli_q.jsonl"), a = tmp("cli_a.jsonl"), lib = tmp("cli_lib.jsonl");
    write_file(q, questions_jsonl());
    answer(q, lib, options(1));
    const std::string tool = "cd '" + golden_dir + "/model_dirs' && '" + std::string(ALIGNGPT_TOOL_PATH) + "' answer ";
    const std::string base = "-m aligngpt_st --vision-tower clip_vision --tokenizer ../run_tiny --question-file '" + q +
                             "' --image-folder .. --answers-file '" + a + "' ";
    write_file(a, "junk\n");  // without --resume the answers file is started again
    auto r = support::run_command(tool + base + "--max_new_tokens 4 --batch-size 2 -t 1 2>&1");
    CAPTURE(r.output);
    CHECK(r.code == 0);
    CHECK(r.output.find("5/5 done") != std::string::npos);
    CHECK(slurp(a) == slurp(lib));
    // resume with the reference's spellings: nothing left to do
    r = support::run_command(tool + base + "--max_new_tokens 4 --temperature 0 --conv_mode vicuna_v1 --resume --threads=1 2>&1");
    CHECK(r.code == 0);
    CHECK(r.output.find("5 already answered") != std::string::npos);
    CHECK(slurp(a) == slurp(lib));
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"-m aligngpt_st --image-folder .. --answers-file x.jsonl", "--question-file"},
        {base + "--batch-size 0", "--batch-size must be an integer in [1, 4096]"},
        {base + "--temperature -1", "--temp must be a number >= 0"},
        {base + "--align-level 8", "--align-level must be auto or a level 0..7"},
        {base + "--conv-mode nope", "--conv-mode"},
        {"-m aligngpt_st --question-file nope.jsonl --image-folder .. --answers-file x.jsonl",
         "--question-file \"nope.jsonl\": no such file"},
        {"-m aligngpt_st --question-file '" + q + "' --image-folder nope --answers-file x.jsonl",
         "--image-folder \"nope\": not a directory"},
        {"-m aligngpt_st --question-file '" + q + "' --image-folder .. --answers-file '" + q + "'",
         "--answers-file must not be the --question-file"},
    };
    for (const auto& c : bad) {
        const std::string& args = c.first;
        const std::string& expect = c.second;
        CAPTURE(args);
        r = support::run_command(tool + args + " -t 1 2>&1");
        CAPTURE(r.output);
        CHECK(r.code == 2);
        CHECK(r.output.find(expect) != std::string::npos);
    }
    // a missing image: exit 1, naming the question file's line, before any answer is written
    write_file(q, "{\"question_id\": 1, \"image\": \"missing.png\", \"text\": \"hi\"}\n");
    r = support::run_command(tool + base + "-t 1 2>&1");
    CHECK(r.code == 1);
    CHECK(r.output.find(q + ":1: image \"missing.png\": no such file") != std::string::npos);
    std::remove(q.c_str()), std::remove(a.c_str()), std::remove(lib.c_str());
}
#endif

}  // namespace test_answer
#endif
