// safetensors reader/writer: round trips, the accepted odd cases, and one handcrafted malformed
// file per rule of the reference reader (docs/model.md §11.4), each checked for an error naming the
// file and the field (R1). Files are built as byte strings here and written to support::scratch_dir().
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "aligngpt/io/safetensors.h"

#include "support/scratch_dir.h"

namespace test_io_safetensors {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using namespace aligngpt::io;

namespace {
std::string tmp_file(const std::string& name) {
    std::filesystem::create_directories(support::scratch_dir());
    return support::scratch_dir() + "/" + name;
}
std::string put_file(const std::string& name, const std::string& bytes) {
    const std::string p = tmp_file(name);
    std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return p;
}
std::string u64le(std::uint64_t n) { return std::string(reinterpret_cast<const char*>(&n), 8); }
/// 8-byte N + header + `data_len` bytes of data.
std::string st_bytes(const std::string& header, std::size_t data_len = 0) {
    return u64le(header.size()) + header + std::string(data_len, '\x01');
}
/// Opens the file and requires an aligngpt::error whose text holds every part.
void expect_open_error(const std::string& name, const std::string& bytes, std::vector<std::string> parts,
                       const safetensors_limits& lim = {}) {
    const std::string p = put_file(name, bytes);
    parts.push_back(name);  // R1: the file is named
    std::string msg;
    try {
        (void)safetensors_file::open(p, lim);
    } catch (const aligngpt::error& e) { msg = e.what(); }
    CAPTURE(name);
    CAPTURE(msg);
    REQUIRE_MESSAGE(!msg.empty(), "no error for ", name);
    for (const auto& s : parts) CHECK_MESSAGE(msg.find(s) != std::string::npos, "missing '", s, "'");
}
const std::string ok_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
}  // namespace

TEST_CASE("safetensors: writer -> reader round trip, every plain dtype, metadata, conversions") {
    safetensors_writer w;
    tensor<float> a = tensor<float>::from({1.5f, -2.f, 3.25f, 0.f, 1e-3f, 7.f}, {2, 3});
    w.add("a.weight", a);
    w.add("d", tensor<double>::from({0.1, -1e300}, {2}));
    w.add("i", tensor<std::int64_t>::from({-5, std::int64_t(1) << 40}, {1, 2}));
    w.add("h", tensor<bf16>::from({bf16(1.f), bf16(-0.5f), bf16(3.f)}, {3}));
    w.add("g", tensor<f16>::from({f16(2.f), f16(65504.f)}, {2}));
    const std::uint8_t bytes[3] = {0, 1, 255};
    w.add("u8", dtype::U8, {3}, bytes, 3);
    const std::int16_t s16[2] = {-300, 300};
    w.add("s16", dtype::I16, {2}, s16, 4);
    w.add("scalar", dtype::F32, {}, a.data(), 4);    // rank 0
    w.add("empty", dtype::F32, {0, 4}, nullptr, 0);  // zero elements
    w.set_metadata("format", "pt");
    const std::string p = tmp_file("roundtrip.safetensors");
    w.write(p);

    const auto f = safetensors_file::open(p);
    CHECK(f.tensors().size() == 9);
    CHECK(f.metadata().at("format") == "pt");
    CHECK(f.read_as<float>("a.weight") == a.to_vector());
    CHECK(f.tensor_as<float>("a.weight").shape() == shape_t{2, 3});
    CHECK(f.read_as<double>("d") == std::vector<double>{0.1, -1e300});
    CHECK(f.read_as<std::int64_t>("i") == std::vector<std::int64_t>{-5, std::int64_t(1) << 40});
    CHECK(f.read_as<float>("h") == std::vector<float>{1.f, -0.5f, 3.f});
    CHECK(f.read_as<float>("g") == std::vector<float>{2.f, 65504.f});
    CHECK(f.read_as<std::int32_t>("u8") == std::vector<std::int32_t>{0, 1, 255});
    CHECK(f.read_as<double>("s16") == std::vector<double>{-300, 300});
    CHECK(f.read_as<float>("scalar") == std::vector<float>{1.5f});
    CHECK(f.tensor_as<float>("scalar").dim() == 0);
    CHECK(f.read_as<float>("empty").empty());
    CHECK(f.tensor_as<float>("empty").shape() == shape_t{0, 4});
    const auto hb = f.tensor_as<bf16>("h");  // raw copy, same dtype
    CHECK(bits16(hb.to_vector()[1]) == bits16(bf16(-0.5f)));
    // Writer aligns: every tensor starts at a multiple of its element size in the file.
    for (const auto& t : f.tensors())
        if (dtype_size(t.type)) CHECK(reinterpret_cast<std::uintptr_t>(f.data(t)) % dtype_size(t.type) == 0);
    // Offsets are sorted and contiguous.
    for (std::size_t k = 1; k < f.tensors().size(); k++) CHECK(f.tensors()[k].begin == f.tensors()[k - 1].end);
    CHECK(f.find("nope") == nullptr);
    CHECK_THROWS_WITH_AS(f.at("nope"), doctest::Contains("\"nope\""), aligngpt::error);
    CHECK_THROWS_WITH_AS(f.read_as<std::int64_t>("a.weight"), doctest::Contains("cannot be read as I64"), aligngpt::error);
    CHECK_THROWS_WITH_AS(f.read_as<std::int32_t>("i"), doctest::Contains("does not fit I32"), aligngpt::error);
    CHECK_THROWS_WITH_AS(f.tensor_as<bf16>("a.weight"), doctest::Contains("F32 cannot be read as BF16"), aligngpt::error);
}

TEST_CASE("safetensors: writer leaves no temporary file and replaces atomically") {
    const std::string p = tmp_file("atomic.safetensors");
    for (int k = 0; k < 2; k++) {
        safetensors_writer w;
        w.add("x", tensor<float>::from({float(k)}, {1}));
        w.write(p);
        CHECK(safetensors_file::open(p).read_as<float>("x")[0] == float(k));
    }
    for (const auto& e : std::filesystem::directory_iterator(support::scratch_dir()))
        CHECK(e.path().filename().string().find("atomic.safetensors.tmp") == std::string::npos);
    safetensors_writer bad;
    CHECK_THROWS_WITH_AS(bad.add("x", dtype::F32, {3}, nullptr, 8), doctest::Contains("needs 12 bytes"), aligngpt::error);
    CHECK_THROWS_WITH_AS(bad.write(tmp_file("no/such/dir/x.safetensors")), doctest::Contains("no/such/dir"), aligngpt::error);
}

TEST_CASE("safetensors: accepted odd files (whitespace both sides, unaligned data, empty, rank 0)") {
    // JSON whitespace before and after the object (writers pad to align data).
    const std::string h = " \t\n\r{\"w\":" + ok_entry + "}\n  \t";  // header length is odd -> unaligned F32 data
    std::string bytes = u64le(h.size()) + h;
    const float vals[2] = {3.5f, -1.25f};
    bytes.append(reinterpret_cast<const char*>(vals), 8);
    auto f = safetensors_file::open(put_file("ws.safetensors", bytes));
    CHECK(reinterpret_cast<std::uintptr_t>(f.data(f.at("w"))) % 4 != 0);  // really unaligned (memcpy path)
    CHECK(f.read_as<float>("w") == std::vector<float>{3.5f, -1.25f});
    // No tensors at all, metadata only.
    f = safetensors_file::open(put_file("meta_only.safetensors", st_bytes(R"({"__metadata__":{"a":"b"}})")));
    CHECK(f.tensors().empty());
    CHECK(f.metadata().at("a") == "b");
    // Zero-size tensors sharing offset 0 (reference accepts: BEGIN == previous END).
    f = safetensors_file::open(put_file(
        "zeros.safetensors",
        st_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})",
                 8)));
    CHECK(f.tensors().size() == 2);
    // Exotic dtypes parse but are refused by read_as.
    f = safetensors_file::open(
        put_file("f4.safetensors", st_bytes(R"({"q":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]}})", 3)));
    CHECK(f.at("q").type == dtype::F4);
    CHECK_THROWS_WITH_AS(f.read_as<float>("q"), doctest::Contains("F4 cannot be read"), aligngpt::error);
}

TEST_CASE("safetensors: a file of another format is named as not a safetensors file") {
    // A PNG: its signature read as a little-endian u64 is N = 727905341920923785.
    const std::string png = std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs/image.png";
    std::string msg;
    try {
        (void)safetensors_file::open(png);
    } catch (const aligngpt::error& e) { msg = e.what(); }
    CHECK_MESSAGE(msg.find("image.png: not a safetensors file (") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("727905341920923785") != std::string::npos, msg);
    // Lengths that cannot be a header: past the end of the file, over the limit; and a header that
    // does not open a JSON object.
    expect_open_error("text.st", "hello world, not a tensor file\n", {"not a safetensors file ("});
    expect_open_error("past_eof.st", u64le(40) + "{}", {"not a safetensors file (", "N = 40", "only 2 bytes"});
    expect_open_error("not_object.st", st_bytes("x{}"), {"not a safetensors file (", "not a JSON object", "\"x\""});
    expect_open_error("too_small.st", "abc", {"not a safetensors file (", "3 bytes"});
}

TEST_CASE("safetensors: every malformed-file rule is refused with file and field named (R1)") {
    // Length field.
    expect_open_error("empty.st", "", {"0 bytes", "too small"});
    expect_open_error("seven.st", "1234567", {"7 bytes", "too small"});
    expect_open_error("n_zero.st", u64le(0), {"empty"});
    expect_open_error("n_past_eof.st", u64le(100) + "{}", {"N = 100", "only 2 bytes"});
    expect_open_error("n_max.st", u64le(~std::uint64_t(0)) + "{}", {"N = 18446744073709551615", "limit"});
    expect_open_error("n_cap.st", u64le(100'000'001) + "{}", {"N = 100000001", "100000000"});
    // Header text.
    expect_open_error("not_utf8.st", st_bytes("{\"\xff\":1}"), {"UTF-8", "byte 10"});
    expect_open_error("overlong_utf8.st", st_bytes("{\"\xc0\xaf\":1}"), {"UTF-8"});
    expect_open_error("not_json.st", st_bytes("{nope}"), {"invalid JSON"});
    expect_open_error("array.st", st_bytes("[]"), {"not a JSON object", "\"[\""});
    expect_open_error("string.st", st_bytes("\"x\""), {"not a JSON object"});
    expect_open_error("number.st", st_bytes("1"), {"not a JSON object"});
    expect_open_error("truncated_json.st", st_bytes("{\"w\":{\"dtype\":\"F3"), {"invalid JSON"});
    expect_open_error("nul_padding.st", st_bytes(std::string("{}\0", 3)), {"NUL byte at offset 10"});
    expect_open_error("bom.st", st_bytes("\xef\xbb\xbf{}"), {"not a JSON object"});
    expect_open_error("trailing_garbage.st", st_bytes("{} x"), {"invalid JSON"});
    expect_open_error("deep.st", st_bytes(R"({"w":{"dtype":)" + std::string(100000, '[')), {"tensor \"w\"", "dtype", "array"});
    expect_open_error("deep_meta.st", st_bytes(R"({"__metadata__":{"k":)" + std::string(100000, '{')),
                      {"__metadata__", "\"k\"", "string"});
    // __metadata__.
    expect_open_error("meta_int.st", st_bytes(R"({"__metadata__":{"unquoted_int":0}})"),
                      {"__metadata__", "unquoted_int", "must be a string"});
    expect_open_error("meta_list.st", st_bytes(R"({"__metadata__":["a"]})"), {"__metadata__", "object"});
    expect_open_error("meta_dup.st", st_bytes(R"({"__metadata__":{"a":"1","a":"2"}})"), {"__metadata__", "duplicate key \"a\""});
    // Names and duplicates.
    expect_open_error("dup.st", st_bytes(R"({"w":)" + ok_entry + R"(,"w":)" + ok_entry + "}", 8), {"duplicate key \"w\""});
    expect_open_error("empty_name.st", st_bytes(R"({"":)" + ok_entry + "}", 8), {"tensor name is empty"});
    expect_open_error("nul_name.st", st_bytes(R"({"a\u0000b":)" + ok_entry + "}", 8), {"\"a\\x00b\"", "NUL"});
    expect_open_error("long_name.st", st_bytes("{\"" + std::string(65537, 'n') + "\":" + ok_entry + "}", 8),
                      {"65537 bytes", "65536"});
    // Entries (schema additionalProperties:false).
    expect_open_error("entry_num.st", st_bytes(R"({"w":5})"), {"tensor \"w\"", "must be an object", "integer (5)"});
    expect_open_error("extra_field.st", st_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8),
                      {"tensor \"w\"", "unknown field \"x\""});
    expect_open_error("dup_field.st", st_bytes(R"({"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
                      {"tensor \"w\"", "duplicate field \"dtype\""});
    expect_open_error("no_offsets.st", st_bytes(R"({"w":{"dtype":"F32","shape":[2]}})", 8),
                      {"tensor \"w\"", "missing field \"data_offsets\""});
    expect_open_error("no_dtype.st", st_bytes(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8),
                      {"tensor \"w\"", "missing field \"dtype\""});
    expect_open_error("bad_dtype.st", st_bytes(R"({"w":{"dtype":"F48","shape":[2],"data_offsets":[0,8]}})", 8),
                      {"tensor \"w\"", "dtype", "\"F48\"", "BF16"});
    expect_open_error("lower_dtype.st", st_bytes(R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8),
                      {"unknown dtype \"f32\""});
    expect_open_error("dtype_type.st", st_bytes(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", 8),
                      {"tensor \"w\"", "\"dtype\"", "must be a string"});
    expect_open_error("f6_bits.st", st_bytes(R"({"w":{"dtype":"F6_E2M3","shape":[3],"data_offsets":[0,2]}})", 2),
                      {"tensor \"w\"", "18 bits", "whole number of bytes"});
    // Shapes.
    expect_open_error("shape_neg.st", st_bytes(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
                      {"tensor \"w\"", "\"shape\"", "item 0", "negative integer (-2)"});
    expect_open_error("shape_float.st", st_bytes(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8),
                      {"\"shape\"", "non-integer number (2.0)"});
    expect_open_error("shape_str.st", st_bytes(R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8),
                      {"\"shape\"", "array of integers"});
    expect_open_error("shape_2p48.st", st_bytes(R"({"w":{"dtype":"F32","shape":[281474976710656],"data_offsets":[0,8]}})", 8),
                      {"\"shape\"", "281474976710656", "2^48-1"});
    expect_open_error("shape_u64.st",
                      st_bytes(R"({"w":{"dtype":"F32","shape":[2,18446744073709551614],"data_offsets":[0,8]}})", 8),
                      {"\"shape\"", "item 1"});
    expect_open_error("shape_product.st",
                      st_bytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
                      {"tensor \"w\"", "overflows int64"});
    expect_open_error("shape_bits.st",
                      st_bytes(R"({"w":{"dtype":"F64","shape":[281474976710655,8192],"data_offsets":[0,8]}})", 8),
                      {"tensor \"w\"", "bits overflows"});
    std::string many_dims = "[";
    for (int k = 0; k < 1000000; k++) many_dims += k ? ",1" : "1";
    expect_open_error("rank_1e6.st", st_bytes(R"({"w":{"dtype":"F32","shape":)" + many_dims + R"(],"data_offsets":[0,4]}})", 4),
                      {"tensor \"w\"", "rank exceeds 64"});
    // data_offsets.
    const auto entry = [](const std::string& dt, const std::string& shape, const std::string& offs) {
        return "{\"dtype\":\"" + dt + "\",\"shape\":" + shape + ",\"data_offsets\":" + offs + "}";
    };
    expect_open_error("offs_empty.st", st_bytes(R"({"w":)" + entry("F32", "[2]", "[]") + "}", 8), {"tensor \"w\"", "0 items"});
    expect_open_error("offs_one.st", st_bytes(R"({"w":)" + entry("F32", "[2]", "[0]") + "}", 8), {"tensor \"w\"", "1 items"});
    expect_open_error("offs_three.st", st_bytes(R"({"w":)" + entry("F32", "[2]", "[0,8,8]") + "}", 8),
                      {"tensor \"w\"", "more than 2 items"});
    expect_open_error("offs_neg.st", st_bytes(R"({"w":)" + entry("F32", "[2]", "[-8,0]") + "}", 8),
                      {"tensor \"w\"", "data_offsets", "negative"});
    expect_open_error("offs_inverted.st", st_bytes(R"({"w":)" + entry("F32", "[0]", "[8,0]") + "}", 8),
                      {"tensor \"w\"", "[8,0]", "END < BEGIN"});
    expect_open_error("offs_size.st", st_bytes(R"({"lm_head.weight":)" + entry("F16", "[2,2]", "[0,4]") + "}", 4),
                      {"\"lm_head.weight\"", "[0,4]", "F16 [2,2] needs 8"});
    expect_open_error("offs_start.st", st_bytes(R"({"w":)" + entry("F32", "[2]", "[4,12]") + "}", 12),
                      {"tensor \"w\"", "[4,12]", "start at 0"});
    expect_open_error("offs_gap.st",
                      st_bytes(R"({"a":)" + entry("F32", "[1]", "[0,4]") + R"(,"b":)" + entry("F32", "[1]", "[8,12]") + "}", 12),
                      {"tensor \"b\"", "\"a\" ends at 4"});
    expect_open_error("offs_overlap.st",
                      st_bytes(R"({"a":)" + entry("F32", "[2]", "[0,8]") + R"(,"b":)" + entry("F32", "[2]", "[4,12]") + "}", 12),
                      {"tensor \"b\"", "[4,12]", "\"a\" ends at 8"});
    expect_open_error("offs_alias.st",
                      st_bytes(R"({"a":)" + entry("F32", "[2]", "[0,8]") + R"(,"b":)" + entry("F32", "[2]", "[0,8]") + "}", 8),
                      {"tensor \"b\"", "[0,8]", "ends at 8"});
    expect_open_error("polyglot_tail.st", st_bytes(R"({"w":)" + ok_entry + "}", 8) + "extra_bogus_data_for_polyglot_file",
                      {"cover 8 bytes", "42 bytes", "trailing"});
    expect_open_error("truncated_data.st", st_bytes(R"({"w":)" + ok_entry + "}", 6), {"cover 8 bytes", "6 bytes", "truncated"});
    expect_open_error("offs_past_end.st", st_bytes(R"({"w":)" + entry("F32", "[2]", "[0,8]") + "}", 0),
                      {"cover 8 bytes", "truncated"});
    // Tensor-count cap (attack 2: 10 M tiny tensors), with a small cap so the test is fast.
    safetensors_limits lim;
    lim.max_tensors = 4;
    std::string h = "{";
    for (int k = 0; k < 5; k++)
        h += (k ? "," : "") + ("\"t" + std::to_string(k) + "\":") +
             entry("U8", "[1]", "[" + std::to_string(k) + "," + std::to_string(k + 1) + "]");
    expect_open_error("count_cap.st", st_bytes(h + "}", 5), {"more than 4 tensors", "max_tensors"}, lim);
    lim.max_tensors = 5;
    CHECK(safetensors_file::open(put_file("count_ok.st", st_bytes(h + "}", 5)), lim).tensors().size() == 5);
}

// Issue 12, finding 5: [2^31, 2^32, 0] has 0 elements, so the unsigned product passed, but numel()
// multiplied 2^31 * 2^32 in int64 first: signed overflow. Every nonzero partial product must fit.
TEST_CASE("safetensors: a zero dimension does not hide an element count that overflows int64") {
    expect_open_error("shape_zero_hides.st",
                      st_bytes(R"({"w":{"dtype":"F32","shape":[2147483648,4294967296,0],"data_offsets":[0,0]}})"),
                      {"tensor \"w\"", "[2147483648,4294967296,0]", "product of its nonzero dimensions overflows int64"});
    expect_open_error("shape_zero_first.st",
                      st_bytes(R"({"w":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})"),
                      {"tensor \"w\"", "overflows int64"});
    // At the limit it opens, and numel() is 0.
    const std::string p =
        put_file("shape_zero_ok.st", st_bytes(R"({"w":{"dtype":"F32","shape":[1073741824,4294967296,0],"data_offsets":[0,0]}})"));
    CHECK(safetensors_file::open(p).at("w").numel() == 0);
}

// Issue 12, finding 1 for safetensors: the header parser is a fixed-shape SAX state machine, so a
// deeply nested header is refused at the first level past that shape, without recursion.
TEST_CASE("safetensors: a header nested 100000 levels deep is refused at once, no recursion") {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    expect_open_error("deep_entry.st", st_bytes(R"({"w":)" + deep + "}"),
                      {"tensor \"w\"", "entry must be an object", "got an array"});
    expect_open_error("deep_shape.st", st_bytes(R"({"w":{"dtype":"F32","shape":[)" + deep + R"(],"data_offsets":[0,0]}})"),
                      {"tensor \"w\"", "\"shape\"", "item 0", "got an array"});
    expect_open_error("deep_meta.st", st_bytes(R"({"__metadata__":{"k":)" + deep + "}}"),
                      {"__metadata__", "\"k\"", "must be a string"});
}

}  // namespace test_io_safetensors
