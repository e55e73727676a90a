// A downstream program: built against the installed package (find_package/), the source tree
// (subdirectory/) and pkg-config (Makefile) by tests/consumer/run_install_test.cmake.
#include <aligngpt/config.h>

#include <Eigen/Core>  // include paths of aligngpt's dependencies must come with it
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string_view>

#if defined(CONSUMER_EXPECT_OPENMP) && !defined(_OPENMP)
#error "aligngpt::openmp (or aligngpt-openmp.pc) did not enable OpenMP"
#endif
// The header's version is the package's: CMake's aligngpt_VERSION, or pkg-config --modversion.
#if !defined(CONSUMER_EXPECT_VERSION)
#error "the consumer build must pass CONSUMER_EXPECT_VERSION"
#endif
static_assert(std::string_view(ALIGNGPT_VERSION) == CONSUMER_EXPECT_VERSION,
              "aligngpt/version.h disagrees with the package version");
#if defined(__FAST_MATH__)
#error "unreachable: config.h refuses fast-math"
#endif

int main() {
    const Eigen::Matrix2f m = Eigen::Matrix2f::Identity();
    const nlohmann::json j = {{"version", ALIGNGPT_VERSION}, {"threads", aligngpt::max_threads()}};
    std::printf("aligngpt consumer ok: %s\n", j.dump().c_str());
    return m.trace() == 2.0f ? 0 : 1;
}
