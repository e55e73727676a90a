// Fuzz target: a LLaMA tokenizer directory (tokenizer.model, SentencePiece's protobuf, and
// tokenizer_config.json) through llama_tokenizer::from_directory, then encode, decode and
// tokenizer_image_token of a short fixed prompt.
//
// Input: tokenizer_config.json, a NUL byte, then tokenizer.model (a JSON text holds no NUL, the
// model does). Without a NUL the whole input is tokenizer.model and there is no config file (the
// loader then takes LlamaTokenizer's defaults). Errors must name one of the two files; the encode
// and decode of an accepted tokenizer must not fail at all.
#include <cstring>
#include <filesystem>

#include "aligngpt/tokenizer/llama.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    static const std::string dir = [] {
        std::filesystem::create_directories(fuzz::scratch_dir() + "/tok");
        return fuzz::scratch_dir() + "/tok";
    }();
    const auto* nul = static_cast<const std::uint8_t*>(std::memchr(data, 0, size));
    std::error_code ec;
    if (nul) {
        fuzz::put_file("tok/tokenizer_config.json", fuzz::as_text(data, std::size_t(nul - data)));
        fuzz::put_file("tok/tokenizer.model", fuzz::as_text(nul + 1, size - std::size_t(nul - data) - 1));
    } else {
        std::filesystem::remove(dir + "/tokenizer_config.json", ec);
        fuzz::put_file("tok/tokenizer.model", fuzz::as_text(data, size));
    }
    std::optional<tokenizer::llama_tokenizer> tok;
    fuzz::expect_ok_or_refused(dir, [&] { tok.emplace(tokenizer::llama_tokenizer::from_directory(dir)); });
    if (!tok) return 0;
    // An accepted tokenizer handles any valid text: a failure here names no file and aborts.
    static constexpr std::string_view text =
        "A chat. USER: <image>\nWhat is on the sofa?  Ünïcödé 日本語 🙂</s><s> <unk>x ASSISTANT: a cat.";
    const std::vector<std::int64_t> ids = tok->encode(text);
    (void)tok->decode(ids, false);
    (void)tok->decode(ids, true);
    (void)tokenizer::tokenizer_image_token(*tok, std::string(text));
    std::vector<std::int64_t> every;  // every id of the vocabulary, as a generated answer may hold
    for (std::int64_t i = 0; i < std::min<std::int64_t>(tok->vocab_size(), 4096); i++) every.push_back(i);
    (void)tok->decode(every, true);
    return 0;
}
