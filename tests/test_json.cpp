// io/json.h: the one JSON field reader, and its one message format "FILE: field 'x' must be ...",
// as every config parser (LLaMA, AlignGPT, CLIP, image processor, checkpoint index) reports it.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "aligngpt/io/image.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/torch_bin.h"
#include "aligngpt/models/aligngpt.h"
#include "aligngpt/models/clip_config.h"
#include "aligngpt/models/llama.h"
#include "aligngpt/pretrained.h"
#include "support/process.h"
#include "support/scratch_dir.h"

namespace test_json {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

using namespace aligngpt;
using nlohmann::json;

using support::message_of;

std::string write_tmp(const std::string& name, const std::string& text) {
    const std::string d = support::scratch_dir() + "/json";
    std::filesystem::create_directories(d);
    std::ofstream(d + "/" + name) << text;
    return d + "/" + name;
}

const json llama_min = {
    {"hidden_size", 64}, {"intermediate_size", 96}, {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"vocab_size", 50}};

}  // namespace

TEST_CASE("json_reader: wrong type, out of range, missing, null, nested: one message format") {
    const json j = json::parse(R"({"n": "abc", "big": 70000, "ok": 7, "nul": null, "s": 5, "b": 1,
                                   "sec": {"x": -1, "deep": {"y": "z"}}, "f": 0})");
    const io::json_reader r(j, "config.json");
    CHECK(message_of([&] { r.integer("n", 1, 1, 65536); }) ==
          "config.json: field 'n' must be an integer in [1, 65536], got \"abc\"");
    CHECK(message_of([&] { r.integer("big", 1, 1, 65536); }) ==
          "config.json: field 'big' must be an integer in [1, 65536], got 70000");
    CHECK(message_of([&] { r.integer("absent", std::nullopt, 1, 65536); }) ==
          "config.json: field 'absent' must be an integer in [1, 65536], but it is missing");
    CHECK(message_of([&] { r.integer("ok", std::nullopt, 8, io::json_reader::no_limit); }) ==
          "config.json: field 'ok' must be an integer >= 8, got 7");
    CHECK(r.integer("ok", std::nullopt, 1, 10) == 7);
    CHECK(r.integer("absent", 3, 1, 10) == 3);
    // null: absent by default, refused on request
    CHECK(r.integer("nul", 5, 1, 10) == 5);
    CHECK(message_of([&] { r.nulls(io::json_nulls::refused).integer("nul", 5, 1, 10); }) ==
          "config.json: field 'nul' must be an integer in [1, 10], got null");
    CHECK(message_of([&] { r.integer("nul", std::nullopt, 1, 10); }) ==
          "config.json: field 'nul' must be an integer in [1, 10], got null");
    CHECK(message_of([&] { r.string("s", ""); }) == "config.json: field 's' must be a string, got 5");
    CHECK(message_of([&] { r.boolean("b", false); }) == "config.json: field 'b' must be true or false, got 1");
    CHECK(message_of([&] { r.number("f", 1.0, 0, 1, /*lo_open=*/true); }) ==
          "config.json: field 'f' must be a number in (0, 1], got 0");
    CHECK(message_of([&] { r.number("n", 1.0, 0, io::json_reader::any, true); }) ==
          "config.json: field 'n' must be a finite number > 0, got \"abc\"");
    CHECK(message_of([&] { r.one_of("s", "a", {"a", "b"}); }) == "config.json: field 's' must be \"a\" or \"b\", got 5");
    // nested objects name the field by its path
    const auto sec = r.object("sec");
    CHECK(message_of([&] { sec.integer("x", 0, 0, 3); }) == "config.json: field 'sec.x' must be an integer in [0, 3], got -1");
    CHECK(message_of([&] { sec.object("deep").integer("y", 0, 0, 3); }) ==
          "config.json: field 'sec.deep.y' must be an integer in [0, 3], got \"z\"");
    CHECK(message_of([&] { r.object("ok"); }) == "config.json: field 'ok' must be an object, got 7");
    CHECK(message_of([&] { io::json_reader(json::array(), "a.json"); }) == "a.json: top level must be a JSON object, got []");
    // long values are cut in messages
    const json l = {{"k", std::string(1000, 'x')}};
    CHECK(message_of([&] { io::json_reader(l, "l.json").integer("k", 0, 0, 1); }).size() < 200);
}

TEST_CASE("json files: invalid JSON, size cap, duplicate keys and depth (index files) name the file") {
    const std::string bad = write_tmp("bad.json", "{\"a\": ");
    CHECK(message_of([&] { io::read_json_file(bad); }).starts_with(bad + ": invalid JSON"));
    const std::string dup = write_tmp("dup.json", R"({"a": 1, "a": 2})");
    CHECK(io::read_json_file(dup)["a"] == 2);  // configs: the last one wins, as in Python
    CHECK(message_of([&] { io::read_json_file(dup, {.refuse_duplicate_keys = true}); }) ==
          dup + ": duplicate key \"a\" (each key may appear once)");
    const std::string deep = write_tmp("deep.json", R"({"a": [[[1]]]})");
    CHECK(message_of([&] { io::read_json_file(deep, {.max_depth = 3}); }) ==
          deep + ": nesting deeper than 3 levels (in field 'a')");
    const std::string big = write_tmp("big.json", "{\"a\": \"" + std::string(2000, 'x') + "\"}");
    CHECK(message_of([&] { io::read_json_file(big, {.max_bytes = 1000}); }).find("more than the limit of 1000") !=
          std::string::npos);
}

TEST_CASE("json: the five config parsers report in the one format") {
    // LLaMA (config.json of a Vicuna / AlignGPT directory)
    json j = llama_min;
    j["hidden_size"] = "abc";
    CHECK(message_of([&] { models::llama_config::from_json(j, "config.json"); }) ==
          "config.json: field 'hidden_size' must be an integer in [1, 65536], got \"abc\"");
    j = llama_min, j.erase("vocab_size");
    CHECK(message_of([&] { models::llama_config::from_json(j, "config.json"); }) ==
          "config.json: field 'vocab_size' must be an integer in [1, 16777216], but it is missing");
    j = llama_min, j["rms_norm_eps"] = 0;
    CHECK(message_of([&] { models::llama_config::from_json(j, "config.json"); }) ==
          "config.json: field 'rms_norm_eps' must be a number in (0, 1], got 0");
    j = llama_min, j["tie_word_embeddings"] = nullptr;  // refused, as before (null is not a boolean)
    CHECK(message_of([&] { models::llama_config::from_json(j, "config.json"); }) ==
          "config.json: field 'tie_word_embeddings' must be true or false, got null");
    j = llama_min, j["rope_scaling"] = {{"type", "linear"}, {"factor", "2"}};
    CHECK(message_of([&] { models::llama_config::from_json(j, "config.json"); }) ==
          "config.json: field 'rope_scaling.factor' must be a number in [-1000000, 1000000], got \"2\"");
    j = llama_min, j["eos_token_id"] = {2, 99};
    CHECK(message_of([&] { models::llama_config::from_json(j, "config.json"); }) ==
          "config.json: field 'eos_token_id' must be an id or a list of ids in [0, 49], got [2,99]");
    j = llama_min, j["pad_token_id"] = nullptr, j["eos_token_id"] = nullptr;  // null: the defaults
    CHECK(models::llama_config::from_json(j, "config.json").pad_token_id == -1);
    CHECK(models::llama_config::from_json(j, "config.json").eos_token_ids == std::vector<std::int64_t>{2});

    // AlignGPT (the mm_* fields)
    j = llama_min;
    CHECK(message_of([&] { models::aligngpt_config::from_json(j, "config.json"); }) ==
          "config.json: field 'mm_hidden_size' must be an integer in [1, 65536], but it is missing");
    j["mm_hidden_size"] = 32, j["tokenizer_model_max_length"] = 1;
    CHECK(message_of([&] { models::aligngpt_config::from_json(j, "config.json"); }) ==
          "config.json: field 'tokenizer_model_max_length' must be an integer >= 2, got 1");
    j["tokenizer_model_max_length"] = nullptr, j["mm_projector_type"] = nullptr;
    CHECK(message_of([&] { models::aligngpt_config::from_json(j, "config.json"); }) ==
          "config.json: field 'mm_projector_type' must be a string, got null");
    j.erase("mm_projector_type");
    const auto a = models::aligngpt_config::from_json(j, "config.json");
    CHECK(a.tokenizer_model_max_length == 0);  // null: no truncation
    CHECK(a.mm_projector_type == "linear");    // absent: the reference's getattr default
    CHECK(a.n_image_tokens == 576);            // not a config.json field: set by the loader

    // CLIP (a CLIPConfig section)
    const std::string clip = write_tmp("clip.json", R"({"model_type": "clip", "vision_config": {"patch_size": null}})");
    CHECK(message_of([&] { models::clip_vision_config::from_file(clip); }) ==
          clip + ": field 'vision_config.patch_size' must be an integer in [1, 16384], got null");
    const std::string tower = write_tmp("tower.json", R"({"model_type": "clip_vision_model", "image_size": 0})");
    CHECK(message_of([&] { models::clip_vision_config::from_file(tower); }) ==
          tower + ": field 'image_size' must be an integer in [1, 16384], got 0");
    CHECK(models::clip_text_config::from_json(json{{"pad_token_id", nullptr}}, "t.json").pad_token_id == 1);

    // image processor (preprocessor_config.json)
    CHECK(message_of([&] {
              io::clip_image_processor_config::from_json(json{{"crop_size", {{"height", 0}, {"width", 3}}}}, "pp.json");
          }) == "pp.json: field 'crop_size.height' must be an integer in [1, 65536], got 0");
    CHECK(message_of([&] {
              io::clip_image_processor_config::from_json(json{{"do_resize", "yes"}}, "pp.json");
          }) == "pp.json: field 'do_resize' must be true or false, got \"yes\"");
    CHECK(message_of([&] {
              io::clip_image_processor_config::from_json(json{{"image_mean", {1, "a", 2}}}, "pp.json");
          }) == "pp.json: field 'image_mean' must be a number or 3 numbers in [-1000000, 1000000], got [1,\"a\",2]");
    CHECK(message_of([&] {
              io::clip_image_processor_config::from_json(json{{"resample", 0}}, "pp.json");
          }).starts_with("pp.json: field 'resample' must be a Pillow filter 1..5"));

    // checkpoint index (*.index.json)
    const std::string d = support::scratch_dir() + "/json/index";
    std::filesystem::create_directories(d);
    std::ofstream(d + "/model.safetensors.index.json") << R"({"metadata": {}, "weight_map": {"w": 5}})";
    CHECK(message_of([&] { (void)io::checkpoint_dir::open(d); }) ==
          d + "/model.safetensors.index.json: field 'weight_map[\"w\"]' must be a string (a shard file name), got 5");
    std::ofstream(d + "/model.safetensors.index.json") << R"({"metadata": {"total_size": -1}, "weight_map": {}})";
    CHECK(message_of([&] { (void)io::checkpoint_dir::open(d); }) ==
          d + "/model.safetensors.index.json: field 'metadata.total_size' must be a non-negative integer, got -1");
    std::ofstream(d + "/model.safetensors.index.json") << R"({"metadata": {}})";
    CHECK(message_of([&] { (void)io::checkpoint_dir::open(d); }) ==
          d + "/model.safetensors.index.json: field 'weight_map' must be an object, but it is missing");
    std::ofstream(d + "/model.safetensors.index.json") << R"({"weight_map": {"w": "a", "w": "b"}})";
    CHECK(message_of([&] { (void)io::checkpoint_dir::open(d); }).find("duplicate key \"w\"") != std::string::npos);
}

// Issue 12, finding 1: a config nested ~100000 levels crashed the process (json::dump() recursed
// in the error message; the readers had no depth limit). Each reader refuses it, naming the file.
TEST_CASE("json: a config nested 100000 levels deep is refused naming the file and the field, no crash") {
    const int n = 100000;
    const std::string nested = std::string(n, '[') + std::string(n, ']');
    const std::string path = write_tmp("deep_config.json", "{\"hidden_size\": " + nested + "}");
    const std::string expect = path + ": nesting deeper than 64 levels (in field 'hidden_size')";
    CHECK(message_of([&] { io::read_json_file(path); }) == expect);
    CHECK(message_of([&] { models::llama_config::load(path); }) == expect);
    CHECK(message_of([&] { models::aligngpt_config::load(path); }) == expect);
    CHECK(message_of([&] { pretrained::aligngpt_dir_config::load(path); }) == expect);
    CHECK(message_of([&] { models::clip_vision_config::from_file(path); }) == expect);
    CHECK(message_of([&] { models::clip_text_config::from_file(path); }) == expect);
    CHECK(message_of([&] { models::clip_config::from_file(path); }) == expect);
    CHECK(message_of([&] { io::clip_image_processor_config::from_json_file(path); }) == expect);
    const std::string top = write_tmp("deep_top.json", nested);  // no field: the message says where
    CHECK(message_of([&] { io::read_json_file(top); }) == top + ": nesting deeper than 64 levels");
    const std::string d = support::scratch_dir() + "/json/deep_index";
    std::filesystem::create_directories(d);
    std::ofstream(d + "/model.safetensors.index.json") << "{\"weight_map\": {\"w\": " + nested + "}}";
    CHECK(message_of([&] { (void)io::checkpoint_dir::open(d); }) ==
          d + "/model.safetensors.index.json: nesting deeper than 8 levels (in field 'weight_map.w')");
    // 64 levels are accepted (the limit, not an off-by-one), and refused as a field with a short message.
    const std::string at_limit =
        write_tmp("limit.json", "{\"hidden_size\": " + std::string(63, '[') + std::string(63, ']') + "}");
    CHECK(message_of([&] {
              models::llama_config::load(at_limit);
          }).starts_with(at_limit + ": field 'hidden_size' must be an integer in [1, 65536], got [[[[[...]]]]]"));
}

TEST_CASE("json: error messages show a deep or long value cut short, never dumped whole") {
    json deep = json::array();  // built in memory: no parser limit applies
    for (int k = 0; k < 100000; k++) {
        json outer = json::array();
        outer.push_back(std::move(deep));
        deep = std::move(outer);
    }
    json j = json::object();
    j["k"] = std::move(deep);
    CHECK(message_of([&] { io::json_reader(j, "mem.json").integer("k", 0, 0, 1); }) ==
          "mem.json: field 'k' must be an integer in [0, 1], got [[[[[...]]]]]");
    json wide = json::object();
    for (int k = 0; k < 100000; k++) wide["key" + std::to_string(k)] = k;
    const std::string m = message_of([&] { io::json_reader(json{{"k", wide}}, "wide.json").integer("k", 0, 0, 1); });
    CHECK(m.size() < 200);
    CHECK(m.ends_with("..."));
    const std::string long_key = message_of([&] {
        io::json_reader(json{{"k", {{std::string(100000, 'x'), 1}}}}, "key.json").integer("k", 0, 0, 1);
    });
    CHECK(long_key.size() < 200);
}

// Issue 12, finding 2: a double cast to an integer (or narrowed to float) before its range check
// is undefined behaviour. Every such field is range-checked as a double first.
TEST_CASE("json: numeric fields are range-checked before any conversion (1e300, -1e300, overflow to inf)") {
    const auto llama = [](const std::function<void(json&)>& edit) {
        json j = llama_min;
        edit(j);
        return message_of([&] { models::llama_config::from_json(j, "config.json"); });
    };
    for (const double v : {1e300, -1e300}) {
        CAPTURE(v);
        CHECK(llama([&](json& j) {
                  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8}, {"original_max_position_embeddings", v}};
              })
                  .starts_with("config.json: field 'rope_scaling.original_max_position_embeddings' must be a number in "
                               "[-16777216, 16777216], got "));
        CHECK(llama([&](json& j) {
                  j["rope_scaling"] = {{"type", "linear"}, {"factor", v}};
              }).starts_with("config.json: field 'rope_scaling.factor' must be a number in [-1000000, 1000000], got "));
        CHECK(llama([&](json& j) {
                  j["rms_norm_eps"] = v;
              }).starts_with("config.json: field 'rms_norm_eps' must be a number in (0, 1], got "));
        CHECK(llama([&](json& j) {
                  j["rope_theta"] = v;
              }).starts_with("config.json: field 'rope_theta' must be a number in (0, 1000000000000], got "));
        const auto pp = [&](const char* key, const json& value) {
            return message_of([&] { io::clip_image_processor_config::from_json(json{{key, value}}, "pp.json"); });
        };
        CHECK(
            pp("image_mean", v).starts_with("pp.json: field 'image_mean' must be a number or 3 numbers in [-1000000, 1000000]"));
        CHECK(pp("image_std", {1, v, 1})
                  .starts_with("pp.json: field 'image_std' must be a number or 3 numbers in [-1000000, 1000000]"));
        CHECK(pp("rescale_factor", v).starts_with("pp.json: field 'rescale_factor' must be a number in [-1000000, 1000000]"));
    }
    CHECK(message_of([&] {
              io::clip_image_processor_config::from_json(json{{"image_std", 1e-300}}, "pp.json");
          }).starts_with("pp.json: field 'image_std' must be nonzero numbers"));
    // JSON has no NaN or Infinity: the tokens are invalid JSON; 1e400 parses as infinity and is refused as not finite.
    const std::string nan = write_tmp("nan.json", R"({"rms_norm_eps": NaN})");
    CHECK(message_of([&] { models::llama_config::load(nan); }).starts_with(nan + ": invalid JSON"));
    const std::string inf = write_tmp("inf.json", R"({"rms_norm_eps": Infinity})");
    CHECK(message_of([&] { models::llama_config::load(inf); }).starts_with(inf + ": invalid JSON"));
    const std::string huge = write_tmp("huge.json", R"({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
        "num_attention_heads": 4, "vocab_size": 50, "rope_scaling": {"type": "linear", "factor": 1e400}})");
    const std::string m = message_of([&] { models::llama_config::load(huge); });
    CHECK((m.starts_with(huge + ": field 'rope_scaling.factor' must be a number in [-1000000, 1000000]") ||
           m.starts_with(huge + ": invalid JSON")));
}

// Issue 12, finding 6: nlohmann keeps integers above INT64_MAX as unsigned; get<int64_t>() wrapped
// 18446744073709551614 to -2, a valid mm_vision_select_layer. Every integer field refuses them.
TEST_CASE("json: integers above INT64_MAX are refused, never wrapped (mm_vision_select_layer 2^64-2 is not -2)") {
    const std::string u = "18446744073709551614";
    CHECK(io::detail::json_int64(json::parse(u)) == std::nullopt);
    CHECK(io::detail::json_int64(json::parse("9223372036854775807")) == INT64_MAX);
    CHECK(io::detail::json_int64(json::parse("9223372036854775808")) == std::nullopt);
    CHECK(io::detail::json_int64(json::parse("-9223372036854775808")) == INT64_MIN);
    CHECK(io::detail::json_int64(json::parse("2.0")) == std::nullopt);
    json j = llama_min;
    j["mm_hidden_size"] = 32;
    j["mm_vision_select_layer"] = json::parse(u);
    CHECK(message_of([&] { pretrained::aligngpt_dir_config::from_json(j, "config.json"); }) ==
          "config.json: field 'mm_vision_select_layer' must be an integer in [-1024, 1024], got " + u);
    j["mm_vision_select_layer"] = -2;
    CHECK(pretrained::aligngpt_dir_config::from_json(j, "config.json").mm_vision_select_layer == -2);
    j = llama_min, j["vocab_size"] = json::parse(u);
    CHECK(message_of([&] { models::llama_config::from_json(j, "config.json"); }) ==
          "config.json: field 'vocab_size' must be an integer in [1, 16777216], got " + u);
    j = llama_min, j["eos_token_id"] = json::parse("[2, " + u + "]");
    CHECK(message_of([&] { models::llama_config::from_json(j, "config.json"); }) ==
          "config.json: field 'eos_token_id' must be an id or a list of ids in [0, 49], got [2," + u + "]");
    j = llama_min, j["bos_token_id"] = json::parse("18446744073709551615");
    CHECK(message_of([&] {
              models::llama_config::from_json(j, "config.json");
          }).starts_with("config.json: field 'bos_token_id' must be"));
    CHECK(message_of([&] {
              io::clip_image_processor_config::from_json(json{{"resample", json::parse(u)}}, "pp.json");
          }).starts_with("pp.json: field 'resample' must be a Pillow filter 1..5"));
    CHECK(message_of([&] {
              io::clip_image_processor_config::from_json(json{{"crop_size", json::parse(u)}}, "pp.json");
          }) == "pp.json: field 'crop_size' must be an integer in [1, 65536], got " + u);
}

}  // namespace test_json
