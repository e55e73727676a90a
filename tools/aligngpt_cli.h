#pragma once
// The `aligngpt` command line's argument parsing (tools/aligngpt.cpp has the usage text and runs the
// commands): the *_args structs, parse_<command> for every subcommand, and the checks that run
// before any file is opened (paths exist, the output directory is writable, the ids are in
// config.json's vocabulary). Not a public header: the tool and tests/fuzz/cli.cpp include it.
//
// A bad command line throws usage_error, whose message names the option; the tool prints it with
// the usage and exits 2. Nothing here creates or writes a file; parse_train and parse_world set
// the OpenMP thread count when -t is given, as the tool always did.
// parse_train and parse_world need the tokenizer component (ALIGNGPT_TOOL_HAVE_TOKENIZER).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/conversation.h"
#include "aligngpt/generate/sampling.h"
#include "aligngpt/io/checkpoint.h"
#include "aligngpt/io/json.h"
#include "aligngpt/models/aligngpt.h"
#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
#include "aligngpt/train/trainer.h"
#include "aligngpt/world/pipeline.h"
#endif

namespace aligngpt::cli {

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void bad(const std::string& m) { throw usage_error(m); }

/// Where the model runs: --device cpu | cuda | cuda:N, and on CUDA --cuda-mode exact | fast
/// (backend/cuda.h: exact gives the CPU's bits, fast puts the GEMMs on cuBLAS).
struct device_args {
    bool cuda = false;
    int index = 0;      // cuda:N
    bool fast = false;  // --cuda-mode fast
};

struct trace_args {
    std::string model, vision_tower, image, pixels, out, mm_projector, base_llm;
    std::optional<std::string> prompt;               // rendered and tokenized as `run` does
    std::string conv_mode = "vicuna_v1", tokenizer;  // with --prompt
    std::optional<std::vector<std::int64_t>> ids;
    int align_level = -1;  // -1 = auto
    io::weights_dtype dtype = io::weights_dtype::f32;
    device_args device;
    bool quiet = false;
};

// Strict: each comma-separated item is a whole base-10 integer ("abc", "", " 1", "+1" and "1x" are
// refused, not read as 0 or 1); errors name the item by its 1-based position.
inline std::vector<std::int64_t> parse_ids(const std::string& s) {
    if (s.empty()) bad("--input-ids is empty (expected e.g. 1,2,-200,3)");
    std::vector<std::string> items;
    for (std::size_t i = 0;;) {
        const std::size_t j = std::min(s.find(',', i), s.size());
        items.push_back(s.substr(i, j - i));
        if (j == s.size()) break;
        i = j + 1;
    }
    std::vector<std::int64_t> ids;
    for (std::size_t k = 0; k < items.size(); k++) {
        const std::string& tok = items[k];
        std::int64_t v = 0;
        const auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v, 10);
        const std::string where = "--input-ids: item " + std::to_string(k + 1) + " of " + std::to_string(items.size());
        if (ec == std::errc::result_out_of_range) bad(where + ", \"" + tok + "\", is out of the 64-bit integer range");
        if (tok.empty() || ec != std::errc() || end != tok.data() + tok.size())
            bad(where + ", \"" + tok + "\", is not an integer (expected a comma-separated list like 1,2,-200,3)");
        ids.push_back(v);
    }
    return ids;
}

/// Every id is the image placeholder or a token of the vocabulary [0, V) read from `source`.
inline void check_ids_in_vocab(const std::vector<std::int64_t>& ids, index_t V, const std::string& source) {
    for (std::size_t k = 0; k < ids.size(); k++) {
        const std::int64_t id = ids[k];
        if (id != models::image_token_index && (id < 0 || id >= V))
            bad("--input-ids: item " + std::to_string(k + 1) + " of " + std::to_string(ids.size()) + ", id " +
                std::to_string(id) + ", is outside the vocabulary [0, " + std::to_string(V) + ") of " + source +
                " (and is not the image placeholder " + std::to_string(models::image_token_index) + ")");
    }
}

/// The options of one command line: canonical name -> value ("" for flags). Long options accept
/// "--name value" and "--name=value", dashes or underscores; the scripts' spellings map to ours.
using option_map = std::map<std::string, std::string>;

inline option_map parse_options(const std::vector<std::string>& argv, const std::map<std::string, bool>& known,
                                const std::map<std::string, std::string>& shorts) {
    static const std::map<std::string, std::string> aliases = {{"model-path", "model"},
                                                               {"weights-dtype", "dtype"},
                                                               {"image-file", "image"},
                                                               {"temperature", "temp"},
                                                               {"repetition-penalty", "repeat-penalty"},
                                                               {"n-predict", "max-new-tokens"}};
    option_map seen;
    for (std::size_t i = 0; i < argv.size(); i++) {
        std::string arg = argv[i], name, value;
        bool has_value = false;
        if (auto s = shorts.find(arg); s != shorts.end()) {
            name = s->second;
        } else if (arg.rfind("--", 0) == 0 && arg.size() > 2) {
            name = arg.substr(2);
            if (auto eq = name.find('='); eq != std::string::npos)
                value = name.substr(eq + 1), name = name.substr(0, eq), has_value = true;
            for (char& c : name)
                if (c == '_') c = '-';
            if (auto a = aliases.find(name); a != aliases.end()) name = a->second;
        } else {
            bad("unexpected argument \"" + arg + "\"");
        }
        auto k = known.find(name);
        if (k == known.end()) bad("unknown option \"" + arg + "\"");
        if (k->second && !has_value) {
            if (i + 1 >= argv.size()) bad("option --" + name + " needs a value");
            value = argv[++i];
        } else if (!k->second && has_value) {
            bad("option --" + name + " takes no value");
        }
        if (seen.count(name)) bad("option --" + name + " given twice");
        seen[name] = value;
    }
    return seen;
}

inline int parse_align_level(const std::string& l) {
    if (l == "auto") return -1;
    if (l.size() == 1 && l[0] >= '0' && l[0] <= '7') return l[0] - '0';
    bad("--align-level must be auto or a level 0..7, got \"" + l + "\"");
}

#if defined(ALIGNGPT_TOOL_HAVE_CUDA)
inline constexpr bool built_with_cuda = true;
#else
inline constexpr bool built_with_cuda = false;
#endif

/// --device and --cuda-mode from `seen` (absent: the CPU).
inline device_args parse_device(const option_map& seen) {
    device_args d;
    const auto it = seen.find("device");
    const std::string dev = it == seen.end() ? "cpu" : it->second;
    if (dev == "cuda") {
        d.cuda = true;
    } else if (dev.starts_with("cuda:")) {
        const std::string n = dev.substr(5);
        int v = -1;
        const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), v, 10);
        if (n.empty() || ec != std::errc() || end != n.data() + n.size() || v < 0 || v > 1023)
            bad("--device must be cpu, cuda or cuda:N with N a device number in [0, 1023], got \"" + dev + "\"");
        d.cuda = true, d.index = v;
    } else if (dev != "cpu") {
        bad("--device must be cpu, cuda or cuda:N, got \"" + dev + "\"");
    }
    if (const auto mode = seen.find("cuda-mode"); mode != seen.end()) {
        const std::string& m = mode->second;
        if (m != "exact" && m != "fast") bad("--cuda-mode must be exact or fast, got \"" + m + "\"");
        if (!d.cuda) bad("--cuda-mode goes with --device cuda");
        d.fast = m == "fast";
    }
    if (d.cuda && !built_with_cuda)
        bad("--device " + dev + ": this aligngpt was built without CUDA (configure with -DALIGNGPT_WITH_CUDA=ON or cmake "
            "--preset cuda)");
    return d;
}

/// A template name conversation::make knows (a usage error otherwise).
inline std::string checked_conv_mode(const std::string& name) {
    try {
        (void)conversation::make(name);
    } catch (const error& e) { bad(std::string("--conv-mode: ") + e.what()); }
    return name;
}

inline void check_one_image(const std::vector<std::int64_t>& ids, const std::string& source) {
    const auto n_image = std::count(ids.begin(), ids.end(), models::image_token_index);
    if (n_image != 1)
        bad(source + " must contain exactly one " + std::to_string(models::image_token_index) +
            " image placeholder (the model takes one image), found " + std::to_string(n_image));
}
inline trace_args parse_trace(const std::vector<std::string>& argv) {
    trace_args a;
    // canonical name -> takes a value
    static const std::map<std::string, bool> known = {
        {"model", true},     {"vision-tower", true}, {"image", true},     {"pixels", true},   {"prompt", true},
        {"input-ids", true}, {"align-level", true},  {"dtype", true},     {"out", true},      {"mm-projector", true},
        {"base-llm", true},  {"quiet", false},       {"conv-mode", true}, {"tokenizer", true}, {"device", true},
        {"cuda-mode", true}};
    static const std::map<std::string, std::string> shorts = {{"-m", "model"}, {"-p", "prompt"}, {"-o", "out"}, {"-q", "quiet"}};
    option_map seen = parse_options(argv, known, shorts);
    const auto get = [&](const char* n) { return seen.count(n) ? seen[n] : std::string(); };
    a.model = get("model"), a.vision_tower = get("vision-tower"), a.image = get("image"), a.pixels = get("pixels");
    a.out = get("out"), a.mm_projector = get("mm-projector"), a.base_llm = get("base-llm");
    a.quiet = seen.count("quiet") > 0;
    if (a.model.empty()) bad("--model DIR is required");
    if (a.out.empty()) bad("--out FILE is required");
    if (!a.image.empty() && !a.pixels.empty()) bad("give either --image or --pixels, not both");
    if (a.image.empty() && a.pixels.empty()) bad("one of --image FILE or --pixels FILE is required");
    if (seen.count("prompt") && seen.count("input-ids")) bad("give either --prompt or --input-ids, not both");
    if (!seen.count("input-ids") && !seen.count("prompt")) bad("one of --prompt TEXT or --input-ids LIST is required");
    if (seen.count("prompt")) {
        a.prompt = get("prompt");
        a.tokenizer = seen.count("tokenizer") ? get("tokenizer") : a.model;
        if (seen.count("conv-mode")) a.conv_mode = checked_conv_mode(get("conv-mode"));
    } else {
        if (seen.count("conv-mode") || seen.count("tokenizer")) bad("--conv-mode and --tokenizer go with --prompt");
        a.ids = parse_ids(get("input-ids"));
        check_one_image(*a.ids, "--input-ids");
    }
    if (seen.count("align-level")) a.align_level = parse_align_level(get("align-level"));
    if (seen.count("dtype")) {
        auto d = io::parse_weights_dtype(get("dtype"));
        if (!d) bad("--dtype must be f32, bf16 or f16, got \"" + get("dtype") + "\"");
        a.dtype = *d;
    }
    a.device = parse_device(seen);
    return a;
}

/// vocab_size from DIR/config.json, read without the weights; nullopt when the file or the field is
/// unusable, which the loader then reports with its own message.
inline std::optional<index_t> config_vocab_size(const std::string& model_dir) {
    namespace fs = std::filesystem;
    const std::string path = model_dir + "/config.json";
    std::error_code ec;
    if (!fs::is_regular_file(path, ec) || ec) return std::nullopt;
    nlohmann::json j;
    try {
        j = io::read_json_file(path, {.max_bytes = 1 << 20});  // depth-limited, as the loader reads it
    } catch (const error&) { return std::nullopt; }
    if (!j.is_object() || !j.contains("vocab_size")) return std::nullopt;
    const auto v = io::detail::json_int64(j["vocab_size"]);
    return v && *v > 0 ? std::optional<index_t>(*v) : std::nullopt;
}

/// Everything that can be checked without the weights, so that a typo costs no model load (minutes
/// for a 7B checkpoint): input paths, the output directory, the ids against config.json.
inline void check_before_load(const trace_args& a) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto need_dir = [&](const char* opt, const std::string& p) {
        if (!p.empty() && !fs::is_directory(p, ec)) bad(std::string(opt) + " \"" + p + "\": not a directory");
    };
    const auto need_file = [&](const char* opt, const std::string& p) {
        if (p.empty()) return;
        if (!fs::exists(p, ec)) bad(std::string(opt) + " \"" + p + "\": no such file");
        if (!fs::is_regular_file(p, ec)) bad(std::string(opt) + " \"" + p + "\": not a regular file");
        if (::access(p.c_str(), R_OK) != 0) bad(std::string(opt) + " \"" + p + "\": not readable (" + std::strerror(errno) + ")");
    };
    need_dir("--model", a.model);
    need_dir("--vision-tower", a.vision_tower);
    need_dir("--base-llm", a.base_llm);
    need_file("--image", a.image);
    need_file("--pixels", a.pixels);
    need_file("--mm-projector", a.mm_projector);

    if (fs::is_directory(a.out, ec)) bad("--out \"" + a.out + "\" is a directory (expected a .safetensors file name)");
    const fs::path parent = fs::path(a.out).parent_path();
    const std::string dir = parent.empty() ? "." : parent.string();
    if (!fs::is_directory(dir, ec)) bad("--out \"" + a.out + "\": directory \"" + dir + "\" does not exist");
    // The writer creates a temporary file there and renames it: the directory must be writable.
    if (::access(dir.c_str(), W_OK | X_OK) != 0)
        bad("--out \"" + a.out + "\": directory \"" + dir + "\" is not writable (" + std::strerror(errno) + ")");

    if (const auto V = config_vocab_size(a.model)) check_ids_in_vocab(*a.ids, *V, a.model + "/config.json");
}

// --- aligngpt run and answer --------------------------------------------------------------------

struct run_args {
    std::string model, vision_tower, image, tokenizer, conv_mode = "vicuna_v1", aspect;
    std::optional<std::string> prompt;                // none: interactive chat
    index_t max_new_tokens = 512;                     // the reference cli.py's default
    generate::sampling sampling{.temperature = 0.2};  // cli.py's temperature; top_k 50 as transformers
    int threads = 0;                                  // 0: OpenMP's default
    int align_level = -1;
    io::weights_dtype dtype = io::weights_dtype::f32;
    device_args device;
    bool verbose = false;
};
template <class V>
V parse_number(const std::string& opt, const std::string& text, V lo, V hi, const char* what) {
    V v{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !(v >= lo && v <= hi) ||
        (std::is_floating_point_v<V> && !std::isfinite(double(v))))
        bad("--" + opt + " must be " + what + ", got \"" + text + "\"");
    return v;
}

/// run's options; `answer` adds its own (extra) and reads every option given from *seen.
inline run_args parse_run(const std::vector<std::string>& argv, const std::map<std::string, bool>& extra = {},
                          option_map* seen = nullptr) {
    std::map<std::string, bool> known = {{"model", true},
                                         {"vision-tower", true},
                                         {"image", true},
                                         {"prompt", true},
                                         {"max-new-tokens", true},
                                         {"temp", true},
                                         {"top-p", true},
                                         {"top-k", true},
                                         {"repeat-penalty", true},
                                         {"seed", true},
                                         {"threads", true},
                                         {"conv-mode", true},
                                         {"image-aspect-ratio", true},
                                         {"align-level", true},
                                         {"tokenizer", true},
                                         {"dtype", true},
                                         {"device", true},
                                         {"cuda-mode", true},
                                         {"verbose", false}};
    static const std::map<std::string, std::string> shorts = {{"-m", "model"}, {"-p", "prompt"},  {"-n", "max-new-tokens"},
                                                              {"-s", "seed"},  {"-t", "threads"}, {"-v", "verbose"},
                                                              {"-q", "quiet"}};
    known.insert(extra.begin(), extra.end());
    option_map o = parse_options(argv, known, shorts);
    if (seen) *seen = o;
    const auto has = [&](const char* n) { return o.count(n) > 0; };
    run_args a;
    a.model = o["model"], a.vision_tower = o["vision-tower"], a.image = o["image"];
    if (a.model.empty()) bad("--model DIR is required");
    if (a.image.empty() && !seen) bad("--image FILE is required");
    a.tokenizer = has("tokenizer") ? o["tokenizer"] : a.model;
    if (has("prompt")) a.prompt = o["prompt"];
    if (has("max-new-tokens"))
        a.max_new_tokens = parse_number<index_t>("max-new-tokens", o["max-new-tokens"], 0, 1 << 20, "an integer in [0, 1048576]");
    auto& sp = a.sampling;
    if (has("temp")) sp.temperature = parse_number<double>("temp", o["temp"], 0, 1e6, "a number >= 0 (0 is greedy)");
    if (has("top-p")) sp.top_p = parse_number<double>("top-p", o["top-p"], 0, 1, "a number in [0, 1]");
    if (has("top-k"))
        sp.top_k = parse_number<index_t>("top-k", o["top-k"], 0, index_t(1) << 30, "an integer >= 0 (0 turns it off)");
    if (has("repeat-penalty"))
        sp.repetition_penalty =
            parse_number<double>("repeat-penalty", o["repeat-penalty"], 1e-6, 1e6, "a number > 0 (1 turns it off)");
    if (has("seed")) sp.seed = parse_number<std::uint64_t>("seed", o["seed"], 0, ~std::uint64_t(0), "an integer >= 0");
    if (has("threads")) a.threads = parse_number<int>("threads", o["threads"], 1, 4096, "an integer in [1, 4096]");
    if (has("conv-mode")) a.conv_mode = checked_conv_mode(o["conv-mode"]);
    if (has("image-aspect-ratio")) {
        a.aspect = o["image-aspect-ratio"];
        if (a.aspect != "pad" && a.aspect != "square")
            bad("--image-aspect-ratio must be pad or square, got \"" + a.aspect + "\"");
    }
    if (has("align-level")) a.align_level = parse_align_level(o["align-level"]);
    if (has("dtype")) {
        auto d = io::parse_weights_dtype(o["dtype"]);
        if (!d) bad("--dtype must be f32, bf16 or f16, got \"" + o["dtype"] + "\"");
        a.dtype = *d;
    }
    a.device = parse_device(o);
    a.verbose = has("verbose");
    return a;
}

inline void check_run_paths(const run_args& a) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(a.model, ec)) bad("--model \"" + a.model + "\": not a directory");
    if (!a.vision_tower.empty() && !fs::is_directory(a.vision_tower, ec))
        bad("--vision-tower \"" + a.vision_tower + "\": not a directory");
    if (!fs::is_directory(a.tokenizer, ec)) bad("--tokenizer \"" + a.tokenizer + "\": not a directory");
    if (a.image.empty()) return;  // answer: the images are the question file's
    if (!fs::exists(a.image, ec)) bad("--image \"" + a.image + "\": no such file");
    if (!fs::is_regular_file(a.image, ec)) bad("--image \"" + a.image + "\": not a regular file");
    if (::access(a.image.c_str(), R_OK) != 0) bad("--image \"" + a.image + "\": not readable (" + std::strerror(errno) + ")");
}

struct answer_args {
    run_args run;  // model, tower, tokenizer, sampling, threads, template, align level, dtype
    std::string questions, images, answers;
    index_t batch = 1;
    bool resume = false, quiet = false;
};

inline answer_args parse_answer(const std::vector<std::string>& argv) {
    option_map o;
    answer_args a;
    a.run = parse_run(argv,
                      {{"question-file", true},
                       {"image-folder", true},
                       {"answers-file", true},
                       {"batch-size", true},
                       {"resume", false},
                       {"quiet", false}},
                      &o);
    for (const char* run_only : {"image", "prompt", "verbose"})
        if (o.count(run_only)) bad(std::string("--") + run_only + " is run's; answer reads the questions from --question-file");
    if (!o.count("max-new-tokens")) a.run.max_new_tokens = 128;  // model_vqa_loader.py's defaults
    if (!o.count("temp")) a.run.sampling.temperature = 0;
    for (const char* req : {"question-file", "image-folder", "answers-file"})
        if (!o.count(req) || o[req].empty()) bad(std::string("answer needs --") + req);
    a.questions = o["question-file"], a.images = o["image-folder"], a.answers = o["answers-file"];
    if (o.count("batch-size")) a.batch = parse_number<index_t>("batch-size", o["batch-size"], 1, 4096, "an integer in [1, 4096]");
    a.resume = o.count("resume") > 0, a.quiet = o.count("quiet") > 0;
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_regular_file(a.questions, ec)) bad("--question-file \"" + a.questions + "\": no such file");
    if (!fs::is_directory(a.images, ec)) bad("--image-folder \"" + a.images + "\": not a directory");
    if (fs::equivalent(a.answers, a.questions, ec) || a.answers == a.questions)
        bad("--answers-file must not be the --question-file");
    if (fs::is_directory(a.answers, ec)) bad("--answers-file \"" + a.answers + "\" is a directory");
    return a;
}

// --- aligngpt score -------------------------------------------------------------------------------

struct score_args {
    std::string task, answers, annotations;
};

inline score_args parse_score(const std::vector<std::string>& argv) {
    const option_map o = parse_options(argv, {{"task", true}, {"answers-file", true}, {"annotations", true}}, {});
    score_args a;
    const auto need = [&](const char* name) -> std::string {
        auto it = o.find(name);
        if (it == o.end()) bad(std::string("score needs --") + name);
        if (it->second.empty()) bad(std::string("--") + name + " is empty");
        return it->second;
    };
    a.task = need("task");
    if (a.task != "pope" && a.task != "mme" && a.task != "vqa" && a.task != "mc")
        bad("--task must be pope, mme, vqa or mc, got \"" + a.task + "\"");
    a.answers = need("answers-file");
    a.annotations = need("annotations");
    return a;
}

// --- aligngpt levels ------------------------------------------------------------------------------

struct levels_args {
    std::string clip, data, images, out, plot;
    int levels = 0, threads = 0, batch = 8;
};

inline levels_args parse_levels(const std::vector<std::string>& argv) {
    option_map o = parse_options(argv,
                                 {{"clip", true},
                                  {"data-path", true},
                                  {"image-folder", true},
                                  {"levels", true},
                                  {"out", true},
                                  {"plot", true},
                                  {"threads", true},
                                  {"batch-size", true}},
                                 {{"-o", "out"}, {"-t", "threads"}});
    const auto need = [&](const char* name) {
        if (!o.count(name) || o[name].empty()) bad(std::string("levels needs --") + name);
        return o[name];
    };
    const auto count = [&](const char* name, int lo, int hi, int def) {
        if (!o.count(name)) return def;
        int v = 0;
        const std::string& t = o[name];
        const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
        if (t.empty() || ec != std::errc() || end != t.data() + t.size() || v < lo || v > hi)
            bad("--" + std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "], got \"" + t + "\"");
        return v;
    };
    levels_args a{need("clip"), need("data-path"), need("image-folder"), need("out"), o.count("plot") ? o["plot"] : ""};
    a.levels = count("levels", 1, 65536, 0);
    if (!a.levels) bad("levels needs --levels N");
    a.threads = count("threads", 1, 4096, 0);
    a.batch = count("batch-size", 1, 4096, 8);
    std::error_code ec;
    if (std::filesystem::equivalent(a.out, a.data, ec) || a.out == a.data)
        bad("--out must not be the input --data-path (inputs are never modified)");
    return a;
}

// --- aligngpt train and world ---------------------------------------------------------------------

#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
inline train::options parse_train(const std::vector<std::string>& argv) {
    static const std::map<std::string, bool> known = {{"stage", true},
                                                      {"model", true},
                                                      {"vision-tower", true},
                                                      {"data-path", true},
                                                      {"image-folder", true},
                                                      {"output-dir", true},
                                                      {"pretrain-mm-mlp-align", true},
                                                      {"learning-rate", true},
                                                      {"weight-decay", true},
                                                      {"per-device-train-batch-size", true},
                                                      {"gradient-accumulation-steps", true},
                                                      {"warmup-ratio", true},
                                                      {"lr-scheduler-type", true},
                                                      {"model-max-length", true},
                                                      {"max-steps", true},
                                                      {"num-train-epochs", true},
                                                      {"save-steps", true},
                                                      {"save-total-limit", true},
                                                      {"logging-steps", true},
                                                      {"max-grad-norm", true},
                                                      {"seed", true},
                                                      {"resume", false},
                                                      {"threads", true},
                                                      {"no-shuffle", false},
                                                      {"group-by-modality-length", false},
                                                      {"gradient-checkpointing", false},
                                                      {"memory-budget", true},
                                                      {"quiet", false},
                                                      {"version", true},
                                                      {"image-aspect-ratio", true},
                                                      {"frozen-dtype", true},
                                                      {"align-mode", true}};
    static const std::map<std::string, std::string> shorts = {
        {"-m", "model"}, {"-o", "output-dir"}, {"-t", "threads"}, {"-q", "quiet"}};
    option_map seen = parse_options(argv, known, shorts);
    const auto has = [&](const char* n) { return seen.count(n) > 0; };
    const auto get = [&](const char* n) { return has(n) ? seen[n] : std::string(); };
    train::options o;
    if (!has("stage")) bad("--stage pretrain|finetune is required");
    if (get("stage") == "pretrain")
        o.stage = models::stage::pretrain;
    else if (get("stage") == "finetune")
        o.stage = models::stage::finetune;
    else
        bad("--stage must be pretrain or finetune, got \"" + get("stage") + "\"");
    for (const char* req : {"model", "data-path", "output-dir"})
        if (!has(req)) bad(std::string("--") + req + " is required");
    o.model_dir = get("model"), o.vision_tower = get("vision-tower"), o.data_path = get("data-path");
    o.image_folder = get("image-folder"), o.output_dir = get("output-dir");
    o.pretrain_mm_mlp_align = get("pretrain-mm-mlp-align");
    if (has("learning-rate"))
        o.learning_rate = parse_number<double>("learning-rate", get("learning-rate"), 0, 10, "a rate in [0, 10]");
    if (has("weight-decay")) o.weight_decay = parse_number<double>("weight-decay", get("weight-decay"), 0, 10, "in [0, 10]");
    if (has("per-device-train-batch-size"))
        o.per_device_train_batch_size = parse_number<index_t>("per-device-train-batch-size", get("per-device-train-batch-size"),
                                                              1, 4096, "an integer in [1, 4096]");
    if (has("gradient-accumulation-steps"))
        o.gradient_accumulation_steps = parse_number<index_t>("gradient-accumulation-steps", get("gradient-accumulation-steps"),
                                                              1, 65536, "an integer in [1, 65536]");
    if (has("warmup-ratio")) o.warmup_ratio = parse_number<double>("warmup-ratio", get("warmup-ratio"), 0, 1, "in [0, 1]");
    if (has("lr-scheduler-type")) {
        o.lr_scheduler_type = get("lr-scheduler-type");
        try {
            (void)train::parse_schedule(o.lr_scheduler_type);
        } catch (const error& e) { bad(std::string("--lr-scheduler-type: ") + e.what()); }
    }
    if (has("model-max-length"))
        o.model_max_length =
            parse_number<index_t>("model-max-length", get("model-max-length"), 2, 1 << 20, "an integer in [2, 1048576]");
    if (has("max-steps"))
        o.max_steps = parse_number<std::int64_t>("max-steps", get("max-steps"), -1, std::int64_t(1) << 40, "an integer >= -1");
    if (has("num-train-epochs"))
        o.num_train_epochs = parse_number<double>("num-train-epochs", get("num-train-epochs"), 0, 1e6, "in (0, 1e6]");
    if (has("save-steps"))
        o.save_steps = parse_number<std::int64_t>("save-steps", get("save-steps"), 0, std::int64_t(1) << 40, "an integer >= 0");
    if (has("save-total-limit"))
        o.save_total_limit = parse_number<index_t>("save-total-limit", get("save-total-limit"), 0, 1 << 20, "an integer >= 0");
    if (has("logging-steps"))
        o.logging_steps =
            parse_number<std::int64_t>("logging-steps", get("logging-steps"), 1, std::int64_t(1) << 40, "an integer >= 1");
    if (has("max-grad-norm"))
        o.max_grad_norm = parse_number<double>("max-grad-norm", get("max-grad-norm"), 0, 1e12, "a norm >= 0");
    if (has("seed")) o.seed = parse_number<std::uint64_t>("seed", get("seed"), 0, ~std::uint64_t(0), "a non-negative integer");
    if (has("memory-budget"))
        o.memory_budget = std::uint64_t(
            parse_number<double>("memory-budget", get("memory-budget"), 0, 1 << 20, "GiB in [0, 1048576]") * double(1ull << 30));
    if (has("version"))
        o.conv_version = checked_conv_mode(get("version") == "v1" ? "vicuna_v1" : get("version"));  // the scripts' --version v1
    if (has("image-aspect-ratio")) {
        o.image_aspect_ratio = get("image-aspect-ratio");
        if (o.image_aspect_ratio != "pad" && o.image_aspect_ratio != "square") bad("--image-aspect-ratio must be pad or square");
    }
    if (has("frozen-dtype")) {
        auto d = io::parse_weights_dtype(get("frozen-dtype"));
        if (!d) bad("--frozen-dtype must be f32, bf16 or f16, got \"" + get("frozen-dtype") + "\"");
        o.frozen_dtype = *d;
    }
    if (has("align-mode")) {  // stage 2's indicator: the paper's gate, or an ablation
        static const std::map<std::string, models::align_mode> modes = {{"gated", models::align_mode::gated},
                                                                        {"global_only", models::align_mode::global_only},
                                                                        {"local_only", models::align_mode::local_only},
                                                                        {"mean", models::align_mode::mean},
                                                                        {"none", models::align_mode::none}};
        const std::string m = get("align-mode");
        if (auto it = modes.find(m); it != modes.end())
            o.align.mode = it->second;
        else if (m.size() == 7 && m.rfind("fixed:", 0) == 0 && m[6] >= '0' && m[6] <= '7')
            o.align = {models::align_mode::fixed_level, m[6] - '0'};
        else
            bad("--align-mode must be gated, global_only, local_only, mean, fixed:L (L in 0..7) or none, got \"" + m + "\"");
    }
    o.resume = has("resume"), o.shuffle = !has("no-shuffle"), o.group_by_modality_length = has("group-by-modality-length");
    o.gradient_checkpointing = has("gradient-checkpointing"), o.quiet = has("quiet");
    if (has("threads")) set_threads(parse_number<int>("threads", get("threads"), 1, 4096, "an integer in [1, 4096]"));
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(o.model_dir, ec)) bad("--model \"" + o.model_dir + "\": not a directory");
    if (!o.vision_tower.empty() && !fs::is_directory(o.vision_tower, ec))
        bad("--vision-tower \"" + o.vision_tower + "\": not a directory");
    if (!fs::is_regular_file(o.data_path, ec)) bad("--data-path \"" + o.data_path + "\": no such file");
    if (!o.image_folder.empty() && !fs::is_directory(o.image_folder, ec))
        bad("--image-folder \"" + o.image_folder + "\": not a directory");
    if (!o.pretrain_mm_mlp_align.empty() && !fs::is_regular_file(o.pretrain_mm_mlp_align, ec))
        bad("--pretrain-mm-mlp-align \"" + o.pretrain_mm_mlp_align + "\": no such file");
    return o;
}

// --- aligngpt world: the tiny world end to end (world/pipeline.h) ---------------------------------

inline world::pipeline_options parse_world(const std::vector<std::string>& argv) {
    option_map o = parse_options(argv,
                                 {{"profile", true},
                                  {"output-dir", true},
                                  {"seed", true},
                                  {"threads", true},
                                  {"variants", true},
                                  {"seeds", true},
                                  {"resume", false},
                                  {"quiet", false}},
                                 {{"-o", "output-dir"}, {"-t", "threads"}, {"-q", "quiet"}});
    const std::string profile = o.count("profile") ? o["profile"] : "quick";
    if (profile != "quick" && profile != "full" && profile != "test")
        bad("--profile must be quick, full or test, got \"" + profile + "\"");
    const std::uint64_t seed =
        o.count("seed") ? parse_number<std::uint64_t>("seed", o["seed"], 0, std::uint64_t(1) << 40, "an integer in [0, 2^40]")
                        : 1;
    world::pipeline_options p = world::pipeline_options::profile_named(profile, seed);
    if (o.count("output-dir")) {
        if (o["output-dir"].empty()) bad("--output-dir is empty");
        p.out_dir = o["output-dir"];
    }
    if (o.count("seeds")) p.seeds = parse_number<int>("seeds", o["seeds"], 1, 100, "an integer in [1, 100]");
    if (o.count("variants")) {
        try {
            p.variants = world::parse_variants(o["variants"]);
            world::check(p);
        } catch (const error& e) { bad(std::string("--variants: ") + e.what()); }
    }
    if (o.count("threads")) set_threads(parse_number<int>("threads", o["threads"], 1, 4096, "an integer in [1, 4096]"));
    if (o.count("quiet")) p.log = nullptr;
    p.resume = o.count("resume") > 0;
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(p.out_dir, ec) && !fs::is_directory(p.out_dir, ec))
        bad("--output-dir \"" + p.out_dir + "\" is not a directory");
    return p;
}
#endif  // ALIGNGPT_TOOL_HAVE_TOKENIZER

}  // namespace aligngpt::cli
