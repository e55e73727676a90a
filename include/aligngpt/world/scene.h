#pragma once
// Scenes of the procedural image-text world (issue #11, docs/world.md) and their rasteriser.
//
// A scene is a background and 1..K objects. Each object has four named attributes, the words its
// captions use: a shape (6), a colour (8), a size (2) and a position, one of the 3x3 grid's cells
// (9); at most one object per cell, so objects never overlap. Within its cell an object's centre
// moves by a few pixels (what a caption does not say). The background has a colour of its own
// palette (never an object colour, so every object stays visible) and a style: plain, striped
// (horizontal bands of the colour and a darker shade) or shaded (a vertical ramp to half the colour).
//
// Everything is integer arithmetic (no libm), so the pixels are the same bits on every compiler,
// and every random choice comes from rng::bits through `draws`: scene i of seed s is a pure
// function of (s, i), whatever the order or the thread that makes it.
//
//   const world::scene s = world::make_scene({.image_size = 48}, seed, /*index=*/7);
//   const std::vector<std::uint8_t> rgb = world::render(s);   // 48*48*3 bytes
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/rng.h"

namespace aligngpt::world {

// ---- the vocabulary: every word a caption or a question can use about a scene -------------------

struct named_color {
    std::string_view name;
    std::uint8_t r, g, b;
};

inline constexpr std::array<std::string_view, 6> shape_names{"circle", "square", "triangle", "star", "ring", "cross"};
inline constexpr std::array<std::string_view, 6> shape_plurals{"circles", "squares", "triangles", "stars", "rings", "crosses"};
inline constexpr std::array<named_color, 8> colors{{{"red", 220, 30, 30},
                                                    {"green", 30, 160, 50},
                                                    {"blue", 30, 70, 220},
                                                    {"yellow", 240, 220, 30},
                                                    {"purple", 140, 50, 180},
                                                    {"orange", 245, 140, 20},
                                                    {"white", 250, 250, 250},
                                                    {"black", 15, 15, 15}}};
inline constexpr std::array<named_color, 4> background_colors{
    {{"gray", 128, 128, 128}, {"brown", 130, 90, 50}, {"pink", 240, 170, 190}, {"teal", 40, 130, 130}}};
inline constexpr std::array<std::string_view, 3> background_styles{"plain", "striped", "shaded"};
inline constexpr std::array<std::string_view, 2> size_names{"small", "large"};
/// Grid cells in reading order (cell = 3 * row + column); the answer to "Where is ...?".
inline constexpr std::array<std::string_view, 9> position_names{"top left", "top",         "top right", "left",        "center",
                                                                "right",    "bottom left", "bottom",    "bottom right"};
/// The same cells as captions say them.
inline constexpr std::array<std::string_view, 9> position_phrases{"in the top left",    "at the top",    "in the top right",
                                                                  "on the left",        "in the center", "on the right",
                                                                  "in the bottom left", "at the bottom", "in the bottom right"};
/// Counts are words everywhere (captions and answers): "zero" .. "nine".
inline constexpr std::array<std::string_view, 10> number_words{"zero", "one", "two",   "three", "four",
                                                               "five", "six", "seven", "eight", "nine"};

// ---- scenes ---------------------------------------------------------------------------------------

struct object {
    int shape = 0, color = 0, size = 0, cell = 0;  ///< indices into the tables above
    int x = 0, y = 0, radius = 0;                  ///< centre and radius in pixels (not in captions)
    /// The four attributes a caption names (not the pixel placement).
    bool same_attributes(const object& o) const {
        return shape == o.shape && color == o.color && size == o.size && cell == o.cell;
    }
};

struct background {
    int color = 0, style = 0;  ///< indices into background_colors, background_styles
    bool operator==(const background&) const = default;
};

struct scene {
    int image_size = 48;
    background bg;
    std::vector<object> objects;  ///< in cell order (reading order), one per cell at most
};

struct scene_options {
    int image_size = 48;                   ///< square images; 24..1024 (objects need a few pixels to tell sizes apart)
    int min_objects = 1, max_objects = 4;  ///< 1 <= min <= max <= 8 (one cell stays free for a "wrong" move)
};

inline void check(const scene_options& o) {
    ALIGNGPT_CHECK(o.image_size >= 24 && o.image_size <= 1024, "world: image_size must be in [24, 1024], got ", o.image_size);
    ALIGNGPT_CHECK(o.min_objects >= 1 && o.min_objects <= o.max_objects && o.max_objects <= 8,
                   "world: need 1 <= min_objects <= max_objects <= 8, got ", o.min_objects, " and ", o.max_objects);
}

/// A sequence of random draws from one key: draw k is rng::bits(key, 0, k). A generator takes one
/// `draws` per item (scene, caption, record), so items never share or depend on each other's draws.
class draws {
public:
    draws(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) : key_(rng::bits(seed, stream, index)) {}
    std::uint64_t next() { return rng::bits(key_, 0, k_++); }
    /// Uniform in [0, n) for 0 < n < 2^32: floor(u32 * n / 2^32), exact integer arithmetic.
    int below(int n) { return int(((next() >> 32) * std::uint64_t(n)) >> 32); }
    /// True with probability percent / 100.
    bool percent(int p) { return below(100) < p; }
    /// An index drawn with the given integer weights (not all zero).
    template <std::size_t N>
    int weighted(const std::array<int, N>& w) {
        int total = 0;
        for (int v : w) total += v;
        int r = below(total);
        for (std::size_t k = 0; k < N; k++)
            if ((r -= w[k]) < 0) return int(k);
        return int(N - 1);
    }

private:
    std::uint64_t key_, k_ = 0;
};

/// Stream ids: one per kind of thing drawn, so adding a kind never shifts another's numbers.
namespace stream {
inline constexpr std::uint64_t scene = rng::fnv1a64("world/scene");
inline constexpr std::uint64_t caption = rng::fnv1a64("world/caption");
inline constexpr std::uint64_t instruct = rng::fnv1a64("world/instruct");
inline constexpr std::uint64_t text = rng::fnv1a64("world/text");
inline constexpr std::uint64_t eval = rng::fnv1a64("world/eval");
}  // namespace stream

/// Pixel bounds [lo, hi) of grid row or column k of an S-pixel image.
inline int cell_lo(int S, int k) { return k * S / 3; }
inline int cell_hi(int S, int k) { return (k + 1) * S / 3; }

/// Radius of a small or large object: a quarter and 7/16 of the smallest cell.
inline int object_radius(int S, int size) { return size ? (S / 3) * 7 / 16 : (S / 3) / 4; }

/// Scene `index` of `seed`: the number of objects, their cells, attributes and offsets, and the
/// background, all from draws(seed, stream::scene, index).
inline scene make_scene(const scene_options& o, std::uint64_t seed, std::uint64_t index) {
    check(o);
    draws d(seed, stream::scene, index);
    scene s;
    s.image_size = o.image_size;
    s.bg = {d.below(int(background_colors.size())), d.below(int(background_styles.size()))};
    const int n = o.min_objects + d.below(o.max_objects - o.min_objects + 1);
    std::array<int, 9> cells{0, 1, 2, 3, 4, 5, 6, 7, 8};
    for (int k = 0; k < n; k++)
        std::swap(cells[std::size_t(k)], cells[std::size_t(k) + std::size_t(d.below(9 - k))]);  // partial Fisher-Yates
    std::sort(cells.begin(), cells.begin() + n);
    for (int k = 0; k < n; k++) {
        object b;
        b.cell = cells[std::size_t(k)];
        b.shape = d.below(int(shape_names.size()));
        b.color = d.below(int(colors.size()));
        b.size = d.below(2);
        b.radius = object_radius(o.image_size, b.size);
        // centre anywhere that keeps the whole object (and a 1-pixel margin) inside its cell
        const auto place = [&](int k3) {
            const int lo = cell_lo(o.image_size, k3) + b.radius + 1, hi = cell_hi(o.image_size, k3) - 2 - b.radius;
            return lo + d.below(std::max(1, hi - lo + 1));
        };
        b.x = place(b.cell % 3);
        b.y = place(b.cell / 3);
        s.objects.push_back(b);
    }
    return s;
}

// ---- rasteriser -----------------------------------------------------------------------------------

namespace detail {
/// A five-pointed star, outer radius 1000, inner 450, first point up (rounded cos/sin, y down).
inline constexpr std::array<std::array<int, 2>, 10> star_points{{{0, -1000},
                                                                 {265, -364},
                                                                 {951, -309},
                                                                 {428, 139},
                                                                 {588, 809},
                                                                 {0, 450},
                                                                 {-588, 809},
                                                                 {-428, 139},
                                                                 {-951, -309},
                                                                 {-265, -364}}};

/// Even-odd point-in-polygon of (px, py) against star_points scaled by r/1000, in exact integers.
inline bool in_star(std::int64_t px, std::int64_t py, std::int64_t r) {
    px *= 1000, py *= 1000;
    bool in = false;
    for (std::size_t i = 0, j = star_points.size() - 1; i < star_points.size(); j = i++) {
        const std::int64_t xi = star_points[i][0] * r, yi = star_points[i][1] * r;
        const std::int64_t xj = star_points[j][0] * r, yj = star_points[j][1] * r;
        if ((yi > py) == (yj > py)) continue;
        // crossing x of the edge at height py, compared without division: px < xi + (py-yi)(xj-xi)/(yj-yi)
        const std::int64_t lhs = (px - xi) * (yj - yi), rhs = (py - yi) * (xj - xi);
        if (yj > yi ? lhs < rhs : lhs > rhs) in = !in;
    }
    return in;
}
}  // namespace detail

/// True when the pixel (px, py) belongs to the object: its shape, centred, in exact integers.
inline bool covers(const object& b, int px, int py) {
    const int dx = px - b.x, dy = py - b.y, r = b.radius, ax = std::abs(dx), ay = std::abs(dy);
    switch (b.shape) {
        case 0: return dx * dx + dy * dy <= r * r;          // circle
        case 1: return ax <= r * 7 / 8 && ay <= r * 7 / 8;  // square
        case 2: return dy <= r && 2 * ax <= dy + r;         // triangle, apex up
        case 3: return detail::in_star(dx, dy, r);          // star
        case 4: {                                           // ring
            const int ri = r * 11 / 20;
            return dx * dx + dy * dy <= r * r && dx * dx + dy * dy > ri * ri;
        }
        default: {  // cross (a plus sign)
            const int t = std::max(1, r / 3);
            return (ax <= t && ay <= r) || (ay <= t && ax <= r);
        }
    }
}

/// The background's colour at row y: plain; striped (bands of max(2, S/8) rows alternating with
/// 3/4 of the colour); shaded (a linear ramp from the colour at the top to half of it at the bottom).
inline std::array<std::uint8_t, 3> background_at(const background& bg, int S, int y) {
    const named_color& c = background_colors[std::size_t(bg.color)];
    int num = 1, den = 1;
    if (bg.style == 1 && (y / std::max(2, S / 8)) % 2 == 1) num = 3, den = 4;
    if (bg.style == 2) num = 2 * S - y, den = 2 * S;
    return {std::uint8_t(c.r * num / den), std::uint8_t(c.g * num / den), std::uint8_t(c.b * num / den)};
}

/// The scene as image_size x image_size RGB bytes, row-major.
inline std::vector<std::uint8_t> render(const scene& s) {
    const int S = s.image_size;
    std::vector<std::uint8_t> px(std::size_t(S) * std::size_t(S) * 3);
    for (int y = 0; y < S; y++) {
        const auto c = background_at(s.bg, S, y);
        for (int x = 0; x < S; x++) std::copy(c.begin(), c.end(), px.begin() + (std::ptrdiff_t(y) * S + x) * 3);
    }
    for (const object& b : s.objects) {
        const named_color& c = colors[std::size_t(b.color)];
        for (int y = std::max(0, b.y - b.radius); y <= std::min(S - 1, b.y + b.radius); y++)
            for (int x = std::max(0, b.x - b.radius); x <= std::min(S - 1, b.x + b.radius); x++)
                if (covers(b, x, y)) {
                    std::uint8_t* p = px.data() + (std::size_t(y) * std::size_t(S) + std::size_t(x)) * 3;
                    p[0] = c.r, p[1] = c.g, p[2] = c.b;
                }
    }
    return px;
}

}  // namespace aligngpt::world
