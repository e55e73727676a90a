// Fuzz target: a training data file (LLaVA's JSON array of records) as `aligngpt train` reads it
// (train/data.h): the streaming byte-range index (record_index::scan), stage 1's checks of every
// record at construction, then per record (at most 16) dataset::get: the record's checks,
// preprocess_plain (stage 1) or preprocess_v1 (stage 2) with the tokenizer of tests/golden/tokenizer,
// the collator and the image; and the sampler's grouping_lengths + modality_grouped_order.
//
// Input: the data JSON. The image folder is a scratch folder holding tiny_7x5.png, gray16_16x8.png
// and photo_192x144.jpg (from tests/golden/images); any other name is a missing image, refused by
// get() with the record's place. The CLIP preprocessing is shrunk to 14 x 14 pixels so that an
// execution stays fast (the checks are the same code). Errors must name the data file.
#include <filesystem>

#include "aligngpt/train/data.h"
#include "fuzz.h"

namespace {

using namespace aligngpt;

struct fixture {
    std::string images = fuzz::scratch_dir() + "/images";
    tokenizer::llama_tokenizer tok =
        tokenizer::llama_tokenizer::from_directory(std::string(ALIGNGPT_FUZZ_GOLDEN_DIR) + "/tokenizer");
    io::clip_image_processor_config image;
    fixture() {
        namespace fs = std::filesystem;
        fs::create_directories(images);
        for (const char* n : {"tiny_7x5.png", "gray16_16x8.png", "photo_192x144.jpg"})
            fs::copy_file(fs::path(ALIGNGPT_FUZZ_GOLDEN_DIR) / "images" / n, fs::path(images) / n,
                          fs::copy_options::overwrite_existing);
        image.shortest_edge = 14;
        image.crop_height = image.crop_width = 14;
        image.max_pixels = std::uint64_t(1) << 16;
        image.max_padded_pixels = std::uint64_t(1) << 22;
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const fixture fx;
    const std::string path = fuzz::put_file("data.json", fuzz::as_text(data, size));
    struct stage {
        const char* template_name;
        io::aspect_mode aspect;
        std::int64_t n_levels, max_length;
    };
    for (const stage s : {stage{"plain", io::aspect_mode::square, 8, 64}, stage{"vicuna_v1", io::aspect_mode::pad, 0, 96}}) {
        std::optional<train::dataset> ds;
        train::dataset_options opt;
        opt.n_levels = s.n_levels;
        fuzz::expect_ok_or_refused(
            path, [&] { ds.emplace(path, fx.images, fx.tok, s.template_name, s.aspect, fx.image, s.max_length, opt); });
        if (!ds) continue;
        for (std::size_t i = 0; i < std::min<std::size_t>(ds->size(), 16); i++)
            fuzz::expect_ok_or_refused(path, [&] { (void)ds->get(i); });
        std::vector<std::int64_t> lengths;  // as the trainer orders records with --group-by-modality-length
        fuzz::expect_ok_or_refused(path, [&] { lengths = ds->grouping_lengths(); });
        if (lengths.size() == ds->size()) (void)train::modality_grouped_order(lengths, 2, 2, 42, 1);
    }
    return 0;
}
