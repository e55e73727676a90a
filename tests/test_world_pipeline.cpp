// `aligngpt world` (world/pipeline.h): the whole tiny world end to end. No reference exists for
// these numbers, so the tests check what the pipeline promises:
//   * determinism: the test profile on 1 and on 2 threads writes the same results.json (all but the
//     wall times) and the same stage-2 model.safetensors, byte for byte;
//   * the stage-2 directory is a Hugging Face AlignGPT directory that `aligngpt run` loads and that
//     answers a question about an image of another seed;
//   * scoring: every metric is 1 on the ground truth's own answers and 0 on wrong ones;
//   * the command line refuses bad arguments with exit code 2, naming the option.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "aligngpt/io/file.h"
#include "aligngpt/world/pipeline.h"
#if defined(ALIGNGPT_TOOL_PATH)
#include "support/process.h"
#endif

#include "support/scratch_dir.h"

namespace test_world_pipeline {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

namespace fs = std::filesystem;
using namespace aligngpt;

std::string tmp(const std::string& name) { return support::scratch_dir() + "/pipeline_" + name; }

std::string bytes(const std::string& path) { return io::read_text_file(path, std::uint64_t(1) << 30); }

/// The test profile, run once per thread count and process, into a directory of its own. CTest runs each
/// case as a process of its own and several at once, so each case names its own directory (`who`).
const std::string& trained(int threads, const std::string& who) {
    static std::map<std::string, std::string> dirs;
    std::string& d = dirs[who + std::to_string(threads)];
    if (d.empty()) {
        d = tmp(who + "_t" + std::to_string(threads));
        fs::remove_all(d);
        world::pipeline_options o = world::pipeline_options::test(5);
        o.out_dir = d;
        o.log = nullptr;
        set_threads(threads);
        world::run_pipeline(o);
        set_threads(0);
    }
    return d;
}

/// results.json without the wall times.
nlohmann::json results_without_time(const std::string& dir) {
    nlohmann::json j = io::read_json_file(dir + "/results.json");
    j.erase("seconds");
    return j;
}

void write_answers(const std::string& path, const std::vector<std::pair<nlohmann::json, std::string>>& answers) {
    std::ofstream f(path);
    for (const auto& [id, text] : answers) f << nlohmann::json{{"question_id", id}, {"text", text}}.dump() << "\n";
}

#if defined(ALIGNGPT_TOOL_PATH)
struct tool_result {
    int code;
    std::string out, err;
};

tool_result tool(const std::string& args) {
    static int calls = 0;
    const std::string err_file = tmp("stderr." + std::to_string(::getpid()) + "." + std::to_string(calls++) + ".txt");
    const auto r = support::run_command("cd '" + support::scratch_dir() + "' && '" + std::string(ALIGNGPT_TOOL_PATH) + "' " +
                                        args + " 2>'" + err_file + "'");
    std::string err = fs::exists(err_file) ? bytes(err_file) : "";
    fs::remove(err_file);
    return {r.code, r.output, err};
}
#endif

}  // namespace

TEST_CASE("world pipeline: the test profile gives the same results.json and model bytes on 1 and 2 threads [slow]") {
    const std::string& a = trained(1, "determinism");
    const std::string& b = trained(2, "determinism");
    const nlohmann::json ra = results_without_time(a), rb = results_without_time(b);
    CHECK(ra.dump() == rb.dump());  // every number, bit for bit (dump prints doubles round-trip exactly)
    for (const char* v : {"aligngpt", "llava"}) {
        CAPTURE(v);
        const std::string m = "/seed-5/" + std::string(v) + "/stage2/model.safetensors";
        REQUIRE(fs::exists(a + m));
        CHECK(bytes(a + m) == bytes(b + m));
        REQUIRE(ra["metrics"].contains(v));
        for (const auto& column : world::table_columns()) CHECK_MESSAGE(ra["metrics"][v].contains(column.first), column.first);
    }
    // what the report promises is there
    for (const char* f : {"report.md", "results.json", "plots/gate_weights.tsv", "seed-5/levels/levels.png",
                          "seed-5/levels/captions_levels.json", "seed-5/aligngpt/stage1/mm_projector_align.bin"})
        CHECK_MESSAGE(fs::exists(a + "/" + f), f);
    const std::string report = bytes(a + "/report.md");
    CHECK(report.find("| aligngpt |") != std::string::npos);
    CHECK(report.find("| llava |") != std::string::npos);
    CHECK(report.find("## Time per stage") != std::string::npos);
    // a different seed gives a different world, so different numbers somewhere
    CHECK(ra["levels"].contains("5"));
    REQUIRE(ra["metrics"].contains("text_prior"));  // the blind baseline, a row of its own
    CHECK(report.find("| text prior (no image) |") != std::string::npos);
    CHECK(report.find("against the text prior (no image)") != std::string::npos);
}

#if defined(ALIGNGPT_TOOL_PATH)
TEST_CASE("world pipeline: the trained stage-2 directory loads in `aligngpt run` and answers about a new image [slow]") {
    const std::string model = trained(1, "answers") + "/seed-5/aligngpt/stage2";
    // an image the model never saw: a world of another seed
    const std::string w = tmp("new_world");
    fs::remove_all(w);
    world::options o = world::options::quick(99);
    o.scenes.image_size = 24, o.n_train = 2, o.n_eval = 1, o.n_text = 0;
    world::generate(o, w);
    const auto r = tool("run -m '" + model + "' --image '" + w + "/images/" + world::image_name(2) +
                        "' -p 'How many shapes are there?' --temp 0 -n 8 -t 1");
    CAPTURE(r.err);
    CHECK(r.code == 0);
    CHECK(r.out.size() > 1);  // a non-empty answer and its newline
}

TEST_CASE("world pipeline: bad command-line arguments exit 2 naming the option") {
    struct bad_case {
        const char* args;
        const char* says;
    };
    for (const bad_case& c :
         {bad_case{"--profile huge", "--profile must be quick, full or test"}, bad_case{"--seeds 0", "--seeds"},
          bad_case{"--variants nope", "unknown variant \"nope\""}, bad_case{"--variants aligngpt,aligngpt", "listed twice"},
          bad_case{"--threads 0", "--threads"}, bad_case{"--frobnicate", "unknown option"}}) {
        CAPTURE(c.args);
        const auto r = tool("world " + std::string(c.args) + " -o '" + tmp("never") + "'");
        CHECK(r.code == 2);
        CHECK_MESSAGE(r.err.find(c.says) != std::string::npos, r.err);
    }
    CHECK(!fs::exists(tmp("never")));  // nothing ran
}
#endif

TEST_CASE("world pipeline: each score is 1 on the ground truth's answers and 0 on wrong ones") {
    const std::string w = tmp("score_world");
    fs::remove_all(w);
    world::options o = world::options::quick(3);
    o.scenes.image_size = 24, o.n_train = 2, o.n_eval = 6, o.n_text = 2;
    world::generate(o, w);
    const auto scenes = world::read_scenes(w + "/world.json");
    const auto answers_for = [&](const std::string& qfile, bool right) {
        std::vector<std::pair<nlohmann::json, std::string>> out;
        for (const auto& q : eval::read_jsonl(qfile)) {
            const std::string truth = q.value.at("answer");
            std::string wrong = "purple elephant";
            if (q.value.contains("label")) wrong = q.value.at("label") == "yes" ? "No" : "Yes";
            out.push_back({q.value.at("question_id"), right ? truth : wrong});
        }
        return out;
    };
    const std::vector<std::pair<std::string, std::vector<std::string>>> kinds{
        {"attribute", {"attribute_accuracy"}},
        {"count", {"count_accuracy"}},
        {"text", {"text_accuracy"}},
        {"exists", {"pope_accuracy", "pope_precision", "pope_recall", "pope_f1", "pope_random_f1", "pope_adversarial_f1"}},
        {"describe",
         {"describe_object_precision", "describe_object_recall", "describe_count_accuracy", "describe_background_accuracy",
          "describe_exact"}}};
    for (const auto& kind_keys : kinds) {  // no structured bindings: clang 14 cannot CAPTURE them
        const std::string& kind = kind_keys.first;
        const std::vector<std::string>& keys = kind_keys.second;
        const std::string qf = w + "/" + (kind == "exists" ? std::string("eval_pope.jsonl") : "eval_" + kind + ".jsonl");
        for (bool right : {true, false}) {
            CAPTURE(kind);
            CAPTURE(right);
            const std::string af = tmp("answers.jsonl");
            write_answers(af, answers_for(qf, right));
            world::metrics m;
            world::score_answers(kind, qf, af, scenes, m);
            for (const std::string& k : keys) {
                CAPTURE(k);
                REQUIRE(m.count(k));
                CHECK(m[k] == (right ? 1.0 : 0.0));  // exact: counts over whole questions
            }
        }
    }
    // half right: the accuracy is the share of right answers
    const std::string qf = w + "/eval_count.jsonl", af = tmp("answers_half.jsonl");
    auto half = answers_for(qf, true);
    for (std::size_t k = 0; k < half.size(); k += 2) half[k].second = "nine hundred";
    write_answers(af, half);
    world::metrics m;
    world::score_answers("count", qf, af, scenes, m);
    CHECK(m["count_accuracy"] == doctest::Approx(0.5));
    // a question without an answer is an error naming the question file's line
    write_answers(af, {half.front()});
    CHECK_THROWS_WITH_AS(world::score_answers("count", qf, af, scenes, m), doctest::Contains("eval_count.jsonl:2"), error);
}

TEST_CASE("world pipeline: --resume keeps the finished stages and gives the uninterrupted run's results [slow]") {
    const std::string& straight = trained(1, "resume_reference");  // a directory of its own: cases run at once
    const std::string d = tmp("resume");
    fs::remove_all(d);
    world::pipeline_options o = world::pipeline_options::test(5);
    o.out_dir = d;
    o.log = nullptr;
    set_threads(1);
    world::run_pipeline(o);
    // an interruption during llava's stage 2: its directory half written, its markers and the report's absent
    fs::remove(d + "/.stages/seed-5.llava.stage2.json");
    fs::remove(d + "/.stages/seed-5.llava.eval.json");
    fs::remove(d + "/seed-5/llava/stage2/model.safetensors");
    fs::remove(d + "/results.json");
    std::ostringstream log;
    o.resume = true, o.log = &log;
    world::run_pipeline(o);
    set_threads(0);
    CHECK(results_without_time(d).dump() == results_without_time(straight).dump());
    for (const char* v : {"aligngpt", "llava"}) {
        CAPTURE(v);
        const std::string m = "/seed-5/" + std::string(v) + "/stage2/model.safetensors";
        CHECK(bytes(d + m) == bytes(straight + m));
    }
    const std::string said = log.str();
    CHECK(said.find("aligngpt: stage 2 (instruction tuning): finished by an earlier run") != std::string::npos);
    CHECK(said.find("llava: stage 2 (instruction tuning): finished by an earlier run") == std::string::npos);
    CHECK(said.find("llava: stage 2 (instruction tuning) done in") != std::string::npos);
    // other options: refused, naming the field, before anything runs
    o.stage2_steps = 3;
    CHECK_THROWS_WITH_AS(world::run_pipeline(o), doctest::Contains("\"stage2\""), error);
    CHECK(fs::exists(d + "/seed-5/llava/stage2/model.safetensors"));  // nothing was touched
    // without --resume the markers go: everything runs again
    o.resume = false, o.stage2_steps = 2, o.log = nullptr;
    o.variants = {"aligngpt"};
    world::run_pipeline(o);
    CHECK(!fs::exists(d + "/.stages/seed-5.llava.eval.json"));
}

TEST_CASE("world pipeline: the text prior gives each question its most frequent training answer, without the image") {
    const std::string w = tmp("prior_world");
    fs::remove_all(w);
    world::options o = world::options::quick(4);
    o.scenes.image_size = 24, o.n_train = 60, o.n_eval = 8, o.n_text = 40;
    world::generate(o, w);
    world::pipeline_detail::answer_from_prior(w, w + "/prior");
    // tally instruct.json here, turn by turn, independently of the pipeline's code
    std::map<std::string, std::map<std::string, int>> tally;
    for (const auto& r : io::read_json_file(w + "/instruct.json")) {
        const auto& turns = r.at("conversations");
        for (std::size_t t = 0; t + 1 < turns.size(); t += 2) {
            std::string q = turns[t].at("value");
            if (q.rfind("<image>\n", 0) == 0) q = q.substr(8);
            tally[q][turns[t + 1].at("value")]++;
        }
    }
    int seen = 0;
    for (const char* kind : {"attribute", "count", "exists", "text"}) {
        CAPTURE(kind);
        const std::string qf = w + "/" + (std::string(kind) == "exists" ? std::string("eval_pope") : "eval_" + std::string(kind));
        const auto qs = eval::read_jsonl(qf + ".jsonl");
        const auto as = eval::read_answers(w + "/prior/answers_" + std::string(kind) + ".jsonl");
        REQUIRE(as.size() == qs.size());
        for (std::size_t k = 0; k < qs.size(); k++) {
            const std::string text = qs[k].value.at("text");
            CAPTURE(text);
            CHECK(as[k].question_id == eval::question_id(qs[k].value, qs[k].where));
            const auto it = tally.find(text);
            if (it == tally.end()) continue;  // never asked in training: the kind's most frequent answer
            int best = 0;
            for (const auto& [a, n] : it->second) best = std::max(best, n);
            CHECK(it->second.count(as[k].text));
            if (it->second.count(as[k].text)) CHECK(it->second.at(as[k].text) == best);
            seen++;
        }
    }
    CHECK(seen > 10);  // the check above ran on questions that training asked too
    // text questions repeat training facts, whose answer is unique: the prior knows each fact it saw
    for (const auto& q : eval::read_jsonl(w + "/eval_text.jsonl"))
        if (tally.count(q.value.at("text")) && tally.at(q.value.at("text")).size() == 1) {
            const auto as = eval::read_answers(w + "/prior/answers_text.jsonl");
            const auto it = std::find_if(as.begin(), as.end(),
                                         [&](const auto& a) { return a.question_id == eval::question_id(q.value, q.where); });
            REQUIRE(it != as.end());
            CHECK(it->text == tally.at(q.value.at("text")).begin()->first);
        }
}

TEST_CASE("world pipeline: options are checked, naming what is wrong") {
    CHECK_THROWS_WITH_AS(world::parse_variants("aligngpt,nope"), doctest::Contains("unknown variant \"nope\""), error);
    CHECK_THROWS_WITH_AS(world::parse_variants(""), doctest::Contains("unknown variant \"\""), error);
    CHECK(world::parse_variants("llava,fixed:7") == std::vector<std::string>{"llava", "fixed:7"});
    CHECK_THROWS_WITH_AS(world::pipeline_options::profile_named("huge", 1), doctest::Contains("quick, full or test"), error);
    auto o = world::pipeline_options::test(1);
    o.seeds = 0;
    CHECK_THROWS_WITH_AS(world::check(o), doctest::Contains("seeds"), error);
    o = world::pipeline_options::full(1);
    CHECK(o.variants.size() == 5);
    CHECK(o.seeds == 3);
    CHECK(world::pipeline_options::quick(1).variants == std::vector<std::string>{"aligngpt", "llava"});
}

}  // namespace test_world_pipeline
