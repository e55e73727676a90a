#pragma once
// `aligngpt world` (issue #11): the tiny AlignGPT world end to end, and the paper's comparison on it.
// Per seed S (seeds seed, seed+1, ..., each a full replicate), under OUT/seed-S/:
//
//   1 world/        world::generate (images, captions.json, instruct.json, eval_*.jsonl, world.json)
//   2 clip/ llm/    world::pretrain_clip / pretrain_llm: the stand-ins for CLIP-L and Vicuna (towers.h)
//   3 levels/       train::compute_levels of captions.json with the tiny CLIP (what `aligngpt levels`
//                   runs): captions_levels.json, levels.png (the histogram)
//   4 V/stage1/     train::trainer, stage pretrain, each record's level in "similarity"
//   5 V/stage2/     train::trainer, stage finetune (vicuna_v1): a Hugging Face AlignGPT directory that
//                   `aligngpt run -m OUT/seed-S/V/stage2` loads (mm_vision_tower is rewritten relative
//                   to the directory, so OUT can move)
//   6 V/eval/       eval::answer_questions (greedy) on the held-out eval_*.jsonl, scored here:
//                   attribute and count: VQA soft accuracy (the world's ten human answers agree, so
//                   it is exact match after VQA normalisation), POPE accuracy/precision/recall/F1,
//                   describe: world::score_caption against the scene, text: normalised exact match
//     text_prior/eval/  the blind baseline: each question's most frequent training answer, no model
//                   and no image (answer_from_prior), scored the same way
//   7 OUT/: report.md, results.json, plots/ (loss curves, level histogram, gate weights, examples);
//                   the quick profile's, as an example: docs/world-quick/report.md
//
// Variants (the paper's comparison): aligngpt (the gate, the method), llava (no alignment module:
// align_mode::none, a LLaVA-1.5 baseline with its own stage 1), and the ablations global_only,
// local_only and fixed:7, which reuse aligngpt's stage 1 and change stage 2 and inference. The world,
// the towers and the levels are shared by all variants of a seed.
//
// Every random draw is rng-keyed by the seed and the kernels reduce in a fixed order, so results.json
// is the same bits on any thread count, except its "seconds" (wall times).
//
// Resuming (`resume`, `aligngpt world --resume`): each finished stage leaves a marker in
// OUT/.stages/ holding what the report needs from it (metrics, gate sums, tower and level figures:
// JSON doubles round-trip exactly); a resumed run with the same options (OUT/.stages/options.json)
// restores the marked stages, resumes an interrupted training stage from its checkpoint, and runs
// the rest, so its results.json is the uninterrupted run's.
//
//   auto o = world::pipeline_options::quick(/*seed=*/1);
//   o.out_dir = "world-out";
//   const world::pipeline_result r = world::run_pipeline(o);   // r.table, r.report, r.results
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/conversation.h"
#include "aligngpt/eval/answer.h"
#include "aligngpt/eval/score.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/image.h"
#include "aligngpt/pretrained.h"
#include "aligngpt/tokenizer/llama.h"
#include "aligngpt/train/levels.h"
#include "aligngpt/train/plot.h"
#include "aligngpt/train/trainer.h"
#include "aligngpt/world/captions.h"
#include "aligngpt/world/towers.h"
#include "aligngpt/world/world.h"

namespace aligngpt::world {

/// The variants run_pipeline knows, in report order.
inline constexpr std::array<std::string_view, 5> pipeline_variants{"aligngpt", "llava", "global_only", "local_only", "fixed:7"};

/// The blind baseline's name in the table and results.json (not a trained variant).
inline constexpr std::string_view text_prior = "text_prior";

inline bool is_pipeline_variant(std::string_view v) {
    return std::find(pipeline_variants.begin(), pipeline_variants.end(), v) != pipeline_variants.end();
}

/// Stage 2's and inference's indicator of a variant.
inline models::alignment variant_alignment(std::string_view v) {
    if (v == "aligngpt") return {};
    if (v == "llava") return {models::align_mode::none};
    if (v == "global_only") return {models::align_mode::global_only};
    if (v == "local_only") return {models::align_mode::local_only};
    if (v == "fixed:7") return {models::align_mode::fixed_level, 7};
    fail("world: unknown variant \"", v, "\" (known: aligngpt, llava, global_only, local_only, fixed:7)");
}

/// The variant whose stage 1 a variant uses: llava has its own (projector only), the ablations aligngpt's.
inline std::string_view stage1_of(std::string_view v) { return v == "llava" ? "llava" : "aligngpt"; }

/// A directory name for a variant ("fixed:7" -> "fixed_7").
inline std::string variant_dir(std::string_view v) {
    std::string s(v);
    std::replace(s.begin(), s.end(), ':', '_');
    return s;
}

struct pipeline_options {
    std::string profile = "quick";
    std::string out_dir = "world-out";
    std::uint64_t seed = 1;
    int seeds = 1;  ///< replicates: seeds seed .. seed+seeds-1
    std::vector<std::string> variants{"aligngpt", "llava"};
    options world;  ///< its seed is set per replicate
    clip_pretrain_options clip;
    llm_pretrain_options llm;
    int n_levels = 8;
    index_t levels_batch = 32;
    std::int64_t stage1_steps = 100, stage2_steps = 300;
    index_t stage1_batch = 16, stage2_batch = 16;
    double stage1_lr = 1e-3, stage2_lr = 5e-4;
    index_t eval_batch = 16, max_new_tokens = 64;
    std::int64_t gate_questions = 50;  ///< per question kind: questions whose gate weights are averaged
    int examples = 4;                  ///< example images in report.md
    bool resume = false;               ///< skip what a run with the same options finished in out_dir (`--resume`)
    std::ostream* log = &std::cerr;    ///< progress; nullptr: quiet

    /// Two variants, one seed: fits 10 minutes on 2 cores (docs/world.md has the measured times).
    static pipeline_options quick(std::uint64_t seed = 1) {
        pipeline_options o;
        o.profile = "quick", o.seed = seed;
        o.world = options::quick(seed);
        o.world.n_train = 2000, o.world.n_eval = 50, o.world.n_text = 300;
        o.clip = clip_pretrain_options::quick(seed);  // 48 px in 6-px patches: 64 image tokens
        o.clip.sched.steps = 300;
        o.clip.n_eval = 50;
        o.llm = llm_pretrain_options::quick(seed);
        o.stage1_steps = 150, o.stage2_steps = 350;
        return o;
    }
    /// All five variants, three seeds, a larger world (each stage-2 record is seen about once, so the
    /// models cannot pass by remembering answers) and a longer stage 2; the quick profile's towers.
    /// About 1.5 hours on 2 idle cores, by its stage-2 step rate (docs/world.md).
    static pipeline_options full(std::uint64_t seed = 1) {
        pipeline_options o = quick(seed);
        o.profile = "full", o.seeds = 3;
        o.variants.assign(pipeline_variants.begin(), pipeline_variants.end());
        o.world = options::full(seed);
        o.world.n_eval = 200;
        o.clip.n_eval = 200;
        o.stage1_steps = 300, o.stage2_steps = 1500;
        o.gate_questions = 200;
        return o;
    }
    /// A few seconds: the tests' profile (every stage runs, the numbers mean nothing).
    static pipeline_options test(std::uint64_t seed = 1) {
        pipeline_options o;
        o.profile = "test", o.seed = seed;
        o.world = options::quick(seed);
        o.world.scenes.image_size = 24;
        o.world.n_train = 16, o.world.n_eval = 3, o.world.n_text = 8;
        o.clip = clip_pretrain_options::quick(seed);
        o.clip.width = 16, o.clip.vision_layers = 1, o.clip.text_layers = 1, o.clip.projection_dim = 16, o.clip.patch_size = 6;
        o.clip.sched = {3, 8, 1e-2, 0.0, 0.0, 1.0};
        o.clip.n_eval = 3;
        o.llm = llm_pretrain_options::quick(seed);
        o.llm.hidden = 32, o.llm.heads = 2, o.llm.layers = 1, o.llm.intermediate = 64, o.llm.vocab_size = 400,
        o.llm.max_length = 128;
        o.llm.sched = {3, 4, 1e-2, 0.0, 0.0, 1.0};
        o.levels_batch = 8;
        o.stage1_steps = 2, o.stage2_steps = 2, o.stage1_batch = 4, o.stage2_batch = 4;
        o.eval_batch = 4, o.max_new_tokens = 12, o.gate_questions = 3, o.examples = 2;
        return o;
    }
    static pipeline_options profile_named(std::string_view name, std::uint64_t seed) {
        if (name == "quick") return quick(seed);
        if (name == "full") return full(seed);
        if (name == "test") return test(seed);
        fail("world: --profile must be quick, full or test, got \"", name, "\"");
    }
};

inline void check(const pipeline_options& o) {
    ALIGNGPT_CHECK(!o.out_dir.empty(), "world: the output directory is empty");
    ALIGNGPT_CHECK(o.seeds >= 1 && o.seeds <= 100, "world: seeds must be in [1, 100], got ", o.seeds);
    ALIGNGPT_CHECK(!o.variants.empty(), "world: no variants to run");
    for (const auto& v : o.variants) (void)variant_alignment(v);
    for (std::size_t i = 0; i < o.variants.size(); i++)
        for (std::size_t j = 0; j < i; j++)
            ALIGNGPT_CHECK(o.variants[i] != o.variants[j], "world: variant \"", o.variants[i], "\" is listed twice");
    ALIGNGPT_CHECK(o.stage1_steps >= 1 && o.stage2_steps >= 1, "world: stage steps must be >= 1");
    ALIGNGPT_CHECK(o.n_levels >= 1 && o.n_levels <= 8, "world: n_levels must be in [1, 8]");
    check(o.world);
}

/// "a,b,c" -> {"a", "b", "c"}, each a known variant.
inline std::vector<std::string> parse_variants(std::string_view list) {
    std::vector<std::string> out;
    std::size_t i = 0;
    for (;;) {
        const std::size_t j = std::min(list.find(',', i), list.size());
        const std::string v(list.substr(i, j - i));
        ALIGNGPT_CHECK(is_pipeline_variant(v), "world: unknown variant \"", v,
                       "\" (known: aligngpt, llava, global_only, local_only, fixed:7)");
        out.push_back(v);
        if (j == list.size()) break;
        i = j + 1;
    }
    return out;
}

// ---- scoring -------------------------------------------------------------------------------------

/// The metrics of one variant on one seed, by name ("attribute_accuracy", "pope_f1", ...).
using metrics = std::map<std::string, double>;

/// Scores an answers file against its question file of kind `kind` (describe, attribute, count,
/// exists, text; the question files carry the ground truth); `scenes` are world.json's (describe).
/// Adds to `m`: attribute_accuracy / count_accuracy / text_accuracy (VQA soft accuracy against the
/// record's "answers", else its "answer" ten times), pope_accuracy, _precision, _recall, _f1,
/// _yes_ratio (and per category), describe_object_precision, _object_recall, _count_accuracy,
/// _background_accuracy, _exact (every object, nothing else). A question without an answer is an error.
inline void score_answers(std::string_view kind, const std::string& question_file, const std::string& answers_file,
                          const std::vector<scene>& scenes, metrics& m) {
    const auto answers = eval::read_answers(answers_file);
    std::map<std::string, std::string> text_of;
    for (const auto& a : answers) text_of[a.question_id] = a.text;
    const auto qs = eval::read_jsonl(question_file, "questions");
    const auto answer_of = [&](const eval::jsonl_record& q) -> const std::string& {
        const auto it = text_of.find(eval::question_id(q.value, q.where));
        ALIGNGPT_CHECK(it != text_of.end(), q.where, ": no answer in ", answers_file);
        return it->second;
    };
    const double n = double(qs.size());
    const std::string k(kind);
    if (kind == "attribute" || kind == "count" || kind == "text") {
        double sum = 0;
        for (const auto& q : qs) {
            const io::json_reader r(q.value, q.where);
            std::vector<std::string> humans;
            if (const nlohmann::json* h = r.get("answers"); h && h->is_array())
                for (const auto& x : *h) humans.push_back(x.is_string() ? x.get<std::string>() : std::string());
            else
                humans.assign(10, r.string("answer", std::nullopt));
            sum += eval::vqa_accuracy(answer_of(q), humans);
        }
        m[k + "_accuracy"] = sum / n;
    } else if (kind == "exists") {
        std::map<std::string, eval::pope_result> per;
        eval::pope_result all;
        for (const auto& q : qs) {
            const io::json_reader r(q.value, q.where);
            const bool yes = eval::read_yes_no(r, "label");
            eval::pope_add(all, yes, answer_of(q));
            eval::pope_add(per[r.string("category", std::string("all"))], yes, answer_of(q));
        }
        m["pope_accuracy"] = all.accuracy(), m["pope_precision"] = all.precision(), m["pope_recall"] = all.recall();
        m["pope_f1"] = all.f1(), m["pope_yes_ratio"] = all.yes_ratio();
        for (const auto& [c, r] : per) m["pope_" + c + "_f1"] = r.f1();
    } else if (kind == "describe") {
        double prec = 0, rec = 0, cnt = 0, bg = 0, exact = 0;
        for (const auto& q : qs) {
            const io::json_reader r(q.value, q.where);
            const std::int64_t s = r.integer("scene", std::nullopt, 0, std::int64_t(scenes.size()) - 1);
            const caption_score c = score_caption(answer_of(q), scenes[std::size_t(s)]);
            prec += c.precision(), rec += c.recall(), cnt += c.count_right, bg += c.background_right;
            exact += c.objects_right == c.objects_in_scene && c.objects_said == c.objects_in_scene;
        }
        m["describe_object_precision"] = prec / n, m["describe_object_recall"] = rec / n;
        m["describe_count_accuracy"] = cnt / n, m["describe_background_accuracy"] = bg / n, m["describe_exact"] = exact / n;
    } else {
        fail("world: score_answers: unknown question kind \"", kind, "\"");
    }
}

/// The metrics of the results table, in column order, with their short headers.
inline const std::vector<std::pair<std::string, std::string>>& table_columns() {
    static const std::vector<std::pair<std::string, std::string>> c{{"attribute_accuracy", "attribute acc"},
                                                                    {"count_accuracy", "count acc"},
                                                                    {"pope_accuracy", "POPE acc"},
                                                                    {"pope_precision", "POPE prec"},
                                                                    {"pope_recall", "POPE rec"},
                                                                    {"pope_f1", "POPE F1"},
                                                                    {"describe_object_precision", "describe obj prec"},
                                                                    {"describe_object_recall", "describe obj rec"},
                                                                    {"describe_exact", "describe exact"},
                                                                    {"describe_count_accuracy", "describe count"},
                                                                    {"describe_background_accuracy", "describe bg"},
                                                                    {"text_accuracy", "text acc"}};
    return c;
}

struct pipeline_result {
    std::string report, results, table;                ///< report.md and results.json paths; the table as markdown
    std::vector<std::string> plots;                    ///< PNG paths (those gnuplot drew, the histogram, examples)
    std::map<std::string, double> stage_seconds;       ///< wall time per stage, summed over seeds and variants
    std::map<std::string, std::vector<metrics>> runs;  ///< variant -> one metrics per seed
    double seconds = 0;
};

namespace pipeline_detail {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using clock = std::chrono::steady_clock;

inline double since(clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); }

inline void write_text(const std::string& path, const std::string& text) {
    io::atomic_file f(path);
    f.write(text.data(), text.size());
    f.commit();
}

inline std::string fmt(const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

/// Mean and sample standard deviation (0 for one value).
inline std::pair<double, double> mean_std(const std::vector<double>& x) {
    double m = 0;
    for (double v : x) m += v;
    m /= double(x.size());
    double s = 0;
    for (double v : x) s += (v - m) * (v - m);
    return {m, x.size() > 1 ? std::sqrt(s / double(x.size() - 1)) : 0.0};
}

/// A stage stopped by SIGTERM / SIGINT (the trainer checkpoints and returns): the pipeline stops too.
inline void stop_if_interrupted(const train::run_result& r, const std::string& dir) {
    ALIGNGPT_CHECK(!r.interrupted, "stopped by a signal at step ", r.steps_done, " of ", r.total_steps, " (checkpoint in ", dir,
                   ")");
}

/// Everything in the options that decides the results (not out_dir, log, resume): a resumed run
/// must have the same.
inline ojson options_record(const pipeline_options& o) {
    const auto sched = [](const tower_schedule& s) {
        return ojson{{"steps", s.steps},
                     {"batch", s.batch},
                     {"lr", s.lr},
                     {"warmup_ratio", s.warmup_ratio},
                     {"weight_decay", s.weight_decay},
                     {"max_grad_norm", s.max_grad_norm}};
    };
    const clip_pretrain_options& c = o.clip;
    const llm_pretrain_options& l = o.llm;
    ojson j;
    j["format"] = "aligngpt-world-options", j["version"] = 1;
    j["profile"] = o.profile, j["seed"] = o.seed, j["seeds"] = o.seeds, j["variants"] = o.variants;
    j["world"] = options_json(o.world);
    j["clip"] = {{"width", c.width},
                 {"heads", c.heads},
                 {"vision_layers", c.vision_layers},
                 {"text_layers", c.text_layers},
                 {"projection_dim", c.projection_dim},
                 {"patch_size", c.patch_size},
                 {"max_positions", c.max_positions},
                 {"bpe_merges", c.bpe_merges},
                 {"sched", sched(c.sched)},
                 {"n_eval", c.n_eval}};
    j["llm"] = {
        {"hidden", l.hidden},         {"layers", l.layers},         {"heads", l.heads},       {"intermediate", l.intermediate},
        {"vocab_size", l.vocab_size}, {"max_length", l.max_length}, {"sched", sched(l.sched)}};
    j["n_levels"] = o.n_levels, j["levels_batch"] = o.levels_batch;
    j["stage1"] = {{"steps", o.stage1_steps}, {"batch", o.stage1_batch}, {"lr", o.stage1_lr}};
    j["stage2"] = {{"steps", o.stage2_steps}, {"batch", o.stage2_batch}, {"lr", o.stage2_lr}};
    j["eval_batch"] = o.eval_batch, j["max_new_tokens"] = o.max_new_tokens, j["gate_questions"] = o.gate_questions;
    j["examples"] = o.examples;
    return j;
}

/// A JSON file the pipeline wrote (a marker, options.json), read back with its key order.
inline ojson read_own_json(const std::string& path) {
    const std::string text = io::read_text_file(path, std::uint64_t(256) << 20);
    try {
        return ojson::parse(text);
    } catch (const std::exception& e) { fail(path, ": not the JSON this pipeline writes (", e.what(), ")"); }
}

/// Starts OUT/.stages for this run: with resume, the earlier run's markers are kept if its options
/// equal these (else the difference is named); without, they are removed.
inline void start_markers(const pipeline_options& o, const std::string& marks) {
    const ojson rec = options_record(o);
    const std::string path = marks + "/options.json";
    if (o.resume && fs::exists(path)) {
        const ojson prev = read_own_json(path);
        for (const auto& [key, value] : rec.items())
            ALIGNGPT_CHECK(prev.contains(key) && prev[key] == value, "world: --resume: ", o.out_dir,
                           " holds a run with other options (\"", key, "\": ", prev.contains(key) ? prev[key].dump() : "missing",
                           " there, ", value.dump(), " now); run without --resume to start over, or choose another -o");
        return;
    }
    fs::remove_all(marks);
    fs::create_directories(marks);
    write_text(path, rec.dump(1) + "\n");
}

/// Rewrites config.json's mm_vision_tower as a path relative to the model directory.
inline void relative_vision_tower(const std::string& model_dir, const std::string& tower_dir) {
    const std::string path = model_dir + "/config.json";
    nlohmann::json c = io::read_json_file(path);
    c["mm_vision_tower"] = fs::relative(fs::absolute(tower_dir), fs::absolute(model_dir)).string();
    write_text(path, c.dump(2) + "\n");
}

inline const std::array<std::string_view, 4> image_kinds{"describe", "attribute", "count", "exists"};
inline std::string question_file(std::string_view kind) {
    return kind == "exists" ? "eval_pope.jsonl" : "eval_" + std::string(kind) + ".jsonl";
}

/// The prompt ids of a question, as eval::answer_questions builds them.
inline std::vector<std::int64_t> prompt_ids(const tokenizer::llama_tokenizer& tok, const std::string& text, bool image) {
    auto conv = conversation::make("vicuna_v1");
    conv.append(conv.roles[0], image ? "<image>\n" + text : text);
    conv.append(conv.roles[1], std::nullopt);
    return tokenizer::tokenizer_image_token(tok, conv.prompt());
}

/// Per variant and seed: the text-only answers (eval::answer_questions needs an image per question).
inline void answer_text(const pretrained::loaded_aligngpt<>& m, const tokenizer::llama_tokenizer& tok, const std::string& qfile,
                        const std::string& afile, index_t max_new_tokens) {
    const auto stop = conversation::make("vicuna_v1").stop_string();
    std::string out;
    for (const auto& q : eval::read_jsonl(qfile, "questions")) {
        const io::json_reader r(q.value, q.where);
        const std::string text = r.string("text", std::nullopt);
        const auto ids = prompt_ids(tok, text, false);
        const auto gen = m.model->generate({ids}, autograd::variable<float>(), generate::options{max_new_tokens, {}});
        ojson a;
        a["question_id"] = q.value["question_id"], a["prompt"] = text, a["text"] = eval::final_answer(tok, gen, stop);
        out += a.dump() + "\n";
    }
    write_text(afile, out);
}

/// The text prior, a blind baseline: each held-out question gets the answer that instruct.json gives
/// most often to the same question text (ties: the smaller string), or, for a question never asked in
/// training, the kind's most frequent answer. No model and no image: what answering from the question
/// alone can score, so a variant above it on an image question has read the image.
inline void answer_from_prior(const std::string& world_dir, const std::string& eval_dir) {
    using counts = std::map<std::string, std::int64_t>;
    std::map<std::string, counts> by_question, by_kind;
    for (const instruct_record& rec : read_instruct(world_dir + "/instruct.json"))
        for (std::size_t t = 0; t + 1 < rec.turns.size(); t += 2) {
            std::string q = rec.turns[t];
            if (q.rfind("<image>\n", 0) == 0) q.erase(0, 8);
            by_question[q][rec.turns[t + 1]]++, by_kind[rec.task_kind][rec.turns[t + 1]]++;
        }
    const auto most_frequent = [](const counts& c) {
        const auto it = std::max_element(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
        return it == c.end() ? std::string() : it->first;  // max_element keeps the first (smallest) of equal counts
    };
    fs::create_directories(eval_dir);
    for (std::string_view kind : {"describe", "attribute", "count", "exists", "text"}) {
        const std::string qf = world_dir + "/" + question_file(kind);
        std::string out;
        for (const auto& q : eval::read_jsonl(qf, "questions")) {
            const io::json_reader r(q.value, q.where);
            const std::string text = r.string("text", std::nullopt);
            const auto it = by_question.find(text);
            const auto k = by_kind.find(std::string(kind));
            ojson a;
            a["question_id"] = q.value["question_id"], a["prompt"] = text, a["model_id"] = "text_prior";
            a["text"] = it != by_question.end() ? most_frequent(it->second) : k != by_kind.end() ? most_frequent(k->second) : "";
            out += a.dump() + "\n";
        }
        write_text(eval_dir + "/answers_" + std::string(kind) + ".jsonl", out);
    }
}

struct gate_stats {
    std::map<std::string, std::vector<double>> sum;  ///< kind -> summed weights over levels 0..6
    std::map<std::string, std::int64_t> n;
};

}  // namespace pipeline_detail

/// Runs the whole pipeline (see the header comment); throws on any failure, naming the stage.
inline pipeline_result run_pipeline(const pipeline_options& o) {
    using namespace pipeline_detail;
    check(o);
    const auto t_all = clock::now();
    std::ostream* log = o.log;
    pipeline_result res;
    fs::create_directories(o.out_dir + "/plots/examples");
    ojson levels_json = ojson::object(), towers_json = ojson::object(), gate_json = ojson::object();
    std::map<std::string, gate_stats> gates;  // variant -> gate stats over all seeds
    std::vector<std::string> loss_plots;      // markdown lines
    ojson examples = ojson::array();
    const int total_stages = 7;
    const std::string marks = o.out_dir + "/.stages";
    start_markers(o, marks);
    // Runs a stage: `fn` does the work and returns what the report needs from it, `keep` puts that in
    // place. A stage that an earlier run finished (its marker, with resume) is kept, not run; a stage
    // without a marker name always runs.
    const auto stage = [&](int k, const std::string& name, const std::string& what, const std::string& marker, auto&& fn,
                           auto&& keep) {
        const std::string mark = marks + "/" + marker + ".json";
        if (o.resume && !marker.empty() && fs::exists(mark)) {
            const ojson m = read_own_json(mark);
            keep(m.at("data"));
            res.stage_seconds[name] += m.at("seconds").get<double>();
            if (log)
                *log << "[world] stage " << k << "/" << total_stages << ": " << what << ": finished by an earlier run\n"
                     << std::flush;
            return;
        }
        if (log) *log << "[world] stage " << k << "/" << total_stages << ": " << what << "\n" << std::flush;
        const auto t0 = clock::now();
        ojson data;
        try {
            data = fn();
        } catch (const std::exception& e) { fail("world: stage ", k, " (", what, "): ", e.what()); }
        keep(data);
        const double s = since(t0);
        res.stage_seconds[name] += s;
        if (!marker.empty()) write_text(mark, ojson{{"seconds", s}, {"data", data}}.dump() + "\n");
        if (log)
            *log << "[world] stage " << k << "/" << total_stages << ": " << what << " done in " << fmt("%.1f", s) << " s\n"
                 << std::flush;
    };
    const auto nothing = [](const ojson&) {};

    for (int rep = 0; rep < o.seeds; rep++) {
        const std::uint64_t seed = o.seed + std::uint64_t(rep);
        const std::string sd = o.out_dir + "/seed-" + std::to_string(seed);
        const std::string world_dir = sd + "/world", images = world_dir + "/images";
        const std::string clip_dir = sd + "/clip", llm_dir = sd + "/llm", levels_dir = sd + "/levels";
        const std::string tag = "seed " + std::to_string(seed) + ": ";

        const std::string sk = "seed-" + std::to_string(seed);  // marker names
        stage(
            1, "1 world", tag + "generate the world", sk + ".world",
            [&] {
                options w = o.world;
                w.seed = seed;
                generate(w, world_dir);
                return ojson::object();
            },
            nothing);
        stage(
            2, "2 towers", tag + "pre-train the tiny CLIP and the tiny LLaMA", sk + ".towers",
            [&] {
                clip_pretrain_options c = o.clip;
                llm_pretrain_options l = o.llm;
                c.seed = seed, l.seed = seed, c.log = log, l.log = log;
                const auto cr = pretrain_clip(world_dir, clip_dir, c);
                const auto lr = pretrain_llm(world_dir, llm_dir, l);
                return ojson{{"clip_final_loss", cr.steps.back().loss},    {"clip_i2t_accuracy", cr.i2t_accuracy},
                             {"clip_t2i_accuracy", cr.t2i_accuracy},       {"clip_positive_cosine", cr.positive_cosine},
                             {"clip_negative_cosine", cr.negative_cosine}, {"llm_final_loss", lr.steps.back().loss}};
            },
            [&](const ojson& d) { towers_json[std::to_string(seed)] = d; });
        stage(
            3, "3 levels", tag + "alignment levels of captions.json from the tiny CLIP", sk + ".levels",
            [&] {
                fs::create_directories(levels_dir);
                const auto ds = train::read_dataset(world_dir + "/captions.json");
                const auto pairs = train::dataset_pairs(ds, world_dir + "/captions.json");
                io::load_options lo;
                lo.quiet = !log, lo.log = log;
                const auto lv = train::compute_levels(train::clip_scorer<>::load(clip_dir, lo), pairs, images,
                                                      {.n_levels = o.n_levels, .batch_size = o.levels_batch, .progress = log});
                train::write_levels_json(ds, lv, levels_dir + "/captions_levels.json");
                train::write_histogram_png(levels_dir + "/levels.png", lv);
                // what the levels say about the captions: mean cosine and mean level per caption kind
                ojson by_kind = ojson::object();
                for (std::string_view ck : caption_kind_names) {
                    double cs = 0, ls = 0;
                    std::int64_t n = 0;
                    for (std::size_t k = 0; k < ds.size(); k++)
                        if (ds[k].value("caption_kind", "") == ck) cs += lv.similarity[k], ls += lv.level[k], n++;
                    if (n)
                        by_kind[std::string(ck)] = {
                            {"count", n}, {"mean_cosine", cs / double(n)}, {"mean_level", ls / double(n)}};
                }
                ojson st = ojson::array();
                for (const auto& s : lv.stats)
                    st.push_back({{"count", s.count}, {"min", s.min}, {"mean", s.mean}, {"max", s.max}});
                return ojson{{"by_caption_kind", by_kind}, {"levels", st}};
            },
            [&](const ojson& d) { levels_json[std::to_string(seed)] = d; });

        const std::vector<scene> scenes = read_scenes(world_dir + "/world.json");
        stage(
            6, "6 eval", tag + "text prior: the most frequent training answer to each question, no image",
            sk + "." + std::string(text_prior) + ".eval",
            [&] {
                const std::string ev = sd + "/" + std::string(text_prior) + "/eval";
                answer_from_prior(world_dir, ev);
                metrics m;
                for (std::string_view kind : {"describe", "attribute", "count", "exists", "text"})
                    score_answers(kind, world_dir + "/" + question_file(kind), ev + "/answers_" + std::string(kind) + ".jsonl",
                                  scenes, m);
                return ojson(m);
            },
            [&](const ojson& d) { res.runs[std::string(text_prior)].push_back(d.get<metrics>()); });
        std::map<std::string, std::string> stage1_done;  // stage-1 variant -> its directory
        for (const std::string& v : o.variants) {
            const std::string vd = sd + "/" + variant_dir(v);
            const std::string s1 = sd + "/" + variant_dir(stage1_of(v)) + "/stage1", s2 = vd + "/stage2", ev = vd + "/eval";
            const models::alignment al = variant_alignment(v);
            if (!stage1_done.count(std::string(stage1_of(v)))) {
                stage(
                    4, "4 stage 1", tag + std::string(stage1_of(v)) + ": stage 1 (alignment pre-training)",
                    sk + "." + variant_dir(stage1_of(v)) + ".stage1",
                    [&] {
                        train::options t;
                        t.stage = models::stage::pretrain;
                        t.model_dir = llm_dir, t.vision_tower = clip_dir;
                        t.data_path = levels_dir + "/captions_levels.json", t.image_folder = images, t.output_dir = s1;
                        t.learning_rate = o.stage1_lr, t.per_device_train_batch_size = o.stage1_batch,
                        t.gradient_accumulation_steps = 1;
                        t.max_steps = o.stage1_steps, t.save_steps = 0, t.seed = seed;
                        t.model_max_length = o.llm.max_length + 256;
                        if (stage1_of(v) == "llava") t.align = variant_alignment("llava");
                        t.log = log, t.quiet = !log;
                        t.resume = o.resume;  // an interrupted stage continues from its checkpoint, bit for bit
                        stop_if_interrupted(train::trainer(t).run(), s1);
                        return ojson::object();
                    },
                    nothing);
                stage1_done[std::string(stage1_of(v))] = s1;
            }
            stage(
                5, "5 stage 2", tag + v + ": stage 2 (instruction tuning)", sk + "." + variant_dir(v) + ".stage2",
                [&] {
                    train::options t;
                    t.stage = models::stage::finetune;
                    t.model_dir = llm_dir, t.vision_tower = clip_dir,
                    t.pretrain_mm_mlp_align = s1 + (v == "llava" ? "/mm_projector.bin" : "/mm_projector_align.bin");
                    t.data_path = world_dir + "/instruct.json", t.image_folder = images, t.output_dir = s2;
                    t.learning_rate = o.stage2_lr, t.per_device_train_batch_size = o.stage2_batch,
                    t.gradient_accumulation_steps = 1;
                    t.max_steps = o.stage2_steps, t.save_steps = 0, t.seed = seed;
                    t.model_max_length = o.llm.max_length + 256;
                    t.align = al;
                    t.log = log, t.quiet = !log;
                    t.resume = o.resume;
                    stop_if_interrupted(train::trainer(t).run(), s2);
                    relative_vision_tower(s2, clip_dir);
                    return ojson::object();
                },
                nothing);
            stage(
                6, "6 eval", tag + v + ": answer and score the held-out questions", sk + "." + variant_dir(v) + ".eval",
                [&] {
                    fs::create_directories(ev);
                    metrics m;
                    pretrained::load_options lo;
                    lo.quiet = true;
                    const auto model = pretrained::load_aligngpt<float>(s2, lo);
                    const auto tok = tokenizer::llama_tokenizer::from_directory(s2);
                    const auto pixels = [&](const std::string& p) { return pretrained::image_pixels(p, model); };
                    for (std::string_view kind : image_kinds) {
                        eval::answer_options a;
                        a.image_folder = images, a.model_id = v, a.max_new_tokens = o.max_new_tokens, a.align = al;
                        a.batch_size = o.eval_batch, a.progress = log;
                        const std::string qf = world_dir + "/" + question_file(kind),
                                          af = ev + "/answers_" + std::string(kind) + ".jsonl";
                        eval::answer_questions(*model.model, *model.vision, tok, qf, af, a, pixels);
                        score_answers(kind, qf, af, scenes, m);
                    }
                    answer_text(model, tok, world_dir + "/eval_text.jsonl", ev + "/answers_text.jsonl", o.max_new_tokens);
                    score_answers("text", world_dir + "/eval_text.jsonl", ev + "/answers_text.jsonl", scenes, m);
                    // the gate's weights per question kind (variants that run the gate)
                    ojson gate = ojson::object(), new_examples = ojson::array();
                    if (al.mode == models::align_mode::gated || al.mode == models::align_mode::local_only) {
                        for (std::string_view kind : image_kinds) {
                            const auto qs = eval::read_jsonl(world_dir + "/" + question_file(kind), "questions");
                            const auto answers = eval::read_answers(ev + "/answers_" + std::string(kind) + ".jsonl");
                            std::vector<double> sum(7, 0.0);
                            std::int64_t n = 0;
                            for (std::size_t k = 0; k < qs.size() && std::int64_t(k) < o.gate_questions; k++) {
                                const io::json_reader r(qs[k].value, qs[k].where);
                                const std::string img = r.string("image", std::nullopt), text = r.string("text", std::nullopt);
                                const auto feats =
                                    model.vision->features(nullptr, autograd::variable<float>::leaf(pixels(images + "/" + img)));
                                const auto out = model.model->forward(nullptr, {models::sample{prompt_ids(tok, text, true)}},
                                                                      feats, models::stage::inference, al);
                                const auto w = out.gate.weights.value().to_vector();
                                for (std::size_t l = 0; l < w.size() && l < 7; l++) sum[l] += double(w[l]);
                                n++;
                                // the first examples of the first seed, for report.md
                                if (rep == 0 && v == o.variants.front() && k < 1 &&
                                    std::int64_t(examples.size() + new_examples.size()) < o.examples) {
                                    const std::string dst = "plots/examples/" + variant_dir(kind) + "_" + img;
                                    fs::copy_file(images + "/" + img, o.out_dir + "/" + dst,
                                                  fs::copy_options::overwrite_existing);
                                    ojson e;
                                    e["image"] = dst, e["kind"] = kind, e["question"] = text;
                                    e["truth"] = r.string("answer", std::nullopt), e["answer"] = answers[k].text;
                                    e["gate_weights"] = w;
                                    new_examples.push_back(std::move(e));
                                }
                            }
                            gate[std::string(kind)] = {{"sum", sum}, {"n", n}};
                        }
                    }
                    return ojson{{"metrics", m}, {"gate", gate}, {"examples", new_examples}};
                },
                [&](const ojson& d) {
                    res.runs[v].push_back(d.at("metrics").get<metrics>());
                    for (const auto& [kind, g] : d.at("gate").items()) {
                        auto& sum = gates[v].sum[kind];
                        sum.resize(7, 0.0);
                        const auto part = g.at("sum").get<std::vector<double>>();
                        for (std::size_t l = 0; l < 7 && l < part.size(); l++) sum[l] += part[l];
                        gates[v].n[kind] += g.at("n").get<std::int64_t>();
                    }
                    for (const auto& e : d.at("examples")) examples.push_back(e);
                });
        }
    }

    // ---- stage 7: report ----
    stage(
        7, "7 report", "report.md, results.json and the plots", "",
        [&] {
            const std::string sd1 = "seed-" + std::to_string(o.seed);
            // loss curves of every stage (the first seed)
            std::vector<std::pair<std::string, std::string>> runs_to_plot{{"CLIP pre-training", sd1 + "/clip"},
                                                                          {"LLaMA pre-training", sd1 + "/llm"}};
            std::vector<std::string> s1_seen;
            for (const std::string& v : o.variants) {
                const std::string s1 = variant_dir(stage1_of(v));
                if (std::find(s1_seen.begin(), s1_seen.end(), s1) == s1_seen.end())
                    s1_seen.push_back(s1), runs_to_plot.push_back({"stage 1 (" + s1 + ")", sd1 + "/" + s1 + "/stage1"});
            }
            for (const std::string& v : o.variants)
                runs_to_plot.push_back({"stage 2 (" + v + ")", sd1 + "/" + variant_dir(v) + "/stage2"});
            bool have_gnuplot = true;
            for (const auto& [title, rel] : runs_to_plot) {
                const auto p = train::plot_metrics(o.out_dir + "/" + rel);
                if (p.png.empty()) {
                    have_gnuplot = false;
                    loss_plots.push_back("- " + title + ": `" + rel + "/metrics.tsv` (gnuplot missing: `gnuplot " + rel +
                                         "/metrics.gp` draws it)");
                } else {
                    loss_plots.push_back("- " + title + ": [" + rel + "/metrics.png](" + rel + "/metrics.png)");
                    res.plots.push_back(p.png);
                }
            }
            res.plots.push_back(o.out_dir + "/" + sd1 + "/levels/levels.png");

            // gate weights per question kind: TSV + gnuplot bar chart
            std::string tsv = "# variant\tkind";
            for (int l = 0; l < 7; l++) tsv += "\tlevel" + std::to_string(l);
            tsv += "\n";
            for (const auto& [v, g] : gates) {
                ojson per = ojson::object();
                for (std::string_view kind : image_kinds) {
                    const std::string k(kind);
                    if (!g.n.count(k) || !g.n.at(k)) continue;
                    std::vector<double> mean(7);
                    for (int l = 0; l < 7; l++) mean[std::size_t(l)] = g.sum.at(k)[std::size_t(l)] / double(g.n.at(k));
                    per[k] = mean;
                    tsv += v + "\t" + k;
                    for (double x : mean) tsv += "\t" + fmt("%.6f", x);
                    tsv += "\n";
                }
                gate_json[v] = per;
            }
            write_text(o.out_dir + "/plots/gate_weights.tsv", tsv);
            std::string gate_png;
            if (!gates.empty()) {
                // one chart: the first gated variant's mean weights per level, one bar group per kind
                const std::string v = gates.begin()->first;
                std::string gp =
                    "# gnuplot plots/gate_weights.gp -> plots/gate_weights.png (written by aligngpt world)\n"
                    "set terminal pngcairo size 1000,600 noenhanced font ',10'\nset output 'gate_weights.png'\n"
                    "set title 'mean gate weight per alignment level and question kind (" +
                    v +
                    ")'\n"
                    "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
                    "set boxwidth 0.9\nset grid ytics\nset yrange [0:*]\nset ylabel 'mean gate weight (uniform: 1/7)'\nset "
                    "xlabel "
                    "'question kind'\n"
                    "set key outside right\n";
                std::string rows;
                for (int l = 0; l < 7; l++)
                    rows += std::string(l ? ", ''" : "plot 'gate_weights_" + variant_dir(v) + ".tsv'") + " using " +
                            std::to_string(l + 2) + (l ? "" : ":xtic(1)") + " title 'level " + std::to_string(l) + "'";
                std::string data;
                for (const auto& [k, w] : gate_json[v].items()) {
                    data += k;
                    for (const auto& x : w) data += "\t" + fmt("%.6f", x.get<double>());
                    data += "\n";
                }
                write_text(o.out_dir + "/plots/gate_weights_" + variant_dir(v) + ".tsv", data);
                write_text(o.out_dir + "/plots/gate_weights.gp",
                           "cd '" + fs::absolute(o.out_dir + "/plots").string() + "'\n" + gp + rows + "\n");
                std::string err;
                if (train::detail::run_gnuplot(o.out_dir + "/plots/gate_weights.gp", err) && err.empty()) {
                    gate_png = "plots/gate_weights.png";
                    res.plots.push_back(o.out_dir + "/" + gate_png);
                }
            }
            for (const auto& e : examples) res.plots.push_back(o.out_dir + "/" + e["image"].get<std::string>());

            // the table: mean ± spread per variant and metric
            std::ostringstream tb;
            tb << "| variant |";
            for (const auto& [key, head] : table_columns()) tb << " " << head << " |";
            tb << "\n|---|";
            for (std::size_t c = 0; c < table_columns().size(); c++) tb << "---|";
            tb << "\n";
            ojson metrics_json = ojson::object();
            std::vector<std::string> rows = o.variants;
            rows.emplace_back(text_prior);
            for (const std::string& v : rows) {
                tb << "| " << (v == text_prior ? "text prior (no image)" : v) << " |";
                ojson per = ojson::object();
                for (const auto& [key, value] : res.runs[v].front()) {
                    std::vector<double> xs;
                    for (const metrics& m : res.runs[v]) xs.push_back(m.at(key));
                    const auto [mean, sd] = mean_std(xs);
                    per[key] = {{"mean", mean}, {"std", sd}, {"values", xs}};
                }
                for (const auto& [key, head] : table_columns()) {
                    const auto& x = per[key];
                    tb << " " << fmt("%.3f", x["mean"].get<double>());
                    if (o.seeds > 1) tb << " ± " << fmt("%.3f", x["std"].get<double>());
                    tb << " |";
                }
                tb << "\n";
                metrics_json[v] = per;
            }
            res.table = tb.str();

            // what the numbers show, from the numbers
            std::ostringstream says;
            const auto mean_of = [&](const std::string& v, const std::string& key) {
                return metrics_json[v][key]["mean"].get<double>();
            };
            const auto sd_of = [&](const std::string& v, const std::string& key) {
                return metrics_json[v][key]["std"].get<double>();
            };
            if (metrics_json.contains("aligngpt") && metrics_json.contains("llava")) {
                int better = 0, worse = 0, within = 0;
                for (const auto& [key, head] : table_columns()) {
                    const double d = mean_of("aligngpt", key) - mean_of("llava", key);
                    const double noise = o.seeds > 1 ? sd_of("aligngpt", key) + sd_of("llava", key) : 0.0;
                    if (std::abs(d) <= noise || d == 0)
                        within++;
                    else
                        (d > 0 ? better : worse)++;
                    says << "- " << head << ": aligngpt " << fmt("%.3f", mean_of("aligngpt", key)) << " vs llava "
                         << fmt("%.3f", mean_of("llava", key)) << " (" << (d >= 0 ? "+" : "") << fmt("%.3f", d) << ")"
                         << (o.seeds > 1 ? (std::abs(d) <= noise ? ", within the two spreads" : ", outside the two spreads") : "")
                         << "\n";
                }
                says << "- In sum: aligngpt is ahead on " << better << ", behind on " << worse
                     << " and level (or within the spread) on " << within << " of " << table_columns().size()
                     << " metrics against the LLaVA baseline"
                     << (o.seeds == 1
                             ? ", from ONE seed: differences of this size may be noise (run `--seeds 3` or the full profile)"
                             : "")
                     << ".\n";
            } else {
                says << "- The LLaVA baseline or aligngpt is not among the variants run: no method-vs-baseline comparison.\n";
            }
            {  // do the levels sort the captions as their kinds say?
                const auto& bk = levels_json[std::to_string(o.seed)]["by_caption_kind"];
                if (bk.contains("exact") && bk.contains("unrelated")) {
                    const double e = bk["exact"]["mean_level"].get<double>(), u = bk["unrelated"]["mean_level"].get<double>();
                    says << "- Levels (seed " << o.seed << "): exact captions have mean level " << fmt("%.2f", e)
                         << ", unrelated ones " << fmt("%.2f", u)
                         << (e > u + 0.5 ? ": the tiny CLIP's similarity does separate aligned from unaligned captions."
                                         : ": the tiny CLIP barely separates them, so the levels carry little information here.")
                         << "\n";
                }
            }
            for (const std::string& v : o.variants) {  // which skills read the image: above the blind baseline
                std::string above, level;
                for (const auto& [key, head] : table_columns()) {
                    if (key == "text_accuracy") continue;  // no image in those questions
                    const double d = mean_of(v, key) - mean_of(std::string(text_prior), key);
                    // a share of n questions has a standard error of at most 0.5 / sqrt(n): ask for two of them
                    const double n = double(o.world.n_eval) * (key.starts_with("pope_") ? 4.0 : 1.0) * double(o.seeds);
                    const double noise = o.seeds > 1 ? sd_of(v, key) + sd_of(std::string(text_prior), key) : 0.0;
                    if (d > std::max(noise, 1.0 / std::sqrt(n)))
                        above += std::string(above.empty() ? "" : ", ") + head + " (+" + fmt("%.3f", d) + ")";
                    else
                        level += std::string(level.empty() ? "" : ", ") + head;
                }
                says << "- " << v << " against the text prior (no image): clearly above it on "
                     << (above.empty() ? std::string("no image metric") : above) << "; not clearly above it on "
                     << (level.empty() ? std::string("none") : level)
                     << ". Clearly above = by more than two standard errors of a share of these questions (and more than "
                        "the spreads): those answers carry what only the image can tell; the others score what a guess from "
                        "the question alone could.\n";
                const double yr = mean_of(v, "pope_yes_ratio");
                if (yr == 0 || yr == 1)
                    says << "- " << v << " answers \"" << (yr == 0 ? "no" : "yes")
                         << "\" to every POPE question (accuracy 0.5 by "
                         << "construction).\n";
            }
            for (const auto& [v, per] : gate_json.items()) {  // does the gate pick different levels for different kinds?
                double spread = 0;
                for (int l = 0; l < 7; l++) {
                    double lo = 1, hi = 0;
                    for (const auto& [k, w] : per.items())
                        lo = std::min(lo, w[std::size_t(l)].get<double>()), hi = std::max(hi, w[std::size_t(l)].get<double>());
                    spread = std::max(spread, hi - lo);
                }
                says << "- The gate of " << v << ": its mean weight of a level differs across question kinds by at most "
                     << fmt("%.3f", spread)
                     << (spread < 0.02 ? " (uniform 1/7 = 0.143): it hardly adapts to the question here."
                                       : ": it weighs the levels differently per question kind.")
                     << "\n";
            }
            if (metrics_json.contains("global_only") && metrics_json.contains("fixed:7"))
                says << "- global_only and fixed:7 both use the global level's embedding alone (E[7]); they differ only if their "
                        "training differs (they train the same way, so equal numbers are expected).\n";

            // results.json
            ojson rj;
            rj["format"] = "aligngpt-world-results", rj["version"] = 1;
            rj["profile"] = o.profile, rj["seed"] = o.seed, rj["seeds"] = o.seeds, rj["variants"] = o.variants;
            rj["metrics"] = metrics_json;
            rj["towers"] = towers_json, rj["levels"] = levels_json, rj["gate_weights"] = gate_json, rj["examples"] = examples;
            ojson secs = ojson::object();
            for (const auto& [k, s] : res.stage_seconds) secs[k] = s;
            secs["total"] = since(t_all);
            rj["seconds"] = secs;
            res.results = o.out_dir + "/results.json";
            write_text(res.results, rj.dump(1) + "\n");

            // report.md
            std::ostringstream md;
            md << "# The tiny AlignGPT world: " << o.profile << " profile\n\n"
               << "Seeds " << o.seed
               << (o.seeds > 1 ? " .. " + std::to_string(o.seed + std::uint64_t(o.seeds) - 1) : std::string()) << ", "
               << o.world.n_train << " train and " << o.world.n_eval << " held-out images of " << o.world.scenes.image_size
               << " px, "
               << "CLIP patches of " << o.clip.patch_size << " px ("
               << (o.world.scenes.image_size / o.clip.patch_size) * (o.world.scenes.image_size / o.clip.patch_size)
               << " image tokens), stage 1 " << o.stage1_steps << " steps, stage 2 " << o.stage2_steps << " steps.\n\n"
               << "## Results\n\nMean" << (o.seeds > 1 ? " ± sample standard deviation over the seeds" : " (one seed: no spread)")
               << ". attribute and count: VQA soft accuracy, which on this world (ten agreeing answers) is exact match after "
                  "VQA's "
                  "normalisation; POPE: eval_pope.py's metrics (yes = positive); describe: objects of the answer that match an "
                  "object "
                  "of the scene in all four attributes (precision) and objects of the scene named (recall), exact = every object "
                  "and "
                  "no "
                  "other, count and bg = the caption's object count and background right; text: normalised exact match. The "
                  "last row answers each question with its most frequent answer in instruct.json, with no model and no image: "
                  "what answering from the question alone scores.\n\n"
               << res.table << "\n## What the numbers do and do not show\n\n"
               << says.str()
               << "- Fixed caveats: a toy world (shapes on flat backgrounds), tiny towers pre-trained for minutes, short stages; "
                  "the "
                  "numbers say how the variants compare HERE, not on LAION-CC-SBU or the paper's benchmarks. The world was not "
                  "tuned "
                  "for any variant.\n\n"
               << "## Time per stage\n\n| stage | seconds |\n|---|---|\n";
            for (const auto& [k, s] : res.stage_seconds) md << "| " << k << " | " << fmt("%.1f", s) << " |\n";
            md << "| total | " << fmt("%.1f", since(t_all)) << " |\n\n## Plots\n\nLoss curves (seed " << o.seed << "):\n\n";
            for (const auto& l : loss_plots) md << l << "\n";
            md << "\nLevel histogram: [" << sd1 << "/levels/levels.png](" << sd1 << "/levels/levels.png)\n\n"
               << "Gate weights per question kind: [plots/gate_weights.tsv](plots/gate_weights.tsv)"
               << (gate_png.empty() ? std::string(gates.empty() ? " (no gated variant run)" : " (gnuplot missing: no PNG)")
                                    : ", [" + gate_png + "](" + gate_png + ")")
               << "\n\n";
            if (!have_gnuplot)
                md << "gnuplot is not installed (scripts/setup installs it): the .tsv and .gp files are written, no PNG.\n\n";
            if (!examples.empty()) {
                md << "## Examples (" << o.variants.front() << ", seed " << o.seed << ")\n\n";
                for (const auto& e : examples) {
                    md << "![" << e["kind"].get<std::string>() << "](" << e["image"].get<std::string>() << ")\n\n"
                       << "- question: " << e["question"].get<std::string>() << "\n- answer: " << e["answer"].get<std::string>()
                       << "\n- truth: " << e["truth"].get<std::string>() << "\n- gate weights (levels 0..6):";
                    for (const auto& x : e["gate_weights"]) md << " " << fmt("%.3f", x.get<double>());
                    md << "\n\n";
                }
            }
            md << "Models: `aligngpt run -m " << o.out_dir << "/" << sd1 << "/<variant>/stage2 --image IMAGE -p QUESTION`.\n";
            res.report = o.out_dir + "/report.md";
            write_text(res.report, md.str());
            return ojson::object();
        },
        nothing);
    res.seconds = since(t_all);
    return res;
}

}  // namespace aligngpt::world
