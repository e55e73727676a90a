// aligngpt: the project's command-line tool.
//
//   aligngpt --help | --version
//   aligngpt run -m DIR [--vision-tower DIR] --image FILE [-p TEXT] [-n N] [--temp T] [--top-p P]
//                [--top-k K] [--repeat-penalty R] [-s SEED] [-t THREADS] [--conv-mode NAME]
//                [--image-aspect-ratio pad|square] [--align-level auto|0..7] [--tokenizer DIR] [-v]
//                [--device cpu|cuda[:N]] [--cuda-mode exact|fast]
//   aligngpt trace --model DIR [--vision-tower DIR] (--image FILE | --pixels FILE)
//                  (--prompt TEXT [--conv-mode NAME] [--tokenizer DIR] | --input-ids 1,2,-200,...)
//                  [--align-level auto|0..7]
//                  [--dtype f32|bf16|f16] [--mm-projector FILE] [--base-llm DIR] [-q] --out FILE
//                  [--device cpu|cuda[:N]] [--cuda-mode exact|fast]
//   aligngpt answer -m DIR [--vision-tower DIR] --question-file Q.jsonl --image-folder DIR --answers-file A.jsonl
//                   [--conv-mode NAME] [--temperature T] [--max-new-tokens N] [--batch-size B] [--resume] [-t N]
//                   [--align-level auto|0..7] [--top-p P] [--top-k K] [-s SEED] [--tokenizer DIR] [--dtype D]
//   aligngpt score --task pope|mme|vqa|mc --answers-file A.jsonl --annotations FILE|DIR
//   aligngpt levels --clip DIR --data-path JSON --image-folder DIR --levels N --out JSON [--plot PNG]
//                   [-t THREADS] [--batch-size B]
//   aligngpt world [--profile quick|full|test] [-o DIR] [--seed S] [-t N] [--variants LIST] [--seeds N] [--resume]
//
// run renders the question with the conversation template (conversation.h, vicuna_v1 by default),
// tokenizes it as the reference (tokenizer/llama.h), encodes the image, prefills and decodes
// (generate/sampling.h), streaming the answer to stdout; it stops on EOS or the template's stop
// string, and the answer is the reference's: decode(skip_special_tokens).strip() without the stop
// string. Without -p it is a chat: each line on stdin is a user turn.
// answer is model_vqa_loader.py: a question file to an answers file, batched and resumable (eval/answer.h).
// score reads LLaVA's answers JSONL and the task's annotations and prints the benchmark's numbers
// (eval/score.h, docs/eval.md); a bad file exits 1 naming the file and the line.
// levels scores every image-caption pair of a LLaVA JSON with CLIP and writes it back with the alignment
// level of each record (train/levels.h, docs/levels.md); the per-level table goes to stdout.
// world runs the tiny AlignGPT world end to end (world/pipeline.h, docs/world.md): the results table to
// stdout, report.md, results.json and the plots in the output directory.
// trace runs one prefill and writes the named intermediates (docs/model.md §12.3) in f32 to a safetensors file:
//   pixel_values, vision.hidden_states.<i> (i = 0 .. select layer), vision.features,
//   projector.out, gate.text_mean, gate.dots, gate.weights, align.indicator, inputs_embeds,
//   llm.layers.<i>.out, logits, and input_ids (I64).
// Options accept the dash and the underscore spelling (--vision-tower / --vision_tower), and
// "--opt=value" as well as "--opt value". Exit codes: 0 success, 1 runtime error (bad files,
// failed load), 2 bad command line (the message and the usage go to stderr). Progress: stderr.
// Arguments are checked before the model is loaded (aligngpt_cli.h): paths, the output directory, the ids (parsed,
// one image placeholder, inside config.json's vocab_size).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
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
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/conversation.h"
#include "aligngpt/eval/score.h"
#include "aligngpt/generate/sampling.h"
#include "aligngpt/io/safetensors.h"
#include "aligngpt/pretrained.h"
#include "aligngpt/train/plot.h"
#include "aligngpt/train/levels.h"
#include "aligngpt/version.h"  // ALIGNGPT_VERSION: --version and the trace producer
#include "aligngpt_cli.h"
#if defined(ALIGNGPT_TOOL_HAVE_CUDA)
#include "aligngpt/backend/cuda.h"
#endif
#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
#include "aligngpt/eval/answer.h"
#include "aligngpt/tokenizer/llama.h"
#include "aligngpt/train/trainer.h"
#include "aligngpt/world/pipeline.h"
#endif

namespace {

using namespace aligngpt;
using namespace aligngpt::cli;  // the argument parsers (aligngpt_cli.h)

constexpr const char* usage_text =
    "usage: aligngpt <command> [options]\n"
    "\n"
    "commands:\n"
    "  run       answer a question about an image (streamed to stdout); no -p: a chat on stdin\n"
    "  trace     run one prefill and write the named intermediates (f32) to a safetensors file\n"
    "  answer    answer a LLaVA question file (JSONL) into an answers file, batched, resumable (docs/eval.md)\n"
    "  score     score an answers file against a benchmark's annotations (docs/eval.md)\n"
    "  levels    alignment levels of a LLaVA JSON from CLIP image-caption similarity (docs/levels.md)\n"
    "  train     stage 1 (pretrain) or stage 2 (finetune) training (docs/training.md)\n"
    "  plot      DIR: a training run's metrics.jsonl as loss / lr / grad-norm curves (DIR/metrics.png)\n"
    "  world     the tiny AlignGPT world end to end: generate, pre-train, levels, stage 1, stage 2, evaluate,\n"
    "            report (docs/world.md); no download, no argument needed\n"
    "\n"
    "aligngpt run options:\n"
    "  -m, --model DIR            AlignGPT model directory (config.json, weights, tokenizer.model)\n"
    "      --vision-tower DIR     CLIP vision tower (default: config mm_vision_tower, next to the model if relative)\n"
    "      --image FILE           PNG/JPEG\n"
    "  -p, --prompt TEXT          the question; without it, an interactive chat about the image\n"
    "  -n, --max-new-tokens N     512\n"
    "      --temp T               0.2; 0 is greedy (do_sample=False)\n"
    "      --top-p P              1 (off)      --top-k K   50 (0: off)\n"
    "      --repeat-penalty R     1 (off)\n"
    "  -s, --seed S               0: the same seed gives the same answer on any thread count\n"
    "  -t, --threads N            OpenMP threads (default: OMP_NUM_THREADS or all cores)\n"
    "      --conv-mode NAME       vicuna_v1 (default), llava_v0, llama_2 or plain\n"
    "      --image-aspect-ratio A pad or square (default: config image_aspect_ratio)\n"
    "      --align-level L        auto (default) or 0..7, as for trace\n"
    "      --tokenizer DIR        tokenizer.model + tokenizer_config.json (default: the model directory)\n"
    "      --dtype D              f32 (default), bf16 or f16\n"
    "      --device D             cpu (default), cuda or cuda:N (a build with -DALIGNGPT_WITH_CUDA=ON)\n"
    "      --cuda-mode M          exact (default: the CPU's bits) or fast (the GEMMs on cuBLAS)\n"
    "  -v, --verbose              the rendered prompt, its ids, the gate's weights and the loading log\n"
    "  The answer alone goes to stdout; the timing summary and everything else to stderr.\n"
    "\n"
    "aligngpt answer options (model_vqa_loader.py's; run's -m, --vision-tower, --tokenizer, --dtype, -t, -s,\n"
    "  --top-p, --top-k, --align-level, --image-aspect-ratio, --device and --cuda-mode too):\n"
    "      --question-file FILE   JSONL, one {question_id, image, text} per line\n"
    "      --image-folder DIR     where the questions' images are\n"
    "      --answers-file FILE    JSONL, one {question_id, prompt, text, answer_id, model_id, metadata} per line\n"
    "      --conv-mode NAME       vicuna_v1 (default)      --temperature T   0 (greedy)\n"
    "      --max-new-tokens N     128                      --batch-size B    questions per batched prefill (1)\n"
    "      --resume               keep the answers file's complete lines and answer the rest\n"
    "  -q, --quiet                no progress on stderr\n"
    "\n"
    "aligngpt trace options:\n"
    "  -m, --model DIR            AlignGPT model directory (config.json + weights)\n"
    "      --vision-tower DIR     CLIP vision tower directory (default: config mm_vision_tower)\n"
    "      --image FILE           PNG/JPEG, preprocessed as the reference (pad or square per config)\n"
    "      --pixels FILE          safetensors file holding pixel_values [1,3,S,S] or [3,S,S]\n"
    "  -p, --prompt TEXT          a question, rendered and tokenized as run does (--conv-mode, --tokenizer)\n"
    "      --input-ids LIST       comma-separated token ids, -200 = the image placeholder\n"
    "      --align-level L        auto (default): the gate's mix of levels 0..6 plus the global level 7;\n"
    "                             or one fixed level 0..7 (the paper's H_1..H_8; 7 = H_8, the global one)\n"
    "      --dtype D              f32 (default), bf16 or f16: LLM linear weights kept 16-bit\n"
    "      --mm-projector FILE    stage-1 file (mm_projector_align.bin) overriding projector+indicators\n"
    "      --base-llm DIR         LLM weights when --model is a stage-1 (pretrain) output\n"
    "      --device D, --cuda-mode M  as for run; in exact mode a CUDA trace is the CPU's file byte for byte\n"
    "  -o, --out FILE             output .safetensors\n"
    "  -q, --quiet                no progress on stderr\n"
    "\n"
    "aligngpt score options:\n"
    "      --task T               pope (accuracy, precision, recall, F1, yes-ratio per category),\n"
    "                             mme (perception and cognition sums), vqa (VQAv2 soft accuracy)\n"
    "                             or mc (multiple-choice letter accuracy)\n"
    "      --answers-file FILE    JSONL, one {question_id, text, ...} per line (what model_vqa*.py writes)\n"
    "      --annotations PATH     the task's ground truth (pope: a JSONL file or LLaVA's coco_pope_*.json\n"
    "                             directory; vqa: the VQAv2 annotations JSON or JSONL; see docs/eval.md)\n"
    "\n"
    "aligngpt levels options:\n"
    "      --clip DIR             CLIPModel directory (config.json, weights, vocab.json, merges.txt,\n"
    "                             preprocessor_config.json), e.g. openai/clip-vit-large-patch14-336\n"
    "      --data-path FILE       LLaVA-format JSON (never modified)\n"
    "      --image-folder DIR     where the records' images are\n"
    "      --levels N             number of levels (8 for AlignGPT)\n"
    "  -o, --out FILE             the records with \"similarity\" (level) and \"clip_similarity\" (cosine)\n"
    "      --plot FILE            a histogram PNG of the cosines, coloured by level\n"
    "  -t, --threads N            OpenMP threads      --batch-size B   pairs per CLIP forward (8)\n"
    "aligngpt train options (the official scripts' flag names; defaults per stage as in their scripts):\n"
    "      --stage S              pretrain (projector + level embeddings) or finetune (LLM + projector + gate)\n"
    "  -m, --model DIR            plain LLaMA/Vicuna directory (new projector, levels, gate) or AlignGPT directory\n"
    "      --vision-tower DIR     CLIP vision tower (CLIP-L/14-336 layout)\n"
    "      --data-path JSON       LLaVA-format records (stage 1: each with an integer \"similarity\" level)\n"
    "      --image-folder DIR     where the records' \"image\" paths are relative to\n"
    "  -o, --output-dir DIR       metrics.jsonl, checkpoint-<step>/, the exports\n"
    "      --pretrain-mm-mlp-align FILE  stage 2: the stage-1 output (mm_projector_align.bin)\n"
    "      --learning-rate LR     1e-3 (pretrain), 2e-5 (finetune)     --weight-decay W   0\n"
    "      --per-device-train-batch-size B   8 / 16    --gradient-accumulation-steps K   4 / 1\n"
    "      --warmup-ratio R       0.03      --lr-scheduler-type cosine|linear|constant|constant_with_warmup\n"
    "      --model-max-length N   2048      --max-steps N (overrides epochs)   --num-train-epochs E   1\n"
    "      --save-steps N         500 (0: final only)   --save-total-limit K   0 (keep all)\n"
    "      --logging-steps N      1         --max-grad-norm G   1.0 (0: off; the reference's DeepSpeed runs: off)\n"
    "      --seed S               42        --resume   continue from the newest valid checkpoint\n"
    "      --no-shuffle           file order   --group-by-modality-length   --gradient-checkpointing\n"
    "      --memory-budget GIB    refuse to start when the memory plan exceeds it\n"
    "      --align-mode M         stage 2's indicator: gated (default: the paper), or the ablations global_only,\n"
    "                             local_only, mean, fixed:L; none = the LLaVA-1.5 baseline (both stages: no\n"
    "                             alignment module; writes LLaVA's mm_projector.bin and model_type \"llava\")\n"
    "      --frozen-dtype D       stage 1: f32 (default), bf16 or f16: the frozen LLM's linears kept 16-bit\n"
    "                             (packed exactly from a file of that dtype, e.g. vicuna's f16)\n"
    "      --version NAME         template: plain (pretrain) / v1 = vicuna_v1 (finetune)\n"
    "      --image-aspect-ratio A square (pretrain) / pad (finetune)\n"
    "  -t, --threads N            OpenMP threads;  -q, --quiet\n"
    "\n"
    "aligngpt world options:\n"
    "      --profile P            quick (default: aligngpt and llava, one seed, about 3 minutes on 2 idle cores),\n"
    "                             full (all five variants, 3 seeds, about 1.5 hours) or test (seconds; the\n"
    "                             numbers mean nothing)\n"
    "  -o, --output-dir DIR       world-out (default): report.md, results.json, plots/, seed-S/...\n"
    "      --seed S               1: the first seed (the same seed gives the same results.json on any thread count)\n"
    "      --seeds N              replicates (seeds S .. S+N-1; default: the profile's)\n"
    "      --variants LIST        comma-separated: aligngpt, llava, global_only, local_only, fixed:7\n"
    "      --resume               keep what an interrupted run with the same options finished in DIR and do\n"
    "                             the rest (the results are the uninterrupted run's)\n"
    "  -t, --threads N            OpenMP threads;  -q, --quiet   no progress on stderr\n"
    "\n"
    "  -h, --help                 this text\n"
    "      --version              version\n"
    "\n"
    "Spellings with underscores (--vision_tower, --input_ids, ...) are accepted.\n"
    "Exit status: 0 ok, 1 runtime error, 2 bad command line.\n";

/// A user turn as the reference's cli.py writes it: the first one carries the image ("<image>\n"
/// before the text), then the empty assistant turn to generate.
void add_question(conversation::conversation& conv, const std::string& question, bool first) {
    conv.append(conv.roles[0], first ? "<image>\n" + question : question);
    conv.append(conv.roles[1], std::nullopt);
}

/// Runs f(backend) on the device of --device: backend::cpu, or a backend::cuda made here (exact or
/// fast mode) once the GPU is known to exist.
template <class F>
int on_device(const device_args& d, F&& f) {
    if (!d.cuda) return f(backend::cpu::instance());
#if defined(ALIGNGPT_TOOL_HAVE_CUDA)
    const int n = backend::cuda::device_count();
    if (d.index >= n)
        fail("--device cuda:", d.index, ": ",
             n == 0 ? std::string("no CUDA device is visible (no driver, no GPU, or CUDA_VISIBLE_DEVICES hides them)")
                    : "this machine shows " + std::to_string(n) + " CUDA device(s), numbered from 0");
    const backend::cuda gpu(d.index, nullptr, d.fast ? backend::cuda::mode::fast : backend::cuda::mode::exact);
    return f(gpu);
#else
    fail("--device cuda: this aligngpt was built without CUDA");  // parse_device refuses it first
#endif
}

std::string device_name(const device_args& d) {
    return d.cuda ? "cuda:" + std::to_string(d.index) + (d.fast ? " (fast)" : " (exact)") : std::string("cpu");
}

/// A host tensor on `be` (the CPU's is the tensor itself).
template <class Backend>
tensor<float, Backend> on(const tensor<float>& h, const Backend& be) {
    if constexpr (std::is_same_v<Backend, backend::cpu>)
        return h;
    else
        return tensor<float, Backend>::from(h.to_vector(), h.shape(), be);
}
/// A tensor on the host (the explicit copy back from a device).
template <class Backend>
tensor<float> on_host(const tensor<float, Backend>& t) {
    if constexpr (std::is_same_v<Backend, backend::cpu>)
        return t;
    else
        return tensor<float>::from(t.to_vector(), t.shape());
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

template <class Backend>
int run_trace(const trace_args& a, const Backend& be) {
    std::ostream& log = std::cerr;
    pretrained::load_options opt;
    opt.quiet = a.quiet;
    opt.vision_tower = a.vision_tower;
    opt.mm_projector = a.mm_projector;
    opt.base_llm = a.base_llm;
    opt.dtype = a.dtype;
    auto m = pretrained::load_aligngpt<float, Backend>(a.model, opt, be);
    auto& model = *m.model;
    const auto& cfg = m.config;
    const std::vector<std::int64_t>& ids = *a.ids;
    check_ids_in_vocab(ids, cfg.model.llm.vocab_size, cfg.path);  // checked before the load too; this is the model's own V

    const tensor<float> pixels =
        a.pixels.empty() ? pretrained::image_pixels(a.image, m) : read_pixels(a.pixels, m.vision_config.image_size);
    if (!a.quiet)
        log << "[trace] vision tower: " << m.vision_dir << " (select layer " << cfg.mm_vision_select_layer << "), device "
            << device_name(a.device) << "\n";
    // One prefill through the model's own code: the tower, the projector, the gate and the LLM put
    // their intermediates into the sink, in the order they are computed.
    const models::alignment al =
        a.align_level < 0 ? models::alignment{} : models::alignment{models::align_mode::fixed_level, a.align_level};
    if (!a.quiet)
        log << "[trace] prefill: " << ids.size() << " ids, align level "
            << (a.align_level < 0 ? std::string("auto (gate)") : std::to_string(a.align_level)) << "\n";
    trace_sink<float, Backend> sink;
    const tensor<float, Backend> px = on(pixels, be);
    sink.put("pixel_values", px);
    const auto out = model.forward_pixels(nullptr, {models::sample{ids}}, *m.vision, autograd::variable<float, Backend>::leaf(px),
                                          models::stage::inference, al, &sink);
    // The file does not name the device: in exact mode a CUDA trace is the CPU's file, byte for byte.
    io::safetensors_writer w;
    for (const auto& [name, t] : sink.entries) w.add(name, on_host(t));
    w.add("input_ids", io::dtype::I64, {index_t(ids.size())}, ids.data(), ids.size() * sizeof(std::int64_t));
    w.set_metadata("producer", "aligngpt trace " ALIGNGPT_VERSION);
    w.set_metadata("model", a.model);
    w.set_metadata("align_level", a.align_level < 0 ? "auto" : std::to_string(a.align_level));
    if (a.prompt) w.set_metadata("prompt", *a.prompt), w.set_metadata("conv_mode", a.conv_mode);
    w.write(a.out);
    const auto& logits = out.logits;
    if (!a.quiet)
        log << "[trace] wrote " << a.out << ": logits " << aligngpt::detail::shape_str(logits.shape()) << ", next token (greedy) "
            << generate::argmax_last(logits) << "\n";
    return 0;
}

#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
// --- aligngpt run: an image and a question to an answer ------------------------------------------

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// Prints the answer as it is decoded, to stdout, so that the printed text is the final answer's
/// beginning at every moment: the reference's answer is decode(ids, skip_special_tokens).strip()
/// without a trailing stop string, so trailing whitespace, a possible beginning of the stop string
/// and an unfinished UTF-8 sequence (U+FFFD at the end) are held back until more text follows.
class answer_stream {
public:
    answer_stream(const tokenizer::llama_tokenizer& tok, std::string stop) : tok_(tok), stop_(std::move(stop)) {}

    void update(std::span<const std::int64_t> generated) {
        std::string t = tokenizer::strip(tok_.decode(generated, true));
        static constexpr std::string_view fffd = "\xEF\xBF\xBD";
        while (t.ends_with(fffd)) t.resize(t.size() - fffd.size());
        for (std::size_t n = std::min(stop_.size(), t.size()); n > 0; n--)  // the longest stop prefix at the end
            if (t.compare(t.size() - n, n, stop_, 0, n) == 0) {
                t.resize(t.size() - n);
                break;
            }
        t = tokenizer::strip(t);
        emit(t);
    }
    /// The reference's final answer; prints what is left of it.
    std::string finish(std::span<const std::int64_t> generated) {
        const std::string out = eval::final_answer(tok_, generated, stop_);
        emit(out);
        std::fputs("\n", stdout);
        std::fflush(stdout);
        return out;
    }

private:
    void emit(const std::string& t) {
        if (t.size() <= printed_.size() || t.compare(0, printed_.size(), printed_) != 0) return;
        std::fwrite(t.data() + printed_.size(), 1, t.size() - printed_.size(), stdout);
        std::fflush(stdout);
        printed_ = t;
    }
    const tokenizer::llama_tokenizer& tok_;
    std::string stop_, printed_;
};

/// The tokenizer of DIR, checked against the model's vocab_size; read before the model, so that a
/// bad tokenizer file costs no model load.
tokenizer::llama_tokenizer load_tokenizer(const std::string& dir, const std::string& model) {
    auto tok = tokenizer::llama_tokenizer::from_directory(dir);
    if (const auto V = config_vocab_size(model); V && tok.vocab_size() > *V)
        fail(dir, "/tokenizer.model: ", tok.vocab_size(), " pieces, more than the model's vocab_size ", *V, " (", model,
             "/config.json): not this model's tokenizer");
    return tok;
}

template <class Backend>
int run_chat(const run_args& a, const Backend& be) {
    namespace fs = std::filesystem;
    std::ostream& log = std::cerr;
    const auto t_load = std::chrono::steady_clock::now();
    if (a.threads > 0) set_threads(a.threads);
    const auto tok = load_tokenizer(a.tokenizer, a.model);
    pretrained::load_options opt;
    opt.quiet = !a.verbose;
    opt.vision_tower = a.vision_tower;
    opt.dtype = a.dtype;
    auto m = pretrained::load_aligngpt<float, Backend>(a.model, opt, be);
    if (!a.aspect.empty()) m.config.image_aspect_ratio = a.aspect;
    const double load_ms = ms_since(t_load);
    const auto& model = *m.model;

    const auto t_image = std::chrono::steady_clock::now();
    const tensor<float, Backend> pixels = on(pretrained::image_pixels(a.image, m), be);
    const auto feats = m.vision->features(nullptr, autograd::variable<float, Backend>::leaf(pixels));
    const double image_ms = ms_since(t_image);

    const models::alignment al =
        a.align_level < 0 ? models::alignment{} : models::alignment{models::align_mode::fixed_level, a.align_level};
    auto conv = conversation::make(a.conv_mode);
    const std::string stop = conv.stop_string();
    const index_t limit = m.config.model.tokenizer_model_max_length;
    double prefill_ms = 0, decode_ms = 0;
    index_t prefill_tokens = 0, decoded = 0;
    bool first = true;
    for (;;) {
        std::string question;
        if (a.prompt) {
            question = *a.prompt;
        } else {
            log << conv.roles[0] << ": " << std::flush;
            if (!std::getline(std::cin, question)) break;
            if (tokenizer::strip(question).empty()) continue;
        }
        add_question(conv, question, first);
        const std::string prompt = conv.prompt();
        const std::vector<std::int64_t> ids = tokenizer::tokenizer_image_token(tok, prompt);
        const index_t spliced = index_t(ids.size()) - 1 + m.config.model.n_image_tokens + 1;
        if (limit > 0 && spliced > limit)
            fail("--prompt: the prompt is ", spliced, " positions with the image, more than the model's context of ", limit,
                 " (config tokenizer_model_max_length); the reference would cut it");
        if (a.verbose) {
            log << "[run] prompt: " << io::detail::quote_name(prompt, 1 << 20) << "\n[run] ids:";
            for (auto id : ids) log << ' ' << id;
            log << "\n";
        }
        if (!a.prompt) log << conv.roles[1] << ": " << std::flush;

        const auto t_prefill = std::chrono::steady_clock::now();
        models::kv_cache<float, Backend> cache;
        const auto pre = model.forward(nullptr, {models::sample{ids}}, feats, models::stage::inference, al, nullptr, &cache);
        prefill_ms += ms_since(t_prefill);
        prefill_tokens += pre.logits.size(1);
        if (a.verbose && pre.gate.weights.defined()) {
            const auto w = pre.gate.weights.value().to_vector();
            log << "[run] gate weights over levels 0..6:";
            for (float x : w) log << ' ' << x;
            log << "\n";
        }
        const auto t_decode = std::chrono::steady_clock::now();
        answer_stream out(tok, stop);
        const generate::keywords_stop<tokenizer::llama_tokenizer> stop_rule(tok, {stop}, ids);
        generate::options gopt{a.max_new_tokens, model.config.llm.eos_token_ids};
        const auto gen = generate::sample(
            pre.logits, [&](std::int64_t t) { return model.llm.decode_step(t, cache); }, gopt, a.sampling, ids,
            [&](std::int64_t, std::span<const std::int64_t> g) {
                out.update(g);
                return !stop_rule(g);
            });
        decode_ms += ms_since(t_decode);
        decoded += index_t(gen.size());
        if (a.verbose) {
            log << "[run] generated ids:";
            for (auto id : gen) log << ' ' << id;
            log << "\n";
        }
        conv.messages.back().text = out.finish(gen);
        first = false;
        if (a.prompt) break;
    }
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    char line[512];
    std::snprintf(line, sizeof line,
                  "[run] load %.0f ms | image encode %.0f ms | prefill %lld positions in %.0f ms (%.1f tok/s) | "
                  "decode %lld tokens in %.0f ms (%.2f tok/s) | seed %llu | threads %d | device %s | peak memory %.1f MiB\n",
                  load_ms, image_ms, (long long)prefill_tokens, prefill_ms,
                  prefill_ms > 0 ? double(prefill_tokens) * 1000.0 / prefill_ms : 0.0, (long long)decoded, decode_ms,
                  decode_ms > 0 ? double(decoded) * 1000.0 / decode_ms : 0.0, (unsigned long long)a.sampling.seed, max_threads(),
                  device_name(a.device).c_str(), double(ru.ru_maxrss) / 1024.0);
    log << line;
    return 0;
}

// --- aligngpt answer: a question file to an answers file (eval/answer.h) ---------------------------

template <class Backend>
int run_answer(const answer_args& a, const Backend& be) {
    const run_args& r = a.run;
    if (r.threads > 0) set_threads(r.threads);
    const auto tok = load_tokenizer(r.tokenizer, r.model);
    pretrained::load_options opt;
    opt.quiet = a.quiet, opt.vision_tower = r.vision_tower, opt.dtype = r.dtype;
    auto m = pretrained::load_aligngpt<float, Backend>(r.model, opt, be);
    if (!r.aspect.empty()) m.config.image_aspect_ratio = r.aspect;
    eval::answer_options o;
    o.image_folder = a.images, o.conv_mode = r.conv_mode, o.model_id = eval::model_name_from_path(r.model);
    o.max_new_tokens = r.max_new_tokens, o.sampling = r.sampling, o.batch_size = a.batch, o.resume = a.resume;
    o.align = r.align_level < 0 ? models::alignment{} : models::alignment{models::align_mode::fixed_level, r.align_level};
    o.progress = a.quiet ? nullptr : &std::cerr;
    const auto s = eval::answer_questions(*m.model, *m.vision, tok, a.questions, a.answers, o,
                                          [&](const std::string& path) { return on(pretrained::image_pixels(path, m), be); });
    if (!a.quiet) std::cerr << "[answer] wrote " << s.answered << " answers to " << a.answers << " (" << s.resumed << " kept)\n";
    return 0;
}
#endif  // ALIGNGPT_TOOL_HAVE_TOKENIZER

// --- aligngpt score -------------------------------------------------------------------------------

std::string fmt(const char* f, double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, x);
    return buf;
}

void note_unanswered(std::size_t n, const std::string& file) {
    if (n) std::cerr << "aligngpt score: " << n << " question(s) of " << file << " have no answer; they are not scored\n";
}

int run_score(const score_args& a) {
    if (a.task == "pope") {
        const auto ann = eval::read_pope_annotations(a.annotations);
        const auto answers = eval::read_answers(a.answers);
        std::size_t unanswered = 0;
        const auto match = eval::match_answers(answers, ann, a.annotations, unanswered);
        std::map<std::string, eval::pope_result> per;
        eval::pope_result all;
        for (std::size_t k = 0; k < answers.size(); k++) {
            const auto& t = ann[match[k]];
            if (!t.category.empty()) eval::pope_add(per[t.category], t.label_yes, answers[k].text);
            eval::pope_add(all, t.label_yes, answers[k].text);
        }
        const auto line = [](const std::string& name, const eval::pope_result& r) {
            std::cout << "pope " << name << ": n=" << r.n() << " TP=" << r.tp << " FP=" << r.fp << " TN=" << r.tn
                      << " FN=" << r.fn << " accuracy=" << fmt("%.4f", r.accuracy())
                      << " precision=" << fmt("%.4f", r.precision()) << " recall=" << fmt("%.4f", r.recall())
                      << " f1=" << fmt("%.4f", r.f1()) << " yes_ratio=" << fmt("%.4f", r.yes_ratio()) << "\n";
        };
        for (const auto& [name, r] : per) line(name, r);
        line("all", all);
        if (per.size() > 1) {
            double acc = 0, f1 = 0;
            for (const auto& [name, r] : per) acc += r.accuracy(), f1 += r.f1();
            std::cout << "pope mean over " << per.size() << " categories: accuracy=" << fmt("%.4f", acc / double(per.size()))
                      << " f1=" << fmt("%.4f", f1 / double(per.size())) << "\n";
        }
        note_unanswered(unanswered, a.annotations);
        return 0;
    }
    if (a.task == "mme") {
        const auto ann = eval::read_mme_annotations(a.annotations);
        const auto answers = eval::read_answers(a.answers, /*allow_repeats=*/true);
        std::size_t unanswered = 0;
        const auto match = eval::match_answers(answers, ann, a.annotations, unanswered);
        std::vector<eval::mme_question> qs;
        for (std::size_t k = 0; k < answers.size(); k++) {
            const auto& t = ann[match[k]];
            qs.push_back({t.subtask, t.image, t.label_yes, answers[k].text});
        }
        const eval::mme_result r = eval::mme_score(qs);
        for (const auto* group : {&eval::mme_perception(), &eval::mme_cognition()})
            for (const auto& name : *group)
                if (auto it = r.subtasks.find(name); it != r.subtasks.end()) {
                    const auto& t = it->second;
                    std::cout << "mme " << name << ": questions=" << t.questions << " images=" << t.images
                              << " accuracy=" << fmt("%.4f", t.accuracy()) << " accuracy_plus=" << fmt("%.4f", t.accuracy_plus())
                              << " score=" << fmt("%.2f", t.score()) << (t.other ? " not_yes_no=" + std::to_string(t.other) : "")
                              << "\n";
                }
        std::cout << "mme perception: " << fmt("%.2f", r.perception()) << "\n";
        std::cout << "mme cognition: " << fmt("%.2f", r.cognition()) << "\n";
        note_unanswered(unanswered, a.annotations);
        return 0;
    }
    if (a.task == "vqa") {
        const auto ann = eval::read_vqa_annotations(a.annotations);
        const auto answers = eval::read_answers(a.answers);
        std::size_t unanswered = 0;
        const auto match = eval::match_answers(answers, ann, a.annotations, unanswered);
        double sum = 0;
        for (std::size_t k = 0; k < answers.size(); k++) sum += eval::vqa_accuracy(answers[k].text, ann[match[k]].answers);
        std::cout << "vqa: n=" << answers.size() << " accuracy=" << fmt("%.4f", sum / double(answers.size())) << "\n";
        note_unanswered(unanswered, a.annotations);
        return 0;
    }
    const auto ann = eval::read_mc_annotations(a.annotations);
    const auto answers = eval::read_answers(a.answers);
    std::size_t unanswered = 0;
    const auto match = eval::match_answers(answers, ann, a.annotations, unanswered);
    std::int64_t correct = 0, no_letter = 0;
    for (std::size_t k = 0; k < answers.size(); k++) {
        const auto& t = ann[match[k]];
        const char l = eval::mc_letter(answers[k].text, t.n_choices);
        correct += l == t.answer;
        no_letter += l == 0;
    }
    std::cout << "mc: n=" << answers.size() << " correct=" << correct << " no_letter=" << no_letter
              << " accuracy=" << fmt("%.4f", double(correct) / double(answers.size())) << "\n";
    note_unanswered(unanswered, a.annotations);
    return 0;
}
// --- aligngpt levels ------------------------------------------------------------------------------

int run_levels(const levels_args& a) {
    if (a.threads > 0) set_threads(a.threads);
    auto data = train::read_dataset(a.data);
    const auto pairs = train::dataset_pairs(data, a.data);  // every record checked before CLIP loads
    const auto clip = train::clip_scorer<float>::load(a.clip);
    std::cerr << "aligngpt levels: " << pairs.size() << " pairs, " << a.levels << " levels, batch " << a.batch << ", threads "
              << max_threads() << "\n";
    const auto r = train::compute_levels(clip, pairs, a.images, {.n_levels = a.levels, .batch_size = a.batch});
    train::write_levels_json(std::move(data), r, a.out);
    if (!a.plot.empty()) train::write_histogram_png(a.plot, r);
    std::cout << train::histogram_table(r.stats);
    return 0;
}

// --- aligngpt train and world ---------------------------------------------------------------------

#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
int run_world(const world::pipeline_options& o) {
    const auto r = world::run_pipeline(o);
    std::cout << "\n" << r.table << "\ntime:";
    for (const auto& [stage, s] : r.stage_seconds) std::cout << " " << stage << " " << fmt("%.0f", s) << " s,";
    std::cout << " total " << fmt("%.0f", r.seconds) << " s\nreport: " << r.report << "\nresults: " << r.results << "\nplots:\n";
    for (const auto& p : r.plots) std::cout << "  " << p << "\n";
    return 0;
}

int run_train(const train::options& o) {
    const auto r = train::trainer(o).run();
    if (r.interrupted)
        std::cerr << "aligngpt train: stopped at step " << r.steps_done << " of " << r.total_steps
                  << "; rerun with --resume to continue\n";
    return 0;
}
#endif
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
        const std::vector<std::string> rest(args.begin() + 1, args.end());
        if ((cmd == "trace" || cmd == "run" || cmd == "answer" || cmd == "score" || cmd == "levels" || cmd == "train" ||
             cmd == "world") &&
            std::any_of(rest.begin(), rest.end(), [](const std::string& r) { return r == "-h" || r == "--help"; })) {
            std::cout << usage_text;
            return 0;
        }
        if (cmd == "trace") {
            trace_args a = parse_trace(rest);
            if (a.prompt) {
#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
                std::error_code ec;
                if (!std::filesystem::is_directory(a.tokenizer, ec)) bad("--tokenizer \"" + a.tokenizer + "\": not a directory");
                const auto tok = tokenizer::llama_tokenizer::from_directory(a.tokenizer);
                auto conv = conversation::make(a.conv_mode);
                add_question(conv, *a.prompt, true);
                a.ids = tokenizer::tokenizer_image_token(tok, conv.prompt());
                check_one_image(*a.ids, "--prompt (rendered with " + a.conv_mode + ")");
#else
                throw error(
                    "--prompt needs the LLaMA tokenizer, and this aligngpt was built without SentencePiece; "
                    "pass --input-ids");
#endif
            }
            check_before_load(a);
            return on_device(a.device, [&](const auto& be) { return run_trace(a, be); });
        }
        if (cmd == "score") return run_score(parse_score(rest));
        if (cmd == "levels") return run_levels(parse_levels(rest));
        if (cmd == "plot") {
            if (rest.size() != 1 || rest[0].rfind("-", 0) == 0) bad("plot takes one training output directory");
            const auto r = train::plot_metrics(rest[0]);
            std::cout << r.steps << " steps: " << r.tsv << ", " << r.script << "\n";
            if (r.png.empty())
                std::cout << "gnuplot is not installed (apt-get install gnuplot-nox): run gnuplot " << r.script
                          << " where it is\n";
            else
                std::cout << "wrote " << r.png << "\n";
            return 0;
        }
        if (cmd == "train") {
#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
            return run_train(parse_train(rest));
#else
            throw error("train needs the LLaMA tokenizer, and this aligngpt was built without SentencePiece");
#endif
        }
        if (cmd == "world") {
#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
            return run_world(parse_world(rest));
#else
            throw error("world needs the LLaMA tokenizer, and this aligngpt was built without SentencePiece");
#endif
        }
        if (cmd == "answer") {
#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
            const answer_args a = parse_answer(rest);
            check_run_paths(a.run);
            return on_device(a.run.device, [&](const auto& be) { return run_answer(a, be); });
#else
            throw error("answer needs the LLaMA tokenizer, and this aligngpt was built without SentencePiece");
#endif
        }
        if (cmd == "run") {
#if defined(ALIGNGPT_TOOL_HAVE_TOKENIZER)
            const run_args a = parse_run(rest);
            check_run_paths(a);
            return on_device(a.device, [&](const auto& be) { return run_chat(a, be); });
#else
            throw error(
                "run needs the LLaMA tokenizer, and this aligngpt was built without SentencePiece "
                "(install libsentencepiece-dev and reconfigure)");
#endif
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
