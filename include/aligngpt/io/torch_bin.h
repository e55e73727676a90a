#pragma once
// PyTorch `.bin` / `.pt` reader (the zip format of torch >= 1.6, as torch.save and transformers'
// save_pretrained(safe_serialization=False) write it), with the same read API as safetensors_file.
//
// Container: a stored zip whose entries share one root folder (`archive/`, or the file's stem):
//   <root>/data.pkl     pickle of {name: _rebuild_tensor_v2(storage, offset, size, stride, ...)}
//   <root>/data/<key>   raw little-endian bytes of storage <key>
//   <root>/byteorder    "little" (torch >= 2.0; absent before), <root>/version, ...
// The pickle runs on the restricted machine of pickle.h (nothing is executed). Then every tensor
// is checked against its storage (docs/model.md §11.4):
//   - the storage entry exists and its size == declared numel * itemsize (CVE-2026-24747 class);
//   - size_i >= 0, stride_i >= 0, offset >= 0, no stride 0 on a dimension longer than 1, and
//     offset + sum((size_i - 1) * stride_i) < storage numel, all with checked arithmetic;
//   - several tensors may share one storage (views, tied weights), each checked on its own.
// Contiguous views are read in place; other strides are gathered element by element (a copy).
// tensors() keeps the pickle's dict order; tensor_info::begin/end are absolute file offsets of the
// view's first byte and one past its last.
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/io/dtype.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/pickle.h"
#include "aligngpt/io/safetensors.h"  // tensor_info
#include "aligngpt/io/zip.h"
#include "aligngpt/tensor.h"

namespace aligngpt::io {

namespace detail {
/// Refuses the formats torch.save wrote before 1.6 (a bare pickle with a magic number, or a tar).
inline void refuse_legacy_torch(const mapped_file& f) {
    static const unsigned char magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    const bool legacy = f.size() >= sizeof magic && std::memcmp(f.data(), magic, sizeof magic) == 0;
    const bool tar = f.size() >= 262 && std::memcmp(f.data() + 257, "ustar", 5) == 0;
    ALIGNGPT_CHECK(!legacy && !tar, f.path(), ": legacy PyTorch ", tar ? "tar" : "pickle (magic 0x1950a86a20f9469cfc6c)",
                   " format from before torch 1.6 is not supported: re-save it with torch>=1.6 (torch.save(sd, path))"
                   " or convert it to safetensors");
    ALIGNGPT_CHECK(f.size() >= 4 && std::memcmp(f.data(), "PK\x03\x04", 4) == 0, f.path(),
                   ": not a PyTorch zip checkpoint (does not start with a zip local header); convert it to safetensors");
}
}  // namespace detail

class torch_bin_file {
public:
    static torch_bin_file open(const std::string& path, const pickle::limits& lim = {}) {
        torch_bin_file t;
        auto map = mapped_file::open(path);
        detail::refuse_legacy_torch(*map);
        t.zip_ = zip_archive::open(map);
        t.load(lim);
        return t;
    }

    const std::string& path() const { return zip_.path(); }
    const std::vector<tensor_info>& tensors() const { return tensors_; }  // pickle dict order
    const tensor_info* find(std::string_view name) const {
        auto it = index_.find(name);
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }
    const tensor_info& at(std::string_view name) const {
        const tensor_info* t = find(name);
        ALIGNGPT_CHECK(t, path(), ": no tensor ", detail::quote_name(name), " in this file (", tensors_.size(), " tensors)");
        return *t;
    }
    /// True if the tensor's elements are one dense row-major run starting at data(t).
    bool is_contiguous(const tensor_info& t) const { return views_[std::size_t(&t - tensors_.data())].contiguous; }
    /// First byte of the view (may be unaligned; read with memcpy).
    const std::byte* data(const tensor_info& t) const { return zip_.file()->data() + t.begin; }

    template <class T>
    std::vector<T> read_as(std::string_view name) const {
        const tensor_info& t = at(name);
        std::vector<T> out(std::size_t(t.numel()));
        read_into(t, out.data());
        return out;
    }
    template <class T>
    aligngpt::tensor<T> tensor_as(std::string_view name) const {
        const tensor_info& t = at(name);
        aligngpt::tensor<T> out(t.shape);
        read_into(t, out.data());
        return out;
    }

private:
    struct view {
        std::vector<index_t> stride;
        bool contiguous = true;
    };

    template <class T>
    void read_into(const tensor_info& t, T* out) const {
        const std::string who = path() + ": tensor " + detail::quote_name(t.name);
        const std::size_t n = std::size_t(t.numel());
        const view& v = views_[std::size_t(&t - tensors_.data())];
        if (v.contiguous) return convert_elements<T>(t.type, data(t), n, out, who);
        const std::size_t item = dtype_size(t.type);
        std::vector<std::byte> packed(n * item);  // n * item <= file size: every element is in the storage
        std::vector<index_t> idx(t.shape.size(), 0);
        for (std::size_t e = 0; e < n; e++) {
            index_t off = 0;
            for (std::size_t d = 0; d < idx.size(); d++) off += idx[d] * v.stride[d];
            std::memcpy(packed.data() + e * item, data(t) + std::size_t(off) * item, item);
            for (std::size_t d = idx.size(); d-- > 0;) {
                if (++idx[d] < t.shape[d]) break;
                idx[d] = 0;
            }
        }
        convert_elements<T>(t.type, packed.data(), n, out, who);
    }

    void load(const pickle::limits& lim) {
        const std::string& p = path();
        std::string root;
        for (const zip_entry& e : zip_.entries()) {
            const auto slash = e.name.find('/');
            if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
                ALIGNGPT_CHECK(root.empty(), p, ": two pickles (", root, "/data.pkl and ", e.name, "): ambiguous checkpoint");
                root = e.name.substr(0, slash);
            }
        }
        ALIGNGPT_CHECK(!root.empty(), p, ": zip has no <root>/data.pkl entry: not a torch.save checkpoint");
        if (const zip_entry* bo = zip_.find(root + "/byteorder")) {
            const std::string_view order = zip_.read_checked(*bo);
            ALIGNGPT_CHECK(order == "little", p, ": zip entry ", detail::quote_name(bo->name), " is ", detail::quote_name(order),
                           "; only little-endian checkpoints are supported");
        }
        const zip_entry& pkl = *zip_.find(root + "/data.pkl");
        pickle::machine vm(zip_.read_checked(pkl), p + ": " + pkl.name, lim);
        for (const pickle::tensor_record& r : vm.state_dict()) add(r, root);
    }

    void add(const pickle::tensor_record& r, const std::string& root) {
        const std::string who = path() + ": tensor " + detail::quote_name(r.name) + ": ";
        const std::string entry = root + "/data/" + r.storage_key;
        const zip_entry* st = zip_.find(entry);
        ALIGNGPT_CHECK(st, who, "storage ", detail::quote_name(r.storage_key), " has no zip entry ", detail::quote_name(entry));
        const std::uint64_t item = dtype_size(r.type);
        std::uint64_t need = 0;
        ALIGNGPT_CHECK(detail::checked_mul(std::uint64_t(r.storage_numel), item, need) && need == st->size, who, "storage ",
                       detail::quote_name(r.storage_key), " declares ", r.storage_numel, " x ", dtype_name(r.type),
                       " but its zip entry holds ", st->size, " bytes (expected numel * itemsize)");
        ALIGNGPT_CHECK(r.offset >= 0 && r.offset <= r.storage_numel, who, "storage_offset ", r.offset, " outside storage of ",
                       r.storage_numel, " elements");
        view v;
        tensor_info t;
        t.name = r.name;
        t.type = r.type;
        // numel <= nonzero: the product of the nonzero sizes, which must fit int64 whatever the order
        // (numel() and the strides multiply them in any order; a 0 must not hide an overflow).
        std::uint64_t numel = 1, nonzero = 1, extent = 0, expect = 1;  // extent: sum (size_i - 1) * stride_i
        for (std::size_t d = r.size.size(); d-- > 0;) {
            const std::int64_t sz = r.size[d], sd = r.stride[d];
            ALIGNGPT_CHECK(sz >= 0 && sd >= 0, who, "size ", sz, " / stride ", sd, " of dim ", d, " is negative");
            ALIGNGPT_CHECK(sd > 0 || sz <= 1, who, "stride 0 on dim ", d, " of size ", sz, " (broadcast views are not weights)");
            ALIGNGPT_CHECK(
                (sz == 0 || detail::checked_mul(nonzero, std::uint64_t(sz), nonzero)) && nonzero <= std::uint64_t(INT64_MAX), who,
                "size ", aligngpt::detail::shape_str(r.size),
                ": element count overflows (the product of the nonzero sizes exceeds int64)");
            numel *= std::uint64_t(sz);  // <= nonzero
            std::uint64_t span = 0;
            if (sz > 0)
                ALIGNGPT_CHECK(detail::checked_mul(std::uint64_t(sz - 1), std::uint64_t(sd), span) &&
                                   detail::checked_add(extent, span, extent),
                               who, "size/stride extent overflows");
            if (sz != 1 && std::uint64_t(sd) != expect) v.contiguous = false;
            detail::checked_mul(expect, std::uint64_t(sz), expect);  // only compared while it is exact
        }
        std::uint64_t last = 0;
        if (numel > 0)
            ALIGNGPT_CHECK(detail::checked_add(std::uint64_t(r.offset), extent, last) && last < std::uint64_t(r.storage_numel),
                           who, "view (offset ", r.offset, ", size ", aligngpt::detail::shape_str(r.size), ", stride ",
                           aligngpt::detail::shape_str(r.stride), ") reaches element ", last, " but storage ",
                           detail::quote_name(r.storage_key), " has ", r.storage_numel, " elements");
        t.shape.assign(r.size.begin(), r.size.end());
        v.stride.assign(r.stride.begin(), r.stride.end());
        t.begin = st->offset + std::uint64_t(r.offset) * item;
        t.end = t.begin + (numel ? (extent + 1) * item : 0);
        ALIGNGPT_CHECK(index_.emplace(t.name, tensors_.size()).second, who, "appears twice");
        tensors_.push_back(std::move(t));
        views_.push_back(std::move(v));
    }

    zip_archive zip_;
    std::vector<tensor_info> tensors_;
    std::vector<view> views_;
    std::map<std::string, std::size_t, std::less<>> index_;
};

// ---------------------------------------------------------------------------------------------
// weight_file: one safetensors or torch zip file, chosen by content (not by extension).
// checkpoint_dir: a Hugging Face model folder, sharded (`*.index.json`) or single-file, opened and
// validated as a whole before any tensor is read (all-or-nothing, R5).

class weight_file {
public:
    static weight_file open(const std::string& path) {
        weight_file w;
        char head[4] = {};
        {
            auto m = mapped_file::open(path);
            if (m->size() >= 4) std::memcpy(head, m->data(), 4);
        }
        // A safetensors file starts with a u64 header length <= 100 MB, so its bytes 3..7 are 0 and
        // can never be "PK\3\4" or the legacy torch pickle's 80 02 8a 0a (its first byte alone may
        // be 0x80: a header of 128 + 256k bytes); everything else is tried as safetensors.
        static const unsigned char legacy[4] = {0x80, 0x02, 0x8a, 0x0a};
        if (std::memcmp(head, "PK\x03\x04", 4) == 0 || std::memcmp(head, legacy, 4) == 0)
            w.f_ = std::make_shared<const torch_bin_file>(torch_bin_file::open(path));
        else
            w.s_ = std::make_shared<const safetensors_file>(safetensors_file::open(path));
        return w;
    }
    const char* format() const { return s_ ? "safetensors" : "pytorch"; }
    const std::string& path() const { return s_ ? s_->path() : f_->path(); }
    const std::vector<tensor_info>& tensors() const { return s_ ? s_->tensors() : f_->tensors(); }
    const tensor_info* find(std::string_view n) const { return s_ ? s_->find(n) : f_->find(n); }
    const tensor_info& at(std::string_view n) const { return s_ ? s_->at(n) : f_->at(n); }
    template <class T>
    std::vector<T> read_as(std::string_view n) const {
        return s_ ? s_->read_as<T>(n) : f_->read_as<T>(n);
    }
    template <class T>
    aligngpt::tensor<T> tensor_as(std::string_view n) const {
        return s_ ? s_->tensor_as<T>(n) : f_->tensor_as<T>(n);
    }

private:
    std::shared_ptr<const safetensors_file> s_;
    std::shared_ptr<const torch_bin_file> f_;
};

class checkpoint_dir {
public:
    /// Opens `dir`: model.safetensors.index.json, model.safetensors, pytorch_model.bin.index.json or
    /// pytorch_model.bin, the first that exists. Every shard is opened and cross-checked here.
    static checkpoint_dir open(const std::string& dir) {
        checkpoint_dir c;
        c.dir_ = dir;
        namespace fs = std::filesystem;
        for (const char* single :
             {"model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin"}) {
            const std::string p = dir + "/" + single;
            if (!fs::exists(p)) continue;
            if (std::string_view(single).ends_with(".json"))
                c.open_index(p);
            else
                c.add_file(weight_file::open(p), nullptr);
            return c;
        }
        fail(dir, ": no model.safetensors(.index.json) or pytorch_model.bin(.index.json) in this directory");
    }
    const std::string& dir() const { return dir_; }
    const std::vector<weight_file>& files() const { return files_; }
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& [n, i] : where_) out.push_back(n);
        return out;
    }
    const weight_file* file_of(std::string_view name) const {
        auto it = where_.find(name);
        return it == where_.end() ? nullptr : &files_[it->second];
    }
    const tensor_info* find(std::string_view name) const {
        const weight_file* f = file_of(name);
        return f ? f->find(name) : nullptr;
    }
    const tensor_info& at(std::string_view name) const { return file(name).at(name); }
    template <class T>
    std::vector<T> read_as(std::string_view name) const {
        return file(name).read_as<T>(name);
    }
    template <class T>
    aligngpt::tensor<T> tensor_as(std::string_view name) const {
        return file(name).tensor_as<T>(name);
    }

private:
    const weight_file& file(std::string_view name) const {
        const weight_file* f = file_of(name);
        ALIGNGPT_CHECK(f, dir_, ": no tensor ", detail::quote_name(name), " in this checkpoint");
        return *f;
    }

    void open_index(const std::string& index) {
        // {"metadata": {"total_size": N, ...}, "weight_map": {tensor: shard}}. Duplicate keys are
        // refused at any level (a parser differential could map one tensor to two shards).
        const nlohmann::json j = read_json_file(index, {.max_bytes = 64u << 20, .refuse_duplicate_keys = true, .max_depth = 8});
        const json_reader r(j, index, json_nulls::refused);
        std::optional<std::uint64_t> total_size;
        if (const nlohmann::json* m = r.get("metadata"); m && m->is_object() && m->contains("total_size")) {
            const auto& t = (*m)["total_size"];
            if (!t.is_number_unsigned()) r.object("metadata").must_be("total_size", "a non-negative integer");
            total_size = t.get<std::uint64_t>();
        }
        const json_reader wm = r.object("weight_map");
        std::map<std::string, std::string, std::less<>> wanted;  // tensor -> shard
        std::set<std::string> order;                             // shards, by name
        for (const auto& [tensor, v] : wm.json().items()) {
            const std::string field = "[" + detail::quote_name(tensor) + "]";
            if (!v.is_string()) r.fail("weight_map" + field, "must be a string (a shard file name), got ", detail::json_text(v));
            const std::string shard = v.get<std::string>();
            const std::string who =
                index + ": weight_map[" + detail::quote_name(tensor) + "] = " + detail::quote_name(shard) + ": ";
            // transformers#47176: a shard name must be a plain file name inside the model directory.
            ALIGNGPT_CHECK(!shard.empty() && shard != "." && shard != ".." &&
                               shard.find_first_of(std::string("/\\\0", 3)) == std::string::npos,
                           who, "shard must be a plain file name (no '/', '\\', NUL; not empty, '.' or '..')");
            order.insert(shard);
            wanted.emplace(tensor, shard);
        }
        namespace fs = std::filesystem;
        const fs::path real_dir = fs::weakly_canonical(fs::path(dir_));
        for (const std::string& shard : order) {  // every shard is there before any is opened
            const std::string p = dir_ + "/" + shard;
            // error_code overloads: a name the file system refuses (longer than NAME_MAX) must be
            // this index's error, not a std::filesystem_error.
            std::error_code ec;
            const bool there = fs::exists(p, ec);
            const fs::path real = there ? fs::weakly_canonical(fs::path(p), ec) : fs::path();
            ALIGNGPT_CHECK(!ec, index, ": weight_map names shard ", detail::quote_name(shard),
                           " which cannot be checked: ", ec.message());
            ALIGNGPT_CHECK(there, index, ": weight_map names shard ", detail::quote_name(shard), " but ", p, " does not exist");
            ALIGNGPT_CHECK(real.parent_path() == real_dir, index, ": shard ", detail::quote_name(shard), " resolves to ",
                           real.string(), ", outside ", real_dir.string(), " (symlink out of the model directory)");
        }
        std::map<std::string, std::size_t> shards;  // shard -> file index
        for (const std::string& shard : order) {
            shards.emplace(shard, files_.size());
            add_file(weight_file::open(dir_ + "/" + shard), &wanted);
        }
        std::uint64_t total = 0;
        for (const auto& [tensor, shard] : wanted) {
            const weight_file& f = files_[shards.at(shard)];
            ALIGNGPT_CHECK(f.find(tensor), index, ": weight_map maps ", detail::quote_name(tensor), " to ", shard,
                           " but that shard has no such tensor");
            total += std::uint64_t(f.at(tensor).numel()) * dtype_bits(f.at(tensor).type) / 8;
        }
        // Safetensors shards cannot share bytes, so total_size is exact there; transformers counts
        // a storage shared by several .bin tensors once, so the .bin sum is not comparable.
        if (total_size && !files_.empty() && std::string_view(files_.front().format()) == "safetensors")
            ALIGNGPT_CHECK(*total_size == total, index, ": field 'metadata.total_size' must be the bytes the tensors hold, ",
                           total, ", got ", *total_size);
    }

    // Registers every tensor of `f`; with an index, each must be mapped to this very shard.
    void add_file(weight_file f, const std::map<std::string, std::string, std::less<>>* wanted) {
        const std::string base = f.path().substr(f.path().find_last_of('/') + 1);
        for (const tensor_info& t : f.tensors()) {
            if (wanted) {
                auto it = wanted->find(t.name);
                ALIGNGPT_CHECK(it != wanted->end() && it->second == base, f.path(), ": tensor ", detail::quote_name(t.name),
                               it == wanted->end() ? std::string(" is not in the weight_map")
                                                   : " is mapped to " + it->second +
                                                         " by the weight_map (a tensor must live in exactly one shard)");
            }
            ALIGNGPT_CHECK(where_.emplace(t.name, files_.size()).second, f.path(), ": tensor ", detail::quote_name(t.name),
                           " is also in ", files_[where_.find(t.name)->second].path());
        }
        files_.push_back(std::move(f));
    }

    std::string dir_;
    std::vector<weight_file> files_;
    std::map<std::string, std::size_t, std::less<>> where_;
};

}  // namespace aligngpt::io
