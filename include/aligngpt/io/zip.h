#pragma once
// A read-only ZIP reader for the container torch.save writes (PyTorch >= 1.6): stored entries only,
// read in place from an mmapped file. Nothing is ever extracted to disk.
//
// Layout: [local header, name, extra, data, (data descriptor)]* central directory, [zip64 end
// record, zip64 locator], end-of-central-directory (EOCD, 22 bytes + comment). The central directory
// is the source of truth; sizes and offsets >= 0xFFFFFFFF live in the zip64 extra field (id 1) and
// the counts in the zip64 end record (7B shards are > 4 GiB).
//
// Why each check (docs/model.md §11.4): an untrusted archive can lie in every
// field, and zip readers disagree on which copy of a field wins, so we refuse any disagreement:
//  - EOCD found at the end with an exact comment length; single disk only;
//  - entry count <= limits.max_entries and <= what the central directory can hold (no huge reserve);
//  - method 0 (stored) with compressed size == size, no encryption (no zip bombs, no inflater);
//  - local header signature, name and method equal the central copy; sizes/CRC in the local header
//    equal the central ones unless bit 3 is set, and then the data descriptor must equal them;
//  - every entry (header + data + descriptor) lies before the central directory and entries do
//    not overlap; names are unique, non-empty, relative, without "..", "\" or NUL.
// CRC-32 is checked for entries read with read_checked() (data.pkl, small files); tensor data is
// not hashed at open (that would read every byte of a 14 GB checkpoint).
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/io/file.h"

namespace aligngpt::io {

struct zip_entry {
    std::string name;
    std::uint64_t header_offset = 0;  // local header
    std::uint64_t offset = 0;         // first data byte in the file
    std::uint64_t size = 0;
    std::uint32_t crc32 = 0;
};

struct zip_limits {
    std::uint64_t max_entries = 1u << 16;
    std::uint64_t max_name_bytes = 4096;
};

namespace detail {
inline std::uint32_t crc32(const void* data, std::size_t n) {
    static const auto table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t i = 0; i < 256; i++) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    std::uint32_t c = 0xFFFFFFFFu;
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/// Bounds-checked little-endian reads from the mapped file; every read names what it reads.
struct zip_cursor {
    const mapped_file& f;
    std::uint64_t get(std::uint64_t off, int bytes, const char* what) const {
        std::uint64_t end = 0;
        ALIGNGPT_CHECK(checked_add(off, std::uint64_t(bytes), end) && end <= f.size(), f.path(), ": zip: ", what, " at offset ",
                       off, " runs past the end of the file (", f.size(), " bytes)");
        std::uint64_t v = 0;
        std::memcpy(&v, f.data() + off, std::size_t(bytes));  // little-endian host (checked in dtype.h)
        return v;
    }
};
}  // namespace detail

class zip_archive {
public:
    static zip_archive open(std::shared_ptr<const mapped_file> file, const zip_limits& lim = {}) {
        zip_archive z;
        z.file_ = std::move(file);
        z.read_directory(lim);
        return z;
    }
    const std::string& path() const { return file_->path(); }
    const std::vector<zip_entry>& entries() const { return entries_; }  // in central-directory order
    const zip_entry* find(std::string_view name) const {
        auto it = index_.find(name);
        return it == index_.end() ? nullptr : &entries_[it->second];
    }
    const std::byte* data(const zip_entry& e) const { return file_->data() + e.offset; }
    std::string_view bytes(const zip_entry& e) const { return file_->view(e.offset, e.size); }
    /// The entry's bytes after checking its CRC-32 against the central directory.
    std::string_view read_checked(const zip_entry& e) const {
        const std::string_view b = bytes(e);
        const std::uint32_t c = detail::crc32(b.data(), b.size());
        ALIGNGPT_CHECK(c == e.crc32, path(), ": zip entry ", detail::quote_name(e.name), ": CRC-32 ", c,
                       " does not match the central directory's ", e.crc32, " (corrupted file)");
        return b;
    }
    const std::shared_ptr<const mapped_file>& file() const { return file_; }

private:
    void read_directory(const zip_limits& lim) {
        const mapped_file& f = *file_;
        const std::string& p = f.path();
        const detail::zip_cursor in{f};
        const std::uint64_t size = f.size();
        ALIGNGPT_CHECK(size >= 22, p, ": zip: file of ", size, " bytes is too small for an end-of-central-directory record");
        // EOCD: the last "PK\5\6" whose comment reaches exactly to the end of the file.
        std::uint64_t eocd = size;
        for (std::uint64_t k = size - 22 + 1; k-- > 0 && size - k <= 22 + 65535;) {
            if (in.get(k, 4, "EOCD") == 0x06054b50 && k + 22 + in.get(k + 20, 2, "EOCD comment length") == size) {
                eocd = k;
                break;
            }
        }
        ALIGNGPT_CHECK(eocd != size, p, ": not a zip archive (no end-of-central-directory record)");
        std::uint64_t disk = in.get(eocd + 4, 2, "EOCD disk"), cd_disk = in.get(eocd + 6, 2, "EOCD cd disk");
        std::uint64_t n_disk = in.get(eocd + 8, 2, "EOCD entries"), n = in.get(eocd + 10, 2, "EOCD entries");
        std::uint64_t cd_size = in.get(eocd + 12, 4, "EOCD cd size"), cd_off = in.get(eocd + 16, 4, "EOCD cd offset");
        std::uint64_t cd_limit = eocd;  // the central directory must end before this
        if (eocd >= 20 && in.get(eocd - 20, 4, "zip64 locator") == 0x07064b50) {
            const std::uint64_t z64 = in.get(eocd - 20 + 8, 8, "zip64 locator offset");
            ALIGNGPT_CHECK(in.get(eocd - 20 + 4, 4, "zip64 locator disk") == 0 && in.get(eocd - 20 + 16, 4, "zip64 disks") == 1,
                           p, ": zip: multi-disk archives are not supported");
            ALIGNGPT_CHECK(z64 < eocd - 20 && in.get(z64, 4, "zip64 end record") == 0x06064b50, p,
                           ": zip: zip64 locator points to offset ", z64, " which holds no zip64 end record");
            disk = in.get(z64 + 16, 4, "zip64 disk");
            cd_disk = in.get(z64 + 20, 4, "zip64 cd disk");
            n_disk = in.get(z64 + 24, 8, "zip64 entries on disk");
            n = in.get(z64 + 32, 8, "zip64 entries");
            cd_size = in.get(z64 + 40, 8, "zip64 cd size");
            cd_off = in.get(z64 + 48, 8, "zip64 cd offset");
            cd_limit = z64;
        }
        ALIGNGPT_CHECK(disk == 0 && cd_disk == 0 && n_disk == n, p, ": zip: multi-disk archives are not supported");
        ALIGNGPT_CHECK(n <= lim.max_entries, p, ": zip: ", n, " entries, more than the limit of ", lim.max_entries);
        std::uint64_t cd_end = 0;
        ALIGNGPT_CHECK(detail::checked_add(cd_off, cd_size, cd_end) && cd_end <= cd_limit, p, ": zip: central directory [",
                       cd_off, ", +", cd_size, ") runs past its end record at ", cd_limit);
        ALIGNGPT_CHECK(n <= cd_size / 46, p, ": zip: ", n, " entries cannot fit a central directory of ", cd_size, " bytes");
        entries_.reserve(std::size_t(n));

        std::uint64_t pos = cd_off;
        std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;  // [local header, end of entry)
        for (std::uint64_t i = 0; i < n; i++) {
            ALIGNGPT_CHECK(in.get(pos, 4, "central header") == 0x02014b50 && pos + 46 <= cd_end, p,
                           ": zip: central directory entry ", i, " at offset ", pos, " has a bad signature");
            zip_entry e;
            const std::uint64_t flags = in.get(pos + 8, 2, "flags"), method = in.get(pos + 10, 2, "method");
            e.crc32 = std::uint32_t(in.get(pos + 16, 4, "crc"));
            std::uint64_t csize = in.get(pos + 20, 4, "compressed size"), usize = in.get(pos + 24, 4, "size");
            const std::uint64_t nl = in.get(pos + 28, 2, "name length"), xl = in.get(pos + 30, 2, "extra length"),
                                cl = in.get(pos + 32, 2, "comment length");
            e.header_offset = in.get(pos + 42, 4, "local header offset");
            ALIGNGPT_CHECK(pos + 46 + nl + xl + cl <= cd_end, p, ": zip: central directory entry ", i,
                           " runs past the directory");
            e.name = std::string(f.view(pos + 46, nl));
            const std::string who = p + ": zip entry " + detail::quote_name(e.name) + ": ";
            check_name(e.name, who, lim);
            bool z64 = false;
            read_zip64_extra(pos + 46 + nl, xl, usize, csize, &e.header_offset, z64, who);
            ALIGNGPT_CHECK(method == 0, who, "compression method ", method,
                           " (only 0 = stored is supported; torch.save never compresses)");
            ALIGNGPT_CHECK(!(flags & 1), who, "is encrypted");
            ALIGNGPT_CHECK(csize == usize, who, "stored entry with compressed size ", csize, " != size ", usize);
            e.size = usize;
            // Local header: must agree with the central one.
            const std::uint64_t lh = e.header_offset;
            ALIGNGPT_CHECK(in.get(lh, 4, "local header") == 0x04034b50, who, "no local header at offset ", lh);
            const std::uint64_t lnl = in.get(lh + 26, 2, "local name length"), lxl = in.get(lh + 28, 2, "local extra length");
            ALIGNGPT_CHECK(in.get(lh + 8, 2, "local method") == method && in.get(lh + 6, 2, "local flags") == flags &&
                               lnl == nl && lh + 30 + lnl <= size && f.view(lh + 30, lnl) == e.name,
                           who, "local header at offset ", lh, " disagrees with the central directory (name, method or flags)");
            std::uint64_t lu = in.get(lh + 22, 4, "local size"), lc = in.get(lh + 18, 4, "local compressed size");
            const std::uint64_t lcrc = in.get(lh + 14, 4, "local crc");
            bool lz64 = false;
            read_zip64_extra(lh + 30 + lnl, lxl, lu, lc, nullptr, lz64, who);
            e.offset = lh + 30 + lnl + lxl;
            std::uint64_t end = 0;
            ALIGNGPT_CHECK(detail::checked_add(e.offset, e.size, end) && end <= cd_off, who, "data [", e.offset, ", +", e.size,
                           ") runs past the start of the central directory at ", cd_off);
            if (flags & 8) {  // sizes follow the data in a descriptor: [sig] crc csize usize (4 or 8 bytes each)
                ALIGNGPT_CHECK((lu == 0 || lu == usize) && (lc == 0 || lc == csize) && (lcrc == 0 || lcrc == e.crc32), who,
                               "local header sizes/CRC disagree with the central directory");
                end = check_descriptor(end, e, z64 || lz64, cd_off, who);
            } else {
                ALIGNGPT_CHECK(lu == usize && lc == csize && lcrc == e.crc32, who, "local header says size ", lu, " / CRC ", lcrc,
                               " but the central directory says ", usize, " / ", e.crc32);
            }
            spans.push_back({lh, end});
            ALIGNGPT_CHECK(index_.emplace(e.name, entries_.size()).second, who, "duplicate entry name");
            entries_.push_back(std::move(e));
            pos += 46 + nl + xl + cl;
        }
        std::sort(spans.begin(), spans.end());
        for (std::size_t i = 1; i < spans.size(); i++)
            ALIGNGPT_CHECK(spans[i].first >= spans[i - 1].second, p, ": zip: entries overlap: one spans [", spans[i - 1].first,
                           ", ", spans[i - 1].second, ") and the next starts at ", spans[i].first);
    }

    static void check_name(const std::string& name, const std::string& who, const zip_limits& lim) {
        ALIGNGPT_CHECK(!name.empty() && name.size() <= lim.max_name_bytes, who, "name length ", name.size(), " not in [1, ",
                       lim.max_name_bytes, "]");
        ALIGNGPT_CHECK(name.find('\0') == std::string::npos && name.find('\\') == std::string::npos && name[0] != '/', who,
                       "name must be a relative path without NUL or backslash");
        std::size_t b = 0;
        while (b <= name.size()) {
            const std::size_t e = std::min(name.find('/', b), name.size());
            ALIGNGPT_CHECK(name.substr(b, e - b) != "..", who, "name has a \"..\" component");
            b = e + 1;
        }
    }

    // Reads the zip64 extended-information extra field (id 1) if present: it holds, in order, the
    // size, compressed size and header offset whose 32-bit fields are 0xFFFFFFFF.
    void read_zip64_extra(std::uint64_t at, std::uint64_t len, std::uint64_t& usize, std::uint64_t& csize, std::uint64_t* offset,
                          bool& z64, const std::string& who) const {
        const detail::zip_cursor in{*file_};
        std::uint64_t k = 0;
        while (k + 4 <= len) {
            const std::uint64_t id = in.get(at + k, 2, "extra id"), n = in.get(at + k + 2, 2, "extra size");
            ALIGNGPT_CHECK(k + 4 + n <= len, who, "extra field runs past its area");
            if (id == 1) {
                z64 = true;
                std::uint64_t q = at + k + 4, qend = q + n;
                auto take = [&](std::uint64_t& v, const char* what) {
                    if (v != 0xFFFFFFFFu) return;
                    ALIGNGPT_CHECK(q + 8 <= qend, who, "zip64 extra field lacks the ", what);
                    v = in.get(q, 8, what);
                    q += 8;
                };
                take(usize, "size");
                take(csize, "compressed size");
                if (offset) take(*offset, "header offset");
            }
            k += 4 + n;
        }
    }

    std::uint64_t check_descriptor(std::uint64_t at, const zip_entry& e, bool z64, std::uint64_t limit,
                                   const std::string& who) const {
        const detail::zip_cursor in{*file_};
        const int w = z64 ? 8 : 4;
        std::uint64_t q = at;
        if (q + 4 <= limit && in.get(q, 4, "data descriptor") == 0x08074b50) q += 4;
        ALIGNGPT_CHECK(q + 4 + 2 * std::uint64_t(w) <= limit, who, "data descriptor runs past the central directory");
        const std::uint64_t crc = in.get(q, 4, "descriptor crc"), c = in.get(q + 4, w, "descriptor size"),
                            u = in.get(q + 4 + w, w, "descriptor size");
        ALIGNGPT_CHECK(crc == e.crc32 && c == e.size && u == e.size, who, "data descriptor (crc ", crc, ", sizes ", c, "/", u,
                       ") disagrees with the central directory (crc ", e.crc32, ", size ", e.size, ")");
        return q + 4 + 2 * std::uint64_t(w);
    }

    std::shared_ptr<const mapped_file> file_;
    std::vector<zip_entry> entries_;
    std::map<std::string, std::size_t, std::less<>> index_;
};

}  // namespace aligngpt::io
