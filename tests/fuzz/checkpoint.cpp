// Fuzz target: a training checkpoint directory as `aligngpt train --resume` reads it
// (train/checkpoint.h, train/trainer.h): find_resumable verifies OUT/checkpoint-7 (manifest.json,
// sizes, SHA-256), then what trainer::resume reads from it: trainer_state::read and
// refuse_mismatch against a fixed configuration, model.safetensors (each trainable parameter found
// by name and shape, read as f32) and optimizer.safetensors (every tensor read, then
// adamw::import_state for the same parameters).
//
// Input: the files' bytes joined by the separator "=ckpt-file=": trainer_state.json,
// model.safetensors, optimizer.safetensors and, optionally, manifest.json. Without a fourth part the
// target writes the manifest the writer would write for the files given (so that the content
// readers are reached past the hashes); with one, the manifest is the input's. A missing part is a
// file the checkpoint lacks. Errors must name the output directory (every message names a file
// in it).
#include <filesystem>

#include "aligngpt/train/checkpoint.h"
#include "aligngpt/train/optim.h"
#include "aligngpt/train/trainer.h"
#include "fuzz.h"

namespace {

using namespace aligngpt;

constexpr std::string_view separator = "=ckpt-file=";
constexpr const char* file_names[] = {"trainer_state.json", "model.safetensors", "optimizer.safetensors", "manifest.json"};

/// Two trainable parameters, as a stage-1 run's projector has them.
struct params {
    std::vector<autograd::variable<float>> vars;
    params() {
        vars.push_back(autograd::variable<float>::leaf(tensor<float>({4, 3}), true, "model.mm_projector.0.weight"));
        vars.push_back(autograd::variable<float>::leaf(tensor<float>({4}), true, "model.mm_projector.0.bias"));
    }
};

/// The configuration the saved one is compared with (a run's fingerprint, shortened).
const nlohmann::json& current_config() {
    static const nlohmann::json j = {{"stage", "pretrain"},
                                     {"model", {{"hidden_size", 4}, {"vocab_size", 32}}},
                                     {"learning_rate", 1e-3},
                                     {"seed", 42},
                                     {"shuffle", true}};
    return j;
}

void read_as_resume_does(const train::checkpoint& ck) {
    static const params p;
    const train::trainer_state st = train::trainer_state::read(ck);
    train::refuse_mismatch(st.config, current_config(),
                           {"stage", "model.hidden_size", "model.vocab_size", "learning_rate", "seed"},
                           ck.dir() + "/trainer_state.json");
    const auto model_file = ck.tensors("model.safetensors");
    for (const auto& v : p.vars) {
        const auto* t = model_file.find(v.name());
        ALIGNGPT_CHECK(t != nullptr, ck.dir(), "/model.safetensors: no tensor \"", v.name(), "\"");
        ALIGNGPT_CHECK(t->shape == v.shape(), ck.dir(), "/model.safetensors: \"", v.name(), "\" has another shape");
        (void)model_file.tensor_as<float>(v.name());
    }
    const auto opt_file = ck.tensors("optimizer.safetensors");
    std::vector<std::pair<std::string, tensor<float>>> state;
    for (const auto& t : opt_file.tensors()) state.emplace_back(t.name, opt_file.tensor_as<float>(t.name));
    train::adamw opt(p.vars, {});
    opt.import_state(state, ck.dir() + "/optimizer.safetensors");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace fs = std::filesystem;
    const std::string out = fuzz::scratch_dir() + "/out";
    const std::string dir = out + "/checkpoint-7";
    fs::remove_all(out);
    fs::create_directories(dir);
    const std::string_view in = fuzz::as_text(data, size);
    std::vector<std::string_view> parts;
    for (std::size_t i = 0; parts.size() < 4;) {
        const std::size_t j = std::min(in.find(separator, i), in.size());
        parts.push_back(in.substr(i, j - i));
        if (j == in.size()) break;
        i = j + separator.size();
    }
    std::vector<train::detail::manifest_entry> listed;
    for (std::size_t k = 0; k < parts.size(); k++) {
        fuzz::put_file("out/checkpoint-7/" + std::string(file_names[k]), parts[k]);
        if (k == 3) break;
        train::sha256 h;
        h.update(parts[k].data(), parts[k].size());
        listed.push_back({file_names[k], parts[k].size(), h.hex()});
    }
    if (parts.size() < 4) fuzz::put_file("out/checkpoint-7/manifest.json", train::detail::manifest_text(7, listed));

    // checkpoint::open's refusal, which find_resumable turns into a line of its report
    fuzz::expect_ok_or_refused(dir, [&] { (void)train::checkpoint::open(dir); });
    fuzz::expect_ok_or_refused(out, [&] {
        train::resume_report report;
        const auto ck = train::find_resumable(out, &report);
        (void)report.text();  // a skipped checkpoint is reported, not thrown: resume then starts at step 0
        if (ck) read_as_resume_does(*ck);
    });
    return 0;
}
