// Fuzz target: a whole safetensors file, opened (header and layout validated) and every tensor
// read as float, the path every checkpoint loader takes.
#include "aligngpt/io/safetensors.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    const std::string path = fuzz::put_file("input.safetensors", fuzz::as_text(data, size));
    fuzz::expect_ok_or_refused(path, [&] { fuzz::read_every_tensor(io::safetensors_file::open(path)); });
    return 0;
}
