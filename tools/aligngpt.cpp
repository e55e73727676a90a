// aligngpt: the project's command-line tool.
//
//   aligngpt --help | --version
//   aligngpt trace --model DIR [--vision-tower DIR] (--image FILE | --pixels FILE)
//                  (--prompt TEXT | --input-ids 1,2,-200,...) [--align-level auto|0..7]
//                  [--dtype f32|bf16|f16] [--mm-projector FILE] [--base-llm DIR] [-q] --out FILE
//
// trace runs one prefill and writes the named intermediates (docs/model.md §12.3) in f32 to a safetensors file:
//   pixel_values, vision.hidden_states.<i> (i = 0 .. select layer), vision.features,
//   projector.out, gate.text_mean, gate.dots, gate.weights, align.indicator, inputs_embeds,
//   llm.layers.<i>.out, logits, and input_ids (I64).
// Options accept the dash and the underscore spelling (--vision-tower / --vision_tower), and
// "--opt=value" as well as "--opt value". Exit codes: 0 success, 1 runtime error (bad files,
// failed load), 2 bad command line (the message and the usage go to stderr). Progress: stderr.
// Arguments are checked before the model is loaded: paths, the output directory, the ids (parsed,
// one image placeholder, inside config.json's vocab_size).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/io/image.h"
#include "aligngpt/io/safetensors.h"
#include "aligngpt/pretrained.h"
#include "aligngpt/version.h"  // ALIGNGPT_VERSION: --version and the trace producer

namespace {

using namespace aligngpt;

constexpr const char* usage_text =
    "usage: aligngpt <command> [options]\n"
    "\n"
    "commands:\n"
    "  trace     run one prefill and write the named intermediates (f32) to a safetensors file\n"
    "\n"
    "aligngpt trace options:\n"
    "  -m, --model DIR            AlignGPT model directory (config.json + weights)\n"
    "      --vision-tower DIR     CLIP vision tower directory (default: config mm_vision_tower)\n"
    "      --image FILE           PNG/JPEG, preprocessed as the reference (pad or square per config)\n"
    "      --pixels FILE          safetensors file holding pixel_values [1,3,S,S] or [3,S,S]\n"
    "  -p, --prompt TEXT          prompt text (needs the tokenizer; not yet implemented)\n"
    "      --input-ids LIST       comma-separated token ids, -200 = the image placeholder\n"
    "      --align-level L        auto (default): the gate's mix of levels 0..6 plus the global level 7;\n"
    "                             or one fixed level 0..7 (the paper's H_1..H_8; 7 = H_8, the global one)\n"
    "      --dtype D              f32 (default), bf16 or f16: LLM linear weights kept 16-bit\n"
    "      --mm-projector FILE    stage-1 file (mm_projector_align.bin) overriding projector+indicators\n"
    "      --base-llm DIR         LLM weights when --model is a stage-1 (pretrain) output\n"
    "  -o, --out FILE             output .safetensors\n"
    "  -q, --quiet                no progress on stderr\n"
    "\n"
    "  -h, --help                 this text\n"
    "      --version              version\n"
    "\n"
    "Spellings with underscores (--vision_tower, --input_ids, ...) are accepted.\n"
    "Exit status: 0 ok, 1 runtime error, 2 bad command line.\n";

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] void bad(const std::string& m) { throw usage_error(m); }

struct trace_args {
    std::string model, vision_tower, image, pixels, prompt, out, mm_projector, base_llm;
    std::optional<std::vector<std::int64_t>> ids;
    int align_level = -1;  // -1 = auto
    io::weights_dtype dtype = io::weights_dtype::f32;
    bool quiet = false;
};

// Strict: each comma-separated item is a whole base-10 integer ("abc", "", " 1", "+1" and "1x" are
// refused, not read as 0 or 1); errors name the item by its 1-based position.
std::vector<std::int64_t> parse_ids(const std::string& s) {
    if (s.empty()) bad("--input-ids is empty (expected e.g. 1,2,-200,3)");
    std::vector<std::string> items;
    for (std::size_t i = 0;; ) {
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
void check_ids_in_vocab(const std::vector<std::int64_t>& ids, index_t V, const std::string& source) {
    for (std::size_t k = 0; k < ids.size(); k++) {
        const std::int64_t id = ids[k];
        if (id != models::image_token_index && (id < 0 || id >= V))
            bad("--input-ids: item " + std::to_string(k + 1) + " of " + std::to_string(ids.size()) + ", id " + std::to_string(id) +
                ", is outside the vocabulary [0, " + std::to_string(V) + ") of " + source +
                " (and is not the image placeholder " + std::to_string(models::image_token_index) + ")");
    }
}

trace_args parse_trace(const std::vector<std::string>& argv) {
    trace_args a;
    // canonical name -> takes a value
    static const std::map<std::string, bool> known = {
        {"model", true},        {"vision-tower", true}, {"image", true},    {"pixels", true},   {"prompt", true},
        {"input-ids", true},    {"align-level", true},  {"dtype", true},    {"out", true},      {"mm-projector", true},
        {"base-llm", true},     {"quiet", false}};
    static const std::map<std::string, std::string> shorts = {{"-m", "model"}, {"-p", "prompt"}, {"-o", "out"}, {"-q", "quiet"}};
    std::map<std::string, std::string> seen;
    for (std::size_t i = 0; i < argv.size(); i++) {
        std::string arg = argv[i], name, value;
        bool has_value = false;
        if (auto s = shorts.find(arg); s != shorts.end()) {
            name = s->second;
        } else if (arg.rfind("--", 0) == 0 && arg.size() > 2) {
            name = arg.substr(2);
            if (auto eq = name.find('='); eq != std::string::npos) value = name.substr(eq + 1), name = name.substr(0, eq), has_value = true;
            for (char& c : name)
                if (c == '_') c = '-';
            if (name == "model-path") name = "model";            // LLaVA/AlignGPT script spelling
            if (name == "weights-dtype") name = "dtype";
            if (name == "image-file") name = "image";
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
    const auto get = [&](const char* n) { return seen.count(n) ? seen[n] : std::string(); };
    a.model = get("model"), a.vision_tower = get("vision-tower"), a.image = get("image"), a.pixels = get("pixels");
    a.prompt = get("prompt"), a.out = get("out"), a.mm_projector = get("mm-projector"), a.base_llm = get("base-llm");
    a.quiet = seen.count("quiet") > 0;
    if (a.model.empty()) bad("--model DIR is required");
    if (a.out.empty()) bad("--out FILE is required");
    if (!a.image.empty() && !a.pixels.empty()) bad("give either --image or --pixels, not both");
    if (a.image.empty() && a.pixels.empty()) bad("one of --image FILE or --pixels FILE is required");
    if (seen.count("prompt") && seen.count("input-ids")) bad("give either --prompt or --input-ids, not both");
    if (seen.count("prompt")) bad("--prompt needs the tokenizer (not yet implemented); pass --input-ids");
    if (!seen.count("input-ids")) bad("one of --prompt TEXT or --input-ids LIST is required");
    a.ids = parse_ids(get("input-ids"));
    const auto n_image = std::count(a.ids->begin(), a.ids->end(), models::image_token_index);
    if (n_image != 1)
        bad("--input-ids must contain exactly one " + std::to_string(models::image_token_index) +
            " image placeholder (the model takes one image), found " + std::to_string(n_image));
    if (seen.count("align-level")) {
        const std::string l = get("align-level");
        if (l == "auto") a.align_level = -1;
        else if (l.size() == 1 && l[0] >= '0' && l[0] <= '7') a.align_level = l[0] - '0';
        else bad("--align-level must be auto or a level 0..7, got \"" + l + "\"");
    }
    if (seen.count("dtype")) {
        auto d = io::parse_weights_dtype(get("dtype"));
        if (!d) bad("--dtype must be f32, bf16 or f16, got \"" + get("dtype") + "\"");
        a.dtype = *d;
    }
    return a;
}

/// vocab_size from DIR/config.json, read without the weights; nullopt when the file or the field is
/// unusable, which the loader then reports with its own message.
std::optional<index_t> config_vocab_size(const std::string& model_dir) {
    namespace fs = std::filesystem;
    const std::string path = model_dir + "/config.json";
    std::error_code ec;
    if (!fs::is_regular_file(path, ec) || ec) return std::nullopt;
    nlohmann::json j;
    try {
        j = io::read_json_file(path, {.max_bytes = 1 << 20});  // depth-limited, as the loader reads it
    } catch (const error&) {
        return std::nullopt;
    }
    if (!j.is_object() || !j.contains("vocab_size")) return std::nullopt;
    const auto v = io::detail::json_int64(j["vocab_size"]);
    return v && *v > 0 ? std::optional<index_t>(*v) : std::nullopt;
}

/// Everything that can be checked without the weights, so that a typo costs no model load (minutes
/// for a 7B checkpoint): input paths, the output directory, the ids against config.json.
void check_before_load(const trace_args& a) {
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

tensor<float> read_pixels(const std::string& path, index_t size) {
    const auto f = io::safetensors_file::open(path);
    ALIGNGPT_CHECK(f.find("pixel_values"), path, ": no tensor \"pixel_values\" (", f.tensors().size(), " tensors in the file)");
    tensor<float> p = f.tensor_as<float>("pixel_values");
    if (p.dim() == 3) p = p.reshape({1, p.size(0), p.size(1), p.size(2)});
    ALIGNGPT_CHECK(p.dim() == 4 && p.size(0) == 1 && p.size(1) == 3 && p.size(2) == size && p.size(3) == size, path,
                   ": pixel_values has shape ", aligngpt::detail::shape_str(p.shape()), ", expected [1, 3, ", size, ", ", size,
                   "] for this vision tower");
    return p;
}

tensor<float> read_image(const std::string& path, const pretrained::loaded_aligngpt<>& m) {
    namespace fs = std::filesystem;
    const std::string pc = m.vision_dir + "/preprocessor_config.json";
    io::clip_image_processor_config cfg =
        fs::exists(pc) ? io::clip_image_processor_config::from_json_file(pc) : io::clip_image_processor_config{};
    cfg.aspect = io::parse_aspect_mode(m.config.image_aspect_ratio);
    tensor<float> x = io::clip_preprocess(io::load_image(path), cfg, path);
    const index_t S = m.vision_config.image_size;
    ALIGNGPT_CHECK(x.size(1) == S && x.size(2) == S, path, ": preprocessing gives ", x.size(1), "x", x.size(2),
                   " pixels but the vision tower takes ", S, "x", S, " (check ", pc, ")");
    return x.reshape({1, 3, S, S});
}

int run_trace(const trace_args& a) {
    std::ostream& log = std::cerr;
    pretrained::load_options opt;
    opt.quiet = a.quiet;
    opt.vision_tower = a.vision_tower;
    opt.mm_projector = a.mm_projector;
    opt.base_llm = a.base_llm;
    opt.dtype = a.dtype;
    auto m = pretrained::load_aligngpt(a.model, opt);
    auto& model = *m.model;
    const auto& cfg = m.config;
    const std::vector<std::int64_t>& ids = *a.ids;
    check_ids_in_vocab(ids, cfg.model.llm.vocab_size, cfg.path);  // checked before the load too; this is the model's own V

    const tensor<float> pixels = a.pixels.empty() ? read_image(a.image, m) : read_pixels(a.pixels, m.vision_config.image_size);
    if (!a.quiet) log << "[trace] vision tower: " << m.vision_dir << " (select layer " << cfg.mm_vision_select_layer << ")\n";
    // One prefill through the model's own code: the tower, the projector, the gate and the LLM put
    // their intermediates into the sink, in the order they are computed.
    const models::alignment al = a.align_level < 0 ? models::alignment{}
                                                   : models::alignment{models::align_mode::fixed_level, a.align_level};
    if (!a.quiet) log << "[trace] prefill: " << ids.size() << " ids, align level " << (a.align_level < 0 ? std::string("auto (gate)") : std::to_string(a.align_level)) << "\n";
    trace_sink<float> sink;
    sink.put("pixel_values", pixels);
    const auto out = model.forward_pixels(nullptr, {models::sample{ids}}, *m.vision, autograd::variable<float>::leaf(pixels),
                                          models::stage::inference, al, &sink);
    io::safetensors_writer w;
    for (const auto& [name, t] : sink.entries) w.add(name, t);
    w.add("input_ids", io::dtype::I64, {index_t(ids.size())}, ids.data(), ids.size() * sizeof(std::int64_t));
    w.set_metadata("producer", "aligngpt trace " ALIGNGPT_VERSION);
    w.set_metadata("model", a.model);
    w.set_metadata("align_level", a.align_level < 0 ? "auto" : std::to_string(a.align_level));
    w.write(a.out);
    const auto& logits = out.logits;
    if (!a.quiet)
        log << "[trace] wrote " << a.out << ": logits " << aligngpt::detail::shape_str(logits.shape()) << ", next token (greedy) "
            << generate::argmax_last(logits) << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    try {
        if (args.empty()) bad("no command given");
        const std::string cmd = args[0];
        if (cmd == "-h" || cmd == "--help" || cmd == "help") {
            std::cout << usage_text;
            return 0;
        }
        if (cmd == "--version" || cmd == "-V") {
            std::cout << "aligngpt " ALIGNGPT_VERSION "\n";
            return 0;
        }
        if (cmd == "trace") {
            const std::vector<std::string> rest(args.begin() + 1, args.end());
            for (const auto& r : rest)
                if (r == "-h" || r == "--help") {
                    std::cout << usage_text;
                    return 0;
                }
            const trace_args a = parse_trace(rest);
            check_before_load(a);
            return run_trace(a);
        }
        bad("unknown command \"" + cmd + "\"");
    } catch (const usage_error& e) {
        std::cerr << "aligngpt: error: " << e.what() << "\n\n" << usage_text;
        return 2;
    } catch (const std::bad_alloc&) {
        std::cerr << "aligngpt: error: out of memory\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "aligngpt: error: " << e.what() << "\n";
        return 1;
    }
}
