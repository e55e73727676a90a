#pragma once
// The tensors a writer has collected (io/safetensors.h's safetensors_writer, io/torch_bin_writer.h's
// torch_bin_writer): each name once, the shape checked against the byte count without overflow,
// the bytes copied. Each writer checks its own format's name rules first.
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/io/dtype.h"
#include "aligngpt/io/file.h"

namespace aligngpt::io::detail {

class tensor_entries {
public:
    struct entry {
        std::string name;
        dtype type;
        std::vector<index_t> shape;
        std::vector<std::byte> bytes;
    };

    /// `where` starts every message (e.g. "safetensors_writer: tensor \"x\": ").
    void add(const std::string& where, std::string name, dtype type, std::vector<index_t> shape, const void* bytes,
             std::size_t nbytes) {
        ALIGNGPT_CHECK(names_.insert(name).second, where, "added twice");
        std::uint64_t bits = dtype_bits(type);
        for (index_t d : shape)
            ALIGNGPT_CHECK(d >= 0 && checked_mul(bits, std::uint64_t(d), bits), where, "bad shape ",
                           aligngpt::detail::shape_str(shape));
        ALIGNGPT_CHECK(bits % 8 == 0 && bits / 8 == nbytes, where, dtype_name(type), " ", aligngpt::detail::shape_str(shape),
                       " needs ", bits / 8, " bytes, got ", nbytes);
        const auto* b = static_cast<const std::byte*>(bytes);
        entries_.push_back({std::move(name), type, std::move(shape), std::vector<std::byte>(b, b + nbytes)});
    }
    const std::vector<entry>& all() const { return entries_; }

private:
    std::vector<entry> entries_;
    std::unordered_set<std::string> names_;
};

}  // namespace aligngpt::io::detail
