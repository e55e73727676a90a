// tokenizer/llama.h against transformers 4.31's slow LlamaTokenizer and the official
// tokenizer_image_token, on a real SentencePiece BPE model with byte fallback trained by
// tests/tools/golden/tokenizer.py (golden_tokenizer_llama), legacy false and true.
// Tolerance: none. Ids and decoded strings are integers and bytes; equal or wrong.
#if defined(ALIGNGPT_TEST_HAVE_TOKENIZER)
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "aligngpt/io/json.h"
#include "support/process.h"
#include "support/scratch_dir.h"
#include "aligngpt/tokenizer/llama.h"

namespace test_tokenizer {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

using namespace aligngpt;
using nlohmann::json;

const std::string tok_dir = std::string(ALIGNGPT_GOLDEN_DIR) + "/tokenizer";

using support::message_of;

json golden(const std::string& name) {
    io::json_parse_options o;
    o.max_bytes = 8 << 20;
    return io::read_json_file(tok_dir + "/" + name, o);
}

tokenizer::llama_tokenizer make(bool legacy) {
    auto t = tokenizer::llama_tokenizer::from_directory(tok_dir);  // legacy false, as published
    if (!legacy) return t;
    auto cfg = t.config();
    cfg.legacy = true;
    return tokenizer::llama_tokenizer(io::read_text_file(tok_dir + "/tokenizer.model", 1 << 20), "tokenizer.model", cfg);
}

std::string tmp_dir(const std::string& name) {
    const std::string d = support::scratch_dir() + "/tokenizer_" + name;
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

}  // namespace

TEST_CASE("tokenizer: ids, pieces, tokenizer_image_token and decode equal transformers 4.31 (legacy false and true)") {
    const json g = golden("tokenizer_llama.json");
    const auto modern = make(false), legacy = make(true);
    CHECK(!modern.config().legacy);
    CHECK(modern.vocab_size() == g.at("vocab_size").get<std::int64_t>());
    int n = 0;
    for (const json& c : g.at("cases")) {
        const std::string text = c.at("text");
        const auto& tok = c.at("legacy").get<bool>() ? legacy : modern;
        CAPTURE(text);
        CAPTURE(c.at("legacy").get<bool>());
        CHECK(tok.tokenize(text) == c.at("tokens").get<std::vector<std::string>>());
        const auto ids = tok.encode(text);
        CHECK(ids == c.at("ids").get<std::vector<std::int64_t>>());
        CHECK(tok.encode(text, false) == c.at("ids_no_special").get<std::vector<std::int64_t>>());
        CHECK(tokenizer::tokenizer_image_token(tok, text) == c.at("image_ids").get<std::vector<std::int64_t>>());
        CHECK(tok.decode(ids) == c.at("decode").get<std::string>());
        CHECK(tok.decode(ids, true) == c.at("decode_skip").get<std::string>());
        n++;
    }
    CHECK(n >= 60);
    for (const json& c : g.at("decodes")) {
        const auto ids = c.at("ids").get<std::vector<std::int64_t>>();
        CAPTURE(c.at("ids").dump());
        CHECK(modern.decode(ids) == c.at("decode").get<std::string>());
        CHECK(modern.decode(ids, true) == c.at("decode_skip").get<std::string>());
    }
}

TEST_CASE("tokenizer: the legacy flag changes the piece after an in-string special token (a check of the fixture itself)") {
    // Guards the fixture itself: were both settings to give the same ids everywhere, the test above
    // would not tell them apart.
    const json g = golden("tokenizer_llama.json");
    int differ = 0;
    for (std::size_t i = 0; i + 1 < g.at("cases").size(); i += 2)
        differ += g.at("cases")[i].at("ids") != g.at("cases")[i + 1].at("ids");
    CHECK(differ >= 3);
}

TEST_CASE("tokenizer: add_bos_token false and add_eos_token true, and tokenizer_image_token without BOS") {
    auto cfg = make(false).config();
    cfg.add_bos_token = false;
    cfg.add_eos_token = true;
    const tokenizer::llama_tokenizer t(io::read_text_file(tok_dir + "/tokenizer.model", 1 << 20), "m", cfg);
    const auto with = make(false).encode("Hello world", false);
    auto expect = with;
    expect.push_back(t.eos_id());
    CHECK(t.encode("Hello world") == expect);
    // mm_utils.py with offset 0: chunks are joined by one -200 and keep their own ids (EOS included).
    const auto a = t.encode("a"), b = t.encode("b");
    std::vector<std::int64_t> joined = a;
    joined.push_back(-200);
    joined.insert(joined.end(), b.begin(), b.end());
    CHECK(tokenizer::tokenizer_image_token(t, "a<image>b") == joined);
}

TEST_CASE("tokenizer: bad tokenizer files and bad input are refused with the file and the field named") {
    const std::string model = io::read_text_file(tok_dir + "/tokenizer.model", 1 << 20);
    SUBCASE("a model that is not a SentencePiece model") {
        const std::string d = tmp_dir("garbage");
        std::ofstream(d + "/tokenizer.model") << "this is not a protobuf \xff\xff\xff\xff";
        CHECK(message_of([&] {
                  tokenizer::llama_tokenizer::from_directory(d);
              }).find(d + "/tokenizer.model: not a valid SentencePiece model") == 0);
    }
    SUBCASE("truncated models never crash") {
        for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(7), model.size() / 2, model.size() - 1}) {
            CAPTURE(n);
            const std::string msg = message_of([&] { tokenizer::llama_tokenizer(model.substr(0, n), "m.model", {}); });
            CHECK(msg.find("m.model: ") == 0);
        }
    }
    SUBCASE("what SentencePiece cannot load safely is refused before it sees the model") {
        // Appending a field to a serialised message adds to it (protobuf merges), so these are the
        // fixture plus one more piece, or plus a normaliser table.
        const auto field = [](char key, const std::string& bytes) { return key + std::string(1, char(bytes.size())) + bytes; };
        // A piece "\0<\0", score 0, type NORMAL: a fuzzer's input that made SentencePiece's trie
        // builder throw through code that cannot pass an exception (std::terminate).
        const std::string nul_piece =
            field('\x0A', field('\x0A', std::string("\0<\0", 3)) + "\x15" + std::string(4, '\0') + "\x18\x01");
        CHECK(message_of([&] { tokenizer::llama_tokenizer(model + nul_piece, "m.model", {}); }) ==
              "m.model: not a valid SentencePiece model: pieces[" + std::to_string(make(false).vocab_size()) +
                  "].piece holds a NUL byte (SentencePiece's piece trie cannot hold one)");
        const std::string table = field('\x1A', field('\x12', std::string(9, 'x')));
        CHECK(message_of([&] { tokenizer::llama_tokenizer(model + table, "m.model", {}); })
                  .find("m.model: not a valid SentencePiece model: normalizer_spec.precompiled_charsmap holds a table "
                        "of 9 bytes: only the identity normaliser") == 0);
        const std::string denorm = field('\x2A', field('\x12', "x"));
        CHECK(message_of([&] {
                  tokenizer::llama_tokenizer(model + denorm, "m.model", {});
              }).find("m.model: not a valid SentencePiece model: denormalizer_spec.precompiled_charsmap") == 0);
        CHECK(message_of([&] { tokenizer::llama_tokenizer(model + "\x0B", "m.model", {}); }) ==
              "m.model: not a valid SentencePiece model: the protobuf wire format is broken");
        // An empty table is the identity normaliser's, as the fixture's own: accepted.
        CHECK(message_of([&] { tokenizer::llama_tokenizer(model + field('\x1A', field('\x12', "")), "m.model", {}); }) ==
              "no error");
    }
    SUBCASE("a missing model file") {
        const std::string d = tmp_dir("missing");
        CHECK(message_of([&] { tokenizer::llama_tokenizer::from_directory(d); }).find(d + "/tokenizer.model") == 0);
    }
    SUBCASE("config fields") {
        const auto bad = [&](const std::string& cfg_text) {
            const std::string d = tmp_dir("cfg");
            std::filesystem::copy_file(tok_dir + "/tokenizer.model", d + "/tokenizer.model");
            std::ofstream(d + "/tokenizer_config.json") << cfg_text;
            return message_of([&] { tokenizer::llama_tokenizer::from_directory(d); });
        };
        const std::string f = "/tokenizer_config.json: ";
        CHECK(bad(R"({"legacy": "no"})").find(f + "field 'legacy' must be true or false, got \"no\"") != std::string::npos);
        CHECK(bad(R"({"add_bos_token": 1})").find("field 'add_bos_token' must be true or false") != std::string::npos);
        CHECK(bad(R"({"eos_token": 5})").find("field 'eos_token' must be a string or an AddedToken object") != std::string::npos);
        CHECK(bad(R"({"eos_token": {"lstrip": false}})").find("field 'eos_token.content' must be a string, but it is missing") !=
              std::string::npos);
        CHECK(bad(R"({"eos_token": ""})").find("field 'eos_token' must be a token of 1 to 256 bytes") != std::string::npos);
        CHECK(bad(R"({"pad_token": "<pad>"})").find("the pad_token \"<pad>\" is not a piece of the model") != std::string::npos);
        CHECK(bad(R"({"additional_special_tokens": ["<x>"]})").find("field 'additional_special_tokens' is not supported") !=
              std::string::npos);
        CHECK(bad(R"({"model_max_length": -3})").find("field 'model_max_length' must be a finite number >= 1") !=
              std::string::npos);
        CHECK(bad(R"({"legacy": false, "legacy": true})").find("duplicate key") != std::string::npos);
        CHECK(bad(R"([1, 2])").find("top level must be a JSON object") != std::string::npos);
        CHECK(bad("{").find("invalid JSON") != std::string::npos);
        CHECK(bad(std::string(2 << 20, ' ')).find("more than the limit") != std::string::npos);
        // transformers writes 1e30-like values for "no limit"; pad null is the published setting.
        CHECK(bad(R"({"model_max_length": 1000000000000000019884624838656, "pad_token": null})") == "no error");
    }
    SUBCASE("text and ids") {
        const auto t = make(false);
        CHECK(message_of([&] { t.encode("ok \xC3("); }) == "tokenizer: the text is not valid UTF-8 (byte 3)");
        const std::vector<std::int64_t> out_of_range{1, t.vocab_size()}, negative{-200};
        CHECK(message_of([&] {
                  t.decode(out_of_range);
              }).find("token id " + std::to_string(t.vocab_size()) + " is outside the vocabulary") != std::string::npos);
        CHECK(message_of([&] { t.decode(negative); }).find("token id -200 is outside") != std::string::npos);
    }
}

TEST_CASE("tokenizer: special tokens with lstrip/rstrip eat the whitespace beside them, as AddedToken") {
    // Not in the published configs; the rule is PreTrainedTokenizer.tokenize's: the text on the
    // token's right loses its leading whitespace when rstrip, the text on its left its trailing
    // whitespace when lstrip.
    auto cfg = make(true).config();
    cfg.eos.lstrip = cfg.eos.rstrip = true;
    const tokenizer::llama_tokenizer t(io::read_text_file(tok_dir + "/tokenizer.model", 1 << 20), "m", cfg);
    CHECK(t.encode("a \t</s>\u00a0 b") == t.encode("a</s>b"));
}

}  // namespace test_tokenizer
#endif  // ALIGNGPT_TEST_HAVE_TOKENIZER
