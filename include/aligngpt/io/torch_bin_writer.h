#pragma once
// PyTorch `.bin` writer: a state dict {name: tensor} in the zip format torch.save writes (torch >=
// 1.6), loadable by torch.load(weights_only=True) and by io/torch_bin.h (which allowlists exactly
// the globals used here).
//
// Archive (entries in torch 2.x's order, all stored, data 64-byte aligned by an "FB" padding extra
// field as torch's writer pads them):
//   archive/data.pkl     pickle protocol 2, written as Python's Pickler writes torch.save's object:
//                        OrderedDict of torch._utils._rebuild_tensor_v2(storage, 0, size, stride,
//                        False, OrderedDict()), storage = persistent id ('storage',
//                        torch.<T>Storage, key, 'cpu', numel); memo puts/gets as Python emits them
//   archive/byteorder    "little" (torch >= 2.0)
//   archive/data/<key>   the raw little-endian bytes of each tensor, keys "0", "1", ... in add order,
//                        written in sorted (string) order as torch does
//   archive/version      "3\n"
// Differences from torch's own bytes: sizes and CRC sit in the local headers (no data descriptors;
// torch streams and adds them) and the zip64 fields appear only where a size or offset needs them.
// The root is always "archive" (torch uses the file's stem), so the bytes do not depend on the path.
// Written through atomic_file: a crash leaves the old file or the new one.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/io/detail/tensor_entries.h"
#include "aligngpt/io/dtype.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/zip.h"  // detail::crc32
#include "aligngpt/tensor.h"

namespace aligngpt::io {

namespace detail {

/// torch.<T>Storage for the dtypes torch_bin.h reads back; nullptr for the others.
inline const char* torch_storage_name(dtype t) {
    switch (t) {
        case dtype::F32: return "FloatStorage";
        case dtype::BF16: return "BFloat16Storage";
        case dtype::F16: return "HalfStorage";
        case dtype::F64: return "DoubleStorage";
        case dtype::I64: return "LongStorage";
        case dtype::I32: return "IntStorage";
        case dtype::I16: return "ShortStorage";
        case dtype::I8: return "CharStorage";
        case dtype::U8: return "ByteStorage";
        case dtype::BOOL: return "BoolStorage";
        default: return nullptr;
    }
}

/// The subset of Python's pickle.Pickler (protocol 2) that torch.save's state dict needs, with the
/// memo: every str, global and non-empty tuple is put (BINPUT); an object Python would find in its
/// memo (the same global, the constant strings 'storage' and 'cpu') is fetched with BINGET.
class pickler {
public:
    std::string out = std::string("\x80\x02", 2);

    void global(const std::string& mod, const std::string& name) {
        auto it = memo_.find(mod + "\n" + name);
        if (it != memo_.end()) return get(it->second);
        out += 'c' + mod + '\n' + name + '\n';
        memo_[mod + "\n" + name] = put();
    }
    void str(std::string_view s, bool shared = false) {  // shared: the same object every time
        if (shared) {
            auto it = memo_.find("'" + std::string(s));
            if (it != memo_.end()) return get(it->second);
        }
        out += 'X';
        u32(std::uint32_t(s.size()));
        out += s;
        const std::uint32_t id = put();
        if (shared) memo_["'" + std::string(s)] = id;
    }
    void integer(std::int64_t v) {  // save_long
        if (v >= 0 && v <= 0xff) {
            out += 'K';
            out += char(v);
        } else if (v >= 0 && v <= 0xffff) {
            out += 'M';
            out += char(v & 0xff);
            out += char(v >> 8);
        } else if (v >= INT32_MIN && v <= INT32_MAX) {
            out += 'J';
            u32(std::uint32_t(std::int32_t(v)));
        } else {  // LONG1: minimal two's complement, little-endian (8 bytes at most here)
            std::string b;
            for (int i = 0; i < 8; i++) b += char((std::uint64_t(v) >> (8 * i)) & 0xff);
            while (b.size() > 1 &&
                   ((b.back() == 0 && !(b[b.size() - 2] & 0x80)) || (b.back() == char(0xff) && (b[b.size() - 2] & 0x80))))
                b.pop_back();
            out += char(0x8a);
            out += char(b.size());
            out += b;
        }
    }
    void int_tuple(const std::vector<index_t>& v) {  // torch.Size / stride tuples
        if (v.empty()) {
            out += ')';
            return;
        }
        if (v.size() > 3) out += '(';
        for (index_t x : v) integer(x);
        out += v.size() == 1 ? char(0x85) : v.size() == 2 ? char(0x86) : v.size() == 3 ? char(0x87) : 't';
        put();
    }
    void raw(char c) { out += c; }
    std::uint32_t put() {
        const std::uint32_t id = next_++;
        if (id < 256) {
            out += 'q';
            out += char(id);
        } else {
            out += 'r';
            u32(id);
        }
        return id;
    }

private:
    void get(std::uint32_t id) {
        if (id < 256) {
            out += 'h';
            out += char(id);
        } else {
            out += 'j';
            u32(id);
        }
    }
    void u32(std::uint32_t v) {
        for (int i = 0; i < 4; i++) out += char((v >> (8 * i)) & 0xff);
    }
    std::map<std::string, std::uint32_t> memo_;
    std::uint32_t next_ = 0;
};

/// Little-endian zip records, written as they go to a sink; tracks offsets for the directory.
template <class Sink>
class zip_stream {
public:
    explicit zip_stream(Sink& s) : sink_(s) {}

    void entry(const std::string& name, const void* data, std::size_t n) { entry(name, data, n, detail::crc32(data, n)); }
    /// With the CRC-32 already known (tests write > 4 GiB entries as holes of a sparse file).
    void entry(const std::string& name, const void* data, std::size_t n, std::uint32_t crc) {
        const std::uint64_t off = pos_, size = n;
        const bool big = size >= 0xFFFFFFFFu, far = off >= 0xFFFFFFFFu;
        // local zip64 extra (sizes only) if the size needs it, then "FB" padding up to 64 bytes
        std::string extra;
        if (big) {
            le(extra, 1, 2);
            le(extra, 16, 2);
            le(extra, size, 8);
            le(extra, size, 8);
        }
        const std::uint64_t start = off + 30 + name.size() + extra.size() + 4;
        const std::uint64_t pad = (64 - start % 64) % 64;
        le(extra, 0x4246, 2);  // "FB"
        le(extra, pad, 2);
        extra.append(std::size_t(pad), 'Z');
        std::string h;
        le(h, 0x04034b50, 4);
        le(h, big ? 45 : 0, 2);
        le(h, 0x0800, 2);
        le(h, 0, 2);
        le(h, 0, 4);  // ver, flags, stored, time
        le(h, crc, 4);
        le(h, big ? 0xFFFFFFFFu : size, 4);
        le(h, big ? 0xFFFFFFFFu : size, 4);
        le(h, name.size(), 2);
        le(h, extra.size(), 2);
        h += name;
        h += extra;
        emit(h.data(), h.size());
        emit(data, n);
        // central record
        std::string x;
        if (big || far) {
            le(x, 1, 2);
            le(x, (big ? 16 : 0) + (far ? 8 : 0), 2);
            if (big) {
                le(x, size, 8);
                le(x, size, 8);
            }
            if (far) le(x, off, 8);
        }
        le(cd_, 0x02014b50, 4);
        le(cd_, big || far ? 45 : 0, 2);
        le(cd_, big || far ? 45 : 0, 2);
        le(cd_, 0x0800, 2);
        le(cd_, 0, 2);
        le(cd_, 0, 4);
        le(cd_, crc, 4);
        le(cd_, big ? 0xFFFFFFFFu : size, 4);
        le(cd_, big ? 0xFFFFFFFFu : size, 4);
        le(cd_, name.size(), 2);
        le(cd_, x.size(), 2);
        le(cd_, 0, 2);
        le(cd_, 0, 2);
        le(cd_, 0, 2);
        le(cd_, 0, 4);
        le(cd_, far ? 0xFFFFFFFFu : off, 4);
        cd_ += name;
        cd_ += x;
        entries_++;
    }

    /// Central directory, zip64 end record and locator (torch always writes them), end record.
    void finish() {
        const std::uint64_t cd_off = pos_, cd_size = cd_.size();
        emit(cd_.data(), cd_.size());
        const std::uint64_t z64 = pos_;
        std::string e;
        le(e, 0x06064b50, 4);
        le(e, 44, 8);
        le(e, 0x031e, 2);
        le(e, 45, 2);
        le(e, 0, 4);
        le(e, 0, 4);
        le(e, entries_, 8);
        le(e, entries_, 8);
        le(e, cd_size, 8);
        le(e, cd_off, 8);
        le(e, 0x07064b50, 4);
        le(e, 0, 4);
        le(e, z64, 8);
        le(e, 1, 4);
        const std::uint64_t n16 = std::min<std::uint64_t>(entries_, 0xFFFF);
        le(e, 0x06054b50, 4);
        le(e, 0, 2);
        le(e, 0, 2);
        le(e, n16, 2);
        le(e, n16, 2);
        le(e, std::min<std::uint64_t>(cd_size, 0xFFFFFFFFu), 4);
        le(e, std::min<std::uint64_t>(cd_off, 0xFFFFFFFFu), 4);
        le(e, 0, 2);
        emit(e.data(), e.size());
    }

private:
    static void le(std::string& s, std::uint64_t v, int bytes) {
        for (int i = 0; i < bytes; i++) s += char((v >> (8 * i)) & 0xff);
    }
    void emit(const void* p, std::size_t n) {
        sink_.write(p, n);
        pos_ += n;
    }
    Sink& sink_;
    std::uint64_t pos_ = 0, entries_ = 0;
    std::string cd_;
};

struct string_sink {
    std::string bytes;
    void write(const void* p, std::size_t n) { bytes.append(static_cast<const char*>(p), n); }
};

}  // namespace detail

class torch_bin_writer {
public:
    /// Adds a contiguous tensor (bytes copied). Names must be unique and valid UTF-8.
    void add(std::string name, dtype type, std::vector<index_t> shape, const void* bytes, std::size_t nbytes) {
        const std::string where = "torch_bin_writer: tensor " + detail::quote_name(name) + ": ";
        ALIGNGPT_CHECK(detail::torch_storage_name(type), where, "dtype ", dtype_name(type), " has no torch storage type");
        ALIGNGPT_CHECK(detail::utf8_error_at(name) == std::string_view::npos, where, "name is not valid UTF-8");
        entries_.add(where, std::move(name), type, std::move(shape), bytes, nbytes);
    }
    template <class T>
    void add(std::string name, const aligngpt::tensor<T>& t) {
        const std::vector<T> v = t.to_vector();
        add(std::move(name), dtype_of<T>(), t.shape(), v.data(), v.size() * sizeof(T));
    }

    /// data.pkl's bytes (tests compare them with torch's own pickle of the same dict).
    std::string pickle() const {
        detail::pickler pk;
        pk.global("collections", "OrderedDict");
        pk.raw(')');
        pk.raw('R');
        pk.put();
        // Python's _batch_setitems: batches of 1000 items, MARK ... SETITEMS, a batch of one SETITEM
        for (std::size_t b = 0; b < entries_.all().size(); b += 1000) {
            const std::size_t n = std::min<std::size_t>(1000, entries_.all().size() - b);
            if (n > 1) pk.raw('(');
            for (std::size_t i = b; i < b + n; i++) tensor_item(pk, i);
            pk.raw(n > 1 ? 'u' : 's');
        }
        pk.raw('.');
        return pk.out;
    }

    /// The whole archive in memory (tests); write() streams the same bytes to a file.
    std::string bytes() const {
        detail::string_sink s;
        emit(s);
        return s.bytes;
    }
    void write(const std::string& path) const {
        atomic_file f(path);
        emit(f);
        f.commit();
    }

private:
    using entry = detail::tensor_entries::entry;
    // One key and its _rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()) value.
    void tensor_item(detail::pickler& pk, std::size_t i) const {
        const entry& e = entries_.all()[i];
        pk.str(e.name);
        pk.global("torch._utils", "_rebuild_tensor_v2");
        pk.raw('(');
        pk.raw('(');  // persistent id
        pk.str("storage", true);
        pk.global("torch", detail::torch_storage_name(e.type));
        pk.str(std::to_string(i));
        pk.str("cpu", true);
        pk.integer(numel(e.shape));
        pk.raw('t');
        pk.put();
        pk.raw('Q');
        pk.integer(0);
        pk.int_tuple(e.shape);
        pk.int_tuple(torch_strides(e.shape));
        pk.raw(char(0x89));                       // requires_grad False
        pk.global("collections", "OrderedDict");  // backward hooks: a new OrderedDict()
        pk.raw(')');
        pk.raw('R');
        pk.put();
        pk.raw('t');
        pk.put();
        pk.raw('R');
        pk.put();
    }
    /// Contiguous strides as torch computes them: a size-0 dimension counts as 1.
    static std::vector<index_t> torch_strides(const std::vector<index_t>& s) {
        std::vector<index_t> st(s.size());
        index_t acc = 1;
        for (std::size_t i = s.size(); i-- > 0;) {
            st[i] = acc;
            acc *= std::max<index_t>(s[i], 1);
        }
        return st;
    }
    static std::int64_t numel(const std::vector<index_t>& s) {
        std::int64_t n = 1;
        for (index_t d : s) n *= d;
        return n;
    }
    template <class Sink>
    void emit(Sink& sink) const {
        detail::zip_stream<Sink> z(sink);
        const std::string pkl = pickle();
        z.entry("archive/data.pkl", pkl.data(), pkl.size());
        z.entry("archive/byteorder", "little", 6);
        std::vector<std::string> keys;
        for (std::size_t i = 0; i < entries_.all().size(); i++) keys.push_back(std::to_string(i));
        std::sort(keys.begin(), keys.end());  // torch: sorted(serialized_storages.keys())
        for (const std::string& k : keys) {
            const entry& e = entries_.all()[std::stoul(k)];
            z.entry("archive/data/" + k, e.bytes.data(), e.bytes.size());
        }
        z.entry("archive/version", "3\n", 2);
        z.finish();
    }

    detail::tensor_entries entries_;
};

}  // namespace aligngpt::io
