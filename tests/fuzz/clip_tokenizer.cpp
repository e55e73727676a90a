// Fuzz target: a CLIP tokenizer directory (vocab.json and merges.txt) through
// clip_tokenizer::from_directory, then encode of a fixed caption (what `aligngpt levels` does with
// each record's caption) at CLIP's 77 ids and at a short length that truncates.
//
// Input: vocab.json, a NUL byte, then merges.txt (neither holds a NUL: a JSON text cannot, and a
// NUL in merges.txt is a symbol byte the loader accepts or refuses). Without a NUL the whole input
// is vocab.json and merges.txt is empty. Errors must name one of the two files; an accepted
// tokenizer must encode without an error.
#include <cstring>
#include <filesystem>

#include "aligngpt/tokenizer/clip.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    static const std::string dir = [] {
        std::filesystem::create_directories(fuzz::scratch_dir() + "/clip");
        return fuzz::scratch_dir() + "/clip";
    }();
    const auto* nul = static_cast<const std::uint8_t*>(std::memchr(data, 0, size));
    const std::size_t vocab_len = nul ? std::size_t(nul - data) : size;
    fuzz::put_file("clip/vocab.json", fuzz::as_text(data, vocab_len));
    fuzz::put_file("clip/merges.txt", nul ? fuzz::as_text(nul + 1, size - vocab_len - 1) : std::string_view());
    std::optional<tokenizer::clip_tokenizer> tok;
    fuzz::expect_ok_or_refused(dir, [&] { tok.emplace(tokenizer::clip_tokenizer::from_directory(dir)); });
    if (!tok) return 0;
    static constexpr std::string_view caption =
        "A photo of a CAT's 2 toys, lower-left: <|endoftext|>naïve Café ΣΊΣΥΦΟΣ 日本語 🙂 don't  x\ty\u00a0z!!";
    for (const std::size_t max_length : {std::size_t(77), std::size_t(6)}) {
        const std::vector<std::int64_t> ids = tok->encode(caption, max_length);
        if (ids.size() > max_length || ids.front() != tok->bos_id || ids.back() != tok->eos_id) {
            std::fprintf(stderr, "aligngpt fuzz: clip encode gave %zu ids for max_length %zu, or lost bos/eos\n", ids.size(),
                         max_length);
            std::abort();
        }
    }
    return 0;
}
