// Fuzz target: an image through decoding and the whole CLIP preprocessing (pad, resize, crop,
// normalise), as the CLI runs it on --image.
//
// Input: 4 bytes of preprocessing settings, then the PNG or JPEG file:
//   [0] bit 0: aspect pad (else square), bit 1: do_center_crop, bit 2: do_resize
//   [1] resample filter 1..5 (byte % 5 + 1)
//   [2] shortest_edge 1..64, [3] crop side 1..64
// The budgets are smaller than the defaults (1 Mpx decoded, 64 Kpx per preprocessing buffer) so
// that an execution stays fast and under libFuzzer's memory limits; the checks are the same code.
#include "aligngpt/io/image.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    if (size < 4) return 0;
    io::clip_image_processor_config cfg;
    cfg.aspect = data[0] & 1 ? io::aspect_mode::pad : io::aspect_mode::square;
    cfg.do_center_crop = data[0] & 2;
    cfg.do_resize = data[0] & 4;
    cfg.resample = io::resample_filter(data[1] % 5 + 1);
    cfg.shortest_edge = data[2] % 64 + 1;
    cfg.crop_height = cfg.crop_width = data[3] % 64 + 1;
    cfg.max_pixels = std::uint64_t(1) << 16;
    cfg.max_padded_pixels = std::uint64_t(1) << 22;
    const io::image_limits limits{.max_pixels = std::uint64_t(1) << 20, .max_file_bytes = std::uint64_t(1) << 20};
    const std::string name = "fuzz-image";
    fuzz::expect_ok_or_refused(name, [&] {
        const io::rgb_image img = io::decode_image(data + 4, size - 4, name, limits);
        (void)io::clip_preprocess(img, cfg, name);
    });
    return 0;
}
