// tokenizer/clip.h against transformers 4.31's slow CLIPTokenizer (its BasicTokenizer path: no ftfy)
// on a small real-format vocab.json / merges.txt trained by tests/tools/golden/levels.py
// (golden_levels). Tolerance: none; ids are integers, equal or wrong.
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "aligngpt/io/json.h"
#include "aligngpt/tokenizer/clip.h"
#include "support/process.h"
#include "support/scratch_dir.h"

namespace test_clip_tokenizer {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

using namespace aligngpt;
using support::message_of;

const std::string clip_dir = std::string(ALIGNGPT_GOLDEN_DIR) + "/levels/clip";

std::string tmp_file(const std::string& name, const std::string& text) {
    const std::string dir = support::scratch_dir() + "/clip_tokenizer";
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/" + name, std::ios::binary) << text;
    return dir + "/" + name;
}

}  // namespace

TEST_CASE("clip_tokenizer: ids of CLIPTokenizer(text, truncation=True, max_length=77) for the golden corpus") {
    const auto tok = tokenizer::clip_tokenizer::from_directory(clip_dir);
    CHECK(tok.eos_id == std::int64_t(tok.vocab_size()) - 1);  // the recipe puts the specials last, as CLIP
    CHECK(tok.bos_id == tok.eos_id - 1);
    CHECK(tok.max_id == tok.eos_id);
    CHECK(tok.merge_count() > 200);
    const nlohmann::json corpus = io::read_json_file(std::string(ALIGNGPT_GOLDEN_DIR) + "/levels/tokenizer.json");
    REQUIRE(corpus.size() >= 20);
    for (const auto& c : corpus) {
        const std::string text = c["text"];
        CAPTURE(text);
        CHECK(tok.encode(text) == c["ids"].get<std::vector<std::int64_t>>());
    }
}

TEST_CASE("clip_tokenizer: truncation keeps eos last; max_length counts bos and eos") {
    const auto tok = tokenizer::clip_tokenizer::from_directory(clip_dir);
    const auto full = tok.encode("a photo of a cat on a red sofa", 77);
    REQUIRE(full.size() > 5);
    const auto cut = tok.encode("a photo of a cat on a red sofa", 5);
    CHECK(cut.size() == 5);
    CHECK(cut.back() == tok.eos_id);
    CHECK(std::equal(cut.begin(), cut.end() - 1, full.begin()));
    CHECK(tok.encode("", 2) == std::vector<std::int64_t>{tok.bos_id, tok.eos_id});
    CHECK(message_of([&] { tok.encode("x", 1); }).find("max_length") != std::string::npos);
    CHECK(message_of([&] { tok.encode("ab\xff", 77); }).find("UTF-8 at byte 2") != std::string::npos);
}

TEST_CASE("clip_tokenizer: a 1 MB caption (one word, and many words) finishes fast") {
    const auto tok = tokenizer::clip_tokenizer::from_directory(clip_dir);
    const auto t0 = std::chrono::steady_clock::now();
    const auto a = tok.encode(std::string(1 << 20, 'a'));
    std::string words;
    while (words.size() < (1 << 20)) words += "the cat sat on the mat ";
    const auto b = tok.encode(words);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(a.size() == 77);
    CHECK(b.size() == 77);
    CHECK(s < 2.0);  // seconds, under ASan too; the unbounded reference is quadratic in the word
}

TEST_CASE("clip_tokenizer: bad vocab.json / merges.txt name the file and the entry or line") {
    const std::string merges = clip_dir + "/merges.txt", vocab = clip_dir + "/vocab.json";
    const auto msg = [](const std::string& v, const std::string& m) {
        return message_of([&] { tokenizer::clip_tokenizer::from_files(v, m); });
    };
    const std::string no_eos = tmp_file("no_eos.json", R"({"a": 0, "<|startoftext|>": 1})");
    CHECK(msg(no_eos, merges).find(no_eos + ": has no entry \"<|endoftext|>\"") != std::string::npos);
    const std::string bad_id = tmp_file("bad_id.json", R"({"a": -3, "<|startoftext|>": 1, "<|endoftext|>": 2})");
    CHECK(msg(bad_id, merges).find(bad_id + ": entry \"a\" must map to an id") != std::string::npos);
    const std::string not_obj = tmp_file("array.json", "[1, 2]");
    CHECK(msg(not_obj, merges).find(not_obj + ": must be a non-empty JSON object") != std::string::npos);
    const std::string bad_line = tmp_file("merges_bad.txt", "#version: 0.2\na b\nc d e\n");
    CHECK(msg(vocab, bad_line).find(bad_line + ":3: a merge must be two symbols") != std::string::npos);
    CHECK(msg(vocab, clip_dir + "/missing.txt").find(clip_dir + "/missing.txt") != std::string::npos);
}

}  // namespace test_clip_tokenizer
