// PyTorch .bin (zip + restricted pickle), weight_file and checkpoint_dir.
// Real files: tests/golden/io/ (recipe: tests/tools/make_io_fixtures.py) must give bit-identical
// tensors in every format. Malformed files: zips and pickles built byte by byte below, one per check
// of io/zip.h, io/pickle.h, io/torch_bin.h and checkpoint_dir (docs/model.md §11.4); each error must name
// the file and the field (R1).
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "aligngpt/io/torch_bin.h"

#include "support/scratch_dir.h"

namespace test_io_torch_bin {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using namespace aligngpt::io;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {
const std::string golden = std::string(ALIGNGPT_GOLDEN_DIR) + "/io/";
std::string tmp_path(const std::string& name) {
    fs::create_directories(support::scratch_dir());
    return support::scratch_dir() + "/" + name;
}
std::string put(const std::string& path, const std::string& bytes) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return path;
}
template <class F>
void expect_error(F&& f, std::vector<std::string> parts) {
    std::string msg;
    try {
        f();
    } catch (const aligngpt::error& e) { msg = e.what(); }
    CAPTURE(msg);
    REQUIRE_MESSAGE(!msg.empty(), "no error; expected ", parts.front());
    for (const auto& s : parts) CHECK_MESSAGE(msg.find(s) != std::string::npos, "missing '", s, "'");
}
std::string le(std::uint64_t v, int n) { return std::string(reinterpret_cast<const char*>(&v), std::size_t(n)); }
void patch(std::string& s, std::size_t off, std::uint64_t v, int n) { std::memcpy(s.data() + off, &v, std::size_t(n)); }

// ---- a byte-exact stored-zip writer (optionally zip64 records and data descriptors) -----------
struct zip_built {
    std::string bytes;
    std::vector<std::size_t> local, central;
    std::size_t cd, eocd, z64eocd = 0;
};
zip_built make_zip(const std::vector<std::pair<std::string, std::string>>& files, bool zip64 = false, bool descriptor = false) {
    zip_built z;
    std::string cd;
    for (const auto& [name, data] : files) {
        const std::uint32_t crc = io::detail::crc32(data.data(), data.size());
        const std::uint16_t flags = descriptor ? 8 : 0;
        z.local.push_back(z.bytes.size());
        const std::string lextra = zip64 ? le(1, 2) + le(16, 2) + le(data.size(), 8) + le(data.size(), 8) : "";
        const std::uint64_t lsz = descriptor ? 0 : zip64 ? 0xFFFFFFFF : data.size();
        z.bytes += le(0x04034b50, 4) + le(45, 2) + le(flags, 2) + le(0, 2) + le(0, 4) + le(descriptor ? 0 : crc, 4) + le(lsz, 4) +
                   le(lsz, 4) + le(name.size(), 2) + le(lextra.size(), 2) + name + lextra + data;
        if (descriptor)
            z.bytes += le(0x08074b50, 4) + le(crc, 4) + le(data.size(), zip64 ? 8 : 4) + le(data.size(), zip64 ? 8 : 4);
        const std::string cextra =
            zip64 ? le(1, 2) + le(24, 2) + le(data.size(), 8) + le(data.size(), 8) + le(z.local.back(), 8) : "";
        const std::uint64_t csz = zip64 ? 0xFFFFFFFF : data.size(), coff = zip64 ? 0xFFFFFFFF : z.local.back();
        z.central.push_back(cd.size());
        cd += le(0x02014b50, 4) + le(45, 2) + le(45, 2) + le(flags, 2) + le(0, 2) + le(0, 4) + le(crc, 4) + le(csz, 4) +
              le(csz, 4) + le(name.size(), 2) + le(cextra.size(), 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(coff, 4) +
              name + cextra;
    }
    z.cd = z.bytes.size();
    for (auto& c : z.central) c += z.cd;
    z.bytes += cd;
    const std::uint64_t n = files.size();
    if (zip64) {
        z.z64eocd = z.bytes.size();
        z.bytes += le(0x06064b50, 4) + le(44, 8) + le(45, 2) + le(45, 2) + le(0, 4) + le(0, 4) + le(n, 8) + le(n, 8) +
                   le(cd.size(), 8) + le(z.cd, 8);
        z.bytes += le(0x07064b50, 4) + le(0, 4) + le(z.z64eocd, 8) + le(1, 4);
    }
    z.eocd = z.bytes.size();
    z.bytes += le(0x06054b50, 4) + le(0, 2) + le(0, 2) + le(zip64 ? 0xFFFF : n, 2) + le(zip64 ? 0xFFFF : n, 2) +
               le(zip64 ? 0xFFFFFFFF : cd.size(), 4) + le(zip64 ? 0xFFFFFFFF : z.cd, 4) + le(0, 2);
    return z;
}

// ---- a pickle writer for the opcodes torch.save uses --------------------------------------------
struct pk {
    std::string b = "\x80\x02";
    pk& op(const std::string& o) { return b += o, *this; }
    pk& str(const std::string& s) { return b += "X" + le(s.size(), 4) + s, *this; }
    pk& i1(int v) { return b += "K" + le(std::uint64_t(v), 1), *this; }
    pk& i4(std::int32_t v) { return b += "J" + le(std::uint32_t(v), 4), *this; }
    pk& global(const std::string& m, const std::string& n) { return b += "c" + m + "\n" + n + "\n", *this; }
    pk& ints(const std::vector<std::int32_t>& v) {
        op("(");
        for (auto x : v) i4(x);
        return op("t");
    }
};
struct tensor_spec {
    std::string name = "w", storage = "FloatStorage", key = "0", location = "cpu";
    std::int32_t numel = 4, offset = 0;
    std::vector<std::int32_t> size{2, 2}, stride{2, 1};
};
/// One _rebuild_tensor_v2(...) expression, as torch.save writes it.
void rebuild(pk& p, const tensor_spec& t) {
    p.global("torch._utils", "_rebuild_tensor_v2").op("((").str("storage").global("torch", t.storage).str(t.key).str(t.location);
    p.i4(t.numel)
        .op("tQ")
        .i4(t.offset)
        .ints(t.size)
        .ints(t.stride)
        .op("\x89")
        .global("collections", "OrderedDict")
        .op(")Rt")
        .op("R");
}
std::string state_dict_pickle(const std::vector<tensor_spec>& ts) {
    pk p;
    p.op("}(");
    for (const auto& t : ts) p.str(t.name), rebuild(p, t);
    return p.op("u.").b;
}
std::string bin_file(const std::string& name, const std::string& pkl,
                     std::vector<std::pair<std::string, std::string>> extra = {{"archive/data/0", std::string(16, '\0')}}) {
    extra.insert(extra.begin(), {"archive/data.pkl", pkl});
    return put(tmp_path(name), make_zip(extra).bytes);
}
void expect_bin_error(const std::string& name, const std::string& pkl, std::vector<std::string> parts,
                      std::vector<std::pair<std::string, std::string>> extra = {{"archive/data/0", std::string(16, '\0')}}) {
    const std::string p = bin_file(name, pkl, std::move(extra));
    parts.push_back(name);
    expect_error([&] { (void)torch_bin_file::open(p); }, parts);
}
}  // namespace

TEST_CASE("torch .bin: torch.save fixture equals its safetensors copy bit for bit (views, offsets, bf16, i64)") {
    const auto bin = torch_bin_file::open(golden + "torch_save.bin");
    const auto ref = safetensors_file::open(golden + "torch_save.expected.safetensors");
    REQUIRE(bin.tensors().size() == ref.tensors().size());
    for (const tensor_info& t : bin.tensors()) {
        CAPTURE(t.name);
        const tensor_info& r = ref.at(t.name);
        CHECK(t.type == r.type);
        CHECK(t.shape == r.shape);
        std::vector<std::byte> got(std::size_t(r.nbytes()));
        if (got.empty()) continue;  // f32.empty: shape checked above, no bytes to compare
        if (t.type == dtype::F32) {
            auto v = bin.read_as<float>(t.name);
            std::memcpy(got.data(), v.data(), got.size());
        }
        if (t.type == dtype::I64) {
            auto v = bin.read_as<std::int64_t>(t.name);
            std::memcpy(got.data(), v.data(), got.size());
        }
        if (t.type == dtype::BF16) {
            auto v = bin.tensor_as<bf16>(t.name).to_vector();
            std::memcpy(got.data(), v.data(), got.size());
        }
        CHECK(std::memcmp(got.data(), ref.data(r), got.size()) == 0);
    }
    CHECK_FALSE(bin.is_contiguous(bin.at("f32.transposed")));  // gathered through strides (4,1)->(1,4)
    CHECK(bin.is_contiguous(bin.at("bf16.view_b")));
    CHECK(bin.at("bf16.view_a").end > bin.at("bf16.view_b").begin);  // two views share one storage
    CHECK(bin.read_as<std::int64_t>("i64.ids")[4] == -(std::int64_t(1) << 62));
    CHECK(bin.tensor_as<float>("f32.scalar").dim() == 0);
    CHECK(weight_file::open(golden + "torch_save.bin").format() == std::string("pytorch"));
    CHECK(weight_file::open(golden + "torch_save.expected.safetensors").format() == std::string("safetensors"));
}

TEST_CASE("checkpoint_dir: save_pretrained .bin, safetensors, and sharded copies agree bit for bit") {
    const auto a = checkpoint_dir::open(golden + "llama_st");
    REQUIRE(a.names().size() == 13);
    for (const char* d : {"llama_bin", "llama_st_sharded", "llama_bin_sharded"}) {
        const auto b = checkpoint_dir::open(golden + d);
        CAPTURE(d);
        CHECK(b.names() == a.names());
        CHECK(b.files().size() == (std::string(d).find("sharded") != std::string::npos ? 4u : 1u));
        for (const auto& n : a.names()) CHECK(b.read_as<float>(n) == a.read_as<float>(n));  // == on floats: no NaN here
    }
    CHECK(a.tensor_as<float>("lm_head.weight").shape() == shape_t{32, 16});
    expect_error([&] { (void)a.at("nope"); }, {"llama_st", "\"nope\""});
}

TEST_CASE("zip container: every malformed archive is refused, naming file and entry") {
    const std::string pkl = state_dict_pickle({tensor_spec{}});
    const std::vector<std::pair<std::string, std::string>> files = {{"archive/data.pkl", pkl},
                                                                    {"archive/data/0", std::string(16, '\0')}};
    auto open = [](const std::string& name, const std::string& bytes) {
        return [p = put(tmp_path(name), bytes)] { (void)torch_bin_file::open(p); };
    };
    // Valid variants open: plain, zip64 records, data descriptors, zip64 + descriptors.
    for (int v = 0; v < 4; v++)
        CHECK(torch_bin_file::open(put(tmp_path("ok" + std::to_string(v) + ".bin"), make_zip(files, v & 1, v & 2).bytes))
                  .tensors()
                  .size() == 1);
    expect_error(open("random.bin", "hello, this is not a zip"),
                 {"random.bin", "not a PyTorch zip", "convert it to safetensors"});
    expect_error(open("legacy.bin", "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19" + std::string(20, 'x')),
                 {"legacy.bin", "1950a86a20f9469cfc6c", "torch>=1.6", "safetensors"});
    expect_error(open("tarball.bin", std::string(257, '\0') + "ustar" + std::string(300, '\0')),
                 {"tarball.bin", "legacy PyTorch tar"});
    auto z = make_zip(files);
    auto deflate = z.bytes;
    patch(deflate, z.local[0] + 8, 8, 2);
    patch(deflate, z.central[0] + 10, 8, 2);
    expect_error(open("deflate.bin", deflate), {"deflate.bin", "archive/data.pkl", "compression method 8"});
    auto lname = z.bytes;
    lname[z.local[1] + 30] = 'X';
    expect_error(open("local_name.bin", lname), {"local_name.bin", "archive/data/0", "disagrees with the central directory"});
    auto lsize = z.bytes;
    patch(lsize, z.local[1] + 22, 15, 4);
    expect_error(open("local_size.bin", lsize), {"local_size.bin", "archive/data/0", "local header says size 15"});
    auto past = z.bytes;
    patch(past, z.local[1] + 18, 1000, 4);
    patch(past, z.local[1] + 22, 1000, 4);
    patch(past, z.central[1] + 20, 1000, 4);
    patch(past, z.central[1] + 24, 1000, 4);
    expect_error(open("past_end.bin", past), {"past_end.bin", "archive/data/0", "runs past the start of the central directory"});
    auto overlap = z.bytes;
    const std::uint64_t big = pkl.size() + 20;
    patch(overlap, z.local[0] + 18, big, 4);
    patch(overlap, z.local[0] + 22, big, 4);
    patch(overlap, z.central[0] + 20, big, 4);
    patch(overlap, z.central[0] + 24, big, 4);
    expect_error(open("overlap.bin", overlap), {"overlap.bin", "entries overlap"});
    expect_error(open("dup.bin", make_zip({files[0], files[1], files[1]}).bytes),
                 {"dup.bin", "archive/data/0", "duplicate entry name"});
    expect_error(open("dotdot.bin", make_zip({files[0], {"archive/../../etc/x", "x"}}).bytes),
                 {"dotdot.bin", "\"archive/../../etc/x\"", "\"..\""});
    expect_error(open("absolute.bin", make_zip({files[0], {"/etc/passwd", "x"}}).bytes),
                 {"absolute.bin", "\"/etc/passwd\"", "relative"});
    auto z64 = make_zip(files, true);
    auto many = z64.bytes;
    patch(many, z64.z64eocd + 24, 1000000, 8);
    patch(many, z64.z64eocd + 32, 1000000, 8);
    expect_error(open("million.bin", many), {"million.bin", "1000000 entries", "limit"});
    auto z64size = z64.bytes;
    patch(z64size, z64.local[1] + 30 + 14 + 4, 15, 8);  // the local zip64 extra's size
    expect_error(open("zip64_sizes.bin", z64size), {"zip64_sizes.bin", "archive/data/0", "local header says size 15"});
    auto zd = make_zip(files, false, true);
    auto desc = zd.bytes;
    patch(desc, zd.local[1] + 30 + 14 + 16 + 8, 15, 4);
    expect_error(open("descriptor.bin", desc), {"descriptor.bin", "archive/data/0", "data descriptor"});
    auto crc = z.bytes;
    crc[z.local[0] + 30 + 16 + 5] ^= 1;  // one bit of data.pkl
    expect_error(open("crc.bin", crc), {"crc.bin", "archive/data.pkl", "CRC-32"});
    expect_error(open("big_endian.bin", make_zip({files[0], files[1], {"archive/byteorder", "big"}}).bytes),
                 {"big_endian.bin", "byteorder", "\"big\"", "little-endian"});
    CHECK(torch_bin_file::open(put(tmp_path("little.bin"), make_zip({files[0], files[1], {"archive/byteorder", "little"}}).bytes))
              .tensors()
              .size() == 1);
    expect_error(open("no_pkl.bin", make_zip({files[1]}).bytes), {"no_pkl.bin", "data.pkl"});
    expect_error(open("trunc.bin", z.bytes.substr(0, z.bytes.size() - 5)), {"trunc.bin", "no end-of-central-directory"});
}

TEST_CASE("pickle: forbidden globals never run, and every structural corruption is refused") {
    const std::string canary = tmp_path("canary_pwned");
    fs::remove(canary);
    for (const auto& [mod, fn] : std::vector<std::pair<std::string, std::string>>{
             {"os", "system"}, {"posix", "system"}, {"builtins", "eval"}, {"subprocess", "Popen"}}) {
        pk p;
        p.global(mod, fn).str("touch " + canary).op("\x85R.");
        expect_bin_error("global_" + mod + ".bin", p.b,
                         {"\"" + mod + "." + fn + "\"", "is not allowed", "archive/data.pkl", "pickle offset 2", "GLOBAL"});
    }
    pk sg;
    sg.str("os").str("system").op("\x93").str("touch " + canary).op("\x85R.");
    expect_bin_error("stack_global.bin", sg.b, {"\"os.system\"", "STACK_GLOBAL"});
    CHECK_FALSE(fs::exists(canary));  // nothing ran

    expect_bin_error("unicode_huge.bin", "\x80\x02X\xff\xff\xff\xff" + std::string(40, 'a'),
                     {"BINUNICODE", "4294967295 bytes", "40 remain"});
    expect_bin_error("underflow.bin", "\x80\x02\x85.", {"TUPLE1", "stack underflow"});
    expect_bin_error("underflow_mark.bin", "\x80\x02}(s.", {"SETITEM", "stack underflow"});
    expect_bin_error("binget.bin", "\x80\x02h\x07.", {"BINGET", "memo id 7 was never PUT"});
    expect_bin_error("no_mark.bin", "\x80\x02}t.", {"TUPLE", "no MARK"});
    expect_bin_error("setitems_list.bin", pk().op("](").str("k").str("v").op("u.").b, {"SETITEMS", "list, not a dict"});
    expect_bin_error("appends_dict.bin", pk().op("}(").str("k").op("e.").b, {"APPENDS", "dict, not a list"});
    {
        pk p;
        p.op("}").str("w");
        rebuild(p, tensor_spec{});
        p.op("}").str("x").i1(1).op("s").op("b").op("s.");
        expect_bin_error("build_tensor.bin", p.b, {"BUILD on a tensor"});
    }
    expect_bin_error("od_args.bin", pk().global("collections", "OrderedDict").op("(").i1(1).op("tR.").b,
                     {"REDUCE", "OrderedDict(...) with arguments"});
    expect_bin_error("rebuild_args.bin",
                     pk().op("}").str("w").global("torch._utils", "_rebuild_tensor_v2").i1(1).op("\x85R").op("s.").b,
                     {"REDUCE", "_rebuild_tensor_v2 expects"});
    expect_bin_error("inst.bin", "\x80\x02iyes\nno\n.", {"INST", "0x69", "not supported"});
    expect_bin_error("dup_op.bin", "\x80\x02}2.", {"DUP", "not supported"});
    expect_bin_error("ext1.bin", "\x80\x02\x82\x01.", {"EXT1", "not supported"});
    expect_bin_error("long4.bin", "\x80\x02\x8b\x00\x00\x00\x40."s, {"LONG4", "not supported"});
    expect_bin_error("long1_9.bin", "\x80\x02\x8a\x09" + std::string(9, '\1') + ".", {"LONG1", "9-byte integer"});
    expect_bin_error("marks.bin", "\x80\x02" + std::string(1000000, '('), {"MARK nesting deeper than 4096"});
    expect_bin_error("no_stop.bin", "\x80\x02}", {"truncated (no STOP"});
    expect_bin_error("two_results.bin", "\x80\x02}}.", {"STOP with 2 stack items"});
    expect_bin_error("not_dict.bin", "\x80\x02].", {"result is a list, expected a dict"});
    expect_bin_error("not_tensor.bin", pk().op("}").str("w").i1(3).op("s.").b,
                     {"state_dict entry \"w\" is a int, expected a tensor"});
    expect_bin_error("dup_key.bin", state_dict_pickle({tensor_spec{}, tensor_spec{}}), {"state_dict key \"w\" appears twice"});
    // Memo bomb: each step makes (x, x) from the previous x; deep copies would need 2^20000 nodes.
    std::string bomb = "\x80\x02]q\x00"s;
    for (int k = 0; k < 20000; k++)
        bomb +=
            "h\x00h\x00\x86q\x00"
            "a"s;
    expect_bin_error("memo_bomb.bin", bomb + ".", {"result is a list"});
    // Caps, with small limits so the test stays fast.
    pickle::limits lim;
    lim.max_ops = 50;
    expect_error([&] { pickle::machine(bomb + ".", "caps.pkl", lim).state_dict(); }, {"caps.pkl", "more than 50 opcodes"});
    lim = {};
    lim.max_memo = 3;
    expect_error([&] { pickle::machine("\x80\x02]q\x01q\x02q\x03q\x04.", "memo.pkl", lim).state_dict(); },
                 {"memo.pkl", "more than 3 memo entries"});
}

TEST_CASE("torch .bin: storages and views are checked against the zip entry (CVE-2026-24747 class)") {
    auto t = [](auto f) {
        tensor_spec s;
        f(s);
        return state_dict_pickle({s});
    };
    const std::vector<std::pair<std::string, std::string>> data = {{"archive/data/0", std::string(16, '\0')}};
    CHECK(torch_bin_file::open(bin_file("good.bin", t([](tensor_spec&) {}))).read_as<float>("w").size() == 4);
    expect_bin_error("storage_size.bin", t([](tensor_spec& s) { s.numel = 5; }),
                     {"tensor \"w\"", "declares 5 x F32", "holds 16 bytes"});
    expect_bin_error("storage_missing.bin", t([](tensor_spec& s) { s.key = "7"; }),
                     {"tensor \"w\"", "no zip entry \"archive/data/7\""});
    expect_bin_error("view_past.bin", t([](tensor_spec& s) { s.offset = 1; }),
                     {"tensor \"w\"", "reaches element 4", "has 4 elements"});
    expect_bin_error("view_stride.bin", t([](tensor_spec& s) { s.stride = {3, 1}; }), {"tensor \"w\"", "reaches element 4"});
    expect_bin_error("neg_size.bin", t([](tensor_spec& s) { s.size = {-1, 2}; }), {"tensor \"w\"", "is negative"});
    expect_bin_error("neg_stride.bin", t([](tensor_spec& s) { s.stride = {2, -1}; }), {"tensor \"w\"", "is negative"});
    expect_bin_error("neg_offset.bin", t([](tensor_spec& s) { s.offset = -1; }), {"tensor \"w\"", "storage_offset -1"});
    expect_bin_error("zero_stride.bin", t([](tensor_spec& s) { s.stride = {0, 1}; }), {"tensor \"w\"", "stride 0"});
    expect_bin_error("huge_size.bin", t([](tensor_spec& s) {
                         s.size = {2147483647, 2147483647, 2147483647};
                         s.stride = {1, 1, 1};
                     }),
                     {"tensor \"w\"", "overflows"});
    expect_bin_error("rank_mismatch.bin", t([](tensor_spec& s) { s.stride = {1}; }), {"size and stride have different lengths"});
    expect_bin_error("storage_type.bin", t([](tensor_spec& s) { s.storage = "ComplexFloatStorage"; }),
                     {"\"torch.ComplexFloatStorage\"", "is not allowed"});
    expect_bin_error("location.bin", t([](tensor_spec& s) { s.location = "xla:0"; }), {"storage location \"xla:0\""});
    CHECK(torch_bin_file::open(bin_file("cuda.bin", t([](tensor_spec& s) { s.location = "cuda:1"; }))).tensors().size() == 1);
    // Two views of one storage are fine when each is in bounds.
    tensor_spec a, b;
    b.name = "v", b.numel = 4, b.offset = 1, b.size = {3}, b.stride = {1};
    const auto f = torch_bin_file::open(bin_file("shared.bin", state_dict_pickle({a, b})));
    CHECK(f.read_as<float>("v").size() == 3);
}

TEST_CASE("checkpoint_dir: untrusted index.json is refused with names (transformers#47176)") {
    const std::string src = golden + "llama_st_sharded/";
    const std::string idx = "model.safetensors.index.json";
    const std::string original = read_text_file(src + idx, 1 << 20);
    auto make_dir = [&](const std::string& name, const std::string& index_text) {
        const std::string d = tmp_path(name);
        fs::remove_all(d);
        fs::create_directories(d);
        for (const auto& e : fs::directory_iterator(src))
            if (e.path().extension() == ".safetensors") fs::copy_file(e.path(), d + "/" + e.path().filename().string());
        put(d + "/" + idx, index_text);
        return d;
    };
    auto replace = [&](std::string s, const std::string& from, const std::string& to) {
        const auto at = s.find(from);
        REQUIRE(at != std::string::npos);
        return s.replace(at, from.size(), to);
    };
    const std::string lm = "\"lm_head.weight\": \"model-00004-of-00004.safetensors\"";
    CHECK(checkpoint_dir::open(make_dir("dir_ok", original)).names().size() == 13);
    for (const std::string bad :
         {"../model-00004-of-00004.safetensors", "/etc/passwd", "a\\\\b", "", "..", "sub/x.safetensors"}) {
        const std::string d = make_dir("dir_bad_name", replace(original, lm, "\"lm_head.weight\": \"" + bad + "\""));
        expect_error([&] { (void)checkpoint_dir::open(d); }, {idx, "weight_map[\"lm_head.weight\"]", "plain file name"});
    }
    std::string d = make_dir("dir_missing", replace(original, lm, "\"lm_head.weight\": \"model-00009-of-00009.safetensors\""));
    expect_error([&] { (void)checkpoint_dir::open(d); }, {idx, "model-00009-of-00009.safetensors", "does not exist"});
    // A name longer than the file system allows (found by the index_json fuzz target) was a
    // std::filesystem_error escaping from fs::exists.
    d = make_dir("dir_long_name", replace(original, lm, "\"lm_head.weight\": \"" + std::string(300, 'r') + ".safetensors\""));
    expect_error([&] { (void)checkpoint_dir::open(d); }, {idx, "weight_map names shard", "cannot be checked"});
    d = make_dir("dir_wrong_shard", replace(original, lm, "\"lm_head.weight\": \"model-00001-of-00004.safetensors\""));
    expect_error([&] { (void)checkpoint_dir::open(d); }, {"model-0000", "\"lm_head.weight\""});
    d = make_dir("dir_dup", replace(original, lm, lm + ", " + lm));
    expect_error([&] { (void)checkpoint_dir::open(d); }, {idx, "duplicate key \"lm_head.weight\""});
    d = make_dir("dir_unlisted", replace(original, lm + ",", ""));
    if (original.find(lm + ",") != std::string::npos)
        expect_error([&] { (void)checkpoint_dir::open(d); },
                     {"model-00004-of-00004.safetensors", "\"lm_head.weight\"", "not in the weight_map"});
    d = make_dir("dir_total", replace(original, "\"total_size\": 13008", "\"total_size\": 13009"));
    expect_error([&] { (void)checkpoint_dir::open(d); }, {idx, "field 'metadata.total_size' must be", "13008, got 13009"});
    std::string as_array = replace(original, "\"weight_map\": {", "\"weight_map\": [{");
    as_array.insert(as_array.find_last_of('}'), "]");  // {"metadata": ..., "weight_map": [{...}]}
    d = make_dir("dir_not_obj", as_array);
    expect_error([&] { (void)checkpoint_dir::open(d); }, {idx, "field 'weight_map' must be an object, got [{"});
    d = make_dir("dir_symlink", replace(original, lm, "\"lm_head.weight\": \"link.safetensors\""));
    fs::create_symlink(src + "model-00004-of-00004.safetensors", d + "/link.safetensors");
    expect_error([&] { (void)checkpoint_dir::open(d); }, {idx, "link.safetensors", "outside"});
    d = tmp_path("dir_empty");
    fs::create_directories(d);
    expect_error([&] { (void)checkpoint_dir::open(d); }, {"dir_empty", "no model.safetensors"});
}

// Issue 12, finding 5 (.bin): sizes [2^40, 2^40, 0] were multiplied from the last dim, where the 0
// made the product 0; numel() then overflowed int64. tensor.h's numel_of refuses it too.
TEST_CASE("torch .bin: a zero size does not hide an element count that overflows int64; numel_of is checked") {
    const auto i8 = [](std::int64_t v) { return "\x8a\x08"s + le(std::uint64_t(v), 8); };  // LONG1, 8 bytes
    const auto bin_with = [&](const std::vector<std::int64_t>& size, const std::vector<std::int64_t>& stride) {
        pk p;
        p.op("}(").str("w");
        p.global("torch._utils", "_rebuild_tensor_v2")
            .op("((")
            .str("storage")
            .global("torch", "FloatStorage")
            .str("0")
            .str("cpu");
        p.i4(4).op("tQ").i4(0).op("(");
        for (auto v : size) p.b += i8(v);
        p.op("t(");
        for (auto v : stride) p.b += i8(v);
        p.op("t").op("\x89").global("collections", "OrderedDict").op(")Rt").op("R");
        return p.op("u.").b;
    };
    const std::int64_t t40 = std::int64_t(1) << 40;
    expect_bin_error("zero_hides.bin", bin_with({t40, t40, 0}, {1, 1, 1}),
                     {"tensor \"w\"", "[1099511627776,1099511627776,0]", "element count overflows"});
    expect_bin_error("zero_first.bin", bin_with({0, t40, t40}, {1, 1, 1}), {"tensor \"w\"", "element count overflows"});
    CHECK(torch_bin_file::open(bin_file("zero_ok.bin", bin_with({t40, 2, 0}, {1, 1, 1}))).at("w").numel() == 0);

    CHECK(numel_of({t40, 1 << 20, 0}) == 0);
    CHECK_THROWS_WITH_AS(numel_of({t40, t40, 0}),
                         "tensor: element count of shape [1099511627776,1099511627776,0] overflows int64", aligngpt::error);
    CHECK_THROWS_AS(numel_of({0, t40, t40}), aligngpt::error);
    CHECK_THROWS_AS(tensor<float>({0, t40, t40}), aligngpt::error);  // before the strides are computed
}

// Issue 12, finding 4: each torch.Size reduce copied its argument tuple and a memoised tuple can be
// reused, so a 1 MB data.pkl reached 2 GB; _rebuild_tensor_v2 copied size and stride the same way.
// torch.Size now shares the tuple, and every byte built is charged against 32x the pickle's size.
TEST_CASE("pickle: a memoised big tuple reused many times is shared or refused, fast and small") {
    const auto t0 = std::chrono::steady_clock::now();
    const int n = 100000;  // items in the memoised tuple: 200 KB of pickle
    // memo 1 = the big tuple, 2 = (big,), 3 = torch.Size, 4 = _rebuild_tensor_v2, 5 = a storage, 6 = OrderedDict()
    pk head;
    head.op("(");
    for (int k = 0; k < n; k++) head.i1(k & 0x7f);
    head.op("tq\x01").op("\x85q\x02");
    head.global("torch", "Size").op("q\x03");
    head.global("torch._utils", "_rebuild_tensor_v2").op("q\x04");
    head.op("(").str("storage").global("torch", "FloatStorage").str("0").str("cpu").i4(4).op("tQq\x05");
    head.global("collections", "OrderedDict").op(")Rq\x06");

    // torch.Size(big) 20000 times: 4 bytes of pickle each, 400 KB of copies each before the fix (8 GB).
    pk sizes = head;
    for (int k = 0; k < 20000; k++) sizes.op("h\x03h\x02R"s);
    expect_error([&] { pickle::machine(sizes.op(".").b, "sizes.pkl").state_dict(); }, {"sizes.pkl", "STOP with"});

    // _rebuild_tensor_v2(storage, 0, big, big, False, OrderedDict()) 20000 times: 1.6 MB each.
    pk rebuilds = head;
    for (int k = 0; k < 20000; k++) rebuilds.op("h\x04(h\x05K\x00h\x01h\x01\x89h\x06tR"s);
    expect_error([&] { pickle::machine(rebuilds.op(".").b, "rebuilds.pkl").state_dict(); },
                 {"rebuilds.pkl", "REDUCE", "builds more than", "a memoised value reused too often"});
    // The same through the .bin reader: the error names the file and the entry.
    expect_bin_error("memo_amplify.bin", rebuilds.b, {"archive/data.pkl", "builds more than"});

    // One tensor behind many keys (tied weights are legal) is charged per copy as well; the
    // memoised values are built where first used, so that the stack ends with the dict alone.
    pk keys;
    keys.op("}(").str("w");
    keys.global("torch._utils", "_rebuild_tensor_v2").op("((").str("storage").global("torch", "FloatStorage").str("0").str("cpu");
    keys.i4(4).op("tQK\x00("s);
    for (int k = 0; k < n; k++) keys.i1(k & 0x7f);
    keys.op("tq\x01h\x01\x89").global("collections", "OrderedDict").op(")RtRq\x07");
    for (int k = 0; k < 5000; k++) keys.str("k" + std::to_string(k)).op("h\x07");
    expect_error([&] { pickle::machine(keys.op("u.").b, "keys.pkl").state_dict(); }, {"keys.pkl", "builds more than"});
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));

    // Real torch.save pickles stay far below the budget (they need about 5): 8 per pickle byte, no floor, suffice.
    pickle::limits tight;
    tight.bytes_per_input_byte = 8;
    tight.min_bytes = 0;
    for (const char* f : {"torch_save.bin", "llama_bin/pytorch_model.bin", "../model_dirs/clip_vision/pytorch_model.bin"}) {
        CAPTURE(f);
        CHECK(!torch_bin_file::open(golden + f, tight).tensors().empty());
    }
}

}  // namespace test_io_torch_bin
