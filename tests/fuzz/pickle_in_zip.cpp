// Fuzz target: the fuzzed bytes are the data.pkl of an otherwise valid .bin. Mutating whole zips
// rarely gets past the CRC-32 check, so this target builds the zip itself (correct CRCs) and the
// mutations reach the pickle machine and the tensor checks of torch_bin.h.
//
// The archive holds archive/data.pkl, archive/byteorder = "little" and four storages whose sizes
// the seeds' persistent ids declare (make_seeds.py, STORAGES): archive/data/0 of 16 bytes,
// data/1 of 64, data/2 of 256 and data/3 of 8.
#include <array>
#include <utility>

#include "aligngpt/io/torch_bin.h"
#include "fuzz.h"

namespace {

void put_le(std::string& out, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) out += char((v >> (8 * i)) & 0xFF);
}

/// A stored (method 0) zip of `files`, with local headers, central directory and end record.
std::string stored_zip(const std::vector<std::pair<std::string, std::string>>& files) {
    std::string out, cd;
    for (const auto& [name, data] : files) {
        const std::uint32_t crc = aligngpt::io::detail::crc32(data.data(), data.size());
        const std::size_t local = out.size();
        put_le(out, 0x04034b50, 4);  // local header: version, flags, method, time, date
        put_le(out, 20, 2), put_le(out, 0, 2), put_le(out, 0, 2), put_le(out, 0, 4);
        put_le(out, crc, 4), put_le(out, data.size(), 4), put_le(out, data.size(), 4);
        put_le(out, name.size(), 2), put_le(out, 0, 2);
        out += name + data;
        put_le(cd, 0x02014b50, 4);  // central header: versions, flags, method, time, date
        put_le(cd, 20, 2), put_le(cd, 20, 2), put_le(cd, 0, 2), put_le(cd, 0, 2), put_le(cd, 0, 4);
        put_le(cd, crc, 4), put_le(cd, data.size(), 4), put_le(cd, data.size(), 4);
        put_le(cd, name.size(), 2), put_le(cd, 0, 2), put_le(cd, 0, 2);              // extra, comment
        put_le(cd, 0, 2), put_le(cd, 0, 2), put_le(cd, 0, 4), put_le(cd, local, 4);  // disk, attributes, offset
        cd += name;
    }
    const std::size_t cd_offset = out.size();
    out += cd;
    put_le(out, 0x06054b50, 4);
    put_le(out, 0, 2), put_le(out, 0, 2), put_le(out, files.size(), 2), put_le(out, files.size(), 2);
    put_le(out, cd.size(), 4), put_le(out, cd_offset, 4), put_le(out, 0, 2);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    const std::string bin = stored_zip({{"archive/data.pkl", std::string(fuzz::as_text(data, size))},
                                        {"archive/byteorder", "little"},
                                        {"archive/data/0", std::string(16, '\1')},
                                        {"archive/data/1", std::string(64, '\2')},
                                        {"archive/data/2", std::string(256, '\3')},
                                        {"archive/data/3", std::string(8, '\4')}});
    const std::string path = fuzz::put_file("pickle_in_zip.bin", bin);
    fuzz::expect_ok_or_refused(path, [&] { fuzz::read_every_tensor(io::torch_bin_file::open(path)); });
    return 0;
}
