#pragma once
// Training checkpoints that survive a kill, a full disk, power loss and bit rot (issue #10;
// the protocol of HF Trainer's staging dir, transformers#27820/#35580, with llm.c's "commit
// marker written last" and the fsyncs none of them issue).
//
//   train::checkpoint_writer w(out_dir, step);            // stages in OUT/tmp-checkpoint-<step>-<pid>-<n>/
//   w.add_tensors("model.safetensors", named_params);     // {name, tensor<float>} pairs; NaN/Inf refused
//   w.add_tensors("optimizer.safetensors", moments);
//   w.add_json("trainer_state.json", state);
//   std::string dir = w.commit(keep_total_limit);         // -> OUT/checkpoint-<step>
//
//   train::remove_stale_staging(out_dir);                 // at start-up
//   train::resume_report report;
//   if (auto ck = train::find_resumable(out_dir, &report)) { ... ck->tensors("model.safetensors") ... }
//   std::cerr << report.text();                           // each skipped file and why, then "falling back to ..."
//
// Commit protocol (each step is one system call; a kill between any two leaves OUT resumable):
//   1. every file: write FILE.tmp in the staging dir (same file system as OUT, so rename works),
//      fsync, close, rename to FILE; its byte count and SHA-256 are taken from the bytes written;
//   2. manifest.json the same way, LAST: {"format","version","step","files":{name:{bytes,sha256}}};
//   3. fsync(staging dir); rename(staging, checkpoint-<step>) (an existing checkpoint-<step> is
//      first swapped atomically with renameat2(RENAME_EXCHANGE), or, where the file system lacks
//      it, renamed aside; either way the old one is deleted after); fsync(OUT);
//   4. only then: checkpoints beyond the newest K are renamed aside and deleted, and stale
//      tmp-checkpoint-* dirs are removed.
// A directory is a checkpoint only when it is named checkpoint-<N> and its manifest verifies: the
// manifest is canonical JSON of the exact schema, its step is N, and every listed file has the
// listed size and SHA-256. Anything else is skipped with the file and the reason.
//
// Why SHA-256 (and not CRC-32): a CRC is linear, so a deliberate edit can keep it; and 32 bits let
// one random corruption in 4e9 through. A single-bit flip in a file changes the bytes hashed, and
// no two inputs with the same SHA-256 are known at all (a collision at Hamming distance 1 would
// break the function), so every flip is reported; the tests flip every bit of a small checkpoint.
// Flips in manifest.json are caught because it must equal its own canonical re-serialisation: a
// flip that still parses changes a value, and every value is checked (schema, step, size, hash).
//
// Fault hooks (tests only; checkpoint_hooks, passed to the writer, no global state): `before` sees
// every file-system step (mkdir, create, write of each chunk, fsync, close, rename, exchange,
// remove) and may return an errno value to make it fail (ENOSPC after N bytes) or _exit() to
// simulate a kill; `after` sees each step that succeeded (the fsync/rename order, F4).
//
// Not defended: several processes writing checkpoints into one OUT at once (only rank 0 saves);
// files changed between find_resumable's verification and the caller's read.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/io/dtype.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/safetensors.h"
#include "aligngpt/tensor.h"

namespace aligngpt::train {

// ---------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), streaming.

class sha256 {
public:
    sha256() { reset(); }
    void reset() {
        h_ = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
        len_ = 0;
        fill_ = 0;
    }
    void update(const void* data, std::size_t n) {
        const auto* p = static_cast<const unsigned char*>(data);
        len_ += n;
        if (fill_) {
            const std::size_t k = std::min(n, 64 - fill_);
            std::memcpy(buf_.data() + fill_, p, k);
            fill_ += k, p += k, n -= k;
            if (fill_ < 64) return;
            block(buf_.data());
            fill_ = 0;
        }
        for (; n >= 64; p += 64, n -= 64) block(p);
        std::memcpy(buf_.data(), p, n);
        fill_ = n;
    }
    /// The digest as 64 lowercase hex digits; the object is reset afterwards.
    std::string hex() {
        const std::uint64_t bits = len_ * 8;
        const unsigned char pad = 0x80, zero = 0;
        update(&pad, 1);
        while (fill_ != 56) update(&zero, 1);
        unsigned char be[8];
        for (int i = 0; i < 8; i++) be[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
        update(be, 8);
        static const char* digits = "0123456789abcdef";
        std::string out;
        for (std::uint32_t w : h_)
            for (int s = 28; s >= 0; s -= 4) out += digits[(w >> s) & 15];
        reset();
        return out;
    }

private:
    static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
    void block(const unsigned char* p) {
        static constexpr std::uint32_t k[64] = {
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
            0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
            0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
            0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
            0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
            0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
            0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
        std::uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = std::uint32_t(p[4 * i]) << 24 | std::uint32_t(p[4 * i + 1]) << 16 | std::uint32_t(p[4 * i + 2]) << 8 |
                   std::uint32_t(p[4 * i + 3]);
        for (int i = 16; i < 64; i++) {
            const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
        for (int i = 0; i < 64; i++) {
            const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
        }
        h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
    }
    std::array<std::uint32_t, 8> h_{};
    std::array<unsigned char, 64> buf_{};
    std::uint64_t len_ = 0;
    std::size_t fill_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Fault hooks and the file-system steps they see.

enum class fs_op { mkdir, create, write, fsync_file, close, rename, exchange, fsync_dir, remove };

inline const char* fs_op_name(fs_op op) {
    static const char* names[] = {"mkdir", "create", "write", "fsync_file", "close", "rename", "exchange", "fsync_dir", "remove"};
    return names[static_cast<int>(op)];
}

/// One file-system step of a save. For a write: `offset` bytes of the file were written before
/// it, and it writes `bytes` more. For rename/exchange: `to` is the destination.
struct fs_step {
    fs_op op = fs_op::write;
    std::string path, to;
    std::uint64_t offset = 0;
    std::size_t bytes = 0;
};

/// Test hooks (F1, F3, F4). Empty by default; nothing global.
struct checkpoint_hooks {
    /// Before each step: return 0 to run it, or an errno value to fail it as the system would.
    std::function<int(const fs_step&)> before;
    /// After each step that succeeded.
    std::function<void(const fs_step&)> after;
    /// Largest write issued at once (hooks see, and can stop at, every chunk boundary).
    std::size_t write_chunk = std::size_t(8) << 20;
    /// Tests of process kills only: the fsync steps are shown to the hooks but not issued (a killed
    /// process loses nothing the page cache holds, and hundreds of real fsyncs take seconds).
    bool skip_fsync = false;
};

namespace detail {

using io::detail::errno_text;

constexpr const char* manifest_name = "manifest.json";
constexpr const char* manifest_format = "aligngpt-checkpoint";
constexpr int manifest_version = 1;
constexpr std::uint64_t max_manifest_bytes = 1 << 20;  // read before parsing (R4)
constexpr std::size_t max_manifest_files = 1024;

inline std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

/// A file name inside a checkpoint: one path component, so a manifest cannot point outside it.
inline bool plain_file_name(std::string_view s) {
    return !s.empty() && s.size() <= 255 && s != "." && s != ".." && s.find('/') == std::string_view::npos &&
           s.find('\\') == std::string_view::npos && s.find('\0') == std::string_view::npos &&
           io::detail::utf8_error_at(s) == std::string_view::npos;
}

/// "checkpoint-<N>" with N decimal, no sign, no leading zero (so name and step map one to one).
inline std::optional<std::int64_t> checkpoint_step(std::string_view name) {
    constexpr std::string_view prefix = "checkpoint-";
    if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
    const std::string_view n = name.substr(prefix.size());
    if (n.empty() || n.size() > 18 || (n.size() > 1 && n[0] == '0')) return std::nullopt;
    std::int64_t v = 0;
    for (char c : n) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + (c - '0');
    }
    return v;
}

inline bool is_staging_name(std::string_view name) { return name.substr(0, 15) == "tmp-checkpoint-"; }

/// Names in `dir` (not . and ..); errors name the directory.
inline std::vector<std::string> list_dir(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    ALIGNGPT_CHECK(d, dir, ": cannot list directory: ", errno_text(errno));
    std::vector<std::string> out;
    while (const dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

/// The system calls of a save, each shown to the hooks first.
class hooked_fs {
public:
    explicit hooked_fs(const checkpoint_hooks& h) : h_(h) {}

    void mkdir(const std::string& path) {
        run(
            step(fs_op::mkdir, path), [&] { return ::mkdir(path.c_str(), 0755); }, "cannot create directory");
    }
    int create(const std::string& path) {
        int fd = -1;
        run(
            step(fs_op::create, path), [&] { return fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644); },
            "cannot create");
        return fd;
    }
    void write(int fd, const std::string& path, const void* data, std::size_t n, std::uint64_t& offset) {
        const char* p = static_cast<const char*>(data);
        const std::size_t chunk = std::max<std::size_t>(h_.write_chunk, 1);
        while (n > 0) {
            const std::size_t k = std::min(n, chunk);
            fs_step s = step(fs_op::write, path);
            s.offset = offset;
            s.bytes = k;
            if (h_.before)
                if (const int e = h_.before(s))
                    fail(path, ": write of ", k, " bytes at offset ", offset, " failed: ", errno_text(e));
            std::size_t done = 0;
            while (done < k) {
                const ssize_t r = ::write(fd, p + done, k - done);
                if (r < 0 && errno == EINTR) continue;
                ALIGNGPT_CHECK(r > 0, path, ": write of ", k - done, " bytes at offset ", offset + done,
                               " failed: ", errno_text(r < 0 ? errno : EIO));
                done += std::size_t(r);
            }
            if (h_.after) h_.after(s);
            p += k, n -= k, offset += k;
        }
    }
    void fsync_file(int fd, const std::string& path) {
        run(
            step(fs_op::fsync_file, path), [&] { return h_.skip_fsync ? 0 : ::fsync(fd); }, "fsync failed");
    }
    void close(int& fd, const std::string& path) {
        const int f = fd;
        fd = -1;  // closed even when the hook fails it, so nothing leaks
        fs_step s = step(fs_op::close, path);
        if (h_.before)
            if (const int e = h_.before(s)) {
                ::close(f);
                fail(path, ": close failed: ", errno_text(e));
            }
        ALIGNGPT_CHECK(::close(f) == 0, path, ": close failed: ", errno_text(errno));
        if (h_.after) h_.after(s);
    }
    void rename(const std::string& from, const std::string& to) {
        run(
            step(fs_op::rename, from, to), [&] { return ::rename(from.c_str(), to.c_str()); }, "cannot rename to " + to);
    }
    /// Swaps two existing paths atomically; false (and nothing done) where the file system cannot.
    bool exchange(const std::string& a, const std::string& b) {
        fs_step s = step(fs_op::exchange, a, b);
        int e = h_.before ? h_.before(s) : 0;
        if (!e && ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) != 0) e = errno;
        if (e == EINVAL || e == ENOSYS || e == ENOTSUP) return false;
        ALIGNGPT_CHECK(e == 0, a, ": cannot exchange with ", b, ": ", errno_text(e));
        if (h_.after) h_.after(s);
        return true;
    }
    void fsync_dir(const std::string& dir) {
        io::detail::fd_closer d;
        d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ALIGNGPT_CHECK(d.fd >= 0, dir, ": cannot open directory to fsync it: ", errno_text(errno));
        run(
            step(fs_op::fsync_dir, dir), [&] { return h_.skip_fsync ? 0 : ::fsync(d.fd); }, "fsync of directory failed");
    }
    /// Deletes a directory tree (ours: plain files and directories, never following symlinks).
    void remove_tree(const std::string& path) {
        run(
            step(fs_op::remove, path), [&] { return remove_now(path); }, "cannot remove");
    }
    /// The same without hooks and without throwing: the cleanup after a failed save.
    static void remove_quietly(const std::string& path) { (void)remove_now(path); }

private:
    static fs_step step(fs_op op, const std::string& path, const std::string& to = {}) {
        fs_step s;
        s.op = op;
        s.path = path;
        s.to = to;
        return s;
    }
    template <class F>
    void run(fs_step s, F call, const std::string& what) {
        int e = h_.before ? h_.before(s) : 0;
        if (!e && call() < 0) e = errno;
        if (e) fail(s.path, ": ", what, ": ", errno_text(e));
        if (h_.after) h_.after(s);
    }
    static int remove_now(const std::string& path) {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? 0 : -1;
        if (S_ISDIR(st.st_mode)) {
            int rc = 0;
            if (DIR* d = ::opendir(path.c_str())) {
                std::vector<std::string> names;
                while (const dirent* e = ::readdir(d))
                    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
                ::closedir(d);
                for (const auto& n : names)
                    if (remove_now(join(path, n)) != 0) rc = -1;
            }
            return ::rmdir(path.c_str()) == 0 ? rc : -1;
        }
        return ::unlink(path.c_str());
    }
    const checkpoint_hooks& h_;
};

struct manifest_entry {
    std::string name;
    std::uint64_t bytes = 0;
    std::string sha256;
};

inline std::string manifest_text(std::int64_t step, const std::vector<manifest_entry>& files) {
    nlohmann::json f = nlohmann::json::object();
    for (const auto& e : files) f[e.name] = {{"bytes", e.bytes}, {"sha256", e.sha256}};
    const nlohmann::json m = {{"format", manifest_format}, {"version", manifest_version}, {"step", step}, {"files", f}};
    return m.dump(1, ' ', false, nlohmann::json::error_handler_t::strict) + "\n";
}

/// SHA-256 of a whole file read with read(2) (no mmap: a file truncated meanwhile gives an error,
/// not SIGBUS); `expect_bytes` must be its size.
inline std::string hash_file(const std::string& path, std::uint64_t expect_bytes) {
    io::detail::fd_closer f;
    f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ALIGNGPT_CHECK(f.fd >= 0, path, ": ",
                   errno == ENOENT ? "missing (listed in the manifest)" : "cannot open: " + errno_text(errno));
    struct stat st {};
    ALIGNGPT_CHECK(::fstat(f.fd, &st) == 0, path, ": cannot stat: ", errno_text(errno));
    ALIGNGPT_CHECK(S_ISREG(st.st_mode), path, ": not a regular file");
    const auto size = std::uint64_t(st.st_size);
    ALIGNGPT_CHECK(size == expect_bytes, path, ": ", size < expect_bytes ? "truncated" : "longer than written", ": ", size,
                   " bytes, the manifest says ", expect_bytes, " (file damaged)");
    sha256 h;
    const std::size_t cap = std::size_t(std::clamp<std::uint64_t>(size, 1, std::uint64_t(1) << 20));
    const std::unique_ptr<char[]> buf(new char[cap]);  // not zero-filled: read() fills what is used
    std::uint64_t got = 0;
    while (got < size) {
        const ssize_t r = ::read(f.fd, buf.get(), std::size_t(std::min<std::uint64_t>(cap, size - got)));
        if (r < 0 && errno == EINTR) continue;
        ALIGNGPT_CHECK(r > 0, path, ": read failed after ", got, " of ", size,
                       " bytes: ", r == 0 ? std::string("unexpected end of file") : errno_text(errno));
        h.update(buf.get(), std::size_t(r));
        got += std::uint64_t(r);
    }
    return h.hex();
}

/// Reads and checks DIR/manifest.json for a directory named checkpoint-<step>.
inline std::vector<manifest_entry> read_manifest(const std::string& dir, std::int64_t step) {
    const std::string path = join(dir, manifest_name);
    struct stat st {};
    ALIGNGPT_CHECK(::lstat(path.c_str(), &st) == 0, path, ": ",
                   errno == ENOENT ? "missing (the save did not finish)" : "cannot stat: " + errno_text(errno));
    const std::string text = io::read_text_file(path, max_manifest_bytes);
    io::json_parse_options opt;
    opt.refuse_duplicate_keys = true;
    opt.max_depth = 4;
    opt.max_bytes = max_manifest_bytes;
    const nlohmann::json m = io::parse_json(text, path, opt);
    const auto bad = [&](const auto&... why) { fail(path, ": ", why..., " (manifest damaged or not ours)"); };
    if (!m.is_object() || m.size() != 4 || !m.contains("format") || !m.contains("version") || !m.contains("step") ||
        !m.contains("files"))
        bad("expected exactly the fields format, version, step, files");
    if (m["format"] != manifest_format)
        bad("field 'format' is ", io::detail::json_text(m["format"]), ", expected \"", manifest_format, "\"");
    const auto version = io::detail::json_int64(m["version"]);
    if (!version) bad("field 'version' is ", io::detail::json_text(m["version"]), ", expected an integer");
    ALIGNGPT_CHECK(*version == manifest_version, path, ": format version ", *version, " is not supported (this build reads ",
                   manifest_version, ")");
    const auto s = io::detail::json_int64(m["step"]);
    if (!s || *s != step) bad("field 'step' is ", io::detail::json_text(m["step"]), " but the directory is checkpoint-", step);
    const nlohmann::json& files = m["files"];
    if (!files.is_object() || files.empty() || files.size() > max_manifest_files)
        bad("field 'files' must be an object of 1 to ", max_manifest_files, " entries");
    std::vector<manifest_entry> out;
    for (auto it = files.begin(); it != files.end(); ++it) {
        const std::string& name = it.key();
        const std::string where = "files." + io::detail::json_quoted(name, 80);
        if (!plain_file_name(name) || name == manifest_name) bad(where, ": not a plain file name");
        const nlohmann::json& e = it.value();
        if (!e.is_object() || e.size() != 2 || !e.contains("bytes") || !e.contains("sha256"))
            bad(where, ": expected exactly the fields bytes, sha256");
        if (!e["bytes"].is_number_unsigned() && !(e["bytes"].is_number_integer() && e["bytes"].get<std::int64_t>() >= 0))
            bad(where, ".bytes: ", io::detail::json_text(e["bytes"]), " is not a byte count");
        const nlohmann::json& h = e["sha256"];
        if (!h.is_string() || h.get_ref<const std::string&>().size() != 64 ||
            h.get_ref<const std::string&>().find_first_not_of("0123456789abcdef") != std::string::npos)
            bad(where, ".sha256: ", io::detail::json_text(h), " is not 64 lowercase hex digits");
        out.push_back({name, e["bytes"].get<std::uint64_t>(), h.get<std::string>()});
    }
    // Canonical form: any byte change that still parses must change a value checked above or below.
    if (manifest_text(step, out) != text) bad("not in the canonical form this writer produces");
    return out;
}

inline std::atomic<unsigned>& staging_counter() {
    static std::atomic<unsigned> n{0};
    return n;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Reading.

/// A checkpoint directory whose manifest, sizes and hashes verified.
class checkpoint {
public:
    /// Verifies DIR (named checkpoint-<N>) and returns it; the error names the file and the reason.
    static checkpoint open(const std::string& dir) {
        const auto slash = dir.find_last_of('/');
        const std::string base = slash == std::string::npos ? dir : dir.substr(slash + 1);
        const auto step = detail::checkpoint_step(base);
        ALIGNGPT_CHECK(step, dir, ": not a checkpoint directory name (expected checkpoint-<step>)");
        checkpoint c;
        c.dir_ = dir;
        c.step_ = *step;
        c.files_ = detail::read_manifest(dir, *step);
        for (const auto& f : c.files_) {
            const std::string path = detail::join(dir, f.name);
            const std::string h = detail::hash_file(path, f.bytes);
            ALIGNGPT_CHECK(h == f.sha256, path, ": sha256 mismatch (file damaged): the manifest says ", f.sha256,
                           ", the file has ", h);
        }
        return c;
    }

    const std::string& dir() const { return dir_; }
    std::int64_t step() const { return step_; }
    std::vector<std::string> files() const {
        std::vector<std::string> out;
        for (const auto& f : files_) out.push_back(f.name);
        return out;
    }
    bool has(std::string_view name) const {
        return std::any_of(files_.begin(), files_.end(), [&](const auto& f) { return f.name == name; });
    }
    /// The path of a listed file (an error names the checkpoint and the file when it is not listed).
    std::string path(std::string_view name) const {
        ALIGNGPT_CHECK(has(name), dir_, ": no file ", io::detail::quote_name(name), " in this checkpoint's manifest");
        return detail::join(dir_, std::string(name));
    }
    io::safetensors_file tensors(std::string_view name) const { return io::safetensors_file::open(path(name)); }
    nlohmann::json json(std::string_view name, std::uint64_t max_bytes = std::uint64_t(64) << 20) const {
        io::json_parse_options opt;
        opt.max_bytes = max_bytes;
        opt.refuse_duplicate_keys = true;
        return io::read_json_file(path(name), opt);
    }
    std::string bytes(std::string_view name, std::uint64_t max_bytes = std::uint64_t(1) << 30) const {
        return io::read_text_file(path(name), max_bytes);
    }

private:
    std::string dir_;
    std::int64_t step_ = 0;
    std::vector<detail::manifest_entry> files_;
};

/// What find_resumable passed over, newest first, and what it chose.
struct resume_report {
    struct skipped {
        std::string dir;     ///< OUT/checkpoint-<N>
        std::string reason;  ///< the verification error: names the file and what is wrong with it
    };
    std::vector<skipped> skipped_dirs;
    std::optional<std::string> chosen;  ///< the directory returned, if any

    /// One line per skipped checkpoint, then "falling back to checkpoint-N" (or "resuming from",
    /// or that there is none).
    std::string text() const {
        std::string out;
        for (const auto& s : skipped_dirs) out += "skipping " + s.dir + ": " + s.reason + "\n";
        if (chosen) {
            const auto slash = chosen->find_last_of('/');
            out += std::string(skipped_dirs.empty() ? "resuming from " : "falling back to ") +
                   (slash == std::string::npos ? *chosen : chosen->substr(slash + 1)) + "\n";
        } else if (!skipped_dirs.empty()) {
            out += "no checkpoint verifies: starting from scratch\n";
        }
        return out;
    }
};

/// The newest OUT/checkpoint-<N> that verifies (nullopt: none, or OUT does not exist). Other
/// names, tmp-checkpoint-* included, are never considered.
inline std::optional<checkpoint> find_resumable(const std::string& output_dir, resume_report* report = nullptr) {
    resume_report local;
    resume_report& r = report ? *report : local;
    r = {};
    struct stat st {};
    if (::stat(output_dir.c_str(), &st) != 0 && errno == ENOENT) return std::nullopt;
    std::vector<std::pair<std::int64_t, std::string>> found;
    for (const std::string& n : detail::list_dir(output_dir))
        if (auto s = detail::checkpoint_step(n)) found.emplace_back(*s, n);
    std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (const auto& [step, name] : found) {
        const std::string dir = detail::join(output_dir, name);
        try {
            struct stat ds {};
            ALIGNGPT_CHECK(::lstat(dir.c_str(), &ds) == 0 && S_ISDIR(ds.st_mode), dir, ": not a directory");
            checkpoint c = checkpoint::open(dir);
            r.chosen = dir;
            return c;
        } catch (const aligngpt::error& e) { r.skipped_dirs.push_back({dir, e.what()}); }
    }
    return std::nullopt;
}

/// Deletes OUT/tmp-checkpoint-* (saves that never finished, and old checkpoints renamed aside);
/// returns their paths. Call at start-up, before the first save.
inline std::vector<std::string> remove_stale_staging(const std::string& output_dir, const checkpoint_hooks& hooks = {}) {
    std::vector<std::string> removed;
    struct stat st {};
    if (::stat(output_dir.c_str(), &st) != 0 && errno == ENOENT) return removed;
    detail::hooked_fs fs(hooks);
    for (const std::string& n : detail::list_dir(output_dir))
        if (detail::is_staging_name(n)) {
            fs.remove_tree(detail::join(output_dir, n));
            removed.push_back(detail::join(output_dir, n));
        }
    return removed;
}

// ---------------------------------------------------------------------------------------------
// Writing.

struct tensor_save_options {
    /// NaN/Inf in float and double tensors are refused by default (F6: a checkpoint never holds
    /// non-finite parameters); set for files that may hold them legitimately.
    bool allow_nonfinite = false;
};

/// One checkpoint being written. Any failure removes the staging dir and leaves the writer
/// unusable; destroying an uncommitted writer removes it too.
class checkpoint_writer {
public:
    checkpoint_writer(std::string output_dir, std::int64_t step, checkpoint_hooks hooks = {})
        : out_(std::move(output_dir)), step_(step), hooks_(std::move(hooks)), fs_(hooks_) {
        ALIGNGPT_CHECK(step >= 0, out_, ": checkpoint step ", step, " is negative");
        while (out_.size() > 1 && out_.back() == '/') out_.pop_back();
        staging_ = detail::join(out_, "tmp-checkpoint-" + std::to_string(step) + "-" + std::to_string(::getpid()) + "-" +
                                          std::to_string(detail::staging_counter()++));
        struct stat st {};
        if (::stat(out_.c_str(), &st) != 0 && errno == ENOENT) {
            std::error_code ec;
            std::filesystem::create_directories(out_, ec);
            ALIGNGPT_CHECK(!ec, out_, ": cannot create the output directory: ", ec.message());
        }
        fs_.mkdir(staging_);
    }
    checkpoint_writer(const checkpoint_writer&) = delete;
    checkpoint_writer& operator=(const checkpoint_writer&) = delete;
    ~checkpoint_writer() {
        if (state_ != state::committed) detail::hooked_fs::remove_quietly(staging_);
    }

    const std::string& staging_dir() const { return staging_; }
    std::string final_dir() const { return detail::join(out_, "checkpoint-" + std::to_string(step_)); }

    /// Writes FILE as safetensors from {name, tensor<T>} pairs (a std::map, or a vector of
    /// std::pair), laid out as io::safetensors_writer does: by decreasing element size, then name,
    /// after a header padded with spaces to a multiple of 8. Each tensor is copied to the host once,
    /// as it is written (no copy of the whole file in memory).
    template <class Named>
    void add_tensors(const std::string& file, const Named& named, tensor_save_options opt = {}) {
        using tensor_type = std::remove_cvref_t<decltype(std::begin(named)->second)>;
        using T = typename tensor_type::value_type;
        guarded(file, false, [&] {
            std::vector<std::pair<std::string_view, const tensor_type*>> items;
            for (const auto& [name, t] : named) {
                const std::string_view n = name;
                ALIGNGPT_CHECK(!n.empty() && n.size() <= 65536 && n != "__metadata__" && n.find('\0') == std::string_view::npos &&
                                   io::detail::utf8_error_at(n) == std::string_view::npos,
                               detail::join(staging_, file), ": tensor ", io::detail::quote_name(name),
                               ": invalid name (must be non-empty UTF-8, no NUL, <= 64 KiB, not __metadata__)");
                items.emplace_back(name, &t);
            }
            std::sort(items.begin(), items.end());  // one dtype: the writer's order is by name
            nlohmann::json h = nlohmann::json::object();
            std::uint64_t off = 0;
            for (std::size_t i = 0; i < items.size(); i++) {
                ALIGNGPT_CHECK(i == 0 || items[i].first != items[i - 1].first, detail::join(staging_, file), ": tensor ",
                               io::detail::quote_name(items[i].first), " given twice");
                const std::uint64_t bytes = std::uint64_t(items[i].second->numel()) * sizeof(T);
                h[std::string(items[i].first)] = {{"dtype", io::dtype_name(io::dtype_of<T>())},
                                                  {"shape", items[i].second->shape()},
                                                  {"data_offsets", {off, off + bytes}}};
                off += bytes;
            }
            std::string header = h.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
            header.append((8 - header.size() % 8) % 8, ' ');
            const std::uint64_t n = header.size();
            file_out f(*this, file);
            f.write(&n, 8);
            f.write(header.data(), header.size());
            for (const auto& [name, t] : items) {
                const std::vector<T> v = t->to_vector();
                if constexpr (std::is_floating_point_v<T>) {
                    if (!opt.allow_nonfinite)
                        for (std::size_t i = 0; i < v.size(); i++)
                            ALIGNGPT_CHECK(std::isfinite(v[i]), detail::join(staging_, file), ": tensor ",
                                           io::detail::quote_name(name), " holds ", v[i], " at element ", i, " of ", v.size(),
                                           ": a checkpoint must never hold non-finite values (F6; set "
                                           "allow_nonfinite for a file that is not parameters)");
                }
                f.write(v.data(), v.size() * sizeof(T));
            }
            f.finish();
        });
    }

    void add_json(const std::string& file, const nlohmann::json& j) {
        guarded(file, false, [&] {
            std::string text;
            try {
                text = j.dump(1, ' ', false, nlohmann::json::error_handler_t::strict) + "\n";
            } catch (const std::exception& e) { fail(detail::join(staging_, file), ": cannot serialise JSON: ", e.what()); }
            file_out f(*this, file);
            f.write(text.data(), text.size());
            f.finish();
        });
    }

    void add_bytes(const std::string& file, std::string_view bytes) {
        guarded(file, false, [&] {
            file_out f(*this, file);
            f.write(bytes.data(), bytes.size());
            f.finish();
        });
    }

    /// Writes the manifest, publishes OUT/checkpoint-<step>, then keeps only the newest
    /// `keep_total_limit` checkpoints at or below this step (0: keep all) and removes stale
    /// staging dirs. Returns the checkpoint's path.
    std::string commit(std::size_t keep_total_limit = 0) {
        std::optional<std::string> replaced;
        guarded(detail::manifest_name, true, [&] {
            ALIGNGPT_CHECK(!files_.empty(), staging_, ": a checkpoint needs at least one file");
            const std::string text = detail::manifest_text(step_, files_);
            file_out f(*this, detail::manifest_name, /*listed=*/false);
            f.write(text.data(), text.size());
            f.finish();
            fs_.fsync_dir(staging_);
            const std::string dst = final_dir();
            struct stat st {};
            if (::lstat(dst.c_str(), &st) == 0) {
                // Replace: swap atomically (there is always a checkpoint-<step>); where the file
                // system cannot, move the old one aside first and back if the second rename fails.
                if (fs_.exchange(staging_, dst)) {
                    state_ = state::committed;
                    replaced = staging_;  // now holds the old checkpoint
                } else {
                    const std::string aside = staging_ + "-old";
                    fs_.rename(dst, aside);
                    try {
                        fs_.rename(staging_, dst);
                    } catch (...) {
                        (void)::rename(aside.c_str(), dst.c_str());
                        throw;
                    }
                    state_ = state::committed;
                    replaced = aside;
                }
            } else {
                fs_.rename(staging_, dst);
                state_ = state::committed;
            }
        });
        // Published. A failure from here on is reported, but the new checkpoint stays: it is complete.
        const std::string dst = final_dir();
        try {
            fs_.fsync_dir(out_);
            if (replaced) fs_.remove_tree(*replaced);
            if (keep_total_limit > 0) prune(keep_total_limit);
            remove_stale_staging(out_, hooks_);
        } catch (const aligngpt::error& e) { fail(dst, " was saved complete, but the steps after it failed: ", e.what()); }
        return dst;
    }

private:
    enum class state { open, failed, committed };

    /// One file of the checkpoint: written as FILE.tmp, hashed as written, then fsync, close, rename.
    class file_out {
    public:
        file_out(checkpoint_writer& w, const std::string& name, bool listed = true) : w_(w), name_(name), listed_(listed) {
            path_ = detail::join(w.staging_, name);
            tmp_ = path_ + ".tmp";
            fd_ = w.fs_.create(tmp_);
        }
        ~file_out() {
            if (fd_ >= 0) ::close(fd_);
        }
        void write(const void* p, std::size_t n) {
            hash_.update(p, n);
            w_.fs_.write(fd_, tmp_, p, n, offset_);
        }
        void finish() {
            w_.fs_.fsync_file(fd_, tmp_);
            w_.fs_.close(fd_, tmp_);
            w_.fs_.rename(tmp_, path_);
            if (listed_) w_.files_.push_back({name_, offset_, hash_.hex()});
        }

    private:
        checkpoint_writer& w_;
        std::string name_, path_, tmp_;
        bool listed_;
        int fd_ = -1;
        std::uint64_t offset_ = 0;
        sha256 hash_;
    };

    /// Runs one add/commit step; on any error the staging dir goes and the writer is spent.
    template <class F>
    void guarded(const std::string& file, bool manifest, F body) {
        ALIGNGPT_CHECK(state_ == state::open, staging_, ": checkpoint writer used after ",
                       state_ == state::failed ? "a failed step" : "commit");
        try {
            if (!manifest) {
                ALIGNGPT_CHECK(detail::plain_file_name(file) && file != detail::manifest_name && !file.ends_with(".tmp"),
                               staging_, ": invalid checkpoint file name ", io::detail::quote_name(file),
                               " (one path component, not manifest.json, not ending in .tmp)");
                ALIGNGPT_CHECK(std::none_of(files_.begin(), files_.end(), [&](const auto& e) { return e.name == file; }),
                               staging_, ": file ", io::detail::quote_name(file), " added twice");
            }
            body();
        } catch (...) {
            if (state_ != state::committed) {
                state_ = state::failed;
                detail::hooked_fs::remove_quietly(staging_);
            }
            throw;
        }
    }

    /// Deletes checkpoints beyond the newest `keep` at or below this step: renamed aside to a
    /// tmp-checkpoint-* name first (atomic), then removed. Higher steps belong to a run this one
    /// was resumed before, and are left alone.
    void prune(std::size_t keep) {
        std::vector<std::pair<std::int64_t, std::string>> mine;
        for (const std::string& n : detail::list_dir(out_))
            if (auto s = detail::checkpoint_step(n); s && *s <= step_) mine.emplace_back(*s, n);
        std::sort(mine.begin(), mine.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
        for (std::size_t i = keep; i < mine.size(); i++) {
            const std::string dir = detail::join(out_, mine[i].second);
            const std::string aside =
                detail::join(out_, "tmp-checkpoint-" + std::to_string(mine[i].first) + "-delete-" + std::to_string(::getpid()) +
                                       "-" + std::to_string(detail::staging_counter()++));
            fs_.rename(dir, aside);
            fs_.remove_tree(aside);
        }
    }

    std::string out_, staging_;
    std::int64_t step_;
    checkpoint_hooks hooks_;
    detail::hooked_fs fs_;
    state state_ = state::open;
    std::vector<detail::manifest_entry> files_;
};

// ---------------------------------------------------------------------------------------------
// Resuming with a different configuration (F9).

/// Compares `fields` (dotted paths: "model.hidden_size", "stage") of the configuration saved in a
/// checkpoint and the current one; throws one error that lists every field that differs, with
/// both values (a field missing on one side differs). `where` names the checkpoint file.
inline void refuse_mismatch(const nlohmann::json& saved, const nlohmann::json& current, const std::vector<std::string>& fields,
                            const std::string& where) {
    const auto lookup = [](const nlohmann::json& j, const std::string& path) -> const nlohmann::json* {
        const nlohmann::json* p = &j;
        std::size_t start = 0;
        while (true) {
            const std::size_t dot = path.find('.', start);
            const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
            if (!p->is_object() || !p->contains(key)) return nullptr;
            p = &(*p)[key];
            if (dot == std::string::npos) return p;
            start = dot + 1;
        }
    };
    const auto show = [](const nlohmann::json* v) { return v ? io::detail::json_text(*v) : std::string("(missing)"); };
    std::string diff;
    std::size_t n = 0;
    for (const std::string& field : fields) {
        const nlohmann::json* a = lookup(saved, field);
        const nlohmann::json* b = lookup(current, field);
        if (a && b && *a == *b) continue;
        if (!a && !b) continue;
        diff += "\n  " + field + ": saved " + show(a) + ", now " + show(b);
        n++;
    }
    ALIGNGPT_CHECK(n == 0, where, ": refusing to resume: ", n, " field", n == 1 ? "" : "s",
                   " of the saved configuration differ from this run's:", diff);
}

}  // namespace aligngpt::train
