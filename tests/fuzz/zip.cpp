// Fuzz target: the zip reader alone: central directory, zip64 records, local headers, and the
// CRC-32 of every entry (read_checked), as torch_bin.h reads data.pkl.
#include "aligngpt/io/zip.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    const std::string path = fuzz::put_file("input.zip", fuzz::as_text(data, size));
    fuzz::expect_ok_or_refused(path, [&] {
        const auto z = io::zip_archive::open(io::mapped_file::open(path));
        for (const io::zip_entry& e : z.entries()) (void)z.read_checked(e);
    });
    return 0;
}
