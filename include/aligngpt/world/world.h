#pragma once
// The tiny AlignGPT world (issue #11; docs/world.md): a procedural image-text data set made from a
// seed, so that the whole method (CLIP levels, stage 1, stage 2, evaluation) can run end to end in
// minutes on data whose alignment is known. world::generate writes a directory:
//
//   images/NNNNNNN.png   one per scene: scenes 0 .. n_train-1 train, n_train .. n_train+n_eval-1 held out
//   captions.json        stage 1: LLaVA records {id, image, conversations: [human "<image>\nDescribe the
//                        image briefly.", gpt caption], caption_kind, scene}; the caption kinds of
//                        world/captions.h in the proportions of options::caption_mix
//   instruct.json        stage 2: one record per train image {id, image, conversations, task_kind, scene}
//                        (1-3 turns of one task; describe has one) and n_text text-only records (no
//                        image key, 1-3 turns, task_kind "text")
//   eval_describe.jsonl  held out, LLaVA question files (one JSON object a line: question_id, image,
//   eval_attribute.jsonl text, answer, task_kind, category, scene); attribute and count also carry
//   eval_count.jsonl     "answers": the answer 10 times (VQAv2's ten humans, agreeing, so the soft
//                        accuracy of `aligngpt score --task vqa` is 1 or 0 per question),
//   eval_pope.jsonl      pope "label" yes/no with category random or adversarial, two of each label
//   eval_text.jsonl      per image (`--task pope` reads it as annotations); text has no image
//   world.json           written last: the options, seed, counts and every scene with every object
//
// Paths in "image" are relative to images/ (LLaVA's image_folder). Every draw comes from rng::bits
// keyed by (seed, a stream per purpose, the item's index), and the images are rendered in parallel
// (OpenMP): the same options give the same bytes in every file on any thread count. Images are
// written with a rename but without fsync (thousands of fsyncs would dominate); world.json, written
// last and atomically, marks a finished directory.
//
//   world::options o = world::options::quick(/*seed=*/7);
//   const world::summary s = world::generate(o, "out/world");
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/png.h"
#include "aligngpt/world/captions.h"
#include "aligngpt/world/scene.h"
#include "aligngpt/world/tasks.h"

namespace aligngpt::world {

struct options {
    std::uint64_t seed = 1;
    scene_options scenes;  // image size, objects per scene
    std::int64_t n_train = 3000, n_eval = 200, n_text = 500;
    std::array<int, 5> caption_mix{40, 20, 15, 15, 10};  ///< weights of exact, partial, coarse, wrong, unrelated
    std::array<int, 4> task_mix{25, 25, 25, 25};         ///< weights of describe, attribute, count, exists
    int multi_turn_percent = 30;                         ///< attribute/count/exists records with 2-3 turns

    /// A few thousand images: generates in seconds; what `aligngpt world` runs by default.
    static options quick(std::uint64_t seed = 1) {
        options o;
        o.seed = seed;
        return o;
    }
    static options full(std::uint64_t seed = 1) {
        options o;
        o.seed = seed, o.n_train = 30000, o.n_eval = 1000, o.n_text = 5000;
        return o;
    }
};

inline void check(const options& o) {
    check(o.scenes);
    ALIGNGPT_CHECK(o.n_train >= 2 && o.n_train <= 10'000'000, "world: n_train must be in [2, 10000000], got ", o.n_train);
    ALIGNGPT_CHECK(o.n_eval >= 1 && o.n_eval <= 1'000'000, "world: n_eval must be in [1, 1000000], got ", o.n_eval);
    ALIGNGPT_CHECK(o.n_text >= 0 && o.n_text <= 10'000'000, "world: n_text must be in [0, 10000000], got ", o.n_text);
    ALIGNGPT_CHECK(o.multi_turn_percent >= 0 && o.multi_turn_percent <= 100, "world: multi_turn_percent must be in [0, 100]");
    const auto weights = [](const auto& w, const char* what) {
        int total = 0;
        for (int v : w) {
            ALIGNGPT_CHECK(v >= 0 && v <= 1000, "world: ", what, " weights must be in [0, 1000], got ", v);
            total += v;
        }
        ALIGNGPT_CHECK(total > 0, "world: ", what, " weights are all zero");
        return total;
    };
    const int non_partial = weights(o.caption_mix, "caption_mix") - o.caption_mix[1];
    weights(o.task_mix, "task_mix");
    // a scene of one object cannot have a partial caption: it draws among the other kinds
    ALIGNGPT_CHECK(o.scenes.min_objects >= 2 || non_partial > 0,
                   "world: with scenes of one object (min_objects 1), caption_mix needs a kind other than partial");
}

/// What generate wrote, by kind.
struct summary {
    std::int64_t images = 0;
    std::array<std::int64_t, 5> captions{};  ///< by caption_kind
    std::array<std::int64_t, 5> instruct{};  ///< records by task_kind
    std::array<std::int64_t, 5> eval{};      ///< questions by task_kind
};

inline std::string image_name(std::int64_t i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%07lld.png", static_cast<long long>(i));
    return buf;
}

// ---- scenes as JSON (world.json) ----------------------------------------------------------------

inline nlohmann::ordered_json scene_json(const scene& s, std::int64_t index, bool eval) {
    nlohmann::ordered_json j;
    j["scene"] = index, j["image"] = image_name(index), j["split"] = eval ? "eval" : "train";
    j["background"] = {{"color", background_colors[std::size_t(s.bg.color)].name},
                       {"style", background_styles[std::size_t(s.bg.style)]}};
    j["objects"] = nlohmann::ordered_json::array();
    for (const object& b : s.objects)
        j["objects"].push_back({{"shape", shape_names[std::size_t(b.shape)]},
                                {"color", colors[std::size_t(b.color)].name},
                                {"size", size_names[std::size_t(b.size)]},
                                {"position", position_names[std::size_t(b.cell)]},
                                {"x", b.x},
                                {"y", b.y},
                                {"radius", b.radius}});
    return j;
}

namespace detail {
template <class Table, class Name>
int word_field(const io::json_reader& r, std::string_view key, const Table& table, Name name) {
    const std::string w = r.string(key, std::nullopt);
    std::string all;
    for (std::size_t k = 0; k < table.size(); k++) {
        if (name(table[k]) == w) return int(k);
        all += (k ? ", " : "") + std::string(name(table[k]));
    }
    r.must_be(key, "one of " + all);
}
inline std::string_view same(std::string_view s) { return s; }
inline std::string_view color_name(const named_color& c) { return c.name; }
}  // namespace detail

/// One record of instruct.json: its task kind and the values of its turns (human, gpt, ...), as written.
struct instruct_record {
    std::string task_kind;
    std::vector<std::string> turns;
};

/// instruct.json's records, in file order. Errors name the file, the record, the turn and the field.
inline std::vector<instruct_record> read_instruct(const std::string& path) {
    io::json_parse_options po;
    po.max_bytes = std::uint64_t(4) << 30;
    const nlohmann::json j = io::read_json_file(path, po);
    ALIGNGPT_CHECK(j.is_array(), path, ": must be a JSON array of records");
    std::vector<instruct_record> out;
    for (std::size_t i = 0; i < j.size(); i++) {
        const std::string where = path + ": record " + std::to_string(i);
        const io::json_reader r(j[i], where);
        instruct_record rec;
        rec.task_kind = r.string("task_kind", std::nullopt);
        const nlohmann::json* turns = r.get("conversations");
        if (!turns || !turns->is_array()) r.must_be("conversations", "an array of turns");
        for (std::size_t t = 0; t < turns->size(); t++)
            rec.turns.push_back(
                io::json_reader((*turns)[t], where + ": turn " + std::to_string(t)).string("value", std::nullopt));
        out.push_back(std::move(rec));
    }
    return out;
}

/// The scenes of a world.json, for scoring answers and captions against the ground truth. Errors
/// name the file, the scene and the field: "w/world.json: scenes[3].objects[1]: field 'color' ...".
inline std::vector<scene> read_scenes(const std::string& path) {
    io::json_parse_options opt;
    opt.max_bytes = std::uint64_t(4) << 30;
    const nlohmann::json j = io::read_json_file(path, opt);
    const io::json_reader top(j, path);
    const int S = int(top.object("options").integer("image_size", std::nullopt, 24, 1024));
    const nlohmann::json* list = top.get("scenes");
    if (!list || !list->is_array()) top.must_be("scenes", "an array of scenes");
    std::vector<scene> out;
    for (std::size_t i = 0; i < list->size(); i++) {
        const std::string where = path + ": scenes[" + std::to_string(i) + "]";
        const io::json_reader r((*list)[i], where);
        ALIGNGPT_CHECK(r.integer("scene", std::nullopt, 0, io::json_reader::no_limit) == std::int64_t(i), where,
                       ": field 'scene' must be ", i, " (scenes are listed in order)");
        scene s;
        s.image_size = S;
        const io::json_reader bg = r.object("background");
        s.bg = {detail::word_field(bg, "color", background_colors, detail::color_name),
                detail::word_field(bg, "style", background_styles, detail::same)};
        const nlohmann::json* objs = r.get("objects");
        if (!objs || !objs->is_array() || objs->empty() || objs->size() > 9) r.must_be("objects", "an array of 1 to 9 objects");
        for (std::size_t k = 0; k < objs->size(); k++) {
            const io::json_reader o((*objs)[k], where + ".objects[" + std::to_string(k) + "]");
            object b;
            b.shape = detail::word_field(o, "shape", shape_names, detail::same);
            b.color = detail::word_field(o, "color", colors, detail::color_name);
            b.size = detail::word_field(o, "size", size_names, detail::same);
            b.cell = detail::word_field(o, "position", position_names, detail::same);
            b.x = int(o.integer("x", std::nullopt, 0, S - 1)), b.y = int(o.integer("y", std::nullopt, 0, S - 1));
            b.radius = int(o.integer("radius", std::nullopt, 1, S));
            s.objects.push_back(b);
        }
        out.push_back(std::move(s));
    }
    return out;
}

/// The options that decide a world's bytes (all but the seed), as world.json's "options" holds them.
inline nlohmann::ordered_json options_json(const options& o) {
    return {{"image_size", o.scenes.image_size},
            {"min_objects", o.scenes.min_objects},
            {"max_objects", o.scenes.max_objects},
            {"n_train", o.n_train},
            {"n_eval", o.n_eval},
            {"n_text", o.n_text},
            {"caption_mix", o.caption_mix},
            {"task_mix", o.task_mix},
            {"multi_turn_percent", o.multi_turn_percent}};
}

// ---- records ---------------------------------------------------------------------------------------

namespace detail {
using ojson = nlohmann::ordered_json;

inline ojson turn(const char* from, const std::string& value) { return {{"from", from}, {"value", value}}; }

/// The conversation of train record i: 1-3 questions of its task about scene s, no question twice.
inline ojson conversation(task_kind t, const scene& s, draws& d, int multi_turn_percent) {
    const int turns = t == task_kind::describe ? 1 : d.percent(multi_turn_percent) ? 2 + d.below(2) : 1;
    bool yes = d.below(2) == 1;
    ojson conv = ojson::array();
    std::vector<std::string> asked;
    for (int k = 0; k < turns; k++) {
        qa q;
        for (int attempt = 0; attempt < 8; attempt++) {
            q = image_question(t, s, d, yes);
            if (std::find(asked.begin(), asked.end(), q.question) == asked.end()) break;
            q.question.clear();
        }
        if (q.question.empty()) break;
        asked.push_back(q.question);
        yes = !yes;  // exists: alternate yes and no
        conv.push_back(turn("human", k == 0 ? "<image>\n" + q.question : q.question));
        conv.push_back(turn("gpt", q.answer));
    }
    return conv;
}

inline ojson text_conversation(draws& d) {
    const int turns = 1 + d.below(3);
    ojson conv = ojson::array();
    for (int k = 0; k < turns; k++) {
        const qa q = text_question(d);
        conv.push_back(turn("human", q.question));
        conv.push_back(turn("gpt", q.answer));
    }
    return conv;
}

inline ojson question(const std::string& id, const std::string& image, const qa& q, task_kind t, std::int64_t scene) {
    ojson j;
    j["question_id"] = id;
    if (!image.empty()) j["image"] = image;
    j["text"] = q.question, j["answer"] = q.answer, j["task_kind"] = task_kind_names[std::size_t(t)], j["category"] = q.category;
    if (scene >= 0) j["scene"] = scene;
    return j;
}

inline void write_text(const std::string& path, const std::string& text) {
    io::atomic_file f(path);
    f.write(text.data(), text.size());
    f.commit();
}

/// tmp + rename without fsync (see the header comment).
inline void write_quick(const std::string& path, const std::string& bytes) {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ALIGNGPT_CHECK(fd >= 0, path, ": cannot create ", tmp, ": ", io::detail::errno_text(errno));
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t r = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            const int e = r < 0 ? errno : EIO;
            ::close(fd);
            fail(path, ": write to ", tmp, " failed: ", io::detail::errno_text(e));
        }
        done += std::size_t(r);
    }
    ALIGNGPT_CHECK(::close(fd) == 0, path, ": close of ", tmp, " failed: ", io::detail::errno_text(errno));
    ALIGNGPT_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, path, ": rename from ", tmp,
                   " failed: ", io::detail::errno_text(errno));
}
}  // namespace detail

/// The scene that unrelated caption i describes: a drawn other train scene whose exact caption
/// differs from scene i's (the next one that does, if the drawn one does not).
inline std::int64_t unrelated_scene(const options& o, std::int64_t i, const scene& s, draws& d) {
    const std::int64_t n = o.n_train;
    std::int64_t j = (i + 1 + std::int64_t(((d.next() >> 32) * std::uint64_t(n - 1)) >> 32)) % n;
    for (std::int64_t tries = 0; tries < n; tries++, j = (j + 1) % n)
        if (j != i && !(describe_exact(make_scene(o.scenes, o.seed, std::uint64_t(j))) == describe_exact(s))) return j;
    fail("world: every train scene has the same exact caption; no unrelated caption exists");
}

/// Writes the world of `o` into `dir` (created if missing; files of an earlier run are replaced,
/// images beyond this run's count are left alone). Returns the counts.
inline summary generate(const options& o, const std::string& dir) {
    namespace fs = std::filesystem;
    using detail::ojson;
    check(o);
    std::error_code ec;
    fs::create_directories(fs::path(dir) / "images", ec);
    ALIGNGPT_CHECK(!ec, dir, ": cannot create the directory images/: ", ec.message());
    const std::int64_t N = o.n_train + o.n_eval;
    summary sum;
    sum.images = N;

    // images, in parallel: each is a pure function of (seed, index); errors are rethrown after the loop
    std::vector<std::string> errors(static_cast<std::size_t>(N));  // exceptions cannot leave a parallel loop
    ALIGNGPT_OMP_FOR
    for (std::int64_t i = 0; i < N; i++) {
        try {
            const scene s = make_scene(o.scenes, o.seed, std::uint64_t(i));
            detail::write_quick(dir + "/images/" + image_name(i), io::png_bytes(s.image_size, s.image_size, render(s)));
        } catch (const std::exception& e) { errors[std::size_t(i)] = e.what(); }
    }
    for (const std::string& e : errors)
        if (!e.empty()) fail(e);

    // captions.json (stage 1)
    ojson captions = ojson::array();
    for (std::int64_t i = 0; i < o.n_train; i++) {
        const scene s = make_scene(o.scenes, o.seed, std::uint64_t(i));
        draws d(o.seed, stream::caption, std::uint64_t(i));
        auto kind = caption_kind(d.weighted(o.caption_mix));
        if (kind == caption_kind::partial && s.objects.size() < 2) {  // draw again without partial
            auto mix = o.caption_mix;
            mix[1] = 0;
            kind = caption_kind(d.weighted(mix));
        }
        std::int64_t other = -1;
        scene os;
        if (kind == caption_kind::unrelated)
            other = unrelated_scene(o, i, s, d), os = make_scene(o.scenes, o.seed, std::uint64_t(other));
        const caption c = make_caption(s, kind, d, other >= 0 ? &os : nullptr);
        sum.captions[std::size_t(kind)]++;
        ojson r;
        r["id"] = "c" + std::to_string(i), r["image"] = image_name(i);
        r["conversations"] = {detail::turn("human", "<image>\nDescribe the image briefly."), detail::turn("gpt", c.text)};
        r["caption_kind"] = caption_kind_names[std::size_t(kind)], r["scene"] = i;
        if (other >= 0) r["caption_scene"] = other;
        captions.push_back(std::move(r));
    }
    detail::write_text(dir + "/captions.json", captions.dump(1) + "\n");
    captions = ojson();

    // instruct.json (stage 2): one record per train image, then the text-only records
    ojson instruct = ojson::array();
    for (std::int64_t i = 0; i < o.n_train; i++) {
        const scene s = make_scene(o.scenes, o.seed, std::uint64_t(i));
        draws d(o.seed, stream::instruct, std::uint64_t(i));
        const auto t = task_kind(d.weighted(o.task_mix));
        sum.instruct[std::size_t(t)]++;
        ojson r;
        r["id"] = "i" + std::to_string(i), r["image"] = image_name(i);
        r["conversations"] = detail::conversation(t, s, d, o.multi_turn_percent);
        r["task_kind"] = task_kind_names[std::size_t(t)], r["scene"] = i;
        instruct.push_back(std::move(r));
    }
    for (std::int64_t k = 0; k < o.n_text; k++) {
        draws d(o.seed, stream::text, std::uint64_t(k));
        sum.instruct[std::size_t(task_kind::text)]++;
        instruct.push_back(
            {{"id", "t" + std::to_string(k)}, {"conversations", detail::text_conversation(d)}, {"task_kind", "text"}});
    }
    detail::write_text(dir + "/instruct.json", instruct.dump(1) + "\n");
    instruct = ojson();

    // held-out questions, one file per task
    std::array<std::string, 5> files;
    const auto add = [&](task_kind t, const ojson& q) {
        files[std::size_t(t)] += q.dump() + "\n";
        sum.eval[std::size_t(t)]++;
    };
    for (std::int64_t e = 0; e < o.n_eval; e++) {
        const std::int64_t i = o.n_train + e;
        const scene s = make_scene(o.scenes, o.seed, std::uint64_t(i));
        draws d(o.seed, stream::eval, std::uint64_t(e));
        const std::string id = std::to_string(e), img = image_name(i);
        add(task_kind::describe, detail::question("describe-" + id, img, describe_question(s), task_kind::describe, i));
        for (task_kind t : {task_kind::attribute, task_kind::count}) {
            ojson q =
                detail::question(std::string(task_kind_names[std::size_t(t)]) + "-" + id, img, image_question(t, s, d), t, i);
            q["answers"] = ojson::array();
            for (int k = 0; k < 10; k++) q["answers"].push_back(q["answer"]);  // VQAv2's 10 humans, agreeing
            add(t, q);
        }
        int k = 0;
        for (bool adversarial : {false, true})
            for (bool yes : {true, false}) {
                ojson q = detail::question("pope-" + id + "-" + std::to_string(k++), img, exists_question(s, d, yes, adversarial),
                                           task_kind::exists, i);
                q["label"] = yes ? "yes" : "no";
                add(task_kind::exists, q);
            }
        draws dt(o.seed, stream::text, std::uint64_t(o.n_text + e));  // past the train text records
        add(task_kind::text, detail::question("text-" + id, "", text_question(dt), task_kind::text, -1));
    }
    const std::array<const char*, 5> names{"eval_describe.jsonl", "eval_attribute.jsonl", "eval_count.jsonl", "eval_pope.jsonl",
                                           "eval_text.jsonl"};
    for (std::size_t t = 0; t < files.size(); t++) detail::write_text(dir + "/" + names[t], files[t]);

    // world.json, last: the options and the ground truth
    ojson w;
    w["format"] = "aligngpt-world", w["version"] = 1, w["seed"] = o.seed;
    w["options"] = options_json(o);
    w["image_folder"] = "images";
    const auto by_name = [](const auto& names_, const auto& counts) {
        ojson j = ojson::object();
        for (std::size_t k = 0; k < counts.size(); k++) j[std::string(names_[k])] = counts[k];
        return j;
    };
    w["counts"] = {{"images", N},
                   {"captions", by_name(caption_kind_names, sum.captions)},
                   {"instruct", by_name(task_kind_names, sum.instruct)},
                   {"eval", by_name(task_kind_names, sum.eval)}};
    ojson scenes = ojson::array();
    for (std::int64_t i = 0; i < N; i++)
        scenes.push_back(scene_json(make_scene(o.scenes, o.seed, std::uint64_t(i)), i, i >= o.n_train));
    w["scenes"] = std::move(scenes);
    detail::write_text(dir + "/world.json", w.dump(1) + "\n");
    return sum;
}

}  // namespace aligngpt::world
