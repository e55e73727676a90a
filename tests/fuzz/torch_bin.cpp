// Fuzz target: a whole PyTorch .bin (zip + data.pkl + storages), opened as load_aligngpt opens a
// shard and every tensor read as float (strided views are gathered element by element).
#include "aligngpt/io/torch_bin.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    const std::string path = fuzz::put_file("input.bin", fuzz::as_text(data, size));
    fuzz::expect_ok_or_refused(path, [&] { fuzz::read_every_tensor(io::torch_bin_file::open(path)); });
    return 0;
}
