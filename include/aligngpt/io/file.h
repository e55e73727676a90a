#pragma once
// File helpers shared by the weight readers and writers (POSIX):
//   mapped_file     read-only mmap of a whole regular file, shared by everything opened from it
//   read_text_file  a small file (index.json, config) read fully, with a size cap checked first
//   atomic_file     write tmp in the same dir -> fsync(tmp) -> rename -> fsync(dir)
//                   (docs/model.md §11.4: a crash leaves the old file or the new one)
// plus checked u64 arithmetic and safe quoting of untrusted names for error messages.
//
// Not defended: a file truncated or rewritten by another process while it is mapped (the mapping
// then raises SIGBUS on access; the safetensors reference has the same limit, "Proposal 6").
// Weight files must not be modified while a model is loading from them.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "aligngpt/config.h"

namespace aligngpt::io {

namespace detail {
/// a + b and a * b on u64; return false on wrap (every size in an untrusted header goes through these).
inline bool checked_add(std::uint64_t a, std::uint64_t b, std::uint64_t& r) { return !__builtin_add_overflow(a, b, &r); }
inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& r) { return !__builtin_mul_overflow(a, b, &r); }

inline std::string errno_text(int e) { return std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"; }

/// `"name"` with control and non-ASCII bytes as \xNN, cut to `max` bytes: untrusted names can hold
/// NULs, escapes and 64 KiB of text, and an error message must stay readable.
inline std::string quote_name(std::string_view s, std::size_t max = 160) {
    static const char* hex = "0123456789abcdef";
    std::string out = "\"";
    for (std::size_t i = 0; i < s.size() && i < max; i++) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            out += char(c);
        else
            out += std::string("\\x") + hex[c >> 4] + hex[c & 15];
    }
    if (s.size() > max) out += "...(" + std::to_string(s.size()) + " bytes)";
    return out + "\"";
}

/// Offset of the first byte that is not well-formed UTF-8 (RFC 3629: no overlongs, no surrogates,
/// nothing above U+10FFFF), or npos if all of `s` is valid.
inline std::size_t utf8_error_at(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        std::size_t len;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else
            return i;
        if (n - i < len || p[i + 1] < lo || p[i + 1] > hi) return i;
        for (std::size_t k = 2; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return std::string_view::npos;
}

struct fd_closer {
    int fd = -1;
    ~fd_closer() {
        if (fd >= 0) ::close(fd);
    }
};

/// Opens `path` read-only, checks it is a regular file, returns its size.
inline std::uint64_t open_regular(const std::string& path, fd_closer& f) {
    f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ALIGNGPT_CHECK(f.fd >= 0, path, ": cannot open: ", errno_text(errno));
    struct stat st {};
    ALIGNGPT_CHECK(::fstat(f.fd, &st) == 0, path, ": cannot stat: ", errno_text(errno));
    ALIGNGPT_CHECK(S_ISREG(st.st_mode), path, ": not a regular file");
    return static_cast<std::uint64_t>(st.st_size);
}
}  // namespace detail

/// A whole regular file mapped read-only. Hold it through a shared_ptr: tensors' byte pointers
/// stay valid as long as any owner lives.
class mapped_file {
public:
    static std::shared_ptr<const mapped_file> open(const std::string& path) {
        detail::fd_closer f;
        const std::uint64_t size = detail::open_regular(path, f);
        ALIGNGPT_CHECK(size <= std::uint64_t(SIZE_MAX), path, ": file of ", size, " bytes is larger than the address space");
        auto m = std::shared_ptr<mapped_file>(new mapped_file());
        m->path_ = path;
        m->size_ = size;
        if (size > 0) {  // mmap of length 0 is EINVAL; an empty file has no bytes to point at
            void* p = ::mmap(nullptr, std::size_t(size), PROT_READ, MAP_PRIVATE, f.fd, 0);
            ALIGNGPT_CHECK(p != MAP_FAILED, path, ": mmap of ", size, " bytes failed: ", detail::errno_text(errno));
            m->base_ = static_cast<const std::byte*>(p);
        }
        return m;
    }
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    ~mapped_file() {
        if (base_) ::munmap(const_cast<std::byte*>(base_), std::size_t(size_));
    }
    const std::byte* data() const { return base_; }
    std::uint64_t size() const { return size_; }
    const std::string& path() const { return path_; }
    std::string_view view(std::uint64_t off, std::uint64_t n) const {  // caller has checked off+n <= size
        return {reinterpret_cast<const char*>(base_) + off, std::size_t(n)};
    }

private:
    mapped_file() = default;
    std::string path_;
    const std::byte* base_ = nullptr;
    std::uint64_t size_ = 0;
};

/// Reads a small text file whole; refuses files larger than `max_bytes` before allocating (R4).
inline std::string read_text_file(const std::string& path, std::uint64_t max_bytes) {
    detail::fd_closer f;
    const std::uint64_t size = detail::open_regular(path, f);
    ALIGNGPT_CHECK(size <= max_bytes, path, ": file is ", size, " bytes, more than the limit of ", max_bytes);
    std::string out(std::size_t(size), '\0');
    std::size_t got = 0;
    while (got < out.size()) {
        const ssize_t r = ::read(f.fd, out.data() + got, out.size() - got);
        if (r < 0 && errno == EINTR) continue;
        ALIGNGPT_CHECK(r > 0, path, ": read failed after ", got, " of ", size,
                       " bytes: ", r == 0 ? std::string("unexpected end of file") : detail::errno_text(errno));
        got += std::size_t(r);
    }
    return out;
}

/// Writes a file atomically: bytes go to `<path>.tmp.<pid>.<n>` in the same directory, then
/// commit() does fsync(tmp), rename(tmp, path), fsync(dir). Destroying an uncommitted atomic_file
/// removes the tmp, so a failed save never leaves a half file under the real name.
class atomic_file {
public:
    explicit atomic_file(std::string path) : path_(std::move(path)) {
        static std::atomic<unsigned> counter{0};
        tmp_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
        fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        ALIGNGPT_CHECK(fd_ >= 0, path_, ": cannot create temporary file ", tmp_, ": ", detail::errno_text(errno));
    }
    atomic_file(const atomic_file&) = delete;
    atomic_file& operator=(const atomic_file&) = delete;
    ~atomic_file() {
        if (fd_ >= 0) ::close(fd_);
        if (!committed_) ::unlink(tmp_.c_str());
    }

    void write(const void* bytes, std::size_t n) {
        const char* p = static_cast<const char*>(bytes);
        while (n > 0) {
            const ssize_t r = ::write(fd_, p, n);
            if (r < 0 && errno == EINTR) continue;
            ALIGNGPT_CHECK(r > 0, path_, ": write to ", tmp_, " failed: ", detail::errno_text(r < 0 ? errno : EIO));
            p += r;
            n -= std::size_t(r);
        }
    }

    void commit() {
        ALIGNGPT_CHECK(!committed_ && fd_ >= 0, path_, ": atomic_file committed twice");
        ALIGNGPT_CHECK(::fsync(fd_) == 0, path_, ": fsync of ", tmp_, " failed: ", detail::errno_text(errno));
        const int rc = ::close(fd_);
        fd_ = -1;
        ALIGNGPT_CHECK(rc == 0, path_, ": close of ", tmp_, " failed: ", detail::errno_text(errno));
        ALIGNGPT_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, path_, ": rename from ", tmp_,
                       " failed: ", detail::errno_text(errno));
        committed_ = true;
        const auto slash = path_.find_last_of('/');
        const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
        detail::fd_closer d;
        d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ALIGNGPT_CHECK(d.fd >= 0 && ::fsync(d.fd) == 0, path_, ": fsync of directory ", dir,
                       " failed: ", detail::errno_text(errno));
    }

private:
    std::string path_, tmp_;
    int fd_ = -1;
    bool committed_ = false;
};

}  // namespace aligngpt::io
