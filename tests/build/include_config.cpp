// Compiled by the build.* tests in tests/build/CMakeLists.txt: with -ffast-math or -Ofast,
// aligngpt/config.h must stop the build with its #error.
#include "aligngpt/config.h"

int main() { return aligngpt::max_threads() > 0 ? 0 : 1; }
