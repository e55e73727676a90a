#pragma once
// safetensors: read (mmapped, validated at open) and write (atomic).
//
// Format: 8 bytes N (u64 little-endian), N bytes of UTF-8 JSON, then the byte buffer. The JSON maps
// each tensor name to {"dtype", "shape", "data_offsets": [BEGIN, END)} (offsets relative to the
// buffer) plus an optional "__metadata__" object of string -> string.
//
// open() enforces every rule of the reference reader (docs/model.md §11.4), so a
// malicious file cannot make us read out of bounds or allocate more than its own size:
//  - N <= limits.max_header_bytes (100 MB) and 8 + N <= file size, with checked arithmetic;
//  - the header is UTF-8 and JSON whose first non-whitespace byte is '{'; JSON whitespace on both
//    sides is accepted (writers pad to align the data), anything else (NUL, BOM) is refused;
//  - a SAX parser (no DOM): duplicate keys are refused by name (nlohmann's DOM would keep the last
//    one silently: the parser differential TOB-SFTN-7), and since only the fixed shape
//    object -> entry -> array is accepted, nesting depth is at most 3 and never recurses;
//  - entries have exactly dtype/shape/data_offsets (schema additionalProperties:false), the dtype
//    list is exact, dims are integers <= 2^48-1, rank <= 64, names non-empty, no NUL, <= 64 KiB;
//  - numel * bits is computed with checked multiplication, must be a multiple of 8, and must equal
//    END - BEGIN;
//  - sorted by offsets, the first BEGIN is 0 and each BEGIN equals the previous END (no gaps, no
//    overlap, one owner per byte), and the last END is the buffer length (no polyglot tail);
//  - at most limits.max_tensors entries (the "10 M tiny tensors" attack).
// Every error names the file, the field or tensor, the bad value and the rule.
#include <algorithm>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/io/detail/tensor_entries.h"
#include "aligngpt/io/dtype.h"
#include "aligngpt/io/file.h"
#include "aligngpt/tensor.h"

namespace aligngpt::io {

struct tensor_info {
    std::string name;
    dtype type = dtype::F32;
    std::vector<index_t> shape;
    std::uint64_t begin = 0, end = 0;  // byte range in the data buffer (safetensors) or storage (torch)
    index_t numel() const {
        index_t n = 1;
        for (index_t d : shape) n *= d;  // open() checked every partial product of the nonzero dims
        return n;
    }
    std::uint64_t nbytes() const { return end - begin; }
};

struct safetensors_limits {
    std::uint64_t max_header_bytes = 100'000'000;  // reference MAX_HEADER_SIZE
    std::size_t max_tensors = std::size_t(1) << 20;
    std::size_t max_rank = 64;
    std::size_t max_name_bytes = 65536;
    std::uint64_t max_dim = (std::uint64_t(1) << 48) - 1;  // schema: integers <= 2^48-1
};

namespace detail {
/// SAX state machine for the header. Each callback becomes one event; `fail_` holds the reason.
class st_header_sax : public nlohmann::json_sax<nlohmann::json> {
public:
    using json = nlohmann::json;
    st_header_sax(const safetensors_limits& lim) : lim_(lim) {}

    std::vector<tensor_info> tensors;
    std::map<std::string, std::string> metadata;
    std::string error;

    bool null() override { return value("null"); }
    bool boolean(bool) override { return value("a boolean"); }
    bool number_integer(json::number_integer_t v) override { return value("a negative integer (" + std::to_string(v) + ")"); }
    bool number_unsigned(json::number_unsigned_t v) override { return value("", &v); }
    bool number_float(json::number_float_t, const json::string_t& s) override {
        return value("a non-integer number (" + s + ")");
    }
    bool string(json::string_t& s) override { return value("a string", nullptr, &s); }
    bool binary(json::binary_t&) override { return value("binary"); }
    bool start_object(std::size_t) override {
        if (st_ == top_start) return st_ = top_key, true;
        if (st_ == top_value) return st_ = (cur_ == "__metadata__" ? meta_key : entry_key), true;
        return value("an object");
    }
    bool start_array(std::size_t) override {
        if (st_ == entry_value && (field_ == "shape" || field_ == "data_offsets")) return st_ = entry_array, true;
        return value("an array");
    }
    bool key(json::string_t& k) override {
        if (st_ == top_key) {
            if (!seen_.insert(k).second) return bad("duplicate key " + quote_name(k) + " (each name may appear once)");
            cur_ = k;
            if (k != "__metadata__") {
                if (k.empty()) return bad("tensor name is empty");
                if (k.find('\0') != std::string::npos) return bad("tensor " + quote_name(k) + ": name contains a NUL byte");
                if (k.size() > lim_.max_name_bytes)
                    return bad("tensor " + quote_name(k) + ": name is " + std::to_string(k.size()) + " bytes, more than " +
                               std::to_string(lim_.max_name_bytes));
                if (tensors.size() >= lim_.max_tensors)
                    return bad("more than " + std::to_string(lim_.max_tensors) + " tensors (limit max_tensors)");
                tensors.push_back({});
                tensors.back().name = k;
                fields_ = 0;
            }
            return st_ = top_value, true;
        }
        if (st_ == meta_key) {
            if (metadata.count(k)) return bad("__metadata__: duplicate key " + quote_name(k));
            field_ = k;
            return st_ = meta_value, true;
        }
        if (st_ == entry_key) {
            const int bit = k == "dtype" ? 1 : k == "shape" ? 2 : k == "data_offsets" ? 4 : 0;
            if (!bit) return bad(where() + "unknown field " + quote_name(k) + " (allowed: dtype, shape, data_offsets)");
            if (fields_ & bit) return bad(where() + "duplicate field " + quote_name(k));
            fields_ |= bit;
            field_ = k;
            items_ = 0;
            return st_ = entry_value, true;
        }
        return bad("unexpected key " + quote_name(k));
    }
    bool end_object() override {
        if (st_ == meta_key) return st_ = top_key, true;
        if (st_ == entry_key) {
            const char* names[] = {"dtype", "shape", "data_offsets"};
            for (int i = 0; i < 3; i++)
                if (!(fields_ & (1 << i))) return bad(where() + "missing field \"" + names[i] + "\"");
            return st_ = top_key, true;
        }
        if (st_ == top_key) return st_ = finished, true;
        return bad("unexpected end of object");
    }
    bool end_array() override {
        if (st_ != entry_array) return bad("unexpected end of array");
        if (field_ == "data_offsets" && items_ != 2)
            return bad(where() + "data_offsets has " + std::to_string(items_) + " items, expected [BEGIN, END]");
        return st_ = entry_key, true;
    }
    bool parse_error(std::size_t pos, const std::string& tok, const nlohmann::detail::exception& ex) override {
        if (error.empty())
            error = "invalid JSON at byte " + std::to_string(pos) + " near " + quote_name(tok, 40) + ": " + ex.what();
        return false;
    }
    bool finished_ok() const { return st_ == finished; }

private:
    enum state { top_start, top_key, top_value, meta_key, meta_value, entry_key, entry_value, entry_array, finished };

    bool bad(std::string m) {
        if (error.empty()) error = std::move(m);
        return false;
    }
    std::string where() const { return "tensor " + quote_name(cur_) + ": "; }
    std::string field_where() const { return where() + "field \"" + field_ + "\": "; }

    // A scalar value (or an object/array where none is allowed). `what` describes it for errors;
    // u is set for non-negative integers, s for strings.
    bool value(const std::string& what, const std::uint64_t* u = nullptr, std::string* s = nullptr) {
        const std::string got = u ? "an integer (" + std::to_string(*u) + ")" : what;
        switch (st_) {
            case top_start: return bad("header is not a JSON object (got " + got + ")");
            case top_value:
                if (cur_ == "__metadata__") return bad("__metadata__ must be an object of strings, got " + got);
                return bad(where() + "entry must be an object {dtype, shape, data_offsets}, got " + got);
            case meta_value:
                if (!s) return bad("__metadata__: key " + quote_name(field_) + ": value must be a string, got " + got);
                metadata.emplace(field_, std::move(*s));
                st_ = meta_key;
                return true;
            case entry_value:
                if (field_ != "dtype") return bad(field_where() + "must be an array of integers, got " + got);
                if (!s) return bad(field_where() + "must be a string, got " + got);
                if (auto t = parse_dtype(*s))
                    tensors.back().type = *t;
                else
                    return bad(field_where() + "unknown dtype " + quote_name(*s) + " (expected one of " + dtype_list() + ")");
                st_ = entry_key;
                return true;
            case entry_array: {
                const std::string item = field_where() + "item " + std::to_string(items_) + ": ";
                if (!u) return bad(item + "must be a non-negative integer, got " + got);
                if (field_ == "shape") {
                    if (*u > lim_.max_dim) return bad(item + "dimension " + std::to_string(*u) + " exceeds 2^48-1");
                    if (items_ >= lim_.max_rank) return bad(field_where() + "rank exceeds " + std::to_string(lim_.max_rank));
                    tensors.back().shape.push_back(index_t(*u));
                } else {
                    if (items_ >= 2) return bad(field_where() + "more than 2 items, expected [BEGIN, END]");
                    (items_ == 0 ? tensors.back().begin : tensors.back().end) = *u;
                }
                items_++;
                return true;
            }
            default: return bad("unexpected " + got);
        }
    }

    const safetensors_limits& lim_;
    state st_ = top_start;
    std::unordered_set<std::string> seen_;
    std::string cur_, field_;
    int fields_ = 0;
    std::size_t items_ = 0;
};
}  // namespace detail

/// A read-only safetensors file: mmapped, fully validated by open().
class safetensors_file {
public:
    static safetensors_file open(const std::string& path, const safetensors_limits& lim = {}) {
        safetensors_file f;
        f.map_ = mapped_file::open(path);
        f.parse(lim);
        return f;
    }

    const std::string& path() const { return map_->path(); }
    const std::vector<tensor_info>& tensors() const { return tensors_; }  // in offset order
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    const tensor_info* find(std::string_view name) const {
        auto it = index_.find(name);
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }
    const tensor_info& at(std::string_view name) const {
        const tensor_info* t = find(name);
        ALIGNGPT_CHECK(t, path(), ": no tensor ", detail::quote_name(name), " in this file (", tensors_.size(), " tensors)");
        return *t;
    }
    /// First byte of a tensor's data; may be unaligned, read it with memcpy (or read_as).
    const std::byte* data(const tensor_info& t) const { return map_->data() + data_start_ + t.begin; }

    template <class T>
    std::vector<T> read_as(std::string_view name) const {
        const tensor_info& t = at(name);
        std::vector<T> out(std::size_t(t.numel()));
        convert_elements<T>(t.type, data(t), out.size(), out.data(), path() + ": tensor " + detail::quote_name(name));
        return out;
    }
    template <class T>
    aligngpt::tensor<T> tensor_as(std::string_view name) const {
        const tensor_info& t = at(name);
        aligngpt::tensor<T> out(t.shape);
        convert_elements<T>(t.type, data(t), std::size_t(t.numel()), out.data(), path() + ": tensor " + detail::quote_name(name));
        return out;
    }

private:
    void parse(const safetensors_limits& lim) {
        const std::string& p = map_->path();
        const std::uint64_t size = map_->size();
        // The first checks tell "not this format at all" (a PNG given as --pixels, a text file)
        // from a damaged safetensors file: its first 8 bytes cannot be a header length, or the
        // header does not open a JSON object.
        ALIGNGPT_CHECK(size >= 8, p, ": not a safetensors file (", size, " bytes, too small for the 8-byte header length)");
        std::uint64_t n = 0;
        std::memcpy(&n, map_->data(), 8);
        ALIGNGPT_CHECK(n <= lim.max_header_bytes, p,
                       ": not a safetensors file (its first 8 bytes read as a header length N = ", n,
                       ", which exceeds the limit of ", lim.max_header_bytes, " bytes)");
        std::uint64_t end = 0;
        ALIGNGPT_CHECK(detail::checked_add(n, 8, end) && end <= size, p, ": not a safetensors file (header length N = ", n,
                       " but the file has only ", size - 8, " bytes after the length field)");
        data_start_ = end;
        const std::string_view hdr = map_->view(8, n);
        const auto first = hdr.find_first_not_of(" \t\n\r");
        ALIGNGPT_CHECK(first != std::string_view::npos, p, ": not a safetensors file (header of ", n,
                       " bytes is empty; expected a JSON object)");
        ALIGNGPT_CHECK(hdr[first] == '{', p, ": not a safetensors file (header is not a JSON object: first byte ",
                       detail::quote_name(hdr.substr(first, 1)), " at offset ", 8 + first,
                       "; expected '{' after optional JSON whitespace)");

        if (auto bad = detail::utf8_error_at(hdr); bad != std::string_view::npos)
            fail(p, ": header is not valid UTF-8 at byte ", 8 + bad);
        // nlohmann stops at a NUL as if the input ended, so "{}\0junk" would pass: refuse NUL first.
        if (auto nul = hdr.find('\0'); nul != std::string_view::npos)
            fail(p, ": header contains a NUL byte at offset ", 8 + nul, " (only JSON and JSON whitespace are allowed)");
        detail::st_header_sax sax(lim);
        bool ok = false;
        try {
            ok = nlohmann::json::sax_parse(hdr.begin() + first, hdr.end(), &sax);
        } catch (const std::exception& e) {  // bad_alloc or a nlohmann exception: still an input error
            fail(p, ": header could not be parsed: ", e.what());
        }
        if (!ok || !sax.finished_ok()) fail(p, ": header: ", sax.error.empty() ? std::string("invalid JSON") : sax.error);
        metadata_ = std::move(sax.metadata);
        tensors_ = std::move(sax.tensors);
        validate(size - data_start_);
    }

    void validate(std::uint64_t buffer_len) {
        const std::string& p = map_->path();
        for (const tensor_info& t : tensors_) {
            const std::string where = p + ": tensor " + detail::quote_name(t.name) + ": ";
            // The product of the nonzero dims must fit int64 (numel() and strides multiply them in
            // any order; a 0 elsewhere must not hide an overflow).
            std::uint64_t count = 1, bits = 0, nonzero = 1;
            for (index_t d : t.shape) {
                ALIGNGPT_CHECK(
                    (d == 0 || detail::checked_mul(nonzero, std::uint64_t(d), nonzero)) && nonzero <= std::uint64_t(INT64_MAX),
                    where, "shape ", aligngpt::detail::shape_str(t.shape),
                    ": the product of its nonzero dimensions overflows int64");
                count *= std::uint64_t(d);  // <= nonzero
            }
            ALIGNGPT_CHECK(detail::checked_mul(count, dtype_bits(t.type), bits), where, "shape ",
                           aligngpt::detail::shape_str(t.shape), " x ", dtype_bits(t.type), " bits overflows 64 bits");
            ALIGNGPT_CHECK(bits % 8 == 0, where, dtype_name(t.type), " ", aligngpt::detail::shape_str(t.shape), " is ", bits,
                           " bits, not a whole number of bytes");
            ALIGNGPT_CHECK(t.end >= t.begin, where, "data_offsets [", t.begin, ",", t.end, "]: END < BEGIN");
            ALIGNGPT_CHECK(t.end - t.begin == bits / 8, where, "data_offsets [", t.begin, ",", t.end, "] hold ", t.end - t.begin,
                           " bytes but ", dtype_name(t.type), " ", aligngpt::detail::shape_str(t.shape), " needs ", bits / 8);
        }
        std::sort(tensors_.begin(), tensors_.end(), [](const tensor_info& a, const tensor_info& b) {
            return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : a.name < b.name;
        });
        std::uint64_t expect = 0;
        const tensor_info* prev = nullptr;
        for (const tensor_info& t : tensors_) {
            ALIGNGPT_CHECK(t.begin == expect, p, ": tensor ", detail::quote_name(t.name), ": data_offsets [", t.begin, ",", t.end,
                           "] but ",
                           prev ? "the previous tensor " + detail::quote_name(prev->name) + " ends at "
                                : std::string("the buffer starts at "),
                           expect, " (offsets must start at 0 and be contiguous: no gap, no overlap)");
            expect = t.end;
            prev = &t;
        }
        ALIGNGPT_CHECK(expect == buffer_len, p, ": data_offsets cover ", expect,
                       " bytes but the data buffer after the header is ", buffer_len, " bytes (",
                       expect < buffer_len ? "trailing bytes not owned by any tensor" : "file truncated",
                       "); the buffer must be exactly covered");
        for (std::size_t i = 0; i < tensors_.size(); i++) index_.emplace(tensors_[i].name, i);
    }

    std::shared_ptr<const mapped_file> map_;
    std::uint64_t data_start_ = 0;
    std::vector<tensor_info> tensors_;
    std::map<std::string, std::string> metadata_;
    std::map<std::string, std::size_t, std::less<>> index_;
};

/// Collects tensors and writes one safetensors file atomically. Data is laid out by decreasing
/// element size, then name, after a header padded with spaces to a multiple of 8, so every tensor
/// is naturally aligned in the file (as the Python writer does).
class safetensors_writer {
public:
    void add(std::string name, dtype type, std::vector<index_t> shape, const void* bytes, std::size_t nbytes) {
        const std::string where = "safetensors_writer: tensor " + detail::quote_name(name) + ": ";
        ALIGNGPT_CHECK(!name.empty() && name.find('\0') == std::string::npos && name.size() <= 65536 &&
                           detail::utf8_error_at(name) == std::string_view::npos && name != "__metadata__",
                       where, "invalid name (must be non-empty UTF-8, no NUL, <= 64 KiB, not __metadata__)");
        entries_.add(where, std::move(name), type, std::move(shape), bytes, nbytes);
    }
    template <class T>
    void add(std::string name, const aligngpt::tensor<T>& t) {
        const std::vector<T> v = t.to_vector();
        add(std::move(name), dtype_of<T>(), t.shape(), v.data(), v.size() * sizeof(T));
    }
    void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

    void write(const std::string& path) const {
        std::vector<const entry*> order;
        for (const entry& e : entries_.all()) order.push_back(&e);
        std::sort(order.begin(), order.end(), [](const entry* a, const entry* b) {
            const unsigned ba = dtype_bits(a->type), bb = dtype_bits(b->type);
            return ba != bb ? ba > bb : a->name < b->name;
        });
        nlohmann::json h = nlohmann::json::object();
        if (!metadata_.empty()) h["__metadata__"] = metadata_;
        std::uint64_t off = 0;
        for (const entry* e : order) {
            h[e->name] = {{"dtype", dtype_name(e->type)}, {"shape", e->shape}, {"data_offsets", {off, off + e->bytes.size()}}};
            off += e->bytes.size();
        }
        std::string text;
        try {
            text = h.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
        } catch (const std::exception& e) { fail(path, ": cannot write safetensors header: ", e.what()); }
        text.append((8 - text.size() % 8) % 8, ' ');
        const std::uint64_t n = text.size();
        atomic_file f(path);
        f.write(&n, 8);
        f.write(text.data(), text.size());
        for (const entry* e : order) f.write(e->bytes.data(), e->bytes.size());
        f.commit();
    }

private:
    using entry = detail::tensor_entries::entry;
    detail::tensor_entries entries_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace aligngpt::io
