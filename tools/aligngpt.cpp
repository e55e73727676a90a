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
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/pretrained.h"
#include "aligngpt/io/safetensors.h"
#if __has_include("aligngpt/io/image.h")
#include "aligngpt/io/image.h"
#define ALIGNGPT_TOOL_HAVE_IMAGE 1
#endif

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
    "      --align-level L        auto (the gate mix, default) or a fixed level 0..7\n"
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

std::vector<std::int64_t> parse_ids(const std::string& s) {
    std::vector<std::int64_t> ids;
    std::size_t i = 0;
    if (s.empty()) bad("--input-ids is empty (expected e.g. 1,2,-200,3)");
    while (i <= s.size()) {
        const std::size_t j = std::min(s.find(',', i), s.size());
        const std::string tok = s.substr(i, j - i);
        std::size_t used = 0;
        long long v = 0;
        try {
            v = std::stoll(tok, &used, 10);
        } catch (const std::exception&) {
            used = 0;
        }
        if (tok.empty() || used != tok.size())
            bad("--input-ids: \"" + tok + "\" is not an integer (expected a comma-separated list like 1,2,-200,3)");
        ids.push_back(v);
        i = j + 1;
    }
    return ids;
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

tensor<float> read_image([[maybe_unused]] const std::string& path, [[maybe_unused]] const pretrained::loaded_aligngpt<>& m) {
#ifdef ALIGNGPT_TOOL_HAVE_IMAGE
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
#else
    fail("--image: this build has no image decoder (aligngpt/io/image.h); pass --pixels FILE");
#endif
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
    const index_t V = cfg.model.llm.vocab_size;
    int n_image = 0;
    for (std::int64_t id : ids) {
        if (id == models::image_token_index) n_image++;
        else if (id < 0 || id >= V)
            throw usage_error("--input-ids: id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(V) +
                              ") of " + cfg.path + " (and is not the image placeholder -200)");
    }
    if (n_image != 1)
        throw usage_error("--input-ids must contain exactly one -200 image placeholder, found " + std::to_string(n_image));

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
    w.set_metadata("producer", "aligngpt trace " ALIGNGPT_TOOL_VERSION);
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
            std::cout << "aligngpt " ALIGNGPT_TOOL_VERSION "\n";
            return 0;
        }
        if (cmd == "trace") {
            const std::vector<std::string> rest(args.begin() + 1, args.end());
            for (const auto& r : rest)
                if (r == "-h" || r == "--help") {
                    std::cout << usage_text;
                    return 0;
                }
            return run_trace(parse_trace(rest));
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
