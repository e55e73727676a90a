#pragma once
// Images in: decoding (PNG, JPEG) and the CLIP preprocessing of the reference (docs/model.md §2).
//
//   rgb_image img = io::load_image("cat.jpg");                         // 8-bit RGB, HWC
//   auto cfg = io::clip_image_processor_config::from_json_file("preprocessor_config.json");
//   cfg.aspect = io::parse_aspect_mode(model_config["image_aspect_ratio"]);   // "pad" or other
//   tensor<float> x = io::clip_preprocess(img, cfg, "cat.jpg");       // [3, 336, 336]
//
// Decoding: stb_image 2.27 (PNG and JPEG only, see detail/stb_image_impl.h), from memory. Before
// any pixel is decoded the header is read (stbi_info) and images with a zero side or more pixels
// than image_limits::max_pixels are refused (R4: no large allocation from a tiny file). PNG chunk
// lengths and JPEG marker segments are checked against the file, files cut short are refused
// (Pillow also refuses them: "image file is truncated"), and JPEG Huffman tables are checked for
// the overflow stb_image 2.27 has (v2.28 fixed it). Errors name the file.
//
// Output is always 8-bit RGB, as `PIL.Image.open(f).convert("RGB")`:
//   * RGBA / gray+alpha: alpha dropped (no compositing), gray replicated: same as Pillow;
//   * palette (with or without tRNS), 1/2/4-bit gray: same as Pillow;
//   * 16-bit RGB(A) PNG: the high byte of each sample: same as Pillow (rawmode "RGB;16B");
//   * 16-bit GRAY PNG: DIFFERS. Pillow opens it as mode "I" and convert("RGB") clips the 16-bit
//     value to 255 (almost every pixel becomes white); we keep the high byte (value >> 8), which
//     is what the image shows. Convert such files to 8 bits if Pillow parity matters;
//   * JPEG: stb_image's IDCT and chroma upsampling differ from libjpeg-turbo's (Pillow's).
//     Measured on a 192x144 q90 photo-like image: 4:2:0 (Pillow's default) max 3 levels on 8.9%
//     of the bytes, same for progressive; 4:4:4 max 2 levels on 1.0% (so most of the gap is the
//     chroma upsampling); Adobe CMYK written by Pillow max 1 level on 0.13%. After preprocessing
//     that is up to 0.044 in pixel_values (tests/test_image.cpp measures it on every run);
//   * EXIF orientation, gamma (gAMA) and ICC profiles are ignored, as Pillow's open/convert do.
//
// CLIP preprocessing (transformers 4.31 CLIPImageProcessor after AlignGPT's expand2square), with
// the same bits as the reference for the same decoded pixels:
//   1. aspect pad: paste onto a square of side max(W, H) filled with int(255 * mean) at offset
//      ((S - W) // 2, (S - H) // 2); aspect square: nothing;
//   2. resize so the shortest edge is `shortest_edge`, long side int(size * long / short), with
//      Pillow's resampler (resample.h), bit for bit;
//   3. centre crop crop_h x crop_w at ((h - crop_h) // 2, (w - crop_w) // 2) (zero pad if smaller);
//   4. v = float32(double(u8) * rescale_factor); 5. (v - float32(mean)) / float32(std) in float32;
//   6. CHW float tensor [3, crop_h, crop_w].
// Steps 1-3 run as one windowed resample (only the cropped pixels are computed; the padded square
// is never built), so memory stays O(crop + one intermediate strip) for any aspect ratio. The crop,
// the strip and the filter coefficients are each bounded by max_pixels before they are allocated,
// and out of memory is reported as an error naming the image.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/io/detail/stb_image_impl.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/resample.h"
#include "aligngpt/tensor.h"

namespace aligngpt::io {

/// Bounds applied before decoding (R4).
struct image_limits {
    std::uint64_t max_pixels = std::uint64_t(1) << 26;      // 64 Mpx (e.g. 8192 x 8192)
    std::uint64_t max_file_bytes = std::uint64_t(1) << 28;  // 256 MiB
};

enum class image_format { png, jpeg, gif, bmp, psd, tga_or_unknown, hdr, pnm, pic, tiff, webp, empty };

namespace detail {

inline const char* format_name(image_format f) {
    switch (f) {
        case image_format::png: return "PNG";
        case image_format::jpeg: return "JPEG";
        case image_format::gif: return "GIF";
        case image_format::bmp: return "BMP";
        case image_format::psd: return "PSD";
        case image_format::hdr: return "Radiance HDR";
        case image_format::pnm: return "PNM";
        case image_format::pic: return "Softimage PIC";
        case image_format::tiff: return "TIFF";
        case image_format::webp: return "WebP";
        case image_format::empty: return "empty";
        default: return "unknown";
    }
}

inline bool starts_with(const std::uint8_t* p, std::size_t n, const char* magic, std::size_t m) {
    return n >= m && std::memcmp(p, magic, m) == 0;
}

inline image_format sniff_format(const std::uint8_t* p, std::size_t n) {
    if (n == 0) return image_format::empty;
    if (starts_with(p, n, "\x89PNG\r\n\x1a\n", 8)) return image_format::png;
    if (starts_with(p, n, "\xff\xd8\xff", 3)) return image_format::jpeg;
    if (starts_with(p, n, "GIF8", 4)) return image_format::gif;
    if (starts_with(p, n, "BM", 2)) return image_format::bmp;
    if (starts_with(p, n, "8BPS", 4)) return image_format::psd;
    if (starts_with(p, n, "#?RADIANCE", 10) || starts_with(p, n, "#?RGBE", 6)) return image_format::hdr;
    if (n >= 2 && p[0] == 'P' && p[1] >= '1' && p[1] <= '7') return image_format::pnm;
    if (starts_with(p, n, "\x53\x80\xf6\x34", 4)) return image_format::pic;
    if (starts_with(p, n, "II*\0", 4) || starts_with(p, n, "MM\0*", 4)) return image_format::tiff;
    if (n >= 12 && std::memcmp(p, "RIFF", 4) == 0 && std::memcmp(p + 8, "WEBP", 4) == 0) return image_format::webp;
    return image_format::tga_or_unknown;
}

inline std::string hex_prefix(const std::uint8_t* p, std::size_t n) {
    static const char* hex = "0123456789abcdef";
    std::string s;
    for (std::size_t i = 0; i < n && i < 8; i++) {
        if (i) s += ' ';
        s += hex[p[i] >> 4];
        s += hex[p[i] & 15];
    }
    return s;
}

inline std::uint32_t be32(const std::uint8_t* p) {
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}

/// Walks the PNG chunk list: every chunk must lie inside the file and IEND must be present.
/// stb_image 2.27 grows its IDAT buffer by the claimed chunk length before reading the data.
/// An empty IDAT before any image data is refused: stb copies its 0 bytes into a buffer it has not
/// allocated yet, memcpy to a null pointer (undefined; found by the image fuzz campaign). The PNG
/// format allows it, but no encoder we know writes one.
inline void check_png_chunks(const std::uint8_t* p, std::size_t n, const std::string& name) {
    std::size_t off = 8;
    bool first = true, have_data = false;
    while (true) {
        ALIGNGPT_CHECK(n - off >= 8, name, ": truncated PNG: file ends at byte ", n,
                       " inside a chunk header, before the IEND chunk");
        const std::uint32_t len = be32(p + off);
        const std::string type(reinterpret_cast<const char*>(p + off + 4), 4);
        ALIGNGPT_CHECK(len <= 0x7fffffffu, name, ": PNG chunk ", quote_name(type), " at byte ", off, " has length ", len,
                       " > 2^31-1");
        ALIGNGPT_CHECK(!first || type == "IHDR" || type == "CgBI", name, ": PNG does not start with an IHDR chunk (found ",
                       quote_name(type), ")");
        first = false;
        ALIGNGPT_CHECK(std::uint64_t(len) + 12 <= n - off, name, ": truncated PNG: chunk ", quote_name(type), " at byte ", off,
                       " claims ", len, " data bytes but the file has ", n - off - 8 < 4 ? 0 : n - off - 12, " left");
        if (type == "IEND") return;
        if (type == "IDAT") {
            ALIGNGPT_CHECK(len > 0 || have_data, name, ": PNG chunk \"IDAT\" at byte ", off,
                           " is empty and comes before any image data (stb_image cannot read it)");
            have_data = true;
        }
        off += std::size_t(len) + 12;
    }
}

/// Walks the JPEG marker segments up to EOI as stb_image 2.27 reads them, and refuses what it
/// would read out of bounds or from uninitialised memory:
///   * a segment past the end of the file, or a file cut short (stb_image would fill the rest with
///     grey; Pillow refuses: "image file is truncated");
///   * a Huffman table (DHT) of more than 256 codes: stb writes past its 257-byte size table (fixed
///     upstream in v2.28, commit 96fe76c; found by our fuzz test);
///   * a scan that decodes with a Huffman table no DHT before it defined, or a component whose
///     quantisation table no DQT before its first scan defined (libjpeg's rule): stb does not clear
///     its tables, so decoding indexed far outside them (found by the image fuzz campaign);
///   * a frame component that no scan fills (in a progressive frame: no first DC scan, which is
///     where stb clears a block): its pixels would be uninitialised memory.
/// The Huffman tables a scan decodes with are stb's: DC and AC in a sequential frame (SOF0, SOF1);
/// in a progressive one (SOF2), DC in a first DC scan (Ss = 0, Ah = 0), none in a DC refinement,
/// AC in an AC scan (Ss > 0). Inside entropy-coded data, FF, any FF fill bytes, then 00 is one
/// stuffed FF, as in libjpeg and stb; a marker there ends the scan unless it is RSTn (a walker that
/// took FF FF 00 for a marker missed the DHT stb then read: the campaign's second JPEG finding).
inline void check_jpeg_segments(const std::uint8_t* p, std::size_t n, const std::string& name) {
    auto be16 = [&](std::size_t o) { return std::size_t(p[o]) << 8 | p[o + 1]; };
    auto truncated = [&](std::size_t off, const char* where) {
        fail(name, ": truncated JPEG: file ends at byte ", n, " ", where, " (at byte ", off, "), before the end-of-image marker");
    };
    auto is_rst = [](std::uint8_t m) { return m >= 0xd0 && m <= 0xd7; };
    struct component {
        std::uint8_t id, tq;
        bool filled;
    };
    std::vector<component> frame;  // empty until the frame header (SOF)
    std::size_t off = 2;
    bool have_scan = false, progressive = false;
    unsigned huffman[2] = {0, 0};  // bit th of huffman[tc]: Huffman table (class tc, id th) defined
    unsigned quant = 0;            // bit tq: quantisation table tq defined
    while (true) {
        if (n - off < 2) truncated(off, "before a marker");
        ALIGNGPT_CHECK(p[off] == 0xff, name, ": corrupt JPEG: expected a marker at byte ", off, ", found 0x",
                       hex_prefix(p + off, 1));
        const std::uint8_t m = p[off + 1];
        if (m == 0xff) {  // fill byte
            off++;
            continue;
        }
        if (m == 0xd9) {
            ALIGNGPT_CHECK(have_scan, name, ": corrupt JPEG: end-of-image marker at byte ", off, " before any scan");
            for (const component& c : frame)
                ALIGNGPT_CHECK(c.filled, name, ": corrupt JPEG: component ", int(c.id), " of the frame is in no ",
                               progressive ? "first DC scan" : "scan", ", so its pixels would be undefined");
            return;
        }
        if (is_rst(m) || m == 0x01) {
            off += 2;
            continue;
        }
        if (n - off < 4) truncated(off, "inside a marker segment header");
        const std::size_t len = be16(off + 2);
        ALIGNGPT_CHECK(len >= 2, name, ": corrupt JPEG: segment 0xff", hex_prefix(&m, 1), " at byte ", off, " has length ", len);
        if (n - off - 2 < len) truncated(off, "inside a marker segment");
        const std::size_t end = off + 2 + len;
        if (m == 0xc4) {  // DHT: one or more tables of 1 + 16 + sum(counts) bytes
            for (std::size_t q = off + 4; q < end;) {
                ALIGNGPT_CHECK(end - q >= 17, name, ": corrupt JPEG: Huffman table at byte ", q, " is cut by its segment");
                ALIGNGPT_CHECK((p[q] >> 4) <= 1 && (p[q] & 15) <= 3, name, ": corrupt JPEG: Huffman table class/id 0x",
                               hex_prefix(p + q, 1), " at byte ", q);
                std::size_t codes = 0;
                for (int i = 1; i <= 16; i++) codes += p[q + std::size_t(i)];
                ALIGNGPT_CHECK(codes <= 256, name, ": corrupt JPEG: Huffman table at byte ", q, " defines ", codes,
                               " codes, more than 256");
                ALIGNGPT_CHECK(end - q - 17 >= codes, name, ": corrupt JPEG: Huffman table at byte ", q,
                               " is cut by its segment");
                huffman[p[q] >> 4] |= 1u << (p[q] & 15);
                q += 17 + codes;
            }
        }
        if (m == 0xdb) {  // DQT: one or more tables of 1 + 64 bytes (8-bit) or 1 + 128 (16-bit)
            for (std::size_t q = off + 4; q < end;) {
                ALIGNGPT_CHECK((p[q] >> 4) <= 1 && (p[q] & 15) <= 3, name, ": corrupt JPEG: quantisation table precision/id 0x",
                               hex_prefix(p + q, 1), " at byte ", q);
                const std::size_t bytes = (p[q] >> 4) ? 129 : 65;
                ALIGNGPT_CHECK(end - q >= bytes, name, ": corrupt JPEG: quantisation table at byte ", q,
                               " is cut by its segment");
                quant |= 1u << (p[q] & 15);
                q += bytes;
            }
        }
        if (m == 0xc0 || m == 0xc1 || m == 0xc2) {  // SOF: P, Y, X, Nf, then (id, H << 4 | V, Tq) per component
            ALIGNGPT_CHECK(frame.empty(), name, ": corrupt JPEG: a second frame header at byte ", off);
            const std::size_t nf = len >= 8 ? p[off + 9] : 0;
            ALIGNGPT_CHECK(nf >= 1 && len == 8 + 3 * nf, name, ": corrupt JPEG: frame header at byte ", off, " has length ", len,
                           " for ", nf, " components");
            for (std::size_t c = 0; c < nf; c++) frame.push_back({p[off + 10 + 3 * c], p[off + 12 + 3 * c], false});
            progressive = m == 0xc2;
        }
        if (m == 0xda) {  // SOS: Ns, then (component, Td << 4 | Ta) per component, then Ss, Se, Ah << 4 | Al
            ALIGNGPT_CHECK(!frame.empty(), name, ": corrupt JPEG: scan at byte ", off, " before the frame header");
            const std::size_t ns = len >= 3 ? p[off + 4] : 0;
            ALIGNGPT_CHECK(len >= 6 + 2 * ns, name, ": corrupt JPEG: scan header at byte ", off, " has length ", len, " for ", ns,
                           " components");
            const int ss = p[off + 5 + 2 * ns], ah = p[off + 7 + 2 * ns] >> 4;
            const bool dc = !progressive || (ss == 0 && ah == 0), ac = !progressive || ss > 0;
            for (std::size_t c = 0; c < ns; c++) {
                const std::uint8_t id = p[off + 5 + 2 * c], tables = p[off + 6 + 2 * c];
                for (const auto& [used, tc, th] : {std::tuple{dc, 0, tables >> 4}, std::tuple{ac, 1, tables & 15}})
                    ALIGNGPT_CHECK(!used || (th <= 3 && (huffman[tc] >> th & 1u)), name, ": corrupt JPEG: the scan at byte ", off,
                                   " decodes with ", tc ? "AC" : "DC", " Huffman table ", th,
                                   ", which no table segment (DHT) before it defines");
                const auto it = std::find_if(frame.begin(), frame.end(), [&](const component& f) { return f.id == id; });
                ALIGNGPT_CHECK(it != frame.end(), name, ": corrupt JPEG: the scan at byte ", off, " names component ", int(id),
                               ", which the frame header does not have");
                ALIGNGPT_CHECK(it->tq <= 3 && (quant >> it->tq & 1u), name, ": corrupt JPEG: component ", int(id),
                               " uses quantisation table ", int(it->tq),
                               ", which no table segment (DQT) before its scan at byte ", off, " defines");
                it->filled = it->filled || dc;
            }
        }
        off = end;
        if (m == 0xda) {  // entropy-coded data, up to a marker that is not RSTn
            have_scan = true;
            while (true) {
                if (n - off < 2) truncated(off, "inside the entropy-coded data of a scan");
                if (p[off] != 0xff) {
                    off++;
                    continue;
                }
                std::size_t q = off + 1;
                while (q < n && p[q] == 0xff) q++;  // fill bytes
                if (q == n) truncated(off, "inside the entropy-coded data of a scan");
                if (p[q] != 0 && !is_rst(p[q])) break;  // a marker; the fill bytes before it are skipped above
                off = q + 1;
            }
        }
    }
}

/// Restores the stb_image allocation bound on scope exit.
struct stb_cap_guard {
    std::size_t saved = stb_alloc_cap;
    explicit stb_cap_guard(std::size_t cap) {
        stb_alloc_cap = cap;
        stb_alloc_refused = 0;
    }
    ~stb_cap_guard() { stb_alloc_cap = saved; }
};

inline std::string stb_reason() {
    const char* r = stbi_failure_reason();
    return r ? std::string(r) : std::string("unknown error");
}

}  // namespace detail

/// Decodes a PNG or JPEG held in memory to 8-bit RGB. `name` (usually the path) starts every error.
inline rgb_image decode_image(const void* data, std::size_t size, const std::string& name, const image_limits& limits = {}) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    const image_format fmt = detail::sniff_format(p, size);
    ALIGNGPT_CHECK(fmt != image_format::empty, name, ": empty file (0 bytes); expected a PNG or JPEG image");
    ALIGNGPT_CHECK(size <= limits.max_file_bytes, name, ": image file is ", size, " bytes, more than the limit of ",
                   limits.max_file_bytes);
    ALIGNGPT_CHECK(size <= std::size_t(std::numeric_limits<int>::max()), name, ": image file is ", size,
                   " bytes; stb_image takes at most 2^31-1");
    if (fmt == image_format::tga_or_unknown)
        fail(name, ": unsupported image format (not PNG or JPEG; first bytes ", detail::hex_prefix(p, size), ", ", size,
             " bytes in all); only PNG and JPEG are supported");
    if (fmt != image_format::png && fmt != image_format::jpeg)
        fail(name, ": unsupported image format (", detail::format_name(fmt), "); only PNG and JPEG are supported");

    auto check_budget = [&](std::uint64_t w, std::uint64_t h) {
        ALIGNGPT_CHECK(w > 0 && h > 0, name, ": image has a zero side (", w, "x", h, ")");
        ALIGNGPT_CHECK(w * h <= limits.max_pixels, name, ": image is ", w, "x", h, " = ", w * h,
                       " pixels, more than the budget of ", limits.max_pixels,
                       " (image_limits::max_pixels); refused before decoding");
    };
    if (fmt == image_format::png) {
        detail::check_png_chunks(p, size, name);
        // IHDR (checked present and complete above): the budget applies before stb_image's own
        // header checks, so that the error says what was refused.
        if (std::memcmp(p + 12, "IHDR", 4) == 0) {
            ALIGNGPT_CHECK(detail::be32(p + 8) == 13, name, ": PNG IHDR chunk has length ", detail::be32(p + 8), ", expected 13");
            check_budget(detail::be32(p + 16), detail::be32(p + 20));
        }
    } else {
        detail::check_jpeg_segments(p, size, name);
    }

    // Header only: dimensions before any allocation that depends on them.
    detail::stb_cap_guard cap_header(std::size_t(1) << 20);
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(p, int(size), &w, &h, &comp))
        fail(name, ": cannot read the ", detail::format_name(fmt), " header: ", detail::stb_reason());
    check_budget(std::uint64_t(w), std::uint64_t(h));

    // The largest block a valid image of this size needs: 16-bit RGBA PNG scanlines (8 bytes per
    // pixel + filter byte) or JPEG component planes rounded up to whole MCUs, plus slack; and the
    // IDAT buffer, which stb_image grows by doubling up to twice the compressed size.
    const std::uint64_t need = 8 * (std::uint64_t(w) + 32) * (std::uint64_t(h) + 32) + (std::uint64_t(1) << 20);
    const std::uint64_t cap = std::max<std::uint64_t>(need, 2 * std::uint64_t(size) + 8192);
    detail::stb_cap_guard cap_decode{std::size_t(cap)};
    int w2 = 0, h2 = 0, comp2 = 0;
    std::unique_ptr<stbi_uc, void (*)(void*)> pix(stbi_load_from_memory(p, int(size), &w2, &h2, &comp2, 3), stbi_image_free);
    if (!pix) {
        if (detail::stb_alloc_refused)
            fail(name, ": decoding the ", w, "x", h, " ", detail::format_name(fmt), " needs a block of ",
                 detail::stb_alloc_refused, " bytes, more than the ", cap,
                 " a valid image of this size needs (corrupt or decompression bomb)");
        fail(name, ": cannot decode ", detail::format_name(fmt), " (", w, "x", h, "): ", detail::stb_reason());
    }
    ALIGNGPT_CHECK(w2 == w && h2 == h, name, ": decoded size ", w2, "x", h2, " differs from the header's ", w, "x", h);
    rgb_image img(w, h);
    std::memcpy(img.pixels.data(), pix.get(), img.pixels.size());
    return img;
}

inline rgb_image decode_image(const std::vector<std::uint8_t>& bytes, const std::string& name, const image_limits& limits = {}) {
    return decode_image(bytes.data(), bytes.size(), name, limits);
}

/// Reads and decodes a PNG or JPEG file (the file size is checked before it is read).
inline rgb_image load_image(const std::string& path, const image_limits& limits = {}) {
    const std::string bytes = read_text_file(path, limits.max_file_bytes);  // binary-safe
    return decode_image(bytes.data(), bytes.size(), path, limits);
}

// ---------------------------------------------------------------------------------------------
// CLIP preprocessing

/// AlignGPT's `image_aspect_ratio`: "pad" runs expand2square first; any other value ("square",
/// absent) gives the plain CLIP resize + centre crop, as the reference's process_images does.
enum class aspect_mode { pad, square };

inline aspect_mode parse_aspect_mode(const std::string& s) { return s == "pad" ? aspect_mode::pad : aspect_mode::square; }

/// CLIPImageProcessor settings (transformers 4.31). Defaults: openai/clip-vit-large-patch14-336
/// (preprocessor_config.json) with aspect pad (the instruction-tuned AlignGPT models).
struct clip_image_processor_config {
    bool do_resize = true;
    int shortest_edge = 336;  // "size": 336 or {"shortest_edge": 336}
    resample_filter resample = resample_filter::bicubic;
    bool do_center_crop = true;
    int crop_height = 336, crop_width = 336;  // "crop_size": 336 or {"height", "width"}
    bool do_rescale = true;
    double rescale_factor = 1.0 / 255.0;
    bool do_normalize = true;
    std::array<double, 3> image_mean{0.48145466, 0.4578275, 0.40821073};
    std::array<double, 3> image_std{0.26862954, 0.26130258, 0.27577711};
    aspect_mode aspect = aspect_mode::pad;
    /// Bound on the (virtual) padded square, S*S pixels (pad mode): bounds the work and the strip.
    std::uint64_t max_padded_pixels = std::uint64_t(1) << 28;
    /// Bound on every buffer the preprocessing allocates, in pixels, checked before allocating:
    /// the crop (or the whole resize without crop), the resize's strip of source rows and its
    /// filter coefficients. 2^24 = 4096 x 4096 (CLIP needs 336 x 336): with the float output that
    /// is at most 256 MiB, whatever preprocessor_config.json says.
    std::uint64_t max_pixels = std::uint64_t(1) << 24;

    /// Reads a preprocessor_config.json object; `aspect` is not part of it (set it from the model
    /// config's image_aspect_ratio). Unknown keys are ignored, as transformers does.
    static clip_image_processor_config from_json(const nlohmann::json& j, const std::string& name = "preprocessor_config") {
        const json_reader r(j, name, json_nulls::refused);
        clip_image_processor_config c;
        const auto pos_int = [](const json_reader& in, const char* k) { return int(in.integer(k, std::nullopt, 1, 65536)); };
        // Values are converted to float: bounded first, so that the conversion is defined.
        const auto triple = [&](const char* k, std::array<double, 3>& out) {
            const char* what = "a number or 3 numbers in [-1000000, 1000000]";
            const nlohmann::json* v = r.get(k);
            if (!v) return;
            const auto in_range = [](const nlohmann::json& x) { return x.is_number() && std::abs(x.get<double>()) <= 1e6; };
            if (v->is_number()) {
                if (!in_range(*v)) r.must_be(k, what);
                return out.fill(v->get<double>());
            }
            if (!v->is_array() || v->size() != 3) r.must_be(k, what);
            for (std::size_t i = 0; i < 3; i++) {
                if (!in_range((*v)[i])) r.must_be(k, what);
                out[i] = (*v)[i].get<double>();
            }
        };
        c.do_resize = r.boolean("do_resize", c.do_resize);
        c.do_center_crop = r.boolean("do_center_crop", c.do_center_crop);
        c.do_rescale = r.boolean("do_rescale", c.do_rescale);
        c.do_normalize = r.boolean("do_normalize", c.do_normalize);
        if (!r.boolean("do_convert_rgb", true)) r.must_be("do_convert_rgb", "true (images are always decoded to RGB)");
        if (const nlohmann::json* s = r.get("size")) {
            if (s->is_object()) {
                if (!s->contains("shortest_edge") || s->size() != 1)
                    r.must_be("size", "an integer or {\"shortest_edge\": n} for CLIP");
                c.shortest_edge = pos_int(r.object("size"), "shortest_edge");
            } else {
                c.shortest_edge = pos_int(r, "size");
            }
        }
        if (const nlohmann::json* s = r.get("crop_size")) {
            if (s->is_object()) {
                if (!s->contains("height") || !s->contains("width"))
                    r.must_be("crop_size", "an integer or {\"height\", \"width\"}");
                c.crop_height = pos_int(r.object("crop_size"), "height");
                c.crop_width = pos_int(r.object("crop_size"), "width");
            } else {
                c.crop_height = c.crop_width = pos_int(r, "crop_size");
            }
        }
        if (const nlohmann::json* v = r.get("resample")) {
            const std::optional<std::int64_t> f = detail::json_int64(*v);
            if (!f || *f < 1 || *f > 5)
                r.must_be("resample", std::string("a Pillow filter 1..5 (lanczos, bilinear, bicubic, box, hamming)") +
                                          (f == 0 ? "; nearest (0) is not supported" : ""));
            c.resample = resample_filter(int(*f));
        }
        c.rescale_factor = r.number("rescale_factor", c.rescale_factor, -1e6, 1e6);
        triple("image_mean", c.image_mean);
        triple("image_std", c.image_std);
        for (double s : c.image_std)
            if (std::abs(s) < 1e-6) r.must_be("image_std", "nonzero numbers (|x| >= 0.000001)");
        // The output (and its float copy) is allocated whole: its size is bounded here, naming
        // the field, and again before allocating (resize_and_crop).
        const std::uint64_t crop = std::uint64_t(c.crop_height) * std::uint64_t(c.crop_width);
        if (c.do_center_crop && crop > c.max_pixels)
            r.fail("crop_size", "must give at most ", c.max_pixels, " pixels (max_pixels), got ", c.crop_width, "x",
                   c.crop_height, " = ", crop);
        if (c.do_resize && !c.do_center_crop && std::uint64_t(c.shortest_edge) * std::uint64_t(c.shortest_edge) > c.max_pixels)
            r.fail("size", "must give at most ", c.max_pixels, " pixels (max_pixels) without centre crop, got a short side of ",
                   c.shortest_edge);
        return c;
    }

    static clip_image_processor_config from_json_file(const std::string& path) {
        return from_json(read_json_file(path, {.max_bytes = 1 << 20}), path);
    }

    /// expand2square's fill colour: tuple(int(x * 255) for x in image_mean) (truncation).
    std::array<std::uint8_t, 3> pad_color() const {
        std::array<std::uint8_t, 3> c{};
        for (std::size_t i = 0; i < 3; i++) {
            const double v = image_mean[i] * 255;
            c[i] = std::uint8_t(v <= 0 ? 0 : v >= 255 ? 255 : int(v));
        }
        return c;
    }
};

/// transformers 4.31 get_resize_output_image_size(default_to_square=False): (height, width) with the
/// short side `size` and the long side int(size * long / short) in double arithmetic.
inline std::pair<int, int> resize_output_size(int height, int width, int size) {
    ALIGNGPT_CHECK(height > 0 && width > 0 && size > 0, "resize_output_size: bad sizes ", height, "x", width, " -> ", size);
    const bool portrait = width <= height;
    const int s = portrait ? width : height, l = portrait ? height : width;
    const double new_long_d = double(std::int64_t(size) * std::int64_t(l)) / double(s);
    ALIGNGPT_CHECK(new_long_d < double(std::numeric_limits<int>::max()), "resize_output_size: ", width, "x", height,
                   " resized to a short side of ", size, " would be ", new_long_d, " pixels long (aspect ratio too extreme)");
    const int new_long = int(new_long_d);
    return portrait ? std::pair<int, int>{new_long, size} : std::pair<int, int>{size, new_long};
}

namespace detail {

/// Rows of AlignGPT's expand2square(img, fill) without building it: a square of side S.
struct padded_rows {
    const rgb_image* img;
    int side, x_off, y_off;
    std::array<std::uint8_t, 3> fill;
    int width() const { return side; }
    int height() const { return side; }
    const std::uint8_t* row(int y, std::uint8_t* scratch) const {
        if (x_off == 0 && y >= y_off && y - y_off < img->height && img->width == side) return img->row(y - y_off);
        for (int x = 0; x < side; x++) std::memcpy(scratch + std::size_t(x) * 3, fill.data(), 3);
        if (y >= y_off && y - y_off < img->height)
            std::memcpy(scratch + std::size_t(x_off) * 3, img->row(y - y_off), std::size_t(img->width) * 3);
        return scratch;
    }
};

/// Centre-crop window of `crop` out of `len` (transformers center_crop): start (len - crop) // 2,
/// or, when the image is smaller, the image sits at (crop - len) // 2 inside a zero canvas.
inline int crop_start(int len, int crop) { return len >= crop ? (len - crop) / 2 : -((crop - len) / 2); }

template <class Source>
rgb_image resize_and_crop(const Source& src, const clip_image_processor_config& cfg) {
    const std::uint64_t budget = cfg.max_pixels;
    int out_h = src.height(), out_w = src.width();
    if (cfg.do_resize) std::tie(out_h, out_w) = resize_output_size(src.height(), src.width(), cfg.shortest_edge);
    if (!cfg.do_center_crop) {
        ALIGNGPT_CHECK(std::uint64_t(out_h) * std::uint64_t(out_w) <= budget, "without centre crop the output would be ", out_w,
                       "x", out_h, " pixels, more than max_pixels = ", budget);
        rgb_image out(out_w, out_h);
        resample_window(src, out_w, out_h, cfg.resample, pixel_window{0, 0, out_w, out_h}, out.pixels.data(), budget);
        return out;
    }
    ALIGNGPT_CHECK(
        cfg.crop_width > 0 && cfg.crop_height > 0 && std::uint64_t(cfg.crop_width) * std::uint64_t(cfg.crop_height) <= budget,
        "the ", cfg.crop_width, "x", cfg.crop_height, " crop must be positive and at most max_pixels = ", budget, " pixels");
    const int top = crop_start(out_h, cfg.crop_height), left = crop_start(out_w, cfg.crop_width);
    // Intersection of the crop with the resized image; the rest stays 0 (transformers pads with zeros).
    const int y0 = std::max(top, 0), x0 = std::max(left, 0);
    const int y1 = std::min(top + cfg.crop_height, out_h), x1 = std::min(left + cfg.crop_width, out_w);
    rgb_image out(cfg.crop_width, cfg.crop_height);
    if (y1 <= y0 || x1 <= x0) return out;
    const pixel_window win{x0, y0, x1 - x0, y1 - y0};
    if (win.width == cfg.crop_width && win.height == cfg.crop_height) {
        resample_window(src, out_w, out_h, cfg.resample, win, out.pixels.data(), budget);
        return out;
    }
    std::vector<std::uint8_t> part(std::size_t(win.width) * std::size_t(win.height) * 3);
    resample_window(src, out_w, out_h, cfg.resample, win, part.data(), budget);
    for (int y = 0; y < win.height; y++)
        std::memcpy(out.row(y0 - top + y) + std::size_t(x0 - left) * 3, part.data() + std::size_t(y) * win.width * 3,
                    std::size_t(win.width) * 3);
    return out;
}

}  // namespace detail

/// AlignGPT's expand2square, materialised (tests and tools; the preprocessing never builds it).
/// The square is bounded like a decoded image (image_limits::max_pixels) before it is allocated.
inline rgb_image expand2square(const rgb_image& img, std::array<std::uint8_t, 3> fill,
                               std::uint64_t max_pixels = image_limits{}.max_pixels) {
    if (img.width == img.height) return img;
    const int side = std::max(img.width, img.height);
    ALIGNGPT_CHECK(std::uint64_t(side) * std::uint64_t(side) <= max_pixels, "expand2square: a ", side, "x", side,
                   " square from a ", img.width, "x", img.height, " image exceeds the budget of ", max_pixels, " pixels");
    const detail::padded_rows src{&img, side, (side - img.width) / 2, (side - img.height) / 2, fill};
    rgb_image out(side, side);
    std::vector<std::uint8_t> scratch(std::size_t(side) * 3);
    for (int y = 0; y < side; y++) std::memcpy(out.row(y), src.row(y, scratch.data()), std::size_t(side) * 3);
    return out;
}

/// Steps 1-3 (pad, resize, centre crop): the uint8 image the reference rescales and normalises.
inline rgb_image clip_resize_crop(const rgb_image& img, const clip_image_processor_config& cfg,
                                  const std::string& name = "image") {
    ALIGNGPT_CHECK(img.width > 0 && img.height > 0, name, ": empty image ", img.width, "x", img.height);
    ALIGNGPT_CHECK(img.pixels.size() == std::size_t(img.width) * std::size_t(img.height) * 3, name, ": ", img.pixels.size(),
                   " bytes for a ", img.width, "x", img.height, " RGB image");
    try {
        if (cfg.aspect == aspect_mode::pad && img.width != img.height) {
            const int side = std::max(img.width, img.height);
            ALIGNGPT_CHECK(std::uint64_t(side) * std::uint64_t(side) <= cfg.max_padded_pixels, "padding ", img.width, "x",
                           img.height, " to a ", side, "x", side, " square exceeds max_padded_pixels = ", cfg.max_padded_pixels,
                           " (aspect ratio too extreme for pad mode)");
            return detail::resize_and_crop(
                detail::padded_rows{&img, side, (side - img.width) / 2, (side - img.height) / 2, cfg.pad_color()}, cfg);
        }
        return detail::resize_and_crop(detail::image_rows{&img}, cfg);
    } catch (const error& e) { fail(name, ": ", e.what()); } catch (const std::bad_alloc&) {
        fail(name, ": out of memory while preprocessing the ", img.width, "x", img.height, " image to a ", cfg.crop_width, "x",
             cfg.crop_height, " crop");
    }
}

/// Steps 4-6: rescale and normalise a uint8 HWC image into a float CHW tensor [3, H, W].
inline tensor<float> clip_pixel_values(const rgb_image& img, const clip_image_processor_config& cfg) {
    const index_t H = img.height, W = img.width, HW = H * W;
    tensor<float> out({3, H, W});
    float* o = out.data();
    std::array<float, 3> mean{}, std_{};
    for (std::size_t c = 0; c < 3; c++) mean[c] = float(cfg.image_mean[c]), std_[c] = float(cfg.image_std[c]);
    for (index_t i = 0; i < HW; i++) {
        for (index_t c = 0; c < 3; c++) {
            const std::uint8_t u = img.pixels[std::size_t(i * 3 + c)];
            // numpy: uint8 array * python float -> float64, then .astype(float32).
            float v = cfg.do_rescale ? float(double(u) * cfg.rescale_factor) : float(u);
            if (cfg.do_normalize) v = (v - mean[std::size_t(c)]) / std_[std::size_t(c)];
            o[c * HW + i] = v;
        }
    }
    return out;
}

/// The whole preprocessing: what `process_images([img], processor, cfg)[0]` gives (fp32; the
/// reference then casts to fp16 for the model).
inline tensor<float> clip_preprocess(const rgb_image& img, const clip_image_processor_config& cfg,
                                     const std::string& name = "image") {
    const rgb_image cropped = clip_resize_crop(img, cfg, name);
    try {
        return clip_pixel_values(cropped, cfg);
    } catch (const std::bad_alloc&) {
        fail(name, ": out of memory for the ", cropped.width, "x", cropped.height, " float pixel values");
    }
}

}  // namespace aligngpt::io
