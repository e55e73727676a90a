#pragma once
// stb_image (Debian libstb-dev, v2.27), compiled into every translation unit that includes this
// header, with internal linkage (STB_IMAGE_STATIC): each TU gets its own private copy, so a
// header-only library needs no .c file and there is no ODR clash between TUs.
//
// Hardening (docs/model.md §11.4):
//   * STBI_ONLY_PNG + STBI_ONLY_JPEG: the GIF/BMP/PSD/TGA/HDR/PIC/PNM decoders, where most of the
//     published stb_image CVEs are, are not compiled at all;
//   * STBI_NO_STDIO: the caller reads the file (with a size cap) and decodes from memory;
//   * STBI_MAX_DIMENSIONS lowered from 1 << 24 to 1 << 20;
//   * every allocation stb_image makes goes through stb_malloc/stb_realloc below, which refuse any
//     single block larger than the bound the caller sets for the image being decoded (a zlib bomb
//     in a PNG, or an IDAT length claim, cannot allocate more than the image needs);
//   * STBI_ASSERT throws aligngpt::error instead of aborting (R2: no abort on bad input; the
//     blocks stb_image had allocated leak in that case, which is the lesser evil).
//
// A TU that also uses stb_image directly must include it after this header (it then sees this
// static, PNG+JPEG-only build); including stb_image.h before this header is refused below.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "aligngpt/config.h"

#if defined(STBI_INCLUDE_STB_IMAGE_H) && !defined(ALIGNGPT_STB_IMAGE_INCLUDED)
#error "aligngpt: include aligngpt/io/image.h before stb_image.h (aligngpt builds its own static, PNG+JPEG-only stb_image)"
#endif

namespace aligngpt::io::detail {

/// Largest single block stb_image may allocate on this thread (set per image by decode_image).
inline thread_local std::size_t stb_alloc_cap = std::numeric_limits<std::size_t>::max();
/// Size of the last refused request on this thread (0 if none), for the error message.
inline thread_local std::size_t stb_alloc_refused = 0;

inline void* stb_malloc(std::size_t n) {
    if (n > stb_alloc_cap) {
        stb_alloc_refused = n;
        return nullptr;
    }
    return std::malloc(n);
}
inline void* stb_realloc(void* p, std::size_t n) {
    if (n > stb_alloc_cap) {
        stb_alloc_refused = n;
        return nullptr;
    }
    return std::realloc(p, n);
}
inline void stb_free(void* p) { std::free(p); }
[[noreturn]] inline void stb_assert_failed(const char* what) {
    fail("stb_image: internal assertion failed (", what, "); the image is malformed");
}

}  // namespace aligngpt::io::detail

#define ALIGNGPT_STB_IMAGE_INCLUDED 1
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS (1 << 20)
#define STBI_MALLOC(sz) ::aligngpt::io::detail::stb_malloc(sz)
#define STBI_REALLOC(p, sz) ::aligngpt::io::detail::stb_realloc(p, sz)
#define STBI_FREE(p) ::aligngpt::io::detail::stb_free(p)
#define STBI_ASSERT(x) ((x) ? (void)0 : ::aligngpt::io::detail::stb_assert_failed(#x))

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

#if defined(ALIGNGPT_STB_IMAGE_HEADER)
#include ALIGNGPT_STB_IMAGE_HEADER
#elif __has_include(<stb/stb_image.h>)
#include <stb/stb_image.h>  // Debian/Ubuntu libstb-dev
#else
#include <stb_image.h>
#endif

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
