#pragma once
// Captions of controlled alignment for the world's scenes (issue #11, docs/world.md), their parser,
// and the score of a caption (a model's, say) against the ground-truth scene.
//
// A caption is rendered from a `description`, what it states: maybe the number of objects and the
// background, and a list of objects (shape, colour, size, cell). The grammar is small and regular:
//
//   caption := head "." | head ": " list "." | list "."
//   head    := NUMBER ("shape" | "shapes") " on a " STYLE " " BGCOLOR " background"
//   list    := object | object (", " object)* " and " object
//   object  := "a " SIZE " " COLOR " " SHAPE " " POSITION-PHRASE
//
//   exact      head ": " every object, in cell order
//              "three shapes on a striped gray background: a large red circle in the top left, a
//               small blue star in the center and a small white ring at the bottom."
//   partial    a strict, non-empty subset of the objects, all true, without head (scenes of >= 2 objects)
//              "a large red circle in the top left and a small white ring at the bottom."
//   coarse     head only: "three shapes on a striped gray background."
//   wrong      exact, with one attribute of one object (shape, colour, size or cell; a cell moves to a
//              free one) changed to a false value: that object then matches nothing in the scene
//   unrelated  the exact caption of another scene whose exact caption differs
//
// parse_caption reads any caption of this grammar back (and what it can of other text: fragments it
// does not understand are counted, not fatal); score_caption compares the result with a scene.
#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aligngpt/world/scene.h"

namespace aligngpt::world {

enum class caption_kind { exact, partial, coarse, wrong, unrelated };
inline constexpr std::array<std::string_view, 5> caption_kind_names{"exact", "partial", "coarse", "wrong", "unrelated"};

/// What a caption states. count -1 and bg nullopt: not stated. Objects carry shape, colour, size
/// and cell only (their pixel placement is 0).
struct description {
    int count = -1;
    std::optional<background> bg;
    std::vector<object> objects;
    int unparsed = 0;  ///< fragments parse_caption could not read (0 for every generated caption)

    bool operator==(const description& o) const {
        if (count != o.count || bg != o.bg || unparsed != o.unparsed || objects.size() != o.objects.size()) return false;
        for (std::size_t k = 0; k < objects.size(); k++)
            if (!objects[k].same_attributes(o.objects[k])) return false;
        return true;
    }
};

/// "a large red circle in the top left"
inline std::string object_phrase(const object& b) {
    std::string s = "a ";
    s += size_names[std::size_t(b.size)], s += ' ', s += colors[std::size_t(b.color)].name, s += ' ';
    s += shape_names[std::size_t(b.shape)], s += ' ', s += position_phrases[std::size_t(b.cell)];
    return s;
}

/// "a striped gray background"
inline std::string background_phrase(const background& bg) {
    return std::string("a ") + std::string(background_styles[std::size_t(bg.style)]) + " " +
           std::string(background_colors[std::size_t(bg.color)].name) + " background";
}

/// The caption text of a description (the grammar above).
inline std::string caption_text(const description& d) {
    std::string s;
    if (d.count >= 0 && d.bg) {
        s += number_words[std::size_t(d.count)];
        s += d.count == 1 ? " shape on " : " shapes on ";
        s += background_phrase(*d.bg);
        if (!d.objects.empty()) s += ": ";
    }
    for (std::size_t k = 0; k < d.objects.size(); k++) {
        if (k > 0) s += k + 1 == d.objects.size() ? " and " : ", ";
        s += object_phrase(d.objects[k]);
    }
    return s + ".";
}

/// Everything about a scene: its count, background and every object in cell order.
inline description describe_exact(const scene& s) {
    description d{int(s.objects.size()), s.bg, {}, 0};
    for (const object& b : s.objects) d.objects.push_back({b.shape, b.color, b.size, b.cell, 0, 0, 0});
    return d;
}

struct caption {
    caption_kind kind;
    description said;
    std::string text;
};

/// A caption of `kind` for scene `s`; `other` is the scene an unrelated caption describes (it must
/// differ from s in its exact caption). Partial needs two objects or more. The draws pick what is
/// left out or changed.
inline caption make_caption(const scene& s, caption_kind kind, draws& d, const scene* other = nullptr) {
    const int n = int(s.objects.size());
    description said = describe_exact(s);
    switch (kind) {
        case caption_kind::exact: break;
        case caption_kind::partial: {
            ALIGNGPT_CHECK(n >= 2, "world: a partial caption needs a scene with two objects or more");
            const int keep = 1 + d.below(n - 1);  // 1 .. n-1 objects
            std::vector<int> idx(static_cast<std::size_t>(n));
            for (int k = 0; k < n; k++) idx[std::size_t(k)] = k;
            for (int k = 0; k < keep; k++) std::swap(idx[std::size_t(k)], idx[std::size_t(k) + std::size_t(d.below(n - k))]);
            std::sort(idx.begin(), idx.begin() + keep);
            description p;
            for (int k = 0; k < keep; k++) p.objects.push_back(said.objects[std::size_t(idx[std::size_t(k)])]);
            said = p;
            break;
        }
        case caption_kind::coarse: said.objects.clear(); break;
        case caption_kind::wrong: {
            object& b = said.objects[std::size_t(d.below(n))];
            const int attr = n < 9 ? d.below(4) : d.below(3);  // 0 shape, 1 colour, 2 size, 3 cell
            if (attr == 0) b.shape = (b.shape + 1 + d.below(int(shape_names.size()) - 1)) % int(shape_names.size());
            if (attr == 1) b.color = (b.color + 1 + d.below(int(colors.size()) - 1)) % int(colors.size());
            if (attr == 2) b.size = 1 - b.size;
            if (attr == 3) {  // the k-th free cell
                std::vector<int> free;
                for (int c = 0; c < 9; c++) {
                    bool used = false;
                    for (const object& o : s.objects) used = used || o.cell == c;
                    if (!used) free.push_back(c);
                }
                b.cell = free[std::size_t(d.below(int(free.size())))];
            }
            break;
        }
        case caption_kind::unrelated:
            ALIGNGPT_CHECK(other && !(describe_exact(*other) == said), "world: an unrelated caption needs a different scene");
            said = describe_exact(*other);
            break;
    }
    return {kind, said, caption_text(said)};
}

// ---- reading captions back --------------------------------------------------------------------------

namespace detail {
/// Index of `word` in a table, or -1.
template <std::size_t N>
int find_word(const std::array<std::string_view, N>& table, std::string_view word) {
    for (std::size_t k = 0; k < N; k++)
        if (table[k] == word) return int(k);
    return -1;
}
template <std::size_t N>
int find_color(const std::array<named_color, N>& table, std::string_view word) {
    for (std::size_t k = 0; k < N; k++)
        if (table[k].name == word) return int(k);
    return -1;
}
inline std::vector<std::string_view> words(std::string_view s) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && s[i] == ' ') i++;
        std::size_t j = i;
        while (j < s.size() && s[j] != ' ') j++;
        if (j > i) out.push_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}
/// "a SIZE COLOR SHAPE PHRASE" -> an object, or nullopt.
inline std::optional<object> parse_object(std::string_view s) {
    const auto w = words(s);
    if (w.size() < 6 || w[0] != "a") return std::nullopt;
    object b;
    b.size = find_word(size_names, w[1]), b.color = find_color(colors, w[2]), b.shape = find_word(shape_names, w[3]);
    std::string rest;
    for (std::size_t k = 4; k < w.size(); k++) rest += (k > 4 ? " " : "") + std::string(w[k]);
    b.cell = find_word(position_phrases, rest);
    if (b.size < 0 || b.color < 0 || b.shape < 0 || b.cell < 0) return std::nullopt;
    return b;
}
/// "NUMBER shape(s) on a STYLE BGCOLOR background" -> (count, background), or nullopt.
inline std::optional<std::pair<int, background>> parse_head(std::string_view s) {
    const auto w = words(s);
    if (w.size() != 7 || w[2] != "on" || w[3] != "a" || w[6] != "background") return std::nullopt;
    const int n = find_word(number_words, w[0]);
    if (n < 0 || w[1] != (n == 1 ? "shape" : "shapes")) return std::nullopt;
    background bg{find_color(background_colors, w[5]), find_word(background_styles, w[4])};
    if (bg.color < 0 || bg.style < 0) return std::nullopt;
    return std::pair{n, bg};
}
}  // namespace detail

/// A caption read back: head (count and background) before ':', objects after (or the whole text
/// when it has no head), separated by ", " and " and ". A trailing '.' and surrounding spaces are
/// ignored; each fragment that is neither a head nor an object adds 1 to `unparsed`.
inline description parse_caption(std::string_view text) {
    while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '.')) text.remove_suffix(1);
    while (!text.empty() && (text.front() == ' ' || text.front() == '\n')) text.remove_prefix(1);
    description d;
    std::string_view list = text;
    if (const auto colon = text.find(':'); colon != std::string_view::npos) {
        list = text.substr(colon + 1);
        if (auto h = detail::parse_head(text.substr(0, colon)))
            d.count = h->first, d.bg = h->second;
        else
            d.unparsed++;
    } else if (auto h = detail::parse_head(text)) {
        d.count = h->first, d.bg = h->second;
        return d;
    }
    std::string items(list);  // " and " separates the last item like ", " does
    for (std::size_t p; (p = items.find(" and ")) != std::string::npos;) items.replace(p, 5, ", ");
    std::size_t i = 0;
    while (i <= items.size()) {
        std::size_t j = items.find(',', i);
        if (j == std::string::npos) j = items.size();
        const std::string_view item = std::string_view(items).substr(i, j - i);
        if (!detail::words(item).empty()) {
            if (auto b = detail::parse_object(item))
                d.objects.push_back(*b);
            else
                d.unparsed++;
        }
        i = j + 1;
    }
    return d;
}

/// A caption against the ground truth. An object said is right when a scene object not matched
/// before has all four of its attributes (so a repeated object counts once).
struct caption_score {
    int objects_said = 0, objects_right = 0, objects_in_scene = 0;
    bool count_said = false, count_right = false, background_said = false, background_right = false;
    int unparsed = 0;
    double precision() const { return objects_said ? double(objects_right) / objects_said : 0.0; }
    double recall() const { return objects_in_scene ? double(objects_right) / objects_in_scene : 0.0; }
};

inline caption_score score_caption(std::string_view text, const scene& s) {
    const description d = parse_caption(text);
    caption_score r;
    r.objects_said = int(d.objects.size()), r.objects_in_scene = int(s.objects.size()), r.unparsed = d.unparsed;
    r.count_said = d.count >= 0, r.count_right = d.count == int(s.objects.size());
    r.background_said = bool(d.bg), r.background_right = d.bg && *d.bg == s.bg;
    std::vector<bool> used(s.objects.size(), false);
    for (const object& b : d.objects)
        for (std::size_t k = 0; k < s.objects.size(); k++)
            if (!used[k] && b.same_attributes(s.objects[k])) {
                used[k] = true, r.objects_right++;
                break;
            }
    return r;
}

}  // namespace aligngpt::world
