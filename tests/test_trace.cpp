// The tiny end-to-end tests: a model directory in the published layout, through the public API
// (load_aligngpt -> vision tower -> forward) and through `aligngpt trace` run as a subprocess,
// against the torch reference of tests/tools/golden/models_dir.py (trace_ref.safetensors).
//
// Tolerance: every tensor within torch.testing.assert_close(rtol = 1e-4, atol = 1e-5) of the fp32
// reference (measured: <= 1e-6 absolute up to the decoder, 4.3e-6 on logits of magnitude 6).
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "aligngpt/pretrained.h"
#include "aligngpt/version.h"
#include "support/golden.h"
#include "support/process.h"
#include "support/scratch_dir.h"

namespace test_trace {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

namespace fs = std::filesystem;
using namespace aligngpt;

const std::string dirs = std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs";
constexpr double rtol = 1e-4, atol = 1e-5;

/// Rows `rows` of dimension 1 of a [1, N, C] tensor (the reference stores probe rows only).
std::vector<float> rows_of(const std::vector<float>& v, const std::vector<index_t>& shape, const std::vector<std::int64_t>& rows,
                           std::int64_t shift = 0) {
    std::vector<float> out;
    const index_t C = shape.back();
    for (std::int64_t r : rows)
        if (r + shift >= 0) out.insert(out.end(), v.begin() + (r + shift) * C, v.begin() + (r + shift + 1) * C);
    return out;
}

/// Compares a trace (name -> tensor) with trace_ref; `get(name)` returns the values and shape, or
/// an empty shape when the trace lacks the tensor. Returns the number of tensors compared.
int compare_with_reference(const std::function<std::pair<std::vector<float>, std::vector<index_t>>(const std::string&)>& get) {
    const auto ref = golden::load("model_dirs/trace_ref");
    const auto probe = ref.get<std::int64_t>("probe"), vprobe = ref.get<std::int64_t>("vprobe");
    const index_t S = std::stoll(ref.file.metadata().at("S"));
    int compared = 0;
    for (const auto& t : ref.file.tensors()) {
        const std::string& k = t.name;
        if (k == "probe" || k == "vprobe" || k == "input_ids") continue;
        auto [v, shape] = get(k);
        if (shape.empty()) {
            // the tool runs the vision tower only up to the selected layer (-2): hidden_states[2] is never computed
            CHECK_MESSAGE(k == "vision.hidden_states.2", "trace lacks " << k);
            continue;
        }
        if (k.starts_with("vision.hidden_states."))
            v = rows_of(v, shape, vprobe);
        else if (k == "vision.features" || k == "projector.out")
            v = rows_of(v, shape, vprobe, -1);
        else if (shape.size() == 3 && shape[1] == S)
            v = rows_of(v, shape, probe);
        const auto r = ref.get<float>(k);
        INFO(k);
        REQUIRE(v.size() == r.size());
        CHECK(golden::close_ratio(v, r, rtol, atol) <= 1.0);
        compared++;
    }
    return compared;
}

[[maybe_unused]] std::string ids_arg() {  // used by the subprocess tests (when the tool is built)
    const auto ids = golden::load("model_dirs/trace_ref").get<std::int64_t>("input_ids");
    std::string s;
    for (std::int64_t i : ids) s += (s.empty() ? "" : ",") + std::to_string(i);
    return s;
}

}  // namespace

TEST_CASE("aligngpt end to end through the public API: load a directory, encode pixels, run the ids, read logits") {
    pretrained::load_options o;
    o.quiet = true;
    o.vision_tower = dirs + "/clip_vision";
    auto m = pretrained::load_aligngpt(dirs + "/aligngpt_bin", o);
    const auto ref = golden::load("model_dirs/trace_ref");
    const auto pixels = golden::load("model_dirs/pixels").tensor("pixel_values");
    // One prefill through the models' own code: the tower, projector, gate and LLM fill the sink.
    trace_sink<float> sink;
    sink.put("pixel_values", pixels);
    const auto out = m.model->forward_pixels(nullptr, {models::sample{ref.get<std::int64_t>("input_ids")}}, *m.vision,
                                             autograd::variable<float>::leaf(pixels), models::stage::inference, {}, &sink);
    std::map<std::string, tensor<float>> t;
    for (const auto& [k, v] : sink.entries) t[k] = v;
    const int n = compare_with_reference([&](const std::string& k) -> std::pair<std::vector<float>, std::vector<index_t>> {
        if (!t.count(k)) return {};
        return {t[k].to_vector(), t[k].shape()};
    });
    CHECK(n == 13);
    const auto last = ref.get<float>("logits");
    CHECK(generate::argmax_last(out.logits) == std::max_element(last.end() - 64, last.end()) - (last.end() - 64));
}

#ifdef ALIGNGPT_TOOL_PATH

namespace {

using run_result = support::command_result;

/// Runs `aligngpt <args>` (stdout and stderr together) in the fixture directory.
run_result run_tool(const std::string& args) {
    return support::run_command("cd '" + dirs + "' && '" + std::string(ALIGNGPT_TOOL_PATH) + "' " + args + " 2>&1");
}

std::string out_file(const std::string& name) { return support::scratch_dir() + "/" + name + ".safetensors"; }

int compare_file(const std::string& path) {
    const auto f = io::safetensors_file::open(path);
    return compare_with_reference([&](const std::string& k) -> std::pair<std::vector<float>, std::vector<index_t>> {
        if (!f.find(k)) return {};
        return {f.read_as<float>(k), f.at(k).shape};
    });
}

}  // namespace

TEST_CASE("aligngpt trace (subprocess) on the tiny .bin directory matches the torch reference") {
    const std::string out = out_file("trace_bin");
    fs::remove(out);
    const auto r = run_tool("trace --model aligngpt_bin --vision-tower clip_vision --pixels pixels.safetensors --input-ids " +
                            ids_arg() + " --out " + out);
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.find("[load] aligngpt") != std::string::npos);
    CHECK(compare_file(out) == 13);
    const auto f = io::safetensors_file::open(out);
    CHECK(f.read_as<std::int64_t>("input_ids") == golden::load("model_dirs/trace_ref").get<std::int64_t>("input_ids"));
    CHECK(f.at("input_ids").type == io::dtype::I64);
    CHECK(f.at("logits").type == io::dtype::F32);
    for (const char* k : {"pixel_values", "vision.hidden_states.0", "vision.hidden_states.1", "vision.features", "projector.out",
                          "gate.text_mean", "gate.dots", "gate.weights", "align.indicator", "inputs_embeds", "llm.layers.0.out",
                          "llm.layers.1.out", "logits"})
        CHECK_MESSAGE(f.find(k), k);
}

TEST_CASE("aligngpt trace --image (expand2square + CLIP image processor) on the safetensors directory, underscore spellings") {
    const std::string out = out_file("trace_image");
    fs::remove(out);
    const auto r = run_tool("trace -q --model=aligngpt_st --vision_tower clip_vision --image image.png --input_ids " + ids_arg() +
                            " -o " + out);
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.empty());  // -q: no progress
    CHECK(compare_file(out) == 13);
    const auto f = io::safetensors_file::open(out);
    CHECK(golden::max_abs_diff(f.read_as<float>("pixel_values"), golden::load("model_dirs/pixels").get<float>("pixel_values")) <=
          1e-6);
}

TEST_CASE("aligngpt trace --device cpu writes the default's file byte for byte") {
    const std::string base = "trace -q --model aligngpt_st --vision-tower clip_vision --pixels pixels.safetensors --input-ids " +
                             ids_arg() + " --out ";
    const std::string a = out_file("trace_default"), b = out_file("trace_cpu");
    REQUIRE(run_tool(base + a).code == 0);
    const auto r = run_tool(base + b + " --device cpu");
    INFO(r.output);
    REQUIRE(r.code == 0);
    const auto bytes = [](const std::string& f) {
        std::ifstream in(f, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), {});
    };
    CHECK(bytes(a).size() > 1000);
    CHECK(bytes(a) == bytes(b));
}

TEST_CASE("aligngpt trace --align-level 3 uses indicator row 3 and runs no gate") {
    const std::string out = out_file("trace_level3");
    const auto r = run_tool(
        "trace -q --model aligngpt_st --vision-tower clip_vision --pixels pixels.safetensors --align-level 3 "
        "--input-ids " +
        ids_arg() + " --out " + out);
    INFO(r.output);
    REQUIRE(r.code == 0);
    const auto f = io::safetensors_file::open(out);
    CHECK(!f.find("gate.weights"));
    const auto src = io::tensor_source::open(dirs + "/aligngpt_st");
    const auto* ind = src.find("align_indicators.indicator_embs");
    std::vector<float> rows(std::size_t(ind->info->numel()));
    ind->file->read(*ind->info, rows.data());
    CHECK(f.read_as<float>("align.indicator") == std::vector<float>(rows.begin() + 3 * 64, rows.begin() + 4 * 64));
}

TEST_CASE("aligngpt: bad command lines exit 2 with a message and the usage, never a crash") {
    const std::string ok =
        "trace --model aligngpt_st --vision-tower clip_vision --pixels pixels.safetensors --out " + out_file("never") + " ";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", "no command given"},
        {"frobnicate", "unknown command \"frobnicate\""},
        {"trace --model aligngpt_st", "--out FILE is required"},
        {"trace --out x.safetensors --input-ids 1,-200", "--model DIR is required"},
        {ok, "one of --prompt TEXT or --input-ids LIST is required"},
        {ok + "--input-ids 1,-200 --conv-mode v1", "--conv-mode and --tokenizer go with --prompt"},
        {ok + "--prompt 'What is this?' --conv-mode vicuna", "--conv-mode: conversation: unknown template \"vicuna\""},
        {ok + "--input-ids 1,x,-200", "--input-ids: item 2 of 3, \"x\", is not an integer"},
        {ok + "--input-ids 1,,-200", "--input-ids: item 2 of 3, \"\", is not an integer"},
        {ok + "--input-ids 1,-200,7abc", "--input-ids: item 3 of 3, \"7abc\", is not an integer"},
        {ok + "--input-ids ' 1,-200'", "--input-ids: item 1 of 2, \" 1\", is not an integer"},
        {ok + "--input-ids 1,-200,", "--input-ids: item 3 of 3, \"\", is not an integer"},
        {ok + "--input-ids 1,-200,99999999999999999999",
         "item 3 of 3, \"99999999999999999999\", is out of the 64-bit integer range"},
        {ok + "--input-ids 1,-200 --align-level 8", "--align-level must be auto or a level 0..7, got \"8\""},
        {ok + "--input-ids 1,-200 --dtype f8", "--dtype must be f32, bf16 or f16"},
        {ok + "--input-ids 1,-200 --image image.png", "give either --image or --pixels, not both"},
        {ok + "--input-ids 1,-200 --frobnicate 3", "unknown option \"--frobnicate\""},
        {ok + "--input-ids 1,-200 --quiet=yes", "option --quiet takes no value"},
        {ok + "--input-ids 1,-200 --model aligngpt_bin", "option --model given twice"},
        {ok + "--input-ids", "option --input-ids needs a value"},
        {ok + "--input-ids 1,5,9",
         "--input-ids must contain exactly one -200 image placeholder (the model takes one image), found 0"},
        {ok + "--input-ids 1,-200,5,-200", "found 2"},
        {ok + "--input-ids 1,999,-200",
         "--input-ids: item 2 of 3, id 999, is outside the vocabulary [0, 64) of aligngpt_st/config.json"},
        {ok + "--input-ids 1,-200,-1", "--input-ids: item 3 of 3, id -1, is outside the vocabulary [0, 64)"},
        {"trace -q --model no_such_dir --pixels pixels.safetensors --input-ids 1,-200 --out " + out_file("never"),
         "--model \"no_such_dir\": not a directory"},
        {ok + "--input-ids 1,-200 --device gpu", "--device must be cpu, cuda or cuda:N, got \"gpu\""},
        {ok + "--input-ids 1,-200 --device cuda:x", "--device must be cpu, cuda or cuda:N with N a device number"},
        {ok + "--input-ids 1,-200 --device cuda:-1", "got \"cuda:-1\""},
        {ok + "--input-ids 1,-200 --cuda-mode fast", "--cuda-mode goes with --device cuda"},
        {ok + "--input-ids 1,-200 --device cpu --cuda-mode exact", "--cuda-mode goes with --device cuda"},
        {ok + "--input-ids 1,-200 --device cuda --cuda-mode slow", "--cuda-mode must be exact or fast, got \"slow\""},
#if !ALIGNGPT_TOOL_HAS_CUDA
        {ok + "--input-ids 1,-200 --device cuda", "--device cuda: this aligngpt was built without CUDA"},
#endif
    };
    for (const auto& c : cases) {
        const std::string &args = c.first, &expect = c.second;
        const auto r = run_tool(args);
        INFO("args: " << args << "\noutput:\n" << r.output);
        CHECK(r.code == 2);
        CHECK(r.output.find(expect) != std::string::npos);
        CHECK(r.output.find("usage: aligngpt") != std::string::npos);
    }
    CHECK(!fs::exists(out_file("never")));
}

TEST_CASE(
    "aligngpt trace: arguments are checked before the model is loaded (a directory with no weights still gives the argument "
    "error)") {
    // config.json alone: loading would fail with "no LLM weights", so exit 2 with the argument's
    // message proves the check ran first.
    const std::string model = support::scratch_dir() + "/config_only";
    fs::create_directories(model);
    fs::copy_file(dirs + "/aligngpt_st/config.json", model + "/config.json", fs::copy_options::overwrite_existing);
    const std::string out = out_file("early");
    const std::string base = "trace -q --model " + model + " --vision-tower clip_vision ";
    const std::string good_ids = "--input-ids 1,-200,5 ";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {base + "--pixels pixels.safetensors " + good_ids + "--out " + support::scratch_dir() + "/no_such_dir/x.safetensors",
         "--out \"" + support::scratch_dir() + "/no_such_dir/x.safetensors\": directory \"" + support::scratch_dir() +
             "/no_such_dir\" does not exist"},
        {base + "--pixels pixels.safetensors " + good_ids + "--out " + support::scratch_dir(), "is a directory"},
        {base + "--image no_such.png " + good_ids + "--out " + out, "--image \"no_such.png\": no such file"},
        {base + "--image clip_vision " + good_ids + "--out " + out, "--image \"clip_vision\": not a regular file"},
        {base + "--pixels no_such.safetensors " + good_ids + "--out " + out, "--pixels \"no_such.safetensors\": no such file"},
        {"trace -q --model " + model + " --vision-tower no_such_tower --pixels pixels.safetensors " + good_ids + "--out " + out,
         "--vision-tower \"no_such_tower\": not a directory"},
        {base + "--pixels pixels.safetensors " + good_ids + "--mm-projector no_such.bin --out " + out,
         "--mm-projector \"no_such.bin\": no such file"},
        {base + "--pixels pixels.safetensors --input-ids 1,abc,-200 --out " + out,
         "--input-ids: item 2 of 3, \"abc\", is not an integer"},
        {base + "--pixels pixels.safetensors --input-ids 1,-200,64 --out " + out,
         "--input-ids: item 3 of 3, id 64, is outside the vocabulary [0, 64) of " + model + "/config.json"},
        {base + "--pixels pixels.safetensors --input-ids 1,-200,-200 --out " + out, "found 2"},
    };
    for (const auto& [args, expect] : cases) {
        const auto r = run_tool(args);
        INFO("args: " << args << "\noutput:\n" << r.output);
        CHECK(r.code == 2);
        CHECK(r.output.find(expect) != std::string::npos);
        CHECK(r.output.find("no LLM weights") == std::string::npos);
    }
    // Control: with every argument right, the same directory fails in the load (exit 1).
    const auto r = run_tool(base + "--pixels pixels.safetensors " + good_ids + "--out " + out);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("no LLM weights") != std::string::npos);
    CHECK(!fs::exists(out));
}

TEST_CASE("aligngpt: runtime errors exit 1 with the file named; --help and --version exit 0") {
    auto r = run_tool("trace -q --model aligngpt_st --pixels pixels.safetensors --input-ids 1,-200 --out " + out_file("never"));
    CHECK(r.code == 1);
    CHECK(r.output.find("pass --vision-tower DIR") != std::string::npos);
    r = run_tool("trace -q --model aligngpt_st --vision-tower clip_vision --pixels image.png --input-ids 1,-200 --out " +
                 out_file("never"));
    CHECK(r.code == 1);
    CHECK(r.output.find("image.png") != std::string::npos);
    r = run_tool("--help");
    CHECK(r.code == 0);
    CHECK(r.output.find("aligngpt trace options") != std::string::npos);
    r = run_tool("trace --help");
    CHECK(r.code == 0);
    r = run_tool("--version");
    CHECK(r.code == 0);
    CHECK(r.output == "aligngpt " ALIGNGPT_PROJECT_VERSION "\n");  // CMake's project(VERSION)
    CHECK(std::string(ALIGNGPT_VERSION) == ALIGNGPT_PROJECT_VERSION);
    CHECK(std::string(ALIGNGPT_VERSION) == std::to_string(ALIGNGPT_VERSION_MAJOR) + "." + std::to_string(ALIGNGPT_VERSION_MINOR) +
                                               "." + std::to_string(ALIGNGPT_VERSION_PATCH));
}

// Issue 12 through the CLI, as a user who downloaded a hostile model directory would hit it: a
// config.json nested 100000 levels, an unsigned mm_vision_select_layer, a preprocessor_config.json
// with a 20000-pixel crop. Each exits 1 naming the file and the field, quickly, never a crash.
TEST_CASE("aligngpt trace: hostile config files exit 1 naming the file and the field (issue 12)") {
    const std::string base = support::scratch_dir() + "/hostile";
    const auto model_dir = [&](const std::string& name, const std::string& config) {
        const std::string d = base + "/" + name;
        fs::remove_all(d);
        fs::create_directories(d);
        for (const auto& e : fs::directory_iterator(dirs + "/aligngpt_st"))
            fs::copy_file(e.path(), d + "/" + e.path().filename().string());
        std::ofstream(d + "/config.json", std::ios::trunc) << config;
        return d;
    };
    const std::string args =
        " --vision-tower clip_vision --pixels pixels.safetensors --input-ids 1,-200 --out " + out_file("never");
    const int n = 100000;
    std::string deep =
        model_dir("deep", "{\"vocab_size\": 64, \"hidden_size\": " + std::string(n, '[') + std::string(n, ']') + "}");
    auto r = run_tool("trace -q --model " + deep + args);
    INFO(r.output.substr(0, 2000));
    CHECK(r.code == 1);
    CHECK(r.output.find(deep + "/config.json: nesting deeper than 64 levels (in field 'hidden_size')") != std::string::npos);

    std::string cfg = io::read_text_file(dirs + "/aligngpt_st/config.json", 1 << 20);
    const std::string layer = "\"mm_vision_select_layer\": -2";
    REQUIRE(cfg.find(layer) != std::string::npos);
    cfg.replace(cfg.find(layer), layer.size(), "\"mm_vision_select_layer\": 18446744073709551614");
    const std::string wrapped = model_dir("wrapped", cfg);
    r = run_tool("trace -q --model " + wrapped + args);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find(wrapped + "/config.json: field 'mm_vision_select_layer' must be an integer in [-1024, 1024], got "
                                  "18446744073709551614") != std::string::npos);

    const std::string tower = base + "/tower";
    fs::remove_all(tower);
    fs::create_directories(tower);
    for (const auto& e : fs::directory_iterator(dirs + "/clip_vision"))
        fs::copy_file(e.path(), tower + "/" + e.path().filename().string());
    std::ofstream(tower + "/preprocessor_config.json", std::ios::trunc) << R"({"crop_size": 20000})";
    r = run_tool("trace -q --model aligngpt_st --vision-tower " + tower + " --image image.png --input-ids 1,-200 --out " +
                 out_file("never"));
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find(tower + "/preprocessor_config.json: field 'crop_size' must give at most 16777216 pixels") !=
          std::string::npos);
    CHECK(!fs::exists(out_file("never")));
}

#endif  // ALIGNGPT_TOOL_PATH

}  // namespace test_trace
