// `aligngpt run` as a subprocess on the tiny AlignGPT of model_dirs/ with the 64-piece tokenizer of
// run_tiny/ (tests/tools/golden/run.py, golden_run_tiny): the answer on stdout equals the reference's
// greedy answer (official conversation.py, tokenizer_image_token, HF greedy decoding with the KV
// cache, model_vqa_loader.py's post-processing). Tolerance: none; tokens and text are exact (the
// tiny model's top two logits are far apart at every step, so float32 summation-order differences
// cannot flip an argmax). Plus: a seeded sampled answer is the same on 1 and 2 threads, and bad
// flags and files exit non-zero with a message naming them.
#if defined(ALIGNGPT_TOOL_PATH) && defined(ALIGNGPT_TEST_HAVE_TOKENIZER)
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include "aligngpt/io/json.h"
#include "aligngpt/io/safetensors.h"
#include "support/process.h"
#include "support/scratch_dir.h"

namespace test_run {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

const std::string golden_dir = ALIGNGPT_GOLDEN_DIR;

struct result {
    int code;
    std::string out, err;
};

/// Runs `aligngpt run <args>` in model_dirs/; stdout and stderr apart.
result run(const std::string& args, const std::string& env = "") {
    // One file per call: CTest runs the test cases as parallel processes.
    static int calls = 0;
    const std::string err_file =
        support::scratch_dir() + "/run_stderr." + std::to_string(::getpid()) + "." + std::to_string(calls++) + ".txt";
    const auto r = support::run_command("cd '" + golden_dir + "/model_dirs' && " + env + " '" + std::string(ALIGNGPT_TOOL_PATH) +
                                        "' run " + args + " 2>'" + err_file + "'");
    std::ifstream f(err_file);
    std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::remove(err_file.c_str());
    return {r.code, r.output, err};
}

const std::string base = "-m aligngpt_st --vision-tower clip_vision --image image.png --tokenizer ../run_tiny ";

std::string shell_quoted(const std::string& s) { return "'" + s + "'"; }

}  // namespace

TEST_CASE("aligngpt run --temp 0 prints the reference's greedy answer; -v shows the reference's prompt ids") {
    const auto g = aligngpt::io::read_json_file(golden_dir + "/run_tiny/expected.json");
    for (const auto& c : g.at("cases")) {
        const std::string q = c.at("question");
        CAPTURE(q);
        const auto r =
            run(base + "--temp 0 -v -n " + std::to_string(c.at("max_new_tokens").get<int>()) + " -p " + shell_quoted(q));
        CAPTURE(r.err);
        REQUIRE(r.code == 0);
        CHECK(r.out == c.at("answer").get<std::string>() + "\n");
        std::string ids = "[run] ids:", gen = "[run] generated ids:";
        for (const auto& i : c.at("ids")) ids += " " + std::to_string(i.get<long long>());
        for (const auto& i : c.at("generated")) gen += " " + std::to_string(i.get<long long>());
        CHECK(r.err.find(ids + "\n") != std::string::npos);
        CHECK(r.err.find(gen + "\n") != std::string::npos);
        CHECK(r.err.find("[run] gate weights over levels 0..6:") != std::string::npos);
        CHECK(r.err.find("tok/s") != std::string::npos);  // the timing summary
    }
}

TEST_CASE("aligngpt run: a seeded sampled answer is identical on 1 and 2 threads; underscore spellings work") {
    const std::string args = base + "--temp 0.9 --top_p 0.95 --top-k 20 --repeat-penalty 1.1 -s 7 -n 16 -p 'what is it?'";
    const auto one = run(args + " -t 1"), two = run(args + " --threads 2"), env = run(args, "OMP_NUM_THREADS=2");
    CAPTURE(one.err);
    REQUIRE(one.code == 0);
    CHECK(two.code == 0);
    CHECK(!one.out.empty());
    CHECK(one.out == two.out);
    CHECK(one.out == env.out);
    const auto other_seed = run(base + "--temp 0.9 --top_p 0.95 --top-k 20 --repeat-penalty 1.1 -s 8 -n 16 -p 'what is it?'");
    CHECK(other_seed.code == 0);
}

TEST_CASE("aligngpt run: interactive chat reads user turns from stdin") {
    // Two turns; each answer is one line on stdout.
    const auto r = run(base + "--temp 0 -n 4 < /dev/null");
    CHECK(r.code == 0);
    CHECK(r.out.empty());
    const std::string in = support::scratch_dir() + "/run_turns.txt";
    std::ofstream(in) << "what is in the image?\n\nand then?\n";
    const auto chat = run(base + "--temp 0 -n 4 < '" + in + "'");
    CAPTURE(chat.err);
    CHECK(chat.code == 0);
    CHECK(std::count(chat.out.begin(), chat.out.end(), '\n') == 2);
}

TEST_CASE("aligngpt run: bad flags and files exit non-zero naming the flag or the file") {
    struct bad_case {
        std::string args, expect;
        int code;
    };
    const std::string img = "--image image.png ";
    const std::vector<bad_case> cases = {
        {"-m aligngpt_st", "--image FILE is required", 2},
        {img + "-p x", "--model DIR is required", 2},
        {base + "--temp -1 -p x", "--temp must be a number >= 0", 2},
        {base + "--temp abc -p x", "--temp must be a number >= 0 (0 is greedy), got \"abc\"", 2},
        {base + "--top-p 1.5 -p x", "--top-p must be a number in [0, 1]", 2},
        {base + "--top-k -3 -p x", "--top-k must be an integer >= 0", 2},
        {base + "--repeat-penalty 0 -p x", "--repeat-penalty must be a number > 0", 2},
        {base + "-n 1e3 -p x", "--max-new-tokens must be an integer", 2},
        {base + "-t 0 -p x", "--threads must be an integer in [1, 4096]", 2},
        {base + "--conv-mode vicuna -p x", "--conv-mode: conversation: unknown template \"vicuna\"", 2},
        {base + "--image-aspect-ratio wide -p x", "--image-aspect-ratio must be pad or square", 2},
        {base + "--align-level 9 -p x", "--align-level must be auto or a level 0..7", 2},
        {base + "--bogus 1", "unknown option \"--bogus\"", 2},
        {base + "--device tpu -p x", "--device must be cpu, cuda or cuda:N, got \"tpu\"", 2},
        {base + "--cuda-mode fast -p x", "--cuda-mode goes with --device cuda", 2},
        {"-m aligngpt_st --vision-tower clip_vision --tokenizer ../run_tiny --image nope.png -p x",
         "--image \"nope.png\": no such file", 2},
        {"-m nope --image image.png -p x", "--model \"nope\": not a directory", 2},
        // a model directory without tokenizer.model: the file is named
        {"-m aligngpt_st --vision-tower clip_vision --image image.png -p x", "aligngpt_st/tokenizer.model", 1},
        // a tokenizer larger than the model's vocabulary
        {"-m aligngpt_st --vision-tower clip_vision --tokenizer ../tokenizer --image image.png -p x",
         "more than the model's vocab_size 64", 1},
        // an image that is not an image
        {"-m aligngpt_st --vision-tower clip_vision --tokenizer ../run_tiny --image aligngpt_st/config.json -p x",
         "aligngpt_st/config.json", 1},
    };
    for (const auto& c : cases) {
        CAPTURE(c.args);
        const auto r = run(c.args);
        CAPTURE(r.err);
        CHECK(r.code == c.code);
        CHECK(r.err.find(c.expect) != std::string::npos);
        CHECK(r.out.empty());
    }
}

TEST_CASE("aligngpt trace --prompt renders and tokenizes the question as run does (the reference's ids)") {
    const auto g = aligngpt::io::read_json_file(golden_dir + "/run_tiny/expected.json");
    const auto& c = g.at("cases").at(0);
    const std::string out = support::scratch_dir() + "/trace_prompt." + std::to_string(::getpid()) + ".safetensors";
    const auto r = support::run_command("cd '" + golden_dir + "/model_dirs' && '" + std::string(ALIGNGPT_TOOL_PATH) +
                                        "' trace -q -m aligngpt_st --vision-tower clip_vision --image image.png --tokenizer "
                                        "../run_tiny --out '" +
                                        out + "' -p " + shell_quoted(c.at("question")) + " 2>&1");
    CAPTURE(r.output);
    REQUIRE(r.code == 0);
    const auto f = aligngpt::io::safetensors_file::open(out);
    CHECK(f.read_as<std::int64_t>("input_ids") == c.at("ids").get<std::vector<std::int64_t>>());
}

TEST_CASE("aligngpt run: a prompt longer than the context is refused, not cut") {
    std::string longq;
    for (int i = 0; i < 800; i++) longq += "the cat ";
    const auto r = run(base + "--temp 0 -n 2 -p " + shell_quoted(longq));
    CHECK(r.code == 1);
    CHECK(r.err.find("more than the model's context of 2048") != std::string::npos);
}

}  // namespace test_run
#endif
