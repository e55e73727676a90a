#pragma once
// A minimal PNG writer (PNG spec, ISO/IEC 15948): 8-bit RGB, no filtering, and zlib (RFC 1950)
// holding stored deflate blocks (RFC 1951 sec. 3.2.4), so no compressor is needed and the bytes are
// a pure function of the pixels. Files are larger than a compressor's (3 bytes a pixel plus 5 per
// 64 KiB block); every PNG reader accepts them. Used for the level histogram (train/levels.h) and
// the images of the procedural world (world/world.h).
//
//   std::vector<std::uint8_t> rgb(std::size_t(W) * H * 3);   // row-major, R G B per pixel
//   io::write_png("out.png", W, H, rgb);                        // atomic: tmp, fsync, rename
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/zip.h"  // detail::crc32

namespace aligngpt::io {

/// The bytes of an 8-bit RGB PNG of W x H pixels; rgb holds W*H*3 bytes, row-major.
inline std::string png_bytes(int W, int H, const std::vector<std::uint8_t>& rgb) {
    ALIGNGPT_CHECK(W > 0 && H > 0 && W <= (1 << 24) && H <= (1 << 24), "png: bad size ", W, "x", H);
    ALIGNGPT_CHECK(rgb.size() == std::size_t(W) * std::size_t(H) * 3, "png: ", rgb.size(), " bytes for ", W, "x", H,
                   " RGB pixels (need ", std::size_t(W) * std::size_t(H) * 3, ")");
    const auto be32 = [](std::string& s, std::uint32_t v) {
        for (int k = 3; k >= 0; k--) s += char((v >> (8 * k)) & 0xFF);
    };
    const auto chunk = [&](std::string& out, const char* type, const std::string& data) {
        be32(out, std::uint32_t(data.size()));
        const std::string body = std::string(type, 4) + data;
        out += body;
        be32(out, io::detail::crc32(body.data(), body.size()));
    };
    std::string raw;  // each row: filter type 0 (none), then the pixels
    raw.reserve((std::size_t(W) * 3 + 1) * std::size_t(H));
    for (int y = 0; y < H; y++)
        raw += '\0',
            raw.append(reinterpret_cast<const char*>(rgb.data()) + std::size_t(y) * std::size_t(W) * 3, std::size_t(W) * 3);
    std::string z = "\x78\x01";  // zlib header: deflate, 32 KiB window, no dictionary
    std::uint32_t a = 1, b = 0;  // adler32
    for (unsigned char c : raw) a = (a + c) % 65521, b = (b + a) % 65521;
    for (std::size_t i = 0; i < raw.size(); i += 65535) {  // stored blocks hold at most 65535 bytes
        const std::size_t n = std::min<std::size_t>(65535, raw.size() - i);
        z += char(i + n >= raw.size() ? 1 : 0);  // BFINAL on the last block, BTYPE 00
        z += char(n & 0xFF), z += char(n >> 8), z += char(~n & 0xFF), z += char((~n >> 8) & 0xFF);
        z.append(raw, i, n);
    }
    be32(z, (b << 16) | a);
    std::string ihdr;
    be32(ihdr, std::uint32_t(W)), be32(ihdr, std::uint32_t(H));
    ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8 bits, RGB, deflate, no filter, no interlace
    std::string out = "\x89PNG\r\n\x1a\n";
    chunk(out, "IHDR", ihdr);
    chunk(out, "IDAT", z);
    chunk(out, "IEND", "");
    return out;
}

/// Writes png_bytes(W, H, rgb) to `path` atomically (io::atomic_file: a crash leaves the old file
/// or the new one).
inline void write_png(const std::string& path, int W, int H, const std::vector<std::uint8_t>& rgb) {
    const std::string bytes = png_bytes(W, H, rgb);
    atomic_file f(path);
    f.write(bytes.data(), bytes.size());
    f.commit();
}

}  // namespace aligngpt::io
