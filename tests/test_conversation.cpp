// conversation.h against the official conversation.py (run unpatched by
// tests/tools/golden/tokenizer.py, golden_conversation): plain, vicuna_v1, llava_v0 and llama_2,
// 1 and 3 turns, with and without an image; the prompt strings, where the reference raises, and
// (with the tokenizer component) tokenizer_image_token's ids of the prompt, legacy false.
// Tolerance: none. Strings and ids are compared exactly.
#include <doctest/doctest.h>

#include <functional>
#include <string>

#include "aligngpt/conversation.h"
#include "aligngpt/io/json.h"
#if defined(ALIGNGPT_TEST_HAVE_TOKENIZER)
#include "aligngpt/tokenizer/llama.h"
#endif

namespace test_conversation {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

using namespace aligngpt;
using nlohmann::json;

const std::string tok_dir = std::string(ALIGNGPT_GOLDEN_DIR) + "/tokenizer";

conversation::conversation from_case(const json& c) {
    auto conv = conversation::make(c.at("template").get<std::string>());
    const auto& msgs = c.at("messages");
    for (std::size_t i = 0; i < msgs.size(); i++) {
        const std::string& role = conv.roles.at(i % 2);
        conv.append(role, msgs[i].is_null() ? std::nullopt : std::optional(msgs[i].get<std::string>()));
    }
    return conv;
}

}  // namespace

TEST_CASE("conversation: templates render byte for byte as the reference's conversation.py") {
    const json g = io::read_json_file(tok_dir + "/conversation.json");
    int prompts = 0, errors = 0;
    for (const json& c : g.at("cases")) {
        CAPTURE(c.dump());
        const auto conv = from_case(c);
        CHECK(conv.sep == c.at("sep").get<std::string>());
        CHECK(conv.sep2 == (c.at("sep2").is_null() ? std::nullopt : std::optional(c.at("sep2").get<std::string>())));
        CHECK(conv.stop_string() == c.at("stop_str").get<std::string>());  // cli.py's stop_str
        if (c.contains("error")) {
            CHECK_THROWS_AS(conv.prompt(), aligngpt::error);
            errors++;
        } else {
            CHECK(conv.prompt() == c.at("prompt").get<std::string>());
            prompts++;
        }
    }
    CHECK(prompts == 14);
    CHECK(errors == 2);  // plain with an assistant message: sep2 is None in the reference
}

TEST_CASE("conversation: default, aliases and unknown names") {
    CHECK(conversation::make().name == "vicuna_v1");  // the reference's default_conversation
    CHECK(conversation::make("v1").name == "vicuna_v1");
    std::string msg;
    try {
        conversation::make("vicuna");
    } catch (const aligngpt::error& e) { msg = e.what(); }
    CHECK(msg == "conversation: unknown template \"vicuna\" (known: vicuna_v1, plain, llava_v0, llama_2)");
    auto c = conversation::make("llama_2");
    c.append(c.roles[1], "answer first");
    CHECK_THROWS_AS(c.prompt(), aligngpt::error);  // the reference asserts
}

#if defined(ALIGNGPT_TEST_HAVE_TOKENIZER)
TEST_CASE("conversation: prompt ids through tokenizer_image_token equal the reference's (legacy false)") {
    const json g = io::read_json_file(tok_dir + "/conversation.json");
    const auto tok = tokenizer::llama_tokenizer::from_directory(tok_dir);
    int n = 0;
    for (const json& c : g.at("cases")) {
        if (c.contains("error")) continue;
        CAPTURE(c.at("prompt").get<std::string>());
        CHECK(tokenizer::tokenizer_image_token(tok, from_case(c).prompt()) == c.at("ids").get<std::vector<std::int64_t>>());
        n++;
    }
    CHECK(n == 14);
}
#endif

}  // namespace test_conversation
