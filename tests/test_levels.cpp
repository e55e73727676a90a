// train/levels.h and `aligngpt levels` against transformers 4.31's CLIPModel on the tiny CLIP
// directory and the 16-record dataset of tests/tools/golden/levels.py (golden_levels).
// Tolerance for cosines: 1e-4 absolute. Both sides run f32 through two tiny towers in different
// summation orders (measured: 1.2e-7); 1e-4 leaves room for other machines and is still 3x smaller
// than the smallest gap at a bucket border (the recipe asserts > 3e-4), so the levels must match
// exactly.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "aligngpt/io/image.h"
#include "aligngpt/train/levels.h"
#include "support/process.h"
#include "support/scratch_dir.h"

namespace test_levels {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

using namespace aligngpt;
using support::message_of;
using train::ordered_json;

const std::string dir = std::string(ALIGNGPT_GOLDEN_DIR) + "/levels";

std::string tmp_path(const std::string& name) {
    const std::string d = support::scratch_dir() + "/levels";
    std::filesystem::create_directories(d);
    return d + "/" + name;
}

std::string write_tmp(const std::string& name, const std::string& text) {
    const std::string p = tmp_path(name);
    std::ofstream(p, std::ios::binary) << text;
    return p;
}

const train::clip_scorer<float>& scorer() {
    static const auto s = train::clip_scorer<float>::load(dir + "/clip", {.quiet = true});
    return s;
}

/// The dataset scored once in batches of 8 (shared by the tests that only read the result).
const train::levels_result& batch8() {
    static const auto r =
        train::compute_levels(scorer(), train::dataset_pairs(train::read_dataset(dir + "/data.json"), "data.json"), dir,
                              {.n_levels = 4, .batch_size = 8, .progress = nullptr});
    return r;
}

struct expected {
    int levels;
    std::vector<double> cos;
    std::vector<int> level;
};

expected golden() {
    const nlohmann::json j = io::read_json_file(dir + "/expected.json");
    return {j["levels"].get<int>(), j["clip_similarity"].get<std::vector<double>>(), j["similarity"].get<std::vector<int>>()};
}

void check_against_golden(const train::levels_result& r, const expected& g) {
    REQUIRE(r.similarity.size() == g.cos.size());
    double worst = 0;
    for (std::size_t k = 0; k < g.cos.size(); k++) worst = std::max(worst, std::abs(r.similarity[k] - g.cos[k]));
    MESSAGE("max |cosine - CLIPModel| = " << worst);
    CHECK(worst <= 1e-4);
    CHECK(r.level == g.level);
}

}  // namespace

TEST_CASE("levels: cosines match CLIPModel, levels are equal-size buckets of the ascending ranking") {
    const expected g = golden();
    const auto data = train::read_dataset(dir + "/data.json");
    const auto pairs = train::dataset_pairs(data, dir + "/data.json");
    REQUIRE(pairs.size() == 16);
    CHECK(pairs[0].image == "../images/landscape_500x333.png");
    CHECK(pairs[0].caption == "a wide landscape with hills under a blue sky");
    CHECK(scorer().max_length == 77);

    // batch 5: three full batches and a partial one, captions of different lengths padded together
    const auto r = train::compute_levels(scorer(), pairs, dir, {.n_levels = g.levels, .batch_size = 5, .progress = nullptr});
    check_against_golden(r, g);
    REQUIRE(r.stats.size() == 4);
    for (const auto& s : r.stats) CHECK(s.count == 4);
    for (std::size_t l = 1; l < r.stats.size(); l++) CHECK(r.stats[l - 1].max < r.stats[l].min);  // level 3 = most similar
    CHECK(r.stats[0].min <= r.stats[0].mean);
    CHECK(r.stats[0].mean <= r.stats[0].max);

    // one pair at a time gives the same cosines up to f32 rounding (padding is masked)
    const auto one = train::compute_levels(scorer(), pairs, dir, {.n_levels = g.levels, .batch_size = 1, .progress = nullptr});
    for (std::size_t k = 0; k < pairs.size(); k++) CHECK(std::abs(one.similarity[k] - r.similarity[k]) <= 1e-6);
    CHECK(one.level == r.level);

    const std::string table = train::histogram_table(r.stats);
    CHECK(table.rfind("level      count        min       mean        max\n", 0) == 0);
    CHECK(table.find("\n    3          4 ") != std::string::npos);
}

TEST_CASE("levels: the output keeps the records, their order, fields and key order; adds similarity and clip_similarity") {
    const auto data = train::read_dataset(dir + "/data.json");
    const auto& r = batch8();
    const std::string out = tmp_path("out.json");
    train::write_levels_json(data, r, out);
    const auto back = train::read_dataset(out);
    REQUIRE(back.size() == data.size());
    for (std::size_t k = 0; k < data.size(); k++) {
        CAPTURE(k);
        ordered_json rec = back[k];
        REQUIRE(rec["similarity"].is_number_integer());
        REQUIRE(rec["clip_similarity"].is_number_float());
        CHECK(rec["similarity"].get<int>() == r.level[k]);
        CHECK(rec["clip_similarity"].get<double>() == r.similarity[k]);  // written with round-trip precision
        if (!data[k].contains("similarity"))
            rec.erase("similarity");
        else
            rec["similarity"] = data[k]["similarity"];
        rec.erase("clip_similarity");
        CHECK(rec.dump() == data[k].dump());  // same fields, values and key order
    }
    // record 3 had "similarity": 99 as its first key: replaced in place
    std::vector<std::string> keys;
    for (const auto& [key, v] : back[3].items()) keys.push_back(key);
    CHECK(keys == std::vector<std::string>{"similarity", "image", "id", "conversations", "clip_similarity"});
    CHECK(back[0]["extra"].dump() == R"({"source":"golden","k":[0,null,true]})");
}

TEST_CASE("levels: the histogram PNG decodes (stb_image) to the plot size, bars coloured by level") {
    const auto& r = batch8();
    const std::string png = tmp_path("hist.png");
    train::write_histogram_png(png, r);
    const io::rgb_image img = io::load_image(png);
    CHECK(img.width == 640);
    CHECK(img.height == 360);
    int blue = 0, red = 0;
    for (std::size_t i = 0; i < img.pixels.size(); i += 3) {
        blue += img.pixels[i] == 40 && img.pixels[i + 2] == 240;  // level 0
        red += img.pixels[i] == 240 && img.pixels[i + 2] == 40;   // level 3
    }
    CHECK(blue > 100);
    CHECK(red > 100);
}

TEST_CASE("levels: bad records are refused naming the file, the record and its id") {
    const auto msg = [](const std::string& text) {
        const std::string p = write_tmp("bad.json", text);
        return message_of([&] { train::dataset_pairs(train::read_dataset(p), p); });
    };
    const std::string p = tmp_path("bad.json");
    const std::string gpt = R"("conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a cat"}])";
    CHECK(msg("{}") == p + ": must be a JSON array of records, got object");
    CHECK(msg("[]") == p + ": has no records");
    CHECK(msg("[1]") == p + ": record 0 must be a JSON object, got number");
    CHECK(msg(R"([{"id": "a", "image": "x.png", )" + gpt + R"(}, {"id": "b", )" + gpt + "}]") ==
          p + ": record 1 (id \"b\"): field 'image' must be a non-empty string (text-only records have no CLIP similarity)");
    CHECK(msg(R"([{"id": 7, "image": "x.png", "conversations": [{"from": "human", "value": "hi"}]}])") ==
          p + ": record 0 (id 7): field 'conversations' has no turn from \"gpt\" (the caption)");
    CHECK(msg(R"([{"image": "x.png", "conversations": [{"from": "gpt", "value": 3}]}])") ==
          p + ": record 0: field 'conversations[0].value' must be a string");
    CHECK(msg("[{").find(p + ": invalid JSON") == 0);

    // a missing image file: the record and the path
    const auto pairs =
        train::dataset_pairs(train::read_dataset(write_tmp("nofile.json", R"([{"image": "nope.png", )" + gpt + "}]")), "x");
    const std::string e = message_of([&] { train::compute_levels(scorer(), pairs, dir, {.progress = nullptr}); });
    CHECK(e.find("x: record 0: image 'nope.png': ") == 0);
    CHECK(e.find(dir + "/nope.png") != std::string::npos);
}

TEST_CASE("levels: a CLIP directory whose vocab.json does not fit its text tower is refused") {
    const std::string d = tmp_path("clip_small_vocab");
    std::filesystem::create_directories(d);
    for (const char* f : {"vocab.json", "merges.txt", "model.safetensors", "preprocessor_config.json"})
        std::filesystem::copy_file(dir + "/clip/" + f, d + "/" + f, std::filesystem::copy_options::overwrite_existing);
    nlohmann::json cfg = io::read_json_file(dir + "/clip/config.json");
    cfg["text_config"]["vocab_size"] = 500;
    std::ofstream(d + "/config.json") << cfg.dump();
    CHECK(message_of([&] { train::clip_scorer<float>::load(d, {.quiet = true}); }) ==
          d + "/vocab.json: id " + std::to_string(scorer().tok.max_id) +
              " is outside the text tower's vocab_size 500 (config.json)");
}

#if defined(ALIGNGPT_TOOL_PATH)
namespace {
support::command_result levels_cli(const std::string& args) {
    return support::run_command("'" + std::string(ALIGNGPT_TOOL_PATH) + "' levels " + args + " 2>&1");
}
}  // namespace

TEST_CASE("aligngpt levels: end to end, then the refusals (exit 2 for the command line, 1 for bad data)") {
    const expected g = golden();
    const std::string out = tmp_path("cli_out.json"), png = tmp_path("cli.png");
    std::filesystem::remove(out);
    const std::string common = "--clip '" + dir + "/clip' --data_path '" + dir + "/data.json' --image-folder '" + dir + "' ";
    const auto r = levels_cli(common + "--levels 4 --out '" + out + "' --plot '" + png + "' -t 2 --batch-size=3");
    CAPTURE(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.find("[levels] 16/16 pairs") != std::string::npos);
    CHECK(r.output.find("level      count        min       mean        max") != std::string::npos);
    const auto back = train::read_dataset(out);
    train::levels_result got;
    for (const auto& rec : back) got.similarity.push_back(rec["clip_similarity"]), got.level.push_back(rec["similarity"]);
    check_against_golden(got, g);
    CHECK(io::load_image(png).width == 640);

    CHECK(levels_cli(common + "--levels 4 --out '" + dir + "/data.json'").code == 2);  // never overwrite the input
    CHECK(levels_cli(common + "--levels 0 --out '" + out + "'").code == 2);
    CHECK(levels_cli(common + "--out '" + out + "'").code == 2);
    CHECK(levels_cli(common + "--levels 4 --out '" + out + "' --batch-size 0").code == 2);
    const auto missing = levels_cli("--clip '" + dir + "/clip' --data-path '" + dir +
                                    "/data.json' --image-folder /nonexistent --levels 4 --out '" + out + "'");
    CHECK(missing.code == 1);
    CHECK(missing.output.find(dir + "/data.json: record 0 (id \"000000000\"): image '../images/landscape_500x333.png'") !=
          std::string::npos);
}
#endif  // ALIGNGPT_TOOL_PATH

}  // namespace test_levels
