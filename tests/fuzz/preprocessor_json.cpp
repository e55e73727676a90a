// Fuzz target: a preprocessor_config.json, parsed as the CLI reads it and then used: a small
// fixed image goes through the preprocessing it configures, in both aspect modes, so that every
// geometry the parser accepts is also allocated and computed (issue 12, finding 3).
//
// The preprocessing budget is lowered after parsing (128 Kpx per buffer, 2^22 for the padded
// square) so that an execution stays fast; the parser's own limits are the defaults.
#include "aligngpt/io/image.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    const std::string path = fuzz::put_file("preprocessor_config.json", fuzz::as_text(data, size));
    fuzz::expect_ok_or_refused(path, [&] {
        io::clip_image_processor_config cfg = io::clip_image_processor_config::from_json_file(path);
        cfg.max_pixels = std::uint64_t(1) << 17;  // 336 x 336, the CLIP crop, fits
        cfg.max_padded_pixels = std::uint64_t(1) << 22;
        io::rgb_image img(7, 5);
        for (std::size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = std::uint8_t(i * 37);
        for (io::aspect_mode a : {io::aspect_mode::pad, io::aspect_mode::square}) {
            cfg.aspect = a;
            (void)io::clip_preprocess(img, cfg, path);
        }
    });
    return 0;
}
