// Fuzz target: a config.json through every reader of model configs: AlignGPT (LLaMA fields + the
// mm_* fields, as load_aligngpt reads it), plain LLaMA, and the CLIP vision, text and full
// configs (a vision tower directory's config.json).
#include "aligngpt/models/clip_config.h"
#include "aligngpt/models/llama.h"
#include "aligngpt/pretrained.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    const std::string path = fuzz::put_file("config.json", fuzz::as_text(data, size));
    fuzz::expect_ok_or_refused(path, [&] { (void)pretrained::aligngpt_dir_config::load(path); });
    fuzz::expect_ok_or_refused(path, [&] { (void)models::llama_config::load(path); });
    fuzz::expect_ok_or_refused(path, [&] { (void)models::clip_vision_config::from_file(path); });
    fuzz::expect_ok_or_refused(path, [&] { (void)models::clip_text_config::from_file(path); });
    fuzz::expect_ok_or_refused(path, [&] { (void)models::clip_config::from_file(path); });
    return 0;
}
