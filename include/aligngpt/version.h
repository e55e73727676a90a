#pragma once
// The library's version (CHANGELOG.md). Written here by hand, not generated, so that the headers work
// as they are: from the source tree, after `cmake --install`, with add_subdirectory, or copied into
// another project. CMakeLists.txt's project(VERSION) must equal it; configuring fails when the two
// differ, so the CMake package, the pkg-config files, `aligngpt --version` and this header agree.
#define ALIGNGPT_VERSION_MAJOR 0
#define ALIGNGPT_VERSION_MINOR 1
#define ALIGNGPT_VERSION_PATCH 0

#define ALIGNGPT_VERSION_STR_(x) #x
#define ALIGNGPT_VERSION_XSTR_(x) ALIGNGPT_VERSION_STR_(x)
/// "MAJOR.MINOR.PATCH", e.g. "0.1.0"
#define ALIGNGPT_VERSION                           \
    ALIGNGPT_VERSION_XSTR_(ALIGNGPT_VERSION_MAJOR) \
    "." ALIGNGPT_VERSION_XSTR_(ALIGNGPT_VERSION_MINOR) "." ALIGNGPT_VERSION_XSTR_(ALIGNGPT_VERSION_PATCH)
