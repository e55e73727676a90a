#pragma once
// What every fuzz target shares (tests/fuzz/README.md says how they are built and run).
//
// A target feeds the bytes to a reader's public entry point and accepts exactly one outcome
// besides success: an aligngpt::error whose message names the file (R1). Anything else is a
// finding and aborts: another exception type escaping (std::bad_alloc, a nlohmann exception,
// std::length_error), a message that does not name the file, or a sanitizer report.
//
// Readers that only take a path get the bytes through a file in a per-process scratch
// directory, rewritten on every input and removed at exit.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "aligngpt/config.h"

namespace aligngpt::fuzz {

/// This process's scratch directory (created on first use, removed at exit).
inline const std::string& scratch_dir() {
    struct dir {
        std::string path;
        dir() {
            std::string tmpl = (std::filesystem::temp_directory_path() / "aligngpt-fuzz-XXXXXX").string();
            if (!::mkdtemp(tmpl.data())) {
                std::perror("aligngpt fuzz: mkdtemp");
                std::abort();
            }
            path = tmpl;
        }
        ~dir() {
            std::error_code ec;
            std::filesystem::remove_all(path, ec);
        }
    };
    static const dir d;
    return d.path;
}

/// Writes `bytes` to scratch_dir()/name and returns the path.
inline std::string put_file(const std::string& name, std::string_view bytes) {
    const std::string path = scratch_dir() + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    if (!out.flush()) {
        std::fprintf(stderr, "aligngpt fuzz: cannot write %s\n", path.c_str());
        std::abort();
    }
    return path;
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

/// Reads every tensor of an opened weight file as float: the conversions, and for a .bin the
/// gathering of strided views, run on what the header claims.
template <class File>
void read_every_tensor(const File& f) {
    for (const auto& t : f.tensors()) (void)f.template read_as<float>(t.name);
}

/// Runs `f`; a refusal is fine if its message names `who` (the file), anything else escapes.
/// ALIGNGPT_FUZZ_VERBOSE=1 prints each refusal (to see why a seed does not get far).
template <class F>
void expect_ok_or_refused(std::string_view who, F&& f) {
    static const bool verbose = std::getenv("ALIGNGPT_FUZZ_VERBOSE") != nullptr;
    try {
        f();
        if (verbose) std::fprintf(stderr, "  accepted\n");
    } catch (const aligngpt::error& e) {
        if (verbose) std::fprintf(stderr, "  refused: %.300s\n", e.what());
        if (std::string_view(e.what()).find(who) == std::string_view::npos) {
            std::fprintf(stderr, "aligngpt fuzz: error message does not name \"%.*s\":\n%s\n", int(who.size()), who.data(),
                         e.what());
            std::abort();
        }
    }
}

}  // namespace aligngpt::fuzz
