// Fuzz target: a sharded checkpoint's index (model.safetensors.index.json), opened as
// load_aligngpt opens a model directory: the shard names are path-checked, every shard it names
// is opened and every mapping is cross-checked against the shards' tensors.
//
// The scratch directory holds the shards of two real sharded checkpoints (tests/golden/io:
// llama_st_sharded and llama_bin_sharded, copied once), so the seeds, their real index files,
// name shards that exist.
#include <filesystem>

#include "aligngpt/io/torch_bin.h"
#include "fuzz.h"

namespace {
void copy_golden_shards() {
    namespace fs = std::filesystem;
    for (const char* d : {"llama_st_sharded", "llama_bin_sharded"})
        for (const auto& e : fs::directory_iterator(fs::path(ALIGNGPT_FUZZ_GOLDEN_DIR) / "io" / d))
            if (e.path().extension() != ".json")
                fs::copy_file(e.path(), fs::path(aligngpt::fuzz::scratch_dir()) / e.path().filename(),
                              fs::copy_options::overwrite_existing);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    static const bool shards = (copy_golden_shards(), true);
    (void)shards;
    fuzz::put_file("model.safetensors.index.json", fuzz::as_text(data, size));
    // errors name the index or the shard they concern: both lie in the scratch directory
    fuzz::expect_ok_or_refused(fuzz::scratch_dir(), [&] { (void)io::checkpoint_dir::open(fuzz::scratch_dir()); });
    return 0;
}
