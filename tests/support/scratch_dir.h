#pragma once
// Test support: the directory tests write their scratch files to.
//
// ctest runs a repro test case twice at once: as its own test and inside repro_isa_<isa>, which
// runs every repro case again with the kernels forced onto one instruction set. Two processes
// emptying and filling the same directory lose each other's files, so repro_isa_<isa> gives its
// process a directory of its own through the environment.
#include <cstdlib>
#include <filesystem>
#include <string>

namespace support {

/// $ALIGNGPT_TEST_TMP when set and not empty, else the build tree's tests/tmp; created on first use.
inline const std::string& scratch_dir() {
    static const std::string dir = [] {
        const char* env = std::getenv("ALIGNGPT_TEST_TMP");
        std::string d = env != nullptr && *env != '\0' ? std::string(env) : std::string(ALIGNGPT_TEST_TMP_DEFAULT);
        std::filesystem::create_directories(d);
        return d;
    }();
    return dir;
}

}  // namespace support
