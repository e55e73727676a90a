// io/torch_bin_writer.h: round trips through the project's own reader (torch_bin_file, weight_file)
// and a byte-for-byte comparison with tests/golden/train_optim/written_by_cpp.bin, the file that
// tests/tools/golden/train_optim.py (golden_torch_bin_written_by_cpp) loads with
// torch.load(weights_only=True) and whose data.pkl it compares with torch.save's own pickle.
// A writer change fails the comparison: rewrite the file with ALIGNGPT_WRITE_TORCH_BIN_GOLDEN=1 and
// re-run the Python check before committing it.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "aligngpt/half.h"
#include "aligngpt/io/torch_bin.h"
#include "aligngpt/io/torch_bin_writer.h"
#include "support/golden.h"
#include "support/scratch_dir.h"

namespace test_torch_bin_writer {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using namespace aligngpt::io;

namespace {

std::string tbw_tmp(const std::string& name) {
    std::filesystem::create_directories(support::scratch_dir());
    return support::scratch_dir() + "/" + name;
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
    std::vector<bf16> out;
    for (float x : v) out.push_back(bf16(x));  // round to nearest even, as torch's .to(bfloat16)
    return out;
}

/// The dict of golden_torch_bin_written_by_cpp (same names, shapes and hashfills).
torch_bin_writer written_by_cpp() {
    torch_bin_writer w;
    w.add("model.embed_tokens.weight", golden::hashfill("tbw.embed", {4, 3}, 1.0f));
    const std::vector<bf16> norm = to_bf16(golden::hashfill("tbw.norm", {3}, 1.0f).to_vector());
    w.add("model.norm.weight", dtype::BF16, {3}, norm.data(), norm.size() * 2);
    w.add("scalar", golden::hashfill("tbw.scalar", {}, 2.0f));
    w.add("empty", tensor<float>({0, 5}));
    w.add("big_dims", golden::hashfill("tbw.big", {1, 300}, 1.0f));
    return w;
}

std::string read_file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("torch_bin_writer: f32, bf16, 0-d and empty tensors read back through torch_bin_file and weight_file") {
    const std::string path = tbw_tmp("tbw_roundtrip.bin");
    written_by_cpp().write(path);
    for (int via = 0; via < 2; via++) {
        CAPTURE(via);
        auto check = [&](const auto& f) {
            REQUIRE(f.tensors().size() == 5);
            CHECK(f.tensors()[0].name == "model.embed_tokens.weight");  // insertion order kept
            CHECK(f.tensors()[4].name == "big_dims");
            CHECK(f.at("model.embed_tokens.weight").type == dtype::F32);
            CHECK(f.template read_as<float>("model.embed_tokens.weight") ==
                  golden::hashfill("tbw.embed", {4, 3}, 1.0f).to_vector());
            CHECK(f.at("model.norm.weight").type == dtype::BF16);
            std::vector<float> norm;
            for (bf16 x : to_bf16(golden::hashfill("tbw.norm", {3}, 1.0f).to_vector())) norm.push_back(float(x));
            CHECK(f.template read_as<float>("model.norm.weight") == norm);
            CHECK(f.at("scalar").shape.empty());
            CHECK(f.template read_as<float>("scalar") == golden::hashfill("tbw.scalar", {}, 2.0f).to_vector());
            CHECK(f.at("empty").shape == std::vector<index_t>{0, 5});
            CHECK(f.template read_as<float>("empty").empty());
            CHECK(f.template tensor_as<float>("big_dims").shape() == shape_t{1, 300});
        };
        if (via == 0)
            check(torch_bin_file::open(path));
        else {
            const weight_file f = weight_file::open(path);
            CHECK(std::string(f.format()) == "pytorch");
            check(f);
        }
    }
    // torch's layout: entries in its order, every entry's data 64-byte aligned, CRCs right.
    const zip_archive z = zip_archive::open(mapped_file::open(path));
    std::vector<std::string> names;
    for (const zip_entry& e : z.entries()) {
        names.push_back(e.name);
        CHECK_MESSAGE(e.offset % 64 == 0, e.name);
        z.read_checked(e);
    }
    CHECK(names == std::vector<std::string>{"archive/data.pkl", "archive/byteorder", "archive/data/0", "archive/data/1",
                                            "archive/data/2", "archive/data/3", "archive/data/4", "archive/version"});
    CHECK(z.bytes(*z.find("archive/byteorder")) == "little");
    CHECK(z.bytes(*z.find("archive/version")) == "3\n");
}

TEST_CASE("torch_bin_writer: the committed C++-written file (checked by torch.load in the golden recipe) is unchanged") {
    const std::string path = std::string(ALIGNGPT_GOLDEN_DIR) + "/train_optim/written_by_cpp.bin";
    const char* regen = std::getenv("ALIGNGPT_WRITE_TORCH_BIN_GOLDEN");
    if (regen && std::string(regen) == "1") {
        std::filesystem::create_directories(std::string(ALIGNGPT_GOLDEN_DIR) + "/train_optim");
        written_by_cpp().write(path);
        MESSAGE("wrote " << path << ": now run /usr/bin/python3 tests/tools/make_golden.py torch_bin_written_by_cpp");
    }
    const std::string committed = read_file_bytes(path);
    REQUIRE_MESSAGE(!committed.empty(), "missing " << path);
    CHECK(written_by_cpp().bytes() == committed);
    CHECK(read_file_bytes(path) == committed);
}

TEST_CASE("torch_bin_writer: many tensors (memo past 256, SETITEMS batches of 1000), key order, integer opcodes") {
    // 1001 tensors: LONG_BINPUT/LONG_BINGET, a batch of 1000 then a SETITEM; storage keys sort as
    // strings ("0", "1", "10", "100", ...) in the archive but stay in add order in the pickle.
    torch_bin_writer w;
    for (int i = 0; i < 1001; i++) {
        const float v = float(i);
        w.add("t." + std::to_string(i), dtype::F32, {1}, &v, 4);
    }
    std::vector<index_t> dims{70000, 0, 3};  // BININT4 and 0 sizes
    w.add("wide", dtype::F32, dims, nullptr, 0);
    const std::vector<index_t> huge{(index_t(1) << 31) + 1, 0};  // LONG1 size, empty
    w.add("huge", dtype::BF16, huge, nullptr, 0);
    const std::vector<std::int64_t> ids{-5, 1ll << 40, 7};
    w.add("ids", dtype::I64, {3}, ids.data(), 24);
    const std::string path = tbw_tmp("tbw_many.bin");
    w.write(path);
    const torch_bin_file f = torch_bin_file::open(path);
    REQUIRE(f.tensors().size() == 1004);
    CHECK(f.at("huge").shape == huge);
    for (int i = 0; i < 1001; i += 97) CHECK(f.read_as<float>("t." + std::to_string(i)) == std::vector<float>{float(i)});
    CHECK(f.read_as<float>("t.1000") == std::vector<float>{1000.0f});
    CHECK(f.tensors()[1000].name == "t.1000");
    CHECK(f.at("wide").shape == dims);
    CHECK(f.at("ids").type == dtype::I64);
    CHECK(f.read_as<double>("ids") == std::vector<double>{-5.0, double(1ll << 40), 7.0});
}

TEST_CASE("torch_bin_writer: bad input is refused naming the tensor; the write is atomic") {
    torch_bin_writer w;
    const float x[2] = {1, 2};
    w.add("a", dtype::F32, {2}, x, 8);
    CHECK_THROWS_WITH_AS(w.add("a", dtype::F32, {2}, x, 8), doctest::Contains("\"a\": added twice"), aligngpt::error);
    CHECK_THROWS_WITH_AS(w.add("b", dtype::F32, {3}, x, 8), doctest::Contains("\"b\": F32 [3] needs 12 bytes, got 8"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(w.add("c", dtype::U16, {1}, x, 2), doctest::Contains("\"c\": dtype U16 has no torch storage"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(w.add("d\xff", dtype::F32, {1}, x, 4), doctest::Contains("not valid UTF-8"), aligngpt::error);
    // Replacing an existing file leaves no temporary behind and the new content in place.
    const std::string path = tbw_tmp("tbw_atomic.bin");
    std::ofstream(path) << "old";
    w.write(path);
    CHECK(torch_bin_file::open(path).read_as<float>("a") == std::vector<float>{1, 2});
    for (const auto& e : std::filesystem::directory_iterator(support::scratch_dir()))
        CHECK_MESSAGE(e.path().filename().string().find("tbw_atomic.bin.tmp") == std::string::npos, e.path());
    // A directory that does not exist: an error naming the path, nothing written.
    CHECK_THROWS_WITH_AS(w.write(tbw_tmp("no/such/dir/x.bin")), doctest::Contains("no/such/dir/x.bin"), aligngpt::error);
}

TEST_CASE("torch_bin_writer: zip64 fields for an entry over 4 GiB and entries past 4 GiB (sparse file)") {
    // The big entry is a hole of a sparse file (its bytes are never touched: the CRC is given), so
    // the test costs no memory or disk; zip_archive then checks every header, extra and offset.
    struct sparse_sink {
        int fd;
        void write(const void* p, std::size_t n) {
            if (n > (std::size_t(1) << 20)) {
                REQUIRE(::lseek(fd, off_t(n), SEEK_CUR) >= 0);
                return;
            }
            REQUIRE(::write(fd, p, n) == ssize_t(n));
        }
    };
    const std::string path = tbw_tmp("tbw_zip64.bin");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    sparse_sink sink{fd};
    const std::uint64_t big = (std::uint64_t(1) << 32) + 64;
    {
        io::detail::zip_stream<sparse_sink> z(sink);
        z.entry("archive/small", "abc", 3);
        z.entry("archive/data/0", nullptr, std::size_t(big), 0);
        z.entry("archive/version", "3\n", 2);  // local header past 4 GiB
        z.finish();
    }
    REQUIRE(::close(fd) == 0);
    const zip_archive z = zip_archive::open(mapped_file::open(path));
    REQUIRE(z.entries().size() == 3);
    const zip_entry& d = *z.find("archive/data/0");
    CHECK(d.size == big);
    CHECK(d.offset % 64 == 0);
    const zip_entry& v = *z.find("archive/version");
    CHECK(v.header_offset > 0xFFFFFFFFull);
    CHECK(v.offset % 64 == 0);
    CHECK(z.read_checked(v) == "3\n");
    CHECK(z.read_checked(*z.find("archive/small")) == "abc");
    std::filesystem::remove(path);
}

}  // namespace test_torch_bin_writer
