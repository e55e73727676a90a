#pragma once
// Pillow-exact resampling of 8-bit RGB images (what `PIL.Image.resize(size, BICUBIC)` gives).
//
// The CLIP preprocessing of the reference resizes with Pillow, so the pixels the vision tower
// sees are Pillow's. This is our own implementation of the algorithm of Pillow's
// src/libImaging/Resample.c (ImagingResample, 8 bits per channel), reproduced step for step
// because every step changes bits:
//
//   * separable convolution: a horizontal pass into a uint8 intermediate, then a vertical pass;
//     a pass is skipped when that axis keeps its size (then the other pass reads the input);
//   * per output index xx: scale = in/out, filterscale = max(scale, 1) (antialiasing when
//     shrinking), support = filter_support * filterscale, center = (xx + 0.5) * scale,
//     taps [int(center - support + 0.5), int(center + support + 0.5)) clipped to the input,
//     weight_i = filter((i - center + 0.5) / filterscale), normalised by their sum in double;
//   * weights to fixed point with PRECISION_BITS = 32 - 8 - 2 = 22 (round half away from 0);
//   * accumulate from 1 << 21 (rounding), shift right by 22, clamp to [0, 255] after each pass;
//   * the horizontal pass covers only the input rows the vertical pass reads.
//
// Filters: the convolution filters of Pillow (box, bilinear, hamming, bicubic with a = -0.5,
// lanczos-3). NEAREST is a different algorithm in Pillow (an affine transform) and is refused.
//
// Windows: every output pixel of Pillow's algorithm depends only on its own coefficients and the
// intermediate rows they read, so resize_window() computes any rectangle of the full resize with
// the same bits as cropping resize()'s result, in memory proportional to the window. The CLIP
// preprocessing uses it to resize-and-crop without materialising the resized (or padded) image.
//
// Bits: the coefficients are computed in double exactly as Pillow's C code does; every product
// that feeds an addition is forced through memory (volatile) so that no compiler can fuse it into
// an FMA, whatever -ffp-contract or -march a consumer uses. Assumes IEEE double arithmetic
// (FLT_EVAL_METHOD == 0: any x86-64, aarch64). The lanczos and hamming filters call sin/cos, so
// their bits also depend on the C library (glibc matches CPython's Pillow on Linux); bicubic,
// bilinear and box use only + - * /.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "aligngpt/config.h"

namespace aligngpt::io {

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC): pixels[(y * width + x) * 3 + c].
struct rgb_image {
    int width = 0, height = 0;
    std::vector<std::uint8_t> pixels;

    rgb_image() = default;
    rgb_image(int w, int h) : width(w), height(h), pixels(std::size_t(w) * std::size_t(h) * 3, 0) {
        ALIGNGPT_CHECK(w >= 0 && h >= 0, "rgb_image: negative size ", w, "x", h);
    }
    std::uint8_t* row(int y) { return pixels.data() + std::size_t(y) * std::size_t(width) * 3; }
    const std::uint8_t* row(int y) const { return pixels.data() + std::size_t(y) * std::size_t(width) * 3; }
};

/// Pillow's resampling filter codes (PIL.Image.Resampling); the integer is the `resample` field
/// of a preprocessor_config.json.
enum class resample_filter : int { nearest = 0, lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5 };

inline const char* filter_name(resample_filter f) {
    switch (f) {
        case resample_filter::nearest: return "nearest";
        case resample_filter::lanczos: return "lanczos";
        case resample_filter::bilinear: return "bilinear";
        case resample_filter::bicubic: return "bicubic";
        case resample_filter::box: return "box";
        case resample_filter::hamming: return "hamming";
    }
    return "unknown";
}

/// A rectangle of output pixels: columns [x, x + width), rows [y, y + height).
struct pixel_window {
    int x = 0, y = 0, width = 0, height = 0;
};

namespace detail {

inline constexpr int resample_precision_bits = 32 - 8 - 2;  // Pillow's PRECISION_BITS

/// Returns v after a round trip through memory: the product that produced it is rounded to double
/// and cannot be fused with a following addition (an FMA would change the coefficients' bits).
inline double unfused(double v) {
    volatile double t = v;
    return t;
}

inline double filter_support(resample_filter f) {
    switch (f) {
        case resample_filter::box: return 0.5;
        case resample_filter::bilinear: return 1.0;
        case resample_filter::hamming: return 1.0;
        case resample_filter::bicubic: return 2.0;
        case resample_filter::lanczos: return 3.0;
        default:
            fail("resample: filter ", filter_name(f), " (", int(f), ") is not a convolution filter; ",
                 "use box, bilinear, hamming, bicubic or lanczos");
    }
}

inline constexpr double pi = 3.14159265358979323846;  // M_PI

inline double sinc_pillow(double x) {
    if (x == 0.0) return 1.0;
    x = unfused(x * pi);
    return std::sin(x) / x;
}

/// The filter functions of Pillow's Resample.c, evaluated with the same operation order.
inline double filter_value(resample_filter f, double x) {
    switch (f) {
        case resample_filter::box: return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
        case resample_filter::bilinear:
            if (x < 0.0) x = -x;
            return x < 1.0 ? 1.0 - x : 0.0;
        case resample_filter::hamming: {
            if (x < 0.0) x = -x;
            if (x == 0.0) return 1.0;
            if (x >= 1.0) return 0.0;
            x = unfused(x * pi);
            // Pillow writes the constants as floats: 0.54f and 0.46f, widened to double.
            const double c = double(0.54f) + unfused(double(0.46f) * std::cos(x));
            return unfused(std::sin(x) / x * c);
        }
        case resample_filter::bicubic: {
            constexpr double a = -0.5;
            if (x < 0.0) x = -x;
            if (x < 1.0) {
                const double t = unfused((a + 2.0) * x) - (a + 3.0);
                return unfused(t * x * x) + 1;
            }
            if (x < 2.0) {
                const double t = unfused((x - 5) * x) + 8;
                return unfused((unfused(t * x) - 4) * a);
            }
            return 0.0;
        }
        case resample_filter::lanczos:
            if (-3.0 <= x && x < 3.0) return unfused(sinc_pillow(x) * sinc_pillow(x / 3));
            return 0.0;
        default: return 0.0;
    }
}

/// Fixed-point coefficients of one axis for the output indices [first, first + count) of an
/// in_size -> out_size resize (Pillow's precompute_coeffs + normalize_coeffs_8bpc, box = whole axis).
struct axis_coeffs {
    int ksize = 0;                  // row stride of `k` (Pillow's maximum number of taps)
    std::vector<int> start, count;  // per output index: first input index, number of taps
    std::vector<std::int32_t> k;    // count.size() * ksize weights, zero past each count
};

/// At most `max_entries` weights (n * ksize) are allocated; more is refused before allocating.
inline axis_coeffs compute_axis_coeffs(int in_size, int out_size, resample_filter f, int first, int n,
                                       std::uint64_t max_entries = UINT64_MAX) {
    ALIGNGPT_CHECK(in_size > 0 && out_size > 0, "resample: sizes must be positive, got ", in_size, " -> ", out_size);
    ALIGNGPT_CHECK(first >= 0 && n >= 0 && first <= out_size - n, "resample: output range [", first, ", ",
                   std::int64_t(first) + n, ") outside [0, ", out_size, ")");
    const double in0 = 0.0, in1 = double(in_size);  // Pillow's box (float) is the whole image
    const double scale = (in1 - in0) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = filter_support(f) * filterscale;
    const double ksize_d = std::ceil(support) * 2 + 1;
    ALIGNGPT_CHECK(ksize_d < 1e6, "resample: filter support ", support, " too large (", in_size, " -> ", out_size, ")");
    ALIGNGPT_CHECK(std::uint64_t(n) * std::uint64_t(ksize_d) <= max_entries, "resample: ", n, " outputs x ",
                   std::uint64_t(ksize_d), " filter taps (", in_size, " -> ", out_size, ") exceed the budget of ", max_entries,
                   " coefficients");
    axis_coeffs c;
    c.ksize = int(ksize_d);
    c.start.resize(std::size_t(n));
    c.count.resize(std::size_t(n));
    c.k.assign(std::size_t(n) * std::size_t(c.ksize), 0);
    std::vector<double> w(std::size_t(c.ksize));
    const double ss = 1.0 / filterscale;
    for (int i = 0; i < n; i++) {
        const int xx = first + i;
        const double center = in0 + unfused((xx + 0.5) * scale);
        // (int) truncates toward zero, as the C cast in Pillow; negative values clip to 0 anyway.
        int xmin = int(center - support + 0.5);  // NOLINT(bugprone-incorrect-roundings): Pillow's C cast
        if (xmin < 0) xmin = 0;
        int xmax = int(center + support + 0.5);  // NOLINT(bugprone-incorrect-roundings): Pillow's C cast
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        ALIGNGPT_CHECK(xmax >= 0 && xmax <= c.ksize, "resample: internal tap count ", xmax, " > ", c.ksize);
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            const double arg = unfused((x + xmin - center + 0.5) * ss);
            const double v = unfused(filter_value(f, arg));
            w[std::size_t(x)] = v;
            ww += v;
        }
        std::int32_t* k = c.k.data() + std::size_t(i) * std::size_t(c.ksize);
        for (int x = 0; x < xmax; x++) {
            double v = w[std::size_t(x)];
            if (ww != 0.0) v /= ww;
            const double scaled = v * double(1 << resample_precision_bits);  // exact (power of two)
            // Pillow rounds half away from zero by the same casts; the bits depend on it
            k[x] = v < 0 ? std::int32_t(-0.5 + scaled) : std::int32_t(0.5 + scaled);  // NOLINT(bugprone-incorrect-roundings)
        }
        // Pillow accumulates in a C int. Prove that no sum can overflow (255 * sum|k| + 2^21 must
        // fit): true for every Pillow filter, so int32 arithmetic stays exact and UB-free.
        std::int64_t abs_sum = 0;
        for (int x = 0; x < xmax; x++) abs_sum += k[x] < 0 ? -std::int64_t(k[x]) : std::int64_t(k[x]);
        ALIGNGPT_CHECK(255 * abs_sum + (std::int64_t(1) << (resample_precision_bits - 1)) <= INT32_MAX,
                       "resample: filter weights too large for 32-bit accumulation (sum |k| = ", abs_sum, ")");
        c.start[std::size_t(i)] = xmin;
        c.count[std::size_t(i)] = xmax;
    }
    return c;
}

/// Pillow's clip8 for an accumulator that started at 1 << (PRECISION_BITS - 1).
inline std::uint8_t clip8(std::int32_t acc) {
    const std::int32_t v = acc >> resample_precision_bits;  // arithmetic shift: floor (C++20)
    return std::uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

/// Whether row() of a source may write to its scratch row (a source says so with needs_scratch).
template <class Source>
constexpr bool needs_scratch() {
    if constexpr (requires { Source::needs_scratch; })
        return Source::needs_scratch;
    else
        return true;
}

/// A source of RGB rows: the whole image in memory.
struct image_rows {
    static constexpr bool needs_scratch = false;
    const rgb_image* img;
    int width() const { return img->width; }
    int height() const { return img->height; }
    const std::uint8_t* row(int y, std::uint8_t* /*scratch*/) const { return img->row(y); }
};

inline void check_output_size(int in_w, int in_h, int out_w, int out_h, const pixel_window& win) {
    ALIGNGPT_CHECK(in_w > 0 && in_h > 0, "resample: empty input image ", in_w, "x", in_h);
    ALIGNGPT_CHECK(out_w > 0 && out_h > 0, "resample: output size must be positive, got ", out_w, "x", out_h);
    ALIGNGPT_CHECK(win.width >= 0 && win.height >= 0 && win.x >= 0 && win.y >= 0 && win.x <= out_w - win.width &&
                       win.y <= out_h - win.height,
                   "resample: window ", win.width, "x", win.height, "+", win.x, "+", win.y, " outside the ", out_w, "x", out_h,
                   " output");
}

}  // namespace detail

/// The window `win` of Pillow's resize of `src` to out_w x out_h with filter `f`, written to `out`
/// (win.width * win.height * 3 bytes, HWC). `Source` provides width(), height() and
/// row(y, scratch) -> pointer to width()*3 bytes of row y (it may fill and return `scratch`, which
/// has width()*3 bytes). Bits equal those of the same pixels of PIL's Image.resize.
/// `max_pixels` bounds the intermediate strip (source rows x window width) and each axis's filter
/// coefficients, checked before they are allocated.
template <class Source>
void resample_window(const Source& src, int out_w, int out_h, resample_filter f, const pixel_window& win, std::uint8_t* out,
                     std::uint64_t max_pixels = UINT64_MAX) {
    const int in_w = src.width(), in_h = src.height();
    detail::check_output_size(in_w, in_h, out_w, out_h, win);
    (void)detail::filter_support(f);  // refuses nearest and unknown codes
    if (win.width == 0 || win.height == 0) return;
    const bool need_h = out_w != in_w;  // Pillow: xsize != imIn->xsize (box is the whole image)
    const bool need_v = out_h != in_h;
    const std::size_t row_bytes = std::size_t(win.width) * 3;

    // Rows of the intermediate (source rows [r0, r1)) that the vertical pass reads.
    detail::axis_coeffs cv;
    int r0 = win.y, r1 = win.y + win.height;
    if (need_v) {
        cv = detail::compute_axis_coeffs(in_h, out_h, f, win.y, win.height, max_pixels);
        r0 = cv.start.front();
        r1 = cv.start.back() + cv.count.back();
        // Pillow's taps may start later for a later output row but never end earlier; still, take
        // the hull so that any row a tap reads is present.
        for (int i = 0; i < win.height; i++) {
            r0 = std::min(r0, cv.start[std::size_t(i)]);
            r1 = std::max(r1, cv.start[std::size_t(i)] + cv.count[std::size_t(i)]);
        }
    }
    const int n_rows = r1 - r0;
    ALIGNGPT_CHECK(std::uint64_t(n_rows) * std::uint64_t(win.width) <= max_pixels, "resample: the ", win.width, "x", win.height,
                   " window of a ", in_w, "x", in_h, " -> ", out_w, "x", out_h, " resize reads ", n_rows,
                   " source rows, a strip of more than the budget of ", max_pixels, " pixels");

    // Horizontal pass (or a copy of the window's columns when the width is unchanged).
    detail::axis_coeffs ch;
    if (need_h) ch = detail::compute_axis_coeffs(in_w, out_w, f, win.x, win.width, max_pixels);
    std::vector<std::uint8_t> tmp(std::size_t(n_rows) * row_bytes);
    constexpr int rows_per_task = 16;
    const int n_tasks = (n_rows + rows_per_task - 1) / rows_per_task;
    ALIGNGPT_OMP_FOR
    for (int t = 0; t < n_tasks; t++) {
        // Only sources that build rows need one (allocating here must not throw inside OpenMP).
        std::vector<std::uint8_t> scratch(detail::needs_scratch<Source>() ? std::size_t(in_w) * 3 : 0);
        const int lo = t * rows_per_task, hi = std::min(n_rows, lo + rows_per_task);
        for (int r = lo; r < hi; r++) {
            const std::uint8_t* in = src.row(r0 + r, scratch.data());
            std::uint8_t* o = tmp.data() + std::size_t(r) * row_bytes;
            if (!need_h) {
                std::memcpy(o, in + std::size_t(win.x) * 3, row_bytes);
                continue;
            }
            for (int i = 0; i < win.width; i++) {
                const std::int32_t* k = ch.k.data() + std::size_t(i) * std::size_t(ch.ksize);
                const std::uint8_t* p = in + std::size_t(ch.start[std::size_t(i)]) * 3;
                const int n = ch.count[std::size_t(i)];
                std::int32_t s0 = 1 << (detail::resample_precision_bits - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < n; x++) {
                    s0 += std::int32_t(p[3 * x + 0]) * k[x];
                    s1 += std::int32_t(p[3 * x + 1]) * k[x];
                    s2 += std::int32_t(p[3 * x + 2]) * k[x];
                }
                o[3 * i + 0] = detail::clip8(s0);
                o[3 * i + 1] = detail::clip8(s1);
                o[3 * i + 2] = detail::clip8(s2);
            }
        }
    }

    // Vertical pass (or a copy when the height is unchanged).
    if (!need_v) {
        std::memcpy(out, tmp.data(), tmp.size());
        return;
    }
    ALIGNGPT_OMP_FOR
    for (int j = 0; j < win.height; j++) {
        const std::int32_t* k = cv.k.data() + std::size_t(j) * std::size_t(cv.ksize);
        const int y0 = cv.start[std::size_t(j)] - r0, n = cv.count[std::size_t(j)];
        std::vector<std::int32_t> acc(row_bytes, std::int32_t(1) << (detail::resample_precision_bits - 1));
        for (int y = 0; y < n; y++) {
            const std::uint8_t* p = tmp.data() + std::size_t(y0 + y) * row_bytes;
            const std::int32_t ky = k[y];
            for (std::size_t c = 0; c < row_bytes; c++) acc[c] += std::int32_t(p[c]) * ky;
        }
        std::uint8_t* o = out + std::size_t(j) * row_bytes;
        for (std::size_t c = 0; c < row_bytes; c++) o[c] = detail::clip8(acc[c]);
    }
}

/// The window `win` of PIL's `img.resize((out_w, out_h), f)`, as its own image.
inline rgb_image resize_window(const rgb_image& img, int out_w, int out_h, const pixel_window& win,
                               resample_filter f = resample_filter::bicubic) {
    detail::check_output_size(img.width, img.height, out_w, out_h, win);
    rgb_image out(win.width, win.height);
    resample_window(detail::image_rows{&img}, out_w, out_h, f, win, out.pixels.data());
    return out;
}

/// PIL's `img.resize((out_w, out_h), f)` for an RGB image (reducing_gap=None, box = whole image).
/// Allocates out_w * out_h * 3 bytes: callers bound the size (the CLIP path uses windows).
inline rgb_image resize(const rgb_image& img, int out_w, int out_h, resample_filter f = resample_filter::bicubic) {
    return resize_window(img, out_w, out_h, pixel_window{0, 0, out_w, out_h}, f);
}

}  // namespace aligngpt::io
