#pragma once
// Questions about the world's scenes, one kind per alignment need (issue #11, docs/world.md):
//
//   describe   "Describe the image in detail."          -> the exact caption (every object)
//   attribute  "What color is the circle?"               -> "red"      (one object, one attribute)
//              "What shape is the red object?"           -> "circle"
//              "What size is the star in the center?"    -> "small"
//              "Where is the blue ring?"                 -> "top left" (a position name)
//   count      "How many shapes are there?"              -> "three"    (a number word, zero .. nine)
//              "How many red shapes are there?" / "How many circles are there?"
//   exists     "Is there a red star in the image?"       -> "Yes" / "No" (POPE-style; a colour and a shape)
//   text       no image: "What color do you get by mixing red and yellow?" -> "orange", "What is two
//              plus three?" -> "five", "What is the opposite of left?" -> "right", "How many corners
//              does a triangle have?" -> "three"
//
// An object is named by the fewest words that pick it out: its shape when no other object has that
// shape, else its shape and position ("the circle in the top left"; cells are unique). "No" questions
// ask about a (colour, shape) pair no object has: "random" draws any such pair, "adversarial" changes
// the colour or the shape of an object that is there (POPE's random and adversarial settings).
#include <array>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aligngpt/world/captions.h"

namespace aligngpt::world {

enum class task_kind { describe, attribute, count, exists, text };
inline constexpr std::array<std::string_view, 5> task_kind_names{"describe", "attribute", "count", "exists", "text"};

/// One question and its answer; `category` is the attribute asked (color, shape, size, position),
/// what is counted (all, color, shape), the POPE setting (random, adversarial) or the text fact
/// (mix, sum, opposite, corners).
struct qa {
    std::string question, answer, category;
};

inline qa describe_question(const scene& s) {
    return {"Describe the image in detail.", caption_text(describe_exact(s)), "exact"};
}

namespace detail {
inline std::string str(std::string_view v) { return std::string(v); }
/// "circle" when the shape is unique in the scene, else "circle in the top left".
inline std::string object_name(const scene& s, const object& b) {
    int same = 0;
    for (const object& o : s.objects) same += o.shape == b.shape;
    return same == 1 ? str(shape_names[std::size_t(b.shape)])
                     : str(shape_names[std::size_t(b.shape)]) + " " + str(position_phrases[std::size_t(b.cell)]);
}
inline int count_if_object(const scene& s, int shape, int color) {
    int n = 0;
    for (const object& o : s.objects) n += (shape < 0 || o.shape == shape) && (color < 0 || o.color == color);
    return n;
}
}  // namespace detail

/// One attribute of one object. Shape questions need an object whose colour is unique, position
/// questions one whose (colour, shape) is; without one, the colour is asked instead.
inline qa attribute_question(const scene& s, draws& d) {
    const object& b = s.objects[std::size_t(d.below(int(s.objects.size())))];
    const std::string colour = detail::str(colors[std::size_t(b.color)].name),
                      shape = detail::str(shape_names[std::size_t(b.shape)]);
    int attr = d.below(4);  // 0 colour, 1 shape, 2 size, 3 position
    if (attr == 1 && detail::count_if_object(s, -1, b.color) != 1) attr = 0;
    if (attr == 3 && detail::count_if_object(s, b.shape, b.color) != 1) attr = 0;
    switch (attr) {
        case 1: return {"What shape is the " + colour + " object?", shape, "shape"};
        case 2:
            return {"What size is the " + detail::object_name(s, b) + "?", detail::str(size_names[std::size_t(b.size)]), "size"};
        case 3:
            return {"Where is the " + colour + " " + shape + "?", detail::str(position_names[std::size_t(b.cell)]), "position"};
        default: return {"What color is the " + detail::object_name(s, b) + "?", colour, "color"};
    }
}

/// How many objects: all of them, or those of one colour or one shape. The colour or shape is an
/// object's half of the time and any of the vocabulary's otherwise (so "zero" is an answer, but
/// not the usual one).
inline qa count_question(const scene& s, draws& d) {
    const int what = d.below(3);
    const object& b = s.objects[std::size_t(d.below(int(s.objects.size())))];
    const bool present = d.below(2) == 1;
    if (what == 1) {
        const int c = present ? b.color : d.below(int(colors.size()));
        return {"How many " + detail::str(colors[std::size_t(c)].name) + " shapes are there?",
                detail::str(number_words[std::size_t(detail::count_if_object(s, -1, c))]), "color"};
    }
    if (what == 2) {
        const int k = present ? b.shape : d.below(int(shape_names.size()));
        return {"How many " + detail::str(shape_plurals[std::size_t(k)]) + " are there?",
                detail::str(number_words[std::size_t(detail::count_if_object(s, k, -1))]), "shape"};
    }
    return {"How many shapes are there?", detail::str(number_words[s.objects.size()]), "all"};
}

/// A POPE-style question with the answer asked for: "Yes" names a (colour, shape) of an object in
/// the scene; "No" one absent from it, random or adversarial (one attribute of a present object
/// changed; random when no change gives an absent pair, which cannot happen with <= 8 objects).
inline qa exists_question(const scene& s, draws& d, bool yes, bool adversarial) {
    const auto ask = [](int color, int shape) {
        const std::string c = detail::str(colors[std::size_t(color)].name);
        return (c[0] == 'o' ? "Is there an " : "Is there a ") + c + " " + detail::str(shape_names[std::size_t(shape)]) +
               " in the image?";
    };
    const std::string category = adversarial ? "adversarial" : "random";
    if (yes) {
        const object& b = s.objects[std::size_t(d.below(int(s.objects.size())))];
        return {ask(b.color, b.shape), "Yes", category};
    }
    std::vector<std::pair<int, int>> absent;  // (colour, shape) pairs no object has, in a fixed order
    if (adversarial)
        for (const object& b : s.objects) {
            for (int c = 0; c < int(colors.size()); c++)
                if (!detail::count_if_object(s, b.shape, c)) absent.emplace_back(c, b.shape);
            for (int k = 0; k < int(shape_names.size()); k++)
                if (!detail::count_if_object(s, k, b.color)) absent.emplace_back(b.color, k);
        }
    if (absent.empty())
        for (int c = 0; c < int(colors.size()); c++)
            for (int k = 0; k < int(shape_names.size()); k++)
                if (!detail::count_if_object(s, k, c)) absent.emplace_back(c, k);
    const auto [c, k] = absent[std::size_t(d.below(int(absent.size())))];
    return {ask(c, k), "No", category};
}

/// A text-only fact about the world's words (no image).
inline qa text_question(draws& d) {
    static constexpr std::array<std::array<std::string_view, 3>, 5> mixes{{{"red", "yellow", "orange"},
                                                                           {"blue", "yellow", "green"},
                                                                           {"red", "blue", "purple"},
                                                                           {"black", "white", "gray"},
                                                                           {"red", "white", "pink"}}};
    static constexpr std::array<std::array<std::string_view, 2>, 6> opposites{
        {{"large", "small"}, {"small", "large"}, {"left", "right"}, {"right", "left"}, {"top", "bottom"}, {"bottom", "top"}}};
    static constexpr std::array<std::array<std::string_view, 2>, 4> corners{
        {{"triangle", "three"}, {"square", "four"}, {"circle", "zero"}, {"ring", "zero"}}};
    const auto s = [](std::string_view v) { return std::string(v); };
    switch (d.below(4)) {
        case 0: {
            const auto& m = mixes[std::size_t(d.below(int(mixes.size())))];
            const bool swap = d.below(2);
            return {"What color do you get by mixing " + s(m[swap ? 1 : 0]) + " and " + s(m[swap ? 0 : 1]) + "?", s(m[2]), "mix"};
        }
        case 1: {
            const int a = d.below(10), b = d.below(10 - a);  // a + b <= 9
            return {"What is " + s(number_words[std::size_t(a)]) + " plus " + s(number_words[std::size_t(b)]) + "?",
                    s(number_words[std::size_t(a) + std::size_t(b)]), "sum"};
        }
        case 2: {
            const auto& o = opposites[std::size_t(d.below(int(opposites.size())))];
            return {"What is the opposite of " + s(o[0]) + "?", s(o[1]), "opposite"};
        }
        default: {
            const auto& c = corners[std::size_t(d.below(int(corners.size())))];
            return {"How many corners does a " + s(c[0]) + " have?", s(c[1]), "corners"};
        }
    }
}

/// A question of an image task (not text) with its category; exists questions alternate yes/no
/// from `yes` and draw the POPE setting.
inline qa image_question(task_kind t, const scene& s, draws& d, bool yes = true) {
    switch (t) {
        case task_kind::describe: return describe_question(s);
        case task_kind::attribute: return attribute_question(s, d);
        case task_kind::count: return count_question(s, d);
        case task_kind::exists: return exists_question(s, d, yes, d.below(2) == 1);
        default: fail("world: image_question: task 'text' has no image");
    }
}

}  // namespace aligngpt::world
