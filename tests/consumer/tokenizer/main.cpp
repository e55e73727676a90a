// A consumer of aligngpt::tokenizer: loads a tokenizer directory and encodes a prompt with an image.
#include <cstdio>

#include "aligngpt/tokenizer/llama.h"

int main() {
    const auto tok = aligngpt::tokenizer::llama_tokenizer::from_directory(TOKENIZER_DIR);
    const auto ids = aligngpt::tokenizer::tokenizer_image_token(tok, "USER: <image>\nHello world ASSISTANT:");
    const bool ok = ids.size() > 3 && ids[0] == tok.bos_id() && tok.decode(tok.encode("Hello world"), true) == "Hello world";
    std::printf("consumer_tokenizer: %zu ids, %s\n", ids.size(), ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}
